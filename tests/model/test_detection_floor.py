"""Detection sized to the request (issue 33): with a smallest face wanted, MTCNN keeps the pyramid levels
that find faces that large and skips the finer ones (the costliest: PNet's work grows with the square of
the scale). On real photos the faces at or above that size come out the same (IoU >= 0.9, each way), and
the service looks for faces down to its search gate only, unless FACEID_DETECT_BELOW_GATE."""
from __future__ import annotations

import numpy as np

from model.mtcnn_ort import unmatched_faces

GATE = 24


def test_the_floor_skips_only_the_finest_levels(pipeline):
    det = pipeline.detector
    for h, w in ((250, 250), (480, 640), (1280, 960)):
        full, floored = det._scales(h, w), det._scales(h, w, GATE)
        assert floored == full[len(full) - len(floored):] and len(floored) < len(full)
        assert floored[0] <= 12 / GATE < full[0]
        assert det._scales(h, w, det.min_face_size - 1) == full  # a floor below the detector's own: no change


def test_the_same_faces_at_or_above_the_floor_on_real_photos(faces, pipeline):
    photos = sorted((faces / "photos").glob("*/*.jpg"))[::4] + [faces / "multi" / "selfie-many-people.jpg"]
    checked = 0
    for path in photos:
        image = pipeline.decode(path.read_bytes())
        [everything] = pipeline.detect([image])
        [floored] = pipeline.detect([image], [GATE])
        assert unmatched_faces(everything, floored, 0.9, GATE) == 0, path.name  # none lost
        assert unmatched_faces(floored, everything, 0.9, GATE) == 0, path.name  # none added
        sizes = np.minimum(everything.boxes[:, 2] - everything.boxes[:, 0], everything.boxes[:, 3] - everything.boxes[:, 1])
        checked += int((sizes >= GATE).sum())
    assert checked >= 20  # every fourth photo's faces and the 7-face selfie's, all compared
