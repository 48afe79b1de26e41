"""Where an int8 MTCNN's time goes: P/R/ONet network by network, fp32 against int8 recipes, in ONNX Runtime. JSON.

benchmarks.detect times whole detectors; this one times each network on the inputs it receives while the
fp32 detector finds the faces of the 61 photos at 640 px and 64 LFW images one image per call (the service's
way for single requests), the recipes taking turns network by network (median of the passes), with
ONNX Runtime's kernel time per op type (its profiler) and the faces each recipe moves (issue 36's rule:
every face of at least 24 px found by one detector is found by the other at IoU >= 0.9; the int8 networks
are calibrated on model.ort_quant's faces, as model.mtcnn_ort.int8_runners does). Recipes:

- qdq: model.mtcnn_ort's (static QDQ, per-channel int8 weights, uint8 activations, min-max; heads float);
- qoperator: the same as QLinear operators; qdq_moving_average: min-max averaged over calibration batches;
- qdq_s8_symmetric: int8 activations, symmetric;
- qdq_prelu_as_relu: every PReLU rewritten before export as relu(x) - a * relu(-x), which ONNX Runtime's
  quantiser covers (PReLU it leaves float, with a dequantise and a requantise around it);
- bound_fp32_relu and bound_qdq_relu: PReLU replaced by ReLU, which ONNX Runtime fuses into the
  convolution in both precisions. Not the network (faces not compared): how fast int8 would be if the
  activation cost nothing, against fp32 given the same.

Also the networks' share of a whole one-image detection in fp32 (the rest is pyramid, crops and NMS).

    python -m benchmarks.detect_int8 [--limit N] [--passes 5] [--threads N] [--out benchmarks/results/detect_int8_networks.json]
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import copy
import json
import statistics
import sys
import tempfile
import time

import numpy as np
import torch
from torch import nn

from benchmarks.detect import lfw_sample, photos_640
from benchmarks.faces import faces_dir
from benchmarks.report import emit
from model.decode import decode_image
from model.mtcnn_ort import (GATE_MIN_FACE_PX, OrtNet, export_onnx, float_head_nodes, record_inputs,
                             unmatched_faces)
from model.ort_quant import calibration_images, quantize, split_calibration
from model.pipeline import load_detector

NETS = ("pnet", "rnet", "onet")


class PReLUAsReLU(nn.Module):
    """PReLU with per-channel slope a as relu(x) - a * relu(-x): the same function in ops ORT quantises."""

    def __init__(self, prelu: nn.PReLU, ndim: int):
        super().__init__()
        self.register_buffer("a", prelu.weight.detach().clone().view(1, -1, *([1] * (ndim - 2))))

    def forward(self, x):
        return torch.relu(x) - self.a * torch.relu(-x)


def _replace_prelu(net: nn.Module, make) -> nn.Module:
    net = copy.deepcopy(net)
    dense = {"RNet": ("prelu4",), "ONet": ("prelu5",)}.get(type(net).__name__, ())  # after a Linear: (n, C)
    for name, module in list(net.named_children()):
        if isinstance(module, nn.PReLU):
            setattr(net, name, make(module, 2 if name in dense else 4))
    return net


def _recipes() -> dict[str, tuple]:
    """name: (network rewrite or None, quantize options or None for fp32, whether it is the same function)."""
    from onnxruntime.quantization import QuantFormat, QuantType

    relu = lambda net: _replace_prelu(net, lambda m, d: nn.ReLU())  # noqa: E731
    return {"fp32": (None, None, True),
            "qdq": (None, {}, True),
            "qoperator": (None, {"quant_format": QuantFormat.QOperator}, True),
            "qdq_moving_average": (None, {"extra_options": {"CalibMovingAverage": True}}, True),
            "qdq_s8_symmetric": (None, {"activation_type": QuantType.QInt8,
                                        "extra_options": {"ActivationSymmetric": True}}, True),
            "qdq_prelu_as_relu": (lambda net: _replace_prelu(net, PReLUAsReLU), {}, True),
            "bound_fp32_relu": (relu, None, False),
            "bound_qdq_relu": (relu, {}, False)}


def build(detector, recipe: tuple, calibration_inputs: dict) -> dict[str, bytes]:
    rewrite, options, _ = recipe
    out = {}
    for name in NETS:
        net = getattr(detector, name)
        src = export_onnx(rewrite(net) if rewrite else copy.deepcopy(net), name)
        out[name] = src if options is None else quantize(src, calibration_inputs[name],
                                                         exclude=float_head_nodes(src, name), **options)
    return out


def faces_moved(detector, runners: dict, images: list) -> dict:
    """Issue 36's rule, one image per call, fp32 runners of `detector` against `runners`."""
    fp32 = detector._runners
    ref = [detector.detect([im])[0] for im in images]
    detector._runners = runners
    try:
        got = [detector.detect([im])[0] for im in images]
    finally:
        detector._runners = fp32
    big = lambda d: int((np.minimum(d.boxes[:, 2] - d.boxes[:, 0], d.boxes[:, 3] - d.boxes[:, 1])  # noqa: E731
                         >= GATE_MIN_FACE_PX).sum())
    return {"faces_fp32": sum(big(d) for d in ref), "missed": sum(unmatched_faces(a, b) for a, b in zip(ref, got)),
            "extra": sum(unmatched_faces(b, a) for a, b in zip(ref, got))}


def _time(runner: OrtNet, inputs: list) -> float:
    t = time.perf_counter()
    for x in inputs:
        runner.session.run(None, {"x": x})
    return time.perf_counter() - t


def op_times(onnx_bytes: bytes, inputs: list, threads: int) -> dict[str, float]:
    """Kernel time per op type over `inputs` (ms), from ONNX Runtime's profiler, after a warm-up call."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.enable_profiling, options.profile_file_prefix = True, f"{tmp}/profile"
        session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
        session.run(None, {"x": inputs[0]})
        for x in inputs:
            session.run(None, {"x": x})
        events = json.load(open(session.end_profiling()))
    per_op: collections.Counter = collections.Counter()
    runs = sorted((e for e in events if e.get("name") == "model_run"), key=lambda e: e["ts"])
    cut = runs[0]["ts"] + runs[0]["dur"] if runs else 0  # the warm-up call's kernels are left out
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= cut:
            per_op[e["args"]["op_name"]] += e["dur"] / 1000
    return dict(per_op.most_common())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=None, help="images per set (default: 61 photos, 64 LFW)")
    ap.add_argument("--passes", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="intra-op threads (default: torch's, as the service)")
    ap.add_argument("--recipes", default=",".join(_recipes()), help="fp32 is always included")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    root = faces_dir()
    if not (root / "photos").is_dir():
        print(json.dumps({"skipped": f"no face data under {root}"}))
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    detector = load_detector(backend="onnxruntime", threads=threads)
    sets = {"photos_640": [np.asarray(im) for im in photos_640(root)][: args.limit],
            "lfw_64": [np.asarray(decode_image(p.read_bytes())) for p in lfw_sample(root, args.limit or 64)]}
    calibration, _ = split_calibration(calibration_images(320, root))
    calibration_inputs = record_inputs(detector, [np.asarray(decode_image(p.read_bytes())) for p in calibration])
    all_recipes = _recipes()
    names = ["fp32"] + [r for r in args.recipes.split(",") if r != "fp32"]
    with contextlib.redirect_stdout(sys.stderr):  # the quantiser prints; stdout is the JSON
        models = {r: build(detector, all_recipes[r], calibration_inputs) for r in names}
    runners = {r: {n: OrtNet(b, threads) for n, b in m.items()} for r, m in models.items()}
    result = {"benchmark": "detect_int8", "threads": threads, "passes": args.passes,
              "calibration_images": len(calibration), "recipes": names, "sets": {}}
    for set_name, images in sets.items():
        inputs = record_inputs(detector, images, batch=1)
        times = {r: {n: [] for n in NETS} for r in names}
        detect_s = []
        for _ in range(args.passes):  # taking turns: network by network, every recipe, then a whole detection
            for n in NETS:
                for r in names:
                    times[r][n].append(_time(runners[r][n], inputs[n]))
            t = time.perf_counter()
            for im in images:
                detector.detect([im])
            detect_s.append(time.perf_counter() - t)
        ms = {r: {n: 1000 * statistics.median(v) / len(images) for n, v in per.items()} for r, per in times.items()}
        fp32_total = sum(ms["fp32"].values())
        row = {"images": len(images), "calls": {n: len(v) for n, v in inputs.items()},
               "detect_fp32_ms_per_image": round(1000 * statistics.median(detect_s) / len(images), 2),
               "networks_share_of_detect_fp32": round(fp32_total / (1000 * statistics.median(detect_s) / len(images)), 3),
               "recipes": {}}
        for r in names:
            entry = {"ms_per_image": {n: round(v, 2) for n, v in ms[r].items()},
                     "speedup_vs_fp32": {**{n: round(ms["fp32"][n] / ms[r][n], 2) for n in NETS},
                                         "networks": round(fp32_total / sum(ms[r].values()), 2)},
                     "op_ms_per_image": {n: {op: round(v / len(images), 2)
                                             for op, v in op_times(models[r][n], inputs[n], threads).items()}
                                         for n in NETS}}
            if r != "fp32" and all_recipes[r][2]:
                entry["faces_moved"] = faces_moved(detector, runners[r], images)
            row["recipes"][r] = entry
        if "qdq" in names:  # which network moves faces: one int8 network, the other two fp32
            row["qdq_one_network_int8_faces_moved"] = {
                n: faces_moved(detector, {m: runners["qdq" if m == n else "fp32"][m] for m in NETS}, images)
                for n in NETS}
        result["sets"][set_name] = row
    return emit(result, args.out)


if __name__ == "__main__":
    sys.exit(main())
