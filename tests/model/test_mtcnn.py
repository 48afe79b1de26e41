"""MTCNN: converted networks equal the ONNX originals; detection on real photos; vectorised crops and NMS."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from model.mtcnn import area_crops, nms_min, _integral
from model.pipeline import load_detector
from model.weights import REGISTRY, read_offline_member


@pytest.fixture(scope="module")
def detector():
    return load_detector()


@pytest.mark.parametrize("name,shape", [("pnet", (2, 3, 30, 41)), ("rnet", (3, 3, 24, 24)), ("onet", (2, 3, 48, 48))])
def test_networks_match_onnx_reference(detector, name, shape):
    from onnx.reference import ReferenceEvaluator

    src = next(s for s in REGISTRY["mtcnn"].offline if s.member == f"{name}.onnx")
    sess = ReferenceEvaluator(read_offline_member(src))
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    ref = sess.run(None, {sess.input_names[0]: x.transpose(0, 3, 2, 1)})  # those nets take (N, W, H, C)
    with torch.no_grad():
        ours = [o.numpy() for o in getattr(detector, name)(torch.from_numpy(x))]
    if name == "pnet":
        ours = [o.transpose(0, 3, 2, 1) for o in ours]
    for r, o in zip(ref, ours):
        assert r.shape == o.shape
        assert np.abs(r - o).max() < 1e-5


def test_area_crops_equal_per_box_interpolate():
    gen = torch.Generator().manual_seed(0)
    imgs = [torch.randint(0, 256, (3, 37, 53), generator=gen, dtype=torch.uint8),
            torch.randint(0, 256, (3, 20, 18), generator=gen, dtype=torch.uint8)]
    regions = torch.tensor([[0, 0, 53, 37], [5, 3, 30, 29], [-4, -2, 10, 12], [40, 30, 60, 45], [2, 1, 17, 19]])
    inds = torch.tensor([0, 0, 0, 0, 1])
    got = area_crops([_integral(i) for i in imgs], inds, regions, 24)
    for k, (x1, y1, x2, y2) in enumerate(regions.tolist()):
        img = imgs[inds[k]].float()
        padded = torch.zeros(3, y2 - y1, x2 - x1)  # zero outside the image
        sy, sx = max(y1, 0), max(x1, 0)
        ey, ex = min(y2, img.shape[1]), min(x2, img.shape[2])
        padded[:, sy - y1:ey - y1, sx - x1:ex - x1] = img[:, sy:ey, sx:ex]
        want = F.interpolate(padded[None], size=(24, 24), mode="area")[0]
        assert torch.allclose(got[k], want, atol=1e-3), k


def test_integral_image_is_exact_past_int32():
    small = _integral(torch.full((3, 100, 100), 255, dtype=torch.uint8))
    assert small.dtype == torch.int32 and int(small[-1, -1, 0]) == 255 * 100 * 100
    big = _integral(torch.full((3, 3000, 3000), 255, dtype=torch.uint8))  # 255 * 9e6 > 2**31
    assert big.dtype == torch.int64 and int(big[-1, -1, 2]) == 255 * 3000 * 3000


def test_nms_min_matches_brute_force():
    rng = np.random.default_rng(3)
    xy = rng.uniform(0, 50, (30, 2))
    wh = rng.uniform(5, 30, (30, 2))
    boxes = torch.tensor(np.c_[xy, xy + wh], dtype=torch.float32)
    scores = torch.tensor(rng.uniform(0, 1, 30), dtype=torch.float32)
    groups = torch.tensor(rng.integers(0, 2, 30))
    keep = set(nms_min(boxes, scores, groups, 0.5).tolist())

    def overlap(a, b):
        iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]) + 1)
        ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]) + 1)
        area = lambda r: (r[2] - r[0] + 1) * (r[3] - r[1] + 1)  # noqa: E731
        return iw * ih / min(area(a), area(b))

    want, b = [], boxes.tolist()
    for i in sorted(range(30), key=lambda i: -scores[i].item()):
        if all(groups[i] != groups[j] or overlap(b[i], b[j]) <= 0.5 for j in want):
            want.append(i)
    assert keep == set(want)


def test_batch_of_different_sizes_equals_one_by_one(detector):
    gen = np.random.default_rng(1)
    images = [gen.integers(0, 255, (h, w, 3), dtype=np.uint8) for h, w in ((120, 90), (64, 64), (120, 90))]
    together = detector.detect(images)
    for im, det in zip(images, together):
        alone = detector.detect([im])[0]
        assert np.allclose(alone.boxes, det.boxes, atol=1e-3) and np.allclose(alone.scores, det.scores, atol=1e-5)


@pytest.mark.faces
def test_finds_the_faces_of_the_group_selfie(faces, pipeline):
    from model.decode import decode_image

    image = decode_image((faces / "multi" / "selfie-many-people.jpg").read_bytes())
    det = pipeline.detect([image])[0]
    # 7 people, three of them cut by the frame (found thanks to the mirrored border)
    assert len(det) == 7
    assert (det.scores > 0.9).all()
    w = det.boxes[:, 2] - det.boxes[:, 0]
    assert (w > 60).all()
    # landmarks lie inside their boxes (eyes above mouth)
    assert (det.landmarks[:, 0:2, 1] < det.landmarks[:, 3:5, 1]).all()


@pytest.mark.faces
@pytest.mark.slow
def test_finds_a_face_in_every_photo(faces, pipeline):
    from model.decode import decode_image

    paths = sorted((faces / "photos").glob("*/*.jpg"))
    assert len(paths) >= 50
    images = [decode_image(p.read_bytes()) for p in paths]
    missed = [str(p) for p, d in zip(paths, pipeline.detect(images)) if len(d) == 0]
    assert missed == []


@pytest.mark.faces
@pytest.mark.slow  # real weights
def test_antialiased_pyramid_finds_the_faces_the_area_pyramid_finds(faces):
    """The fast pyramid (antialiased bilinear) against facenet-pytorch's (area): confident faces agree."""
    from PIL import Image
    from torchvision.ops import box_iou

    from model.decode import decode_image

    fast, area = load_detector(), load_detector()
    area.resample = "area"
    images = []
    for p in sorted((faces / "photos").glob("*/*.jpg")):
        im = decode_image(p.read_bytes())
        im.thumbnail((640, 640), Image.BILINEAR)
        images.append(np.asarray(im))
    unmatched = 0
    for a, b in zip(fast.detect(images), area.detect(images)):
        for one, other in ((a, b), (b, a)):
            confident = one.boxes[one.scores >= 0.95]
            if len(confident) == 0:
                continue
            if len(other) == 0:
                unmatched += len(confident)
                continue
            iou = box_iou(torch.from_numpy(confident), torch.from_numpy(other.boxes)).max(1).values
            unmatched += int((iou < 0.5).sum())
    assert unmatched == 0
