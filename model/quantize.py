"""int8 embedder: InceptionResnetV1 -> ONNX -> ONNX Runtime static quantisation (QDQ, int8 per-channel
weights, uint8 activations calibrated on real face crops), cached beside the weights by model version.

The quantised file is made once per checkpoint with `python -m model.quantize` (it needs face crops for the
calibration, which a server at start-up may not have). It is not a serving precision: it is offered to the
service only once `benchmarks/embed.py --precision int8` shows that it holds by accuracy (LFW 10-fold, 1:N
FNIR at FPIR 0.01, cross-precision rank-1 against fp32); until then only the benchmarks load it.
"""
from __future__ import annotations

import argparse
import io
import json
import logging
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from model.preprocessing import normalize

log = logging.getLogger(__name__)


def cpu_has_vnni() -> bool:
    """int8 dot products in one instruction (AVX512-VNNI or AVX-VNNI, or AMX): where int8 pays."""
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return any(f in flags for f in ("avx512_vnni", "avx_vnni", "amx_int8"))


def int8_path(version: str) -> Path:
    from model.weights import checkpoint_dir

    return checkpoint_dir() / f"embedder-{version}-int8.onnx"


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


def quantize(onnx_fp32: bytes, calibration: np.ndarray, reduce_range: bool | None = None) -> bytes:
    """QDQ int8 model from fp32 ONNX bytes; `calibration`: normalised float32 inputs (n, 3, S, S)."""
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"x": calibration[i:i + 16]} for i in range(0, len(calibration), 16)])

        def get_next(self):
            return next(self.batches, None)

    if reduce_range is None:
        reduce_range = not cpu_has_vnni()  # 7-bit weights avoid the u8*s8 pair-sum overflow of plain AVX2
    with tempfile.TemporaryDirectory() as tmp:
        src, pre, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(onnx_fp32)
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, reduce_range=reduce_range,
                        calibrate_method=CalibrationMethod.MinMax)
        return dst.read_bytes()


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
    """The quantised embedder of model `version`; a WeightsError says how to make it when it is missing."""
    from model.weights import WeightsError

    if torch.device(device).type != "cpu":
        raise WeightsError("precision int8 runs on CPU (ONNX Runtime); on CUDA use fast")
    path = int8_path(version)
    if not path.is_file():
        raise WeightsError(f"no int8 model for version {version} at {path}: make it with "
                           f"`python -m model.quantize --weights <this checkpoint>` (needs face crops to calibrate)")
    return OrtEmbedder(path.read_bytes())


def calibration_crops(n: int = 256, faces_root: Path | None = None) -> np.ndarray:
    """Face crops for calibration: LFW images outside the View 2 pairs (so the LFW figures are not fitted),
    detected and cropped as the service does. (n, 160, 160, 3) uint8."""
    from model import align
    from model.decode import decode_image
    from model.pipeline import load_detector

    import os

    root = Path(faces_root or os.environ.get("FACEID_FACES_DIR") or Path(__file__).resolve().parents[2] / "shared" / "faces")
    in_pairs = set()  # model/ reads no benchmark module: the View 2 pairs file parsed here (Name i j | A i B j)
    for line in (root / "lfw-meta" / "pairs.txt").read_text().split("\n")[1:]:
        parts = line.split()
        if len(parts) in (3, 4):
            names = (parts[0], parts[0]) if len(parts) == 3 else (parts[0], parts[2])
            nums = (parts[1], parts[2]) if len(parts) == 3 else (parts[1], parts[3])
            in_pairs |= {root / "lfw" / n / f"{n}_{int(i):04d}.jpg" for n, i in zip(names, nums)}
    paths = [p for p in sorted((root / "lfw").glob("*/*.jpg")) if p not in in_pairs]
    paths = [paths[i] for i in np.linspace(0, len(paths) - 1, n).astype(int)]  # spread over people
    det = load_detector()
    crops = []
    for start in range(0, len(paths), 16):
        images = [decode_image(p.read_bytes()) for p in paths[start:start + 16]]
        for im, d in zip(images, det.detect(images)):
            box = d.boxes[int(np.argmax(d.scores))] if len(d) else align.centre_box(im.width, im.height, 0.45)
            crops.append(align.crop(im, box, 160, 14))
    return np.stack(crops)


def build_int8(spec: str, n: int = 256) -> tuple[Path, dict]:
    """Quantise checkpoint `spec` and write it to int8_path(version) with a JSON sidecar; (path, info)."""
    from model.pipeline import build_network, load_checkpoint

    ckpt = load_checkpoint(spec)
    crops = calibration_crops(n)
    x = normalize(torch.from_numpy(crops).permute(0, 3, 1, 2), ckpt.preprocessing.normalization).numpy()
    data = quantize(export_embedder(build_network(ckpt)), np.ascontiguousarray(x, dtype=np.float32))
    path = int8_path(ckpt.version)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)  # atomic publish: a reader never sees half a file
    info = {"version": ckpt.version, "name": ckpt.name, "calibration": f"{len(crops)} LFW crops outside View 2 pairs",
            "format": "QDQ, per-channel int8 weights, uint8 activations, MinMax", "vnni": cpu_has_vnni()}
    path.with_suffix(".json").write_text(json.dumps(info, indent=1))
    return path, info


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m model.quantize", description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default="casia-webface", help="registry name or checkpoint path")
    ap.add_argument("--calibration-faces", type=int, default=256)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    path, info = build_int8(args.weights, args.calibration_faces)
    print(json.dumps({"path": str(path), **info}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
