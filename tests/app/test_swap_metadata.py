"""A checkpoint's metadata is checked before it may serve (issue 19, item 6); crops never stacked mixed."""
from __future__ import annotations

import math

import numpy as np
import pytest

from app.services.checkpoints import fit_crops, metadata_problem
from model.pipeline import Checkpoint
from model.weights import Preprocessing

SERVING = Preprocessing()


def ckpt(thresholds=None, **pre) -> Checkpoint:
    return Checkpoint(state_dict={}, name="x", version="x", preprocessing=Preprocessing(**pre),
                      thresholds=thresholds or {})


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan, "0.5", True, 1.5, -2, None])
def test_the_calibrated_threshold_must_be_a_finite_number_in_range(value):
    problem = metadata_problem(ckpt({"cosine": value}))
    assert problem and "threshold" in problem
    assert metadata_problem(ckpt({"cosine": -1})) is None


def test_sound_metadata_passes_and_other_calibration_fields_are_left_alone():
    assert metadata_problem(ckpt({"cosine": 0.42, "calibration": "held-out", "impostor_tail": {"p": [1]}}),
                            SERVING) is None
    assert metadata_problem(ckpt()) is None


@pytest.mark.parametrize("pre,word", [({"image_size": 4}, "image_size"), ({"image_size": "160"}, "image_size"),
                                      ({"margin": -1}, "margin"), ({"normalization": "nope"}, "normalization"),
                                      ({"embedding_size": 0}, "embedding_size")])
def test_insane_preprocessing_is_refused(pre, word):
    assert word in metadata_problem(ckpt(**pre))


def test_a_swap_must_keep_the_stored_crops_size_and_margin():
    assert "stored crops" in metadata_problem(ckpt(image_size=112), SERVING)
    assert "stored crops" in metadata_problem(ckpt(margin=0), SERVING)
    assert metadata_problem(ckpt(image_size=112)) is None  # at start-up with a fresh gallery: fine


def test_crops_of_another_size_are_resized_not_stacked_mixed():
    crops = [np.zeros((160, 160, 3), np.uint8), np.full((112, 112, 3), 7, np.uint8)]
    out = fit_crops(crops, 160)
    assert out.shape == (2, 160, 160, 3) and out[1].min() == out[1].max() == 7
    assert fit_crops([], 160).shape == (0, 160, 160, 3)


@pytest.mark.parametrize("name", [{"a": 1}, 12345, None, "", "x" * 201, "line\nbreak"])
def test_a_name_that_is_not_a_short_string_is_refused(name):
    problem = metadata_problem(Checkpoint(state_dict={}, name=name, version="x", preprocessing=Preprocessing()))
    assert problem and "name" in problem


@pytest.mark.parametrize("claimed", ["0123456789abcdef", 12345, "v" * 200, None])
def test_the_version_is_the_weights_content_hash_whatever_the_file_claims(tmp_path, claimed):
    import torch

    from model.pipeline import load_checkpoint
    from model.weights import state_dict_hash

    sd = {"w": torch.arange(6, dtype=torch.float32)}
    torch.save({"state_dict": sd, "metadata": {"name": "n", "version": claimed}}, tmp_path / "c.pt")
    version = load_checkpoint(tmp_path / "c.pt").version
    assert version == state_dict_hash(sd)[:16] and isinstance(version, str) and len(version) == 16
