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


@pytest.mark.slow
@pytest.mark.faces
def test_flip_tta_embeds_each_face_with_its_mirror_image(faces):
    """`Embedder(flip=True)`: the normalised sum of the crop's and its mirror's embeddings, its own version."""
    import numpy as np

    from model.pipeline import Embedder
    from training.datasets import sample_crops

    ckpt = load_checkpoint("casia-webface")
    crops = sample_crops(6)
    plain_emb, flip_emb = Embedder(ckpt, "cpu", "fp32"), Embedder(ckpt, "cpu", "fp32", flip=True)
    a, b = plain_emb.embed(crops), plain_emb.embed(np.ascontiguousarray(crops[:, :, ::-1]))
    want = (a + b) / np.linalg.norm(a + b, axis=1, keepdims=True)
    got = flip_emb.embed(crops)
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert np.allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5) and not np.allclose(got, a, atol=1e-3)
    assert flip_emb.version == plain_emb.version + "+flip"
