"""int8 embedder: InceptionResnetV1 -> ONNX -> ONNX Runtime static quantisation (QDQ, int8 per-channel
weights, uint8 activations calibrated on real face crops: model.ort_quant says which and why no benchmark
tests on them), built once per checkpoint when it is first asked for (FACEID_PRECISION=auto or int8,
benchmarks.embed --precision int8) and cached by model version beside the weights, with its gate.

The gate at build (`GATE_*`): on the faces kept back from calibration, cosine to the fp32 network at least
GATE_MIN_COSINE for every face and GATE_MEAN_COSINE on average: what the int8 model that passed the LFW
accuracy gate (benchmarks.embed --precision int8: 10-fold, 1:N FNIR at FPIR 0.01, rank-1, cross-precision)
showed, with a margin. A checkpoint whose int8 model misses it is served in bf16 or folded fp32 instead
(model.fast.plan_precision, model.pipeline.Embedder).
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from model.ort_quant import calibration_images, cpu_has_vnni, faces_root, quantize, split_calibration
from model.preprocessing import normalize

log = logging.getLogger(__name__)

RECIPE = "qdq-s8w-perchannel-u8a-minmax-2"  # part of the cached file's name: a new recipe rebuilds
GATE_MIN_COSINE = 0.995
GATE_MEAN_COSINE = 0.999


def int8_path(version: str) -> Path:
    from model.weights import checkpoint_dir

    return checkpoint_dir() / f"embedder-{version}-int8-{RECIPE}.onnx"


class _Features(nn.Module):
    """The network without the final L2 normalisation (done in fp32 outside, in the one usual place)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net.forward_head(self.net.forward_features(x))


def export_embedder(net: nn.Module) -> bytes:
    """fp32 ONNX of the embedder (batch-norm folded), input 'x' (n, 3, S, S) normalised, output 'features'."""
    from model.fast import fold_batchnorm

    folded = _Features(fold_batchnorm(net).float().cpu().to(memory_format=torch.contiguous_format)).eval()
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")
        torch.onnx.export(folded, (torch.zeros(2, 3, 160, 160),), buf, input_names=["x"], output_names=["features"],
                          dynamic_axes={"x": {0: "n"}, "features": {0: "n"}}, opset_version=17, dynamo=False)
    return buf.getvalue()


class OrtEmbedder(nn.Module):
    """Calls an ONNX Runtime session like the PyTorch network: normalised (n, 3, S, S) -> unit vectors."""

    def __init__(self, onnx_bytes: bytes, threads: int | None = None):
        super().__init__()
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = torch.from_numpy(self.session.run(None, {"x": x.detach().float().contiguous().cpu().numpy()})[0])
        return torch.nn.functional.normalize(feats, p=2, dim=1)


def load_int8(version: str, device: torch.device) -> OrtEmbedder:
    """The quantised embedder of model `version` as built (whatever its gate said: for the benchmarks); a
    WeightsError says how to make it when it is missing."""
    from model.weights import WeightsError

    if torch.device(device).type != "cpu":
        raise WeightsError("precision int8 runs on CPU (ONNX Runtime); on CUDA use fast")
    path = int8_path(version)
    if not path.is_file():
        raise WeightsError(f"no int8 model for version {version} at {path}: FACEID_PRECISION=auto or int8 (or "
                           f"`python -m benchmarks.embed --precision int8`) builds it (needs face crops to calibrate)")
    return OrtEmbedder(path.read_bytes())


def calibration_crops(n: int = 320, root: Path | None = None) -> np.ndarray:
    """Face crops of calibration_images (largest face, as the service crops), (n, 160, 160, 3) uint8."""
    from model import align
    from model.decode import decode_image
    from model.mtcnn import MTCNN
    from model.weights import _read, fetch

    paths = calibration_images(n, root)
    det = MTCNN().load_weights(_read(fetch("mtcnn")))  # as model.pipeline.load_detector (not imported: a cycle)
    crops = []
    for start in range(0, len(paths), 16):
        images = [decode_image(p.read_bytes()) for p in paths[start:start + 16]]
        for im, d in zip(images, det.detect(images)):
            box = d.boxes[int(np.argmax(d.scores))] if len(d) else align.centre_box(im.width, im.height, 0.45)
            crops.append(align.crop(im, box, 160, 14))
    return np.stack(crops) if crops else np.zeros((0, 160, 160, 3), np.uint8)


def gate(reference: torch.Tensor, got: torch.Tensor) -> dict:
    """Cosine of int8 embeddings to fp32 ones on faces it was not calibrated on, and whether they pass."""
    cos = (reference.float() * got.float()).sum(1).numpy()
    return {"faces": len(cos), "cosine_min": round(float(cos.min()), 5), "cosine_mean": round(float(cos.mean()), 5),
            "min_required": GATE_MIN_COSINE, "mean_required": GATE_MEAN_COSINE,
            "passed": bool(cos.min() >= GATE_MIN_COSINE and cos.mean() >= GATE_MEAN_COSINE)}


def build_int8(ckpt, net: nn.Module, n: int = 320) -> tuple[Path, dict]:
    """Quantise checkpoint `ckpt` (a model.pipeline.Checkpoint; `net` its network), check it, and write it to
    int8_path(version) with a JSON sidecar holding the gate; (path, info). ValueError without faces."""
    crops = calibration_crops(n)
    if len(crops) < 32:
        raise ValueError(f"too few calibration faces ({len(crops)}) under {faces_root()} (FACEID_FACES_DIR)")
    x = normalize(torch.from_numpy(crops).permute(0, 3, 1, 2), ckpt.preprocessing.normalization).float()
    calib, check = (torch.stack(s) for s in split_calibration(list(x)))
    data = quantize(export_embedder(net), np.ascontiguousarray(calib.numpy()))
    with torch.inference_mode():
        reference = net.float().eval()(check)
    result = gate(reference, OrtEmbedder(data)(check))
    path = int8_path(ckpt.version)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # workers may build at once
    tmp.write_bytes(data)
    info = {"version": ckpt.version, "name": ckpt.name, "recipe": RECIPE, "sha256": hashlib.sha256(data).hexdigest(),
            "calibration": f"{len(calib)} LFW crops of cohort people outside View 2; gate on {len(check)} others",
            "format": "QDQ, per-channel int8 weights, uint8 activations, MinMax", "vnni": cpu_has_vnni(),
            "gate": result}
    side = path.with_suffix(".json")
    tmp_side = side.with_name(f".{side.name}.{os.getpid()}.tmp")
    tmp_side.write_text(json.dumps(info, indent=1))
    tmp.replace(path)  # atomic publish, model first: a sidecar never describes a missing file
    tmp_side.replace(side)
    return path, info


def int8_embedder(ckpt, net: nn.Module | None = None, build: bool = True) -> tuple[OrtEmbedder | None, str]:
    """(the checkpoint's int8 embedder, why) or (None, why not): read from the cache when its sidecar matches
    the file and this recipe, else built and gated now (once: a failed gate is cached too)."""
    path = int8_path(ckpt.version)
    side = path.with_suffix(".json")
    info = None
    if path.is_file() and side.is_file():
        try:
            info = json.loads(side.read_text())
            data = path.read_bytes()
            if info.get("recipe") != RECIPE or info.get("sha256") != hashlib.sha256(data).hexdigest():
                info = None
        except (OSError, ValueError):
            info = None
    if info is None:
        if not build or net is None:
            return None, f"no int8 model of {ckpt.version} cached at {path}"
        try:
            path, info = build_int8(ckpt, net)
        except (ValueError, OSError, RuntimeError, ImportError) as exc:  # ImportError: no onnxruntime
            log.warning("no int8 embedder for %s: %s", ckpt.version, exc)
            return None, f"int8 model could not be built: {exc}"
        data = path.read_bytes()
        log.info("built the int8 embedder of %s: %s", ckpt.version, info["gate"])
    g = info["gate"]
    figures = f"cosine to fp32 min {g['cosine_min']}, mean {g['cosine_mean']} on {g['faces']} faces"
    if not g["passed"]:
        return None, (f"int8 model failed its gate ({figures}; needs min {g['min_required']}, "
                      f"mean {g['mean_required']})")
    try:
        return OrtEmbedder(data), f"int8 model passed its gate ({figures})"
    except Exception as exc:  # noqa: BLE001 - onnxruntime's own error types: the float path serves instead
        return None, f"int8 model could not be loaded: {type(exc).__name__}: {str(exc)[:200]}"
