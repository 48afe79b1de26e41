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


# FACEID_PRECISION=auto: what is tried, in which order, and why (model.fast.plan_precision), per CPU kind.
ZEN4 = {"avx2", "avx512f", "avx512_vnni", "avx512_bf16"}
SAPPHIRE_RAPIDS = {"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8"}
ALDER_LAKE = {"avx2", "avx_vnni"}
ZEN3 = {"avx2", "fma"}


@pytest.mark.parametrize("flags,expected", [
    (ZEN4, ["int8", "bf16"]), (SAPPHIRE_RAPIDS, ["int8", "bf16"]), (ALDER_LAKE, ["int8", "fp32-folded"]),
    (ZEN3, ["fp32-folded"]), (set(), ["fp32-folded"])])
def test_auto_tries_int8_only_where_the_cpu_has_vnni_or_amx(flags, expected):
    from model.fast import plan_precision

    plan = plan_precision(torch.device("cpu"), "auto", flags)
    assert [p for p, _ in plan] == expected
    assert all(why.startswith("auto: ") for _, why in plan)
    if expected[0] == "int8":
        assert "vnni" in plan[0][1] or "amx_int8" in plan[0][1]


def test_auto_on_cuda_is_fast_and_explicit_choices_are_kept():
    from model.fast import plan_precision, resolve_precision

    assert plan_precision(torch.device("cuda"), "auto", ZEN4) == [
        (resolve_precision(torch.device("cuda"), "fast"), "auto on cuda: as fast")]
    assert plan_precision(torch.device("cpu"), "fast", ZEN4) == [("bf16", "fast requested: bf16 on this cpu")]
    assert plan_precision(torch.device("cpu"), "fast", ZEN3) == [("fp32-folded", "fast requested: fp32-folded on this cpu")]
    assert plan_precision(torch.device("cpu"), "fp32", ZEN4) == [("fp32", "fp32 requested")]
    assert plan_precision(torch.device("cpu"), "int8", ZEN3) == [("int8", "int8 requested")]


def test_cpu_flags_are_read_as_words():
    from model.fast import cpu_flags

    flags = cpu_flags()
    assert all(" " not in f for f in flags)
