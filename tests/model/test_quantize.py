"""int8 embedder: ONNX Runtime static quantisation of the real network stays close to fp32 on real faces;
a missing quantised file is a WeightsError that says how to make it."""
from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")

from model.pipeline import Embedder, build_network, load_checkpoint  # noqa: E402
from model.preprocessing import fixed_image_standardization  # noqa: E402
from model.weights import WeightsError  # noqa: E402


def test_int8_without_a_quantised_file_says_how_to_make_it(tmp_path, monkeypatch):
    from model.quantize import load_int8

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty cache: no quantised file
    with pytest.raises(WeightsError, match="python -m model.quantize"):
        load_int8("0123456789abcdef", torch.device("cpu"))


@pytest.mark.slow  # real weights
def test_int8_is_not_a_serving_precision():
    """Not offered to the service until it passes the accuracy gate (benchmarks/embed.py --precision int8)."""
    with pytest.raises(ValueError, match="unknown precision"):
        Embedder(load_checkpoint("casia-webface"), "cpu", "int8")


@pytest.mark.faces
@pytest.mark.slow
def test_quantised_embedder_is_close_to_fp32_on_real_faces(faces):
    from model.quantize import OrtEmbedder, calibration_crops, export_embedder, quantize

    crops = calibration_crops(40)
    x = fixed_image_standardization(torch.from_numpy(crops).permute(0, 3, 1, 2))
    net = build_network(load_checkpoint("casia-webface"))
    int8 = OrtEmbedder(quantize(export_embedder(net), np.ascontiguousarray(x[:24].numpy())))
    with torch.inference_mode():
        ref = net(x[24:])
    got = int8(x[24:])
    assert torch.allclose(got.norm(dim=1), torch.ones(len(got)), atol=1e-4)
    assert (ref * got).sum(1).min() > 0.995  # faces it was not calibrated on
