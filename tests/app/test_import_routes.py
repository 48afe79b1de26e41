"""POST /faces/import in process (TestClient, the real FaceService and store over fake networks, 32 px crops):
a crop's size is checked from its header before anything is decoded, every crop and its metadata are checked
before anything is stored, and a refused request changes nothing."""
from __future__ import annotations

import base64
import struct
import zlib

import numpy as np
import pytest

from app.gallery.store import crop_to_png
from tests.app.test_routes import error, make_client, store  # noqa: F401 - fixtures

SIZE = 32  # tests/app/fakes.py FakeEmbedder's input size


@pytest.fixture
def client(store, tmp_path):  # noqa: F811
    c, service = make_client(store, tmp_path)
    yield c
    service.close()


def face(crop_png: bytes, **over) -> dict:
    return {"crop": base64.b64encode(crop_png).decode(), "source_sha256": "a" * 64, "box": [1.0, 2.0, 30.0, 31.0],
            "landmarks": [[5.0, 6.0]] * 5, "detection_score": 0.99, "crop_margin": 0, **over}


def noisy_crop(seed: int = 0, size: int = SIZE) -> bytes:
    return crop_to_png(np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8))


def header_only_png(width: int, height: int) -> bytes:
    """A PNG that declares width x height RGBA and carries no valid pixel data: its header reads, decoding it
    fails (corrupt_image), so an answer about its size shows that the header was checked first."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0))
            + chunk(b"IDAT", b"not a zlib stream" * 4) + chunk(b"IEND", b""))


def faces_stored(store) -> int:  # noqa: F811
    return sum(n for _, n in store.list_identities(0, 100)[0])


def test_import_stores_valid_crops(client, store):  # noqa: F811
    r = client.post("/faces/import", json={"label": "Ada", "faces": [face(noisy_crop(0)), face(noisy_crop(1))]})
    assert r.status_code == 201, r.text
    assert faces_stored(store) == 2


def test_a_crop_declaring_a_huge_canvas_is_refused_from_its_header_before_decoding(client, store):  # noqa: F811
    # 6320 x 6320 RGBA is issue 27's bomb; without pixels, decoding would fail with corrupt_image: the header
    # check must come first (and for a real bomb, before gigabytes are decoded)
    r = client.post("/faces/import", json={"label": "Ada", "faces": [face(noisy_crop()),
                                                                      face(header_only_png(6320, 6320))]})
    assert "160" not in error(r, 422, "crop_size_mismatch")["message"] and faces_stored(store) == 0


@pytest.mark.parametrize("bad,code", [
    ({"crop": "FLAT"}, "flat_crop"),
    ({"box": [10.0, 10.0, 0.0, 0.0]}, "invalid_request"),
    ({"box": [10.0, 10.0, 10.0, 20.0]}, "invalid_request"),
    ({"landmarks": []}, "invalid_request"),
    ({"landmarks": [[1.0, 2.0]] * 4}, "invalid_request"),
])
def test_bad_crops_and_metadata_are_refused_and_change_nothing(client, store, bad, code):  # noqa: F811
    if bad.get("crop") == "FLAT":
        bad = {"crop": base64.b64encode(crop_to_png(np.full((SIZE, SIZE, 3), 128, np.uint8))).decode()}
    good = face(noisy_crop(0))
    r = client.post("/faces/import", json={"label": "Ada", "faces": [good, {**face(noisy_crop(1)), **bad}]})
    error(r, 422, code)
    assert faces_stored(store) == 0


def test_a_wrong_sized_last_crop_refuses_the_whole_request(client, store):  # noqa: F811
    faces = [face(noisy_crop(i)) for i in range(4)] + [face(noisy_crop(9, size=20))]
    error(client.post("/faces/import", json={"label": "Ada", "faces": faces}), 422, "crop_size_mismatch")
    assert faces_stored(store) == 0


def test_import_decodes_under_the_decode_budget(store, tmp_path):  # noqa: F811
    # a 32 px RGBA PNG decodes within any budget; the budget must be consulted (a 1 MiB request budget is
    # plenty): this checks the route goes through it rather than around it
    c, service = make_client(store, tmp_path, max_decode_bytes=2**20, max_decode_bytes_per_request=2**20)
    try:
        held = []
        real_hold = service.decode_budget.hold

        def spy(n, request=None):
            held.append(n)
            return real_hold(n, request)

        service.decode_budget.hold = spy
        r = c.post("/faces/import", json={"label": "Ada", "faces": [face(noisy_crop(0)), face(noisy_crop(1))]})
        assert r.status_code == 201, r.text
        assert len(held) == 2 and all(n >= SIZE * SIZE * 3 for n in held)
        assert service.decode_budget.total.used == 0
    finally:
        service.close()
