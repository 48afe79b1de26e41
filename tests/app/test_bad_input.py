"""Every kind of bad input: a 4xx with its own error code, and the gallery unchanged (the app in process)."""
from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from PIL import Image

from tests.app.conftest import gallery_state, png_bytes

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client(app_client):
    """The app in process (nothing here needs a socket), real weights, both backends."""
    return app_client


@pytest.fixture(scope="module")
def face_jpeg(faces) -> bytes:
    return sorted((faces / "photos" / "Jennifer_Aniston").glob("*.jpg"))[0].read_bytes()


def blank_png() -> bytes:
    return png_bytes(np.full((240, 320, 3), 128, np.uint8))


def huge_canvas() -> bytes:
    return png_bytes(np.zeros((6000, 6000), np.uint8))  # 36 MP, a few kB: over the 30 MP limit


def gif() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (255, 0, 0)).save(buf, format="GIF")
    return buf.getvalue()


# (id, url, request kwargs from the face JPEG, status, code)
CASES = [
    ("not_an_image", "/enroll", lambda f: {"data": {"label": "x"}, "files": {"files": ("a.jpg", b"hello, I am text")}},
     422, "not_an_image"),
    ("truncated", "/enroll", lambda f: {"data": {"label": "x"}, "files": {"files": ("a.jpg", f[: len(f) // 3])}},
     422, "corrupt_image"),
    ("gif", "/enroll", lambda f: {"data": {"label": "x"}, "files": {"files": ("a.gif", gif())}},
     415, "unsupported_format"),
    ("too_many_bytes", "/enroll", lambda f: {"data": {"label": "x"},
                                             "files": {"files": ("a.jpg", b"\xff" * (5 * 1024 * 1024))}},
     413, "payload_too_large"),
    ("too_many_pixels", "/enroll", lambda f: {"data": {"label": "x"}, "files": {"files": ("a.png", huge_canvas())}},
     413, "too_many_pixels"),
    ("no_face", "/enroll", lambda f: {"data": {"label": "x"}, "files": {"files": ("a.png", blank_png())}},
     422, "no_face"),
    ("no_face_in_second_image", "/enroll",
     lambda f: {"data": {"label": "x"}, "files": [("files", ("a.jpg", f)), ("files", ("b.png", blank_png()))]},
     422, "no_face"),
    ("missing_label", "/enroll", lambda f: {"files": {"files": ("a.jpg", f)}}, 422, "invalid_field"),
    ("bad_face_index", "/enroll", lambda f: {"data": {"label": "x", "face_index": "first"},
                                             "files": {"files": ("a.jpg", f)}}, 422, "invalid_field"),
    ("face_index_out_of_range", "/enroll", lambda f: {"data": {"label": "x", "face_index": "5"},
                                                      "files": {"files": ("a.jpg", f)}}, 422, "face_index_out_of_range"),
    ("wrong_file_field", "/enroll", lambda f: {"data": {"label": "x"}, "files": {"image": ("a.jpg", f)}},
     422, "unexpected_field"),
    ("no_file", "/identify", lambda f: {"data": {"x": "1"}}, 422, "missing_file"),
    ("empty_file", "/identify", lambda f: {"files": {"file": ("a.jpg", b"")}}, 422, "empty_image"),
    ("wrong_content_type", "/identify", lambda f: {"content": b"raw", "headers": {"content-type": "image/jpeg"}},
     415, "unsupported_media_type"),
    ("bad_json", "/enroll", lambda f: {"json": {"label": "x", "images": ["not base64!"]}}, 422, "invalid_base64"),
    ("json_schema", "/enroll", lambda f: {"json": {"label": "x"}}, 422, "invalid_request"),
    ("bad_top_k", "/identify?top_k=0", lambda f: {"files": {"file": ("a.jpg", f)}}, 422, "invalid_request"),
    ("unknown_identity_verify", "/verify",
     lambda f: {"data": {"identity_id": "987654"}, "files": {"file": ("a.jpg", f)}}, 404, "unknown_identity"),
    ("verify_needs_one_of", "/verify", lambda f: {"files": {"file": ("a.jpg", f)}}, 422, "invalid_request"),
]


@pytest.fixture(scope="module")
def baseline(client, face_jpeg):
    """One enrolled face, so "changes nothing" is checked against a gallery that is not empty."""
    r = client.post("/enroll", data={"label": "baseline"}, files={"files": ("a.jpg", face_jpeg)})
    assert r.status_code == 201, r.text
    return gallery_state(client)


@pytest.mark.parametrize("url, make, status, code", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_refused_and_changes_nothing(client, face_jpeg, baseline, url, make, status, code):
    before = gallery_state(client)
    r = client.post(url, **make(face_jpeg))
    assert r.status_code == status, (r.status_code, r.text[:300])
    assert r.json()["error"]["code"] == code, r.json()
    assert gallery_state(client) == before


def test_unknown_ids_are_404(client):
    before = gallery_state(client)
    for method, url, code in (("get", "/identities/987654", "unknown_identity"),
                              ("delete", "/identities/987654", "unknown_identity"),
                              ("get", "/faces/987654", "unknown_face"), ("delete", "/faces/987654", "unknown_face")):
        r = getattr(client, method)(url)
        assert r.status_code == 404 and r.json()["error"]["code"] == code
    r = client.patch("/identities/987654", json={"label": "someone"})
    assert r.status_code == 404
    r = client.patch("/identities/1", json={"label": ""})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"
    assert gallery_state(client) == before


def test_odd_but_valid_images_are_accepted(client, faces, face_jpeg):
    """Grayscale, palette, RGBA, 16-bit, 32-bit, float, premultiplied alpha (La), CMYK and rotated-by-EXIF
    versions of a face all yield one face."""
    base = Image.open(io.BytesIO(face_jpeg)).convert("RGB")
    base.thumbnail((480, 480))
    variants = {}
    for mode in ("L", "P", "RGBA", "CMYK"):
        buf = io.BytesIO()
        base.convert(mode).save(buf, format="PNG" if mode != "CMYK" else "JPEG")
        variants[mode] = buf.getvalue()
    buf = io.BytesIO()
    Image.fromarray((np.asarray(base.convert("L"), np.uint16) * 257)).save(buf, format="PNG")
    variants["I;16"] = buf.getvalue()
    buf = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to view": stored rotated the other way
    base.rotate(90, expand=True).save(buf, format="JPEG", exif=exif)
    variants["exif_rotated"] = buf.getvalue()
    gray = np.asarray(base.convert("L"))
    for mode, arr in (("I", gray.astype(np.int32) * 257), ("F", gray.astype(np.float32) / 255)):
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="TIFF")  # 32-bit integer and float TIFFs
        variants[mode] = buf.getvalue()
    buf = io.BytesIO()
    base.convert("LA").save(buf, format="TIFF")
    la = buf.getvalue()
    at = la.find(struct.pack("<HHI", 338, 3, 1))  # ExtraSamples 2 -> 1: premultiplied alpha, Pillow's "La"
    variants["La"] = la[:at + 8] + struct.pack("<H", 1) + la[at + 10:]
    for fmt in ("WEBP", "BMP", "TIFF"):
        buf = io.BytesIO()
        base.save(buf, format=fmt)
        variants[fmt] = buf.getvalue()
    for name, data in variants.items():
        r = client.post("/embed", files={"file": ("x", data)})
        assert r.status_code == 200, (name, r.text[:200])
        assert len(r.json()["faces"]) == 1, name
