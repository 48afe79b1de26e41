"""int8 embedder: ONNX Runtime static quantisation of the real network stays close to fp32 on real faces;
its cache (model file, sidecar with the gate) is used only when it matches; `auto` serves it where it pays;
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
    with pytest.raises(WeightsError, match="FACEID_PRECISION=auto or int8"):
        load_int8("0123456789abcdef", torch.device("cpu"))


def _cached(tmp_path, monkeypatch, version: str, passed: bool, recipe: str | None = None):
    """A cached int8 model file and its sidecar as build_int8 writes them (the file's bytes need not be a model
    for the sidecar checks)."""
    import hashlib
    import json

    from model import quantize

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    path = quantize.int8_path(version)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a model")
    gate = {"faces": 80, "cosine_min": 0.97, "cosine_mean": 0.995, "min_required": quantize.GATE_MIN_COSINE,
            "mean_required": quantize.GATE_MEAN_COSINE, "passed": passed}
    path.with_suffix(".json").write_text(json.dumps({
        "recipe": recipe or quantize.RECIPE, "sha256": hashlib.sha256(b"not a model").hexdigest(), "gate": gate}))
    return path


class _Version:
    def __init__(self, version: str):
        self.version = version


def test_a_cached_failed_gate_is_not_rebuilt_and_says_by_how_much(tmp_path, monkeypatch):
    from model.quantize import int8_embedder

    _cached(tmp_path, monkeypatch, "v-failed", passed=False)
    net, why = int8_embedder(_Version("v-failed"), build=False)
    assert net is None
    assert "failed its gate" in why and "min 0.97" in why and "needs min 0.995" in why


def test_a_cache_of_another_recipe_or_content_is_not_used(tmp_path, monkeypatch):
    from model.quantize import int8_embedder

    path = _cached(tmp_path, monkeypatch, "v-old", passed=True, recipe="an-older-recipe")
    assert int8_embedder(_Version("v-old"), build=False) == (None, f"no int8 model of v-old cached at {path}")
    path = _cached(tmp_path / "b", monkeypatch, "v-edited", passed=True)
    path.write_bytes(b"edited after its gate")
    assert int8_embedder(_Version("v-edited"), build=False)[0] is None


def test_a_cache_that_onnxruntime_cannot_load_falls_back_with_the_reason(tmp_path, monkeypatch):
    from model.quantize import int8_embedder

    _cached(tmp_path, monkeypatch, "v-garbage", passed=True)
    net, why = int8_embedder(_Version("v-garbage"), build=False)
    assert net is None and why.startswith("int8 model could not be loaded")


@pytest.mark.faces
@pytest.mark.slow  # real weights; builds the int8 model once (about a minute) when the cache lacks it
def test_auto_serves_the_checkpoints_gated_int8_model_where_the_cpu_has_vnni(faces):
    import json

    from model.fast import plan_precision
    from model.quantize import GATE_MEAN_COSINE, GATE_MIN_COSINE, int8_path
    from training.datasets import sample_crops

    ckpt = load_checkpoint("casia-webface")
    auto = Embedder(ckpt, "cpu", "auto")
    plan = plan_precision(torch.device("cpu"), "auto")
    if plan[0][0] != "int8":
        assert auto.precision == plan[0][0] and auto.precision_reason == plan[0][1]
        pytest.skip(f"this CPU has no VNNI or AMX: {auto.precision_reason}")
    gate = json.loads(int8_path(ckpt.version).with_suffix(".json").read_text())["gate"]
    assert gate["passed"] and gate["cosine_min"] >= GATE_MIN_COSINE and gate["cosine_mean"] >= GATE_MEAN_COSINE
    assert auto.precision == "int8" and "passed its gate" in auto.precision_reason
    crops = sample_crops(8)
    got, ref = auto.embed(crops), Embedder(ckpt, "cpu", "fp32").embed(crops)
    assert np.allclose(np.linalg.norm(got, axis=1), 1, atol=1e-4)
    assert (got * ref).sum(1).min() >= GATE_MIN_COSINE
    assert Embedder(ckpt, "cpu", "auto").precision == "int8"  # the second load reads the cache


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


def test_quantize_options_replace_the_recipe():
    """model.ort_quant.quantize: QDQ by default; an option (here QLinear operators) replaces that part only."""
    import onnx
    from onnxruntime.quantization import QuantFormat

    from model.ort_quant import quantize

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 1)).eval()
    buf = __import__("io").BytesIO()
    torch.onnx.export(net, (torch.zeros(1, 3, 16, 16),), buf, input_names=["x"], dynamic_axes={"x": {0: "n"}},
                      opset_version=17, dynamo=False)
    calibration = np.random.default_rng(0).standard_normal((8, 3, 16, 16)).astype(np.float32)
    ops = lambda b: {n.op_type for n in onnx.load_from_string(b).graph.node}  # noqa: E731
    qdq = ops(quantize(buf.getvalue(), calibration, batch=4))
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= qdq and "QLinearConv" not in qdq
    qop = ops(quantize(buf.getvalue(), calibration, batch=4, quant_format=QuantFormat.QOperator))
    assert "QLinearConv" in qop and "Conv" not in qop
