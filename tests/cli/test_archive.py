"""`faceid import` against the real service in process (FaceIDClient over the TestClient's transport, the real
FaceService and store over fake networks, 32 px crops): idempotent for labels that are not NFC or carry
spaces, refuses a zip bomb from the declared member size before reading it, and refuses an archive with a
crop of another size before sending anything."""
from __future__ import annotations

import hashlib
import json
import unicodedata
import zipfile

import numpy as np
import pytest

from app.gallery.store import crop_to_png
from faceid_client.archive import ArchiveError, import_gallery, read_archive
from faceid_client.client import FaceIDClient
from tests.app.conftest import migrated_db  # noqa: F401 - fixture (tests/app's conftest is not seen from here)
from tests.app.test_routes import make_client, store  # noqa: F401 - fixtures

NFD = unicodedata.normalize("NFD", "Zoë Ångström")


def write_archive(path, people: dict[str, list[bytes]], sizes: dict[bytes, int] | None = None):
    identities, n = [], 0
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for label, crops in people.items():
            faces = []
            for crop in crops:
                n += 1
                name = f"crops/{n:07d}.png"
                zf.writestr(name, crop)
                faces.append({"crop": name, "crop_sha256": hashlib.sha256(crop).hexdigest(),
                              "source_sha256": f"{n:064d}", "box": [1.0, 2.0, 30.0, 31.0],
                              "landmarks": [[5.0, 6.0]] * 5, "detection_score": 0.99,
                              "crop_size": (sizes or {}).get(crop, 32), "crop_margin": 0,
                              "created_at": "2026-01-01T00:00:00+00:00"})
            identities.append({"label": label, "faces": faces})
        zf.writestr("manifest.json", json.dumps({"format": "faceid-gallery", "version": 1, "identities": identities,
                                                 "counts": {"identities": len(identities), "faces": n}}))
    return path


def crops(seed: int, n: int, size: int = 32) -> list[bytes]:
    rng = np.random.default_rng(seed)
    return [crop_to_png(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)) for _ in range(n)]


@pytest.fixture
def api(store, tmp_path):  # noqa: F811
    c, service = make_client(store, tmp_path)
    client = FaceIDClient("http://localhost", transport=c._transport, retries=0)
    yield client
    service.close()


def faces_per_label(store) -> dict[str, int]:  # noqa: F811
    return {i.label: n for i, n in store.list_identities(0, 100)[0]}


def test_import_is_idempotent_for_labels_that_are_not_nfc_or_carry_spaces(api, store, tmp_path):  # noqa: F811
    path = write_archive(tmp_path / "g.zip", {NFD: crops(0, 3), "Trailing Space ": crops(1, 3)})
    for run in range(3):
        report = import_gallery(api, path)
        assert report.verified, report.problems
        assert report.faces_added == (6 if run == 0 else 0) and report.faces_present == (0 if run == 0 else 6)
        assert faces_per_label(store) == {"Zoë Ångström": 3, "Trailing Space": 3}


def test_a_crop_that_inflates_past_the_cap_is_refused_before_it_is_read(tmp_path):
    bomb = bytes(64 * 2**20)  # zeros: 64 kB deflated; the hash matches, as in issue 27 (1 GiB there)
    path = write_archive(tmp_path / "bomb.zip", {"a": crops(0, 1) + [bomb]})
    assert path.stat().st_size < 100_000
    with pytest.raises(ArchiveError, match="declares"):
        read_archive(path)


def test_an_archive_with_a_crop_of_another_size_changes_nothing(api, store, tmp_path):  # noqa: F811
    small = crops(9, 1, size=20)[0]
    path = write_archive(tmp_path / "g.zip", {"a": crops(0, 12), "b": crops(1, 11) + [small]}, sizes={small: 20})
    with pytest.raises(ArchiveError, match="different sizes"):
        import_gallery(api, path)
    assert faces_per_label(store) == {}
    lying = write_archive(tmp_path / "lie.zip", {"a": crops(0, 2) + [small]})  # says 32 px, is 20 px
    with pytest.raises(ArchiveError, match="20x20"):
        import_gallery(api, lying)
    assert faces_per_label(store) == {}
