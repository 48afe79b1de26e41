"""model.crops.face_crops: which face of an image with several it crops (the largest, or the one at the centre)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from model.crops import face_crops
from model.pipeline import FacePipeline
from tests.app.fakes import FakeDetector


def _pipeline() -> FacePipeline:
    return FacePipeline(FakeDetector(), None, 1600, edge_pad_fraction=0.0)


@pytest.fixture
def photo(tmp_path):
    """A big red 'face' in a corner and a smaller green one at the centre (FakeDetector: a coloured block is a face)."""
    arr = np.zeros((200, 200, 3), np.uint8)
    arr[5:95, 5:95] = (255, 0, 0)
    arr[85:115, 85:115] = (0, 255, 0)
    path = tmp_path / "two.png"
    Image.fromarray(arr).save(path)
    return path


@pytest.mark.parametrize("select, colour", [("largest", 0), ("centre", 1)])
def test_the_largest_face_or_the_one_at_the_centre(photo, select, colour):
    crops, misses = face_crops(_pipeline(), [photo], 32, 0, select=select)
    assert misses == 0 and crops.shape == (1, 32, 32, 3)
    assert int(np.argmax(crops[0].reshape(-1, 3).mean(axis=0))) == colour


def test_an_unknown_choice_is_refused(photo):
    with pytest.raises(ValueError):
        face_crops(_pipeline(), [photo], 32, 0, select="first")
