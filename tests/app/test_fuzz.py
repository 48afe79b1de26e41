"""Fuzzing: schemathesis against our own OpenAPI schema on a real server; hypothesis over image decoding."""
from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from model.decode import ImageError, decode_image
from training.datasets import faces_dir

CHECKS = "not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance"


def _seed_gallery(client: httpx.Client) -> dict[str, list[int]]:
    """Enroll a few real faces (when the face data is here), so that fuzzed path ids sometimes name rows
    that exist and the id routes (rename, merge, delete, crop) run past their 404."""
    people = sorted(p for p in (faces_dir() / "photos").glob("*") if p.is_dir())[:3]
    ids: dict[str, list[int]] = {"identity_id": [], "face_id": []}
    for person in people:
        photo = sorted(person.glob("*.jpg"))[0]
        r = client.post("/enroll", data={"label": person.name}, files={"files": (photo.name, photo.read_bytes())})
        assert r.status_code == 201, r.text
        ids["identity_id"].append(r.json()["identity"]["id"])
        ids["face_id"] += [f["id"] for f in r.json()["faces"]]
    return ids


def _config(ids: dict[str, list[int]]) -> str:
    """schemathesis.toml: half of the generated path ids are taken from the seeded rows."""
    lines = []
    for name, values in ids.items():
        if values:
            lines += [f"[dictionaries.{name}s]", f"values = {values}"]
    lines.append("[parameters]")
    lines += [f'"path.{name}" = {{ dictionary = "{name}s", probability = 0.5 }}' for name, v in ids.items() if v]
    return "\n".join(lines) + "\n"


@pytest.mark.slow
def test_schemathesis_finds_no_5xx_and_no_schema_violation(tmp_path):
    """Every operation of the OpenAPI document, on a keyed server with an admin key (every route gets past
    auth), over a gallery with a few real rows: no 5xx, no answer outside the schema."""
    from app.core.security import hash_key
    from harness import running

    key = "fuzz-" + "k" * 30  # an admin key: every route gets past auth
    env = {"FACEID_API_KEYS": json.dumps([{"name": "fuzz", "sha256": hash_key(key), "scopes": ["admin"]}])}
    with running(tmp_path / "g.db", env=env) as srv:
        with httpx.Client(base_url=srv.url, timeout=120, headers={"X-API-Key": key}) as c:
            spec = c.get("/openapi.json").json()
            ids = _seed_gallery(c) if (faces_dir() / "photos").is_dir() else {}
        (tmp_path / "schemathesis.toml").write_text(_config(ids))
        proc = subprocess.run([str(Path(sys.executable).with_name("schemathesis")),
                               "--config-file", str(tmp_path / "schemathesis.toml"),
                               "run", f"{srv.url}/openapi.json", "-H", f"X-API-Key: {key}",
                               "-n", "80", "--seed", "7", "--checks", CHECKS, "--report", "ndjson",
                               "--report-dir", str(tmp_path / "report"), "--request-timeout", "60"],
                              capture_output=True, text=True, timeout=900)
        assert "Traceback" not in srv.log_tail(10_000_000)
    out = proc.stdout
    assert proc.returncode == 0, out[out.find("FAILURES"):][:6000]
    events = [json.loads(line) for f in (tmp_path / "report").glob("*.ndjson") for line in f.open()]
    recorders = [e["ScenarioFinished"]["recorder"] for e in events if "ScenarioFinished" in e]
    statuses = [i["response"]["status_code"] for r in recorders for i in r.get("interactions", {}).values()
                if i.get("response")]
    operations = {f"{method.upper()} {path}" for path, ops in spec["paths"].items() for method in ops}
    tested = {r["label"] for r in recorders}
    found = re.search(r"(\d+) generated", out)
    generated = int(found.group(1)) if found else 0
    print(json.dumps({"operations": len(operations), "tested": len(operations & tested), "cases": generated,
                      "requests": len(statuses), "5xx": sum(s >= 500 for s in statuses),
                      "seeded_ids": ids}))
    assert operations <= tested, operations - tested
    assert not [s for s in statuses if s >= 500]
    assert max(len(statuses), generated) >= 1000, (len(statuses), generated, out[-1500:])


def _jpeg(size=(64, 48)) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (*size[::-1], 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def _png(size=(64, 48)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGBA", size, (10, 20, 30, 128)).save(buf, "PNG")
    return buf.getvalue()


SEEDS = [_jpeg(), _png()]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.sampled_from(SEEDS), cut=st.integers(0, 4000), flips=st.lists(st.tuples(st.integers(0, 4000),
       st.integers(0, 255)), max_size=8), junk=st.binary(max_size=64))
def test_decoder_never_crashes_on_corrupted_images(seed, cut, flips, junk):
    data = bytearray(seed[: max(1, len(seed) - cut)])
    for pos, val in flips:
        if data:
            data[pos % len(data)] = val
    data += junk
    try:
        image = decode_image(bytes(data), max_pixels=1_000_000)
    except ImageError as exc:
        assert 400 <= exc.status < 500 and exc.code
    else:
        assert image.mode == "RGB" and image.width * image.height <= 1_000_000


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2048))
def test_decoder_on_arbitrary_bytes(data):
    try:
        image = decode_image(data, max_pixels=1_000_000)
    except ImageError as exc:
        assert exc.status in (413, 415, 422)
    else:
        assert image.mode == "RGB" and image.width * image.height <= 1_000_000


def test_declared_size_checked_before_decoding():
    """A PNG header declaring 20000 x 20000 is refused from its header alone."""
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0)
    chunk = lambda k, d: struct.pack(">I", len(d)) + k + d + struct.pack(">I", zlib.crc32(k + d) & 0xFFFFFFFF)  # noqa: E731
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b"")
    with pytest.raises(ImageError) as info:
        decode_image(data, max_pixels=40_000_000)
    assert info.value.code == "too_many_pixels" and info.value.status == 413
