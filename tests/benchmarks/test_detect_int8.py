"""benchmarks.detect_int8: its PReLU rewrite is the same network, and the script reports every network of every
recipe it is asked for (time, op types, faces moved)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

pytest.importorskip("onnxruntime")

from benchmarks.detect_int8 import PReLUAsReLU, _replace_prelu  # noqa: E402
from model.mtcnn import ONet, PNet, RNet  # noqa: E402
from tests.benchmarks.test_scripts import run  # noqa: E402


@pytest.mark.parametrize("net,shape", [(PNet, (2, 3, 31, 45)), (RNet, (5, 3, 24, 24)), (ONet, (3, 3, 48, 48))])
def test_prelu_as_relu_is_the_same_network(net, shape):
    torch.manual_seed(0)
    original = net().eval()
    for m in original.modules():
        if isinstance(m, nn.PReLU):  # slopes below 0 and above 1, as the real weights have
            m.weight.data = torch.randn_like(m.weight)
    rewritten = _replace_prelu(original, PReLUAsReLU)
    assert not any(isinstance(m, nn.PReLU) for m in rewritten.modules())
    x = torch.randn(shape) * 2
    with torch.no_grad():
        for ref, got in zip(original(x), rewritten(x)):
            assert ref.shape == got.shape
            assert (ref - got).abs().max() < 1e-5


@pytest.mark.faces
@pytest.mark.slow
def test_detect_int8_script(faces):
    got = run("benchmarks.detect_int8", "--limit", "2", "--passes", "1", "--recipes", "qdq,bound_fp32_relu")
    assert got["recipes"] == ["fp32", "qdq", "bound_fp32_relu"]
    for row in got["sets"].values():
        assert row["images"] == 2 and 0 < row["networks_share_of_detect_fp32"] <= 1
        fp32, qdq = row["recipes"]["fp32"], row["recipes"]["qdq"]
        assert fp32["speedup_vs_fp32"]["networks"] == 1.0
        assert set(qdq["ms_per_image"]) == {"pnet", "rnet", "onet"} and all(v > 0 for v in qdq["ms_per_image"].values())
        assert "QLinearConv" in qdq["op_ms_per_image"]["pnet"] and "PRelu" in fp32["op_ms_per_image"]["pnet"]
        assert "faces_moved" in qdq and "faces_moved" not in row["recipes"]["bound_fp32_relu"]  # not the network
        assert set(row["qdq_one_network_int8_faces_moved"]) == {"pnet", "rnet", "onet"}
