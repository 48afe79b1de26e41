"""The fast inference path against the network as trained: batch-norm folding, reduced precision."""
from __future__ import annotations

import pytest
import torch

from model.fast import fold_batchnorm, optimise
from model.pipeline import build_network, load_checkpoint
from model.preprocessing import fixed_image_standardization


@pytest.fixture(scope="module")
def plain():
    return build_network(load_checkpoint("casia-webface"))


def test_folding_batchnorm_keeps_the_embeddings(plain):
    x = torch.randn(4, 3, 160, 160, generator=torch.Generator().manual_seed(0))
    folded = fold_batchnorm(plain)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    with torch.inference_mode():
        cos = (plain(x) * folded(x)).sum(1)
    assert cos.min() > 0.99999


@pytest.mark.faces
def test_fast_path_embeddings_match_fp32_on_real_faces(faces, plain):
    """The issue's guard: every fast-path embedding of a real face within cosine 0.999 of fp32."""
    from training.datasets import sample_crops

    crops = fixed_image_standardization(torch.from_numpy(sample_crops(32)).permute(0, 3, 1, 2))
    fast, precision = optimise(plain, torch.device("cpu"), "fast")
    with torch.inference_mode():
        cos = (plain(crops) * fast(crops)).sum(1)
    assert precision in ("bf16", "fp32-folded")
    assert cos.min() >= 0.999, (precision, float(cos.min()))
