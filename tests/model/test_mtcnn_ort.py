"""The ONNX Runtime detector backend finds the same faces as the PyTorch one (only the network calls differ)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")

from model.pipeline import FacePipeline, load_detector, resolve_detector_backend  # noqa: E402


@pytest.fixture(scope="module")
def detectors():
    return load_detector(backend="torch"), load_detector(backend="onnxruntime")


@pytest.mark.parametrize("name,shape", [("pnet", (2, 3, 37, 53)), ("pnet", (1, 3, 12, 12)),
                                        ("rnet", (5, 3, 24, 24)), ("onet", (3, 3, 48, 48))])
def test_onnxruntime_networks_equal_pytorch(detectors, name, shape):
    torch_det, ort_det = detectors
    x = torch.from_numpy(np.random.default_rng(0).standard_normal(shape).astype(np.float32))
    with torch.inference_mode():
        ref = getattr(torch_det, name)(x)
    got = ort_det._runners[name](x)
    assert len(ref) == len(got)
    for r, g in zip(ref, got):
        assert r.shape == g.shape
        assert (r - g).abs().max() < 1e-4


def test_auto_backend_is_onnxruntime_on_cpu_and_torch_on_cuda():
    assert resolve_detector_backend(torch.device("cpu"), "auto") == "onnxruntime"
    assert resolve_detector_backend(torch.device("cuda"), "auto") == "torch"
    assert resolve_detector_backend(torch.device("cpu"), "torch") == "torch"


def test_unknown_backend_is_refused(detectors):
    with pytest.raises(ValueError):
        load_detector(backend="tensorrt")


def _confident_unmatched(a, b, min_score: float = 0.95, min_iou: float = 0.99) -> int:
    """Confident faces of `a` with no face in `b` at IoU >= min_iou."""
    from torchvision.ops import box_iou

    confident = a.boxes[a.scores >= min_score]
    if len(confident) == 0:
        return 0
    if len(b) == 0:
        return len(confident)
    iou = box_iou(torch.from_numpy(confident), torch.from_numpy(b.boxes)).max(1).values
    return int((iou < min_iou).sum())


@pytest.mark.faces
@pytest.mark.slow
def test_onnxruntime_finds_the_faces_pytorch_finds_on_real_photos(faces, detectors):
    """The 61 photos at 640 px and 64 LFW images: every confident face of one backend is found by the
    other at IoU >= 0.99, with the same scores to 1e-3."""
    from PIL import Image

    from model.decode import decode_image

    torch_det, ort_det = detectors
    images = []
    for p in sorted((faces / "photos").glob("*/*.jpg")):
        im = decode_image(p.read_bytes())
        im.thumbnail((640, 640), Image.BILINEAR)
        images.append(np.asarray(im))
    images += [np.asarray(decode_image(p.read_bytes())) for p in sorted((faces / "lfw").glob("*/*_0001.jpg"))[:64]]
    unmatched, confident = 0, 0
    for a, b in zip(torch_det.detect(images), ort_det.detect(images)):
        unmatched += _confident_unmatched(a, b) + _confident_unmatched(b, a)
        confident += int((a.scores >= 0.95).sum())
    assert confident > 100
    assert unmatched == 0


@pytest.mark.faces
def test_onnxruntime_finds_the_seven_faces_of_the_group_selfie(faces, detectors, pipeline):
    from model.decode import decode_image

    image = decode_image((faces / "multi" / "selfie-many-people.jpg").read_bytes())
    ort_pipeline = FacePipeline(detectors[1], pipeline.embedder, pipeline.max_detect_side)
    got, ref = ort_pipeline.detect([image])[0], pipeline.detect([image])[0]
    assert len(got) == 7
    assert _confident_unmatched(ref, got) == 0 and _confident_unmatched(got, ref) == 0
