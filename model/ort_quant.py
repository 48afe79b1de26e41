"""ONNX Runtime static int8 quantisation (QDQ) and the face images it is calibrated on; shared by the
int8 embedder (model.quantize) and the int8 detector (model.mtcnn_ort). Imports no other model module but
model.calibration, so both may use it.

Calibration faces (`calibration_images`): LFW images of the cohort's one-image people
(`model.calibration.cohort.cohort_people`) that are not in the View 2 pairs. No benchmark searches or scores them:
benchmarks.openset and benchmarks.quality leave the cohort's people out, benchmarks.lfw reads View 2 only,
benchmarks.detect's LFW sample skips them. Every fourth is kept back to check the quantised model on.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np


def cpu_has_vnni() -> bool:
    """int8 dot products in one instruction (AVX512-VNNI or AVX-VNNI, or AMX): where int8 pays."""
    from model.fast import INT8_FLAGS, cpu_flags

    return any(f in cpu_flags() for f in INT8_FLAGS)


def quantize(onnx_fp32: bytes, calibration, reduce_range: bool | None = None, batch: int = 16,
             exclude: list[str] | None = None, **options) -> bytes:
    """QDQ int8 model from fp32 ONNX bytes. `calibration`: an array of inputs for 'x' (cut into batches of
    `batch`) or a list of input arrays of any shapes. `exclude`: node names left in float. `options`:
    quantize_static arguments that replace this recipe's (benchmarks.detect_int8 tries other recipes)."""
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    feeds = ([calibration[i:i + batch] for i in range(0, len(calibration), batch)]
             if isinstance(calibration, np.ndarray) else list(calibration))

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"x": np.ascontiguousarray(f, dtype=np.float32)} for f in feeds])

        def get_next(self):
            return next(self.batches, None)

    if reduce_range is None:
        reduce_range = not cpu_has_vnni()  # 7-bit weights avoid the u8*s8 pair-sum overflow of plain AVX2
    with tempfile.TemporaryDirectory() as tmp:
        src, pre, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(onnx_fp32)
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        recipe = {"quant_format": QuantFormat.QDQ, "per_channel": True, "activation_type": QuantType.QUInt8,
                  "weight_type": QuantType.QInt8, "reduce_range": reduce_range,
                  "calibrate_method": CalibrationMethod.MinMax, "nodes_to_exclude": exclude or []}
        quantize_static(str(pre), str(dst), Reader(), **{**recipe, **options})
        return dst.read_bytes()


def faces_root(root: Path | None = None) -> Path:
    return Path(root or os.environ.get("FACEID_FACES_DIR") or Path(__file__).resolve().parents[2] / "shared" / "faces")


def calibration_images(n: int = 320, root: Path | None = None) -> list[Path]:
    """`n` LFW images of the cohort's one-image people outside the View 2 pairs, spread over the alphabet;
    [] without the face data. See the module docstring for why no benchmark tests on them."""
    from model.calibration.cohort import cohort_people

    root = faces_root(root)
    pairs = root / "lfw-meta" / "pairs.txt"
    if not pairs.is_file():
        return []
    in_pairs = set()  # model/ reads no benchmark module: the View 2 pairs file parsed here (Name i j | A i B j)
    for line in pairs.read_text().split("\n")[1:]:
        parts = line.split()
        if len(parts) in (3, 4):
            names = (parts[0], parts[0]) if len(parts) == 3 else (parts[0], parts[2])
            nums = (parts[1], parts[2]) if len(parts) == 3 else (parts[1], parts[3])
            in_pairs |= {root / "lfw" / n / f"{n}_{int(i):04d}.jpg" for n, i in zip(names, nums)}
    all_paths = sorted((root / "lfw").glob("*/*.jpg"))
    cohort = cohort_people([p.parent.name for p in all_paths])
    paths = [p for p in all_paths if p.parent.name in cohort and p not in in_pairs]
    if len(paths) <= n:
        return paths
    return [paths[i] for i in np.linspace(0, len(paths) - 1, n).astype(int)]


def split_calibration(items: list) -> tuple[list, list]:
    """(calibrate on, check the gate on): every fourth item is kept back for the check."""
    return [x for i, x in enumerate(items) if i % 4 != 3], [x for i, x in enumerate(items) if i % 4 == 3]
