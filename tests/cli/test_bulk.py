"""Folder scanning and the resume plan of `faceid enroll` (the server's lookup answer scripted with MockTransport)."""
from __future__ import annotations

import hashlib
import os
import unicodedata

import httpx
import pytest

from faceid_client.bulk import (
    EnrollItem,
    EnrollReport,
    RefusalLog,
    loose_images,
    plan_enrollment,
    scan_files,
    scan_folder,
)
from faceid_client.client import FaceIDClient


def write(path, data: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def test_scan_takes_labels_from_folders_and_only_visible_images(tmp_path):
    decomposed = unicodedata.normalize("NFD", "José")
    write(tmp_path / decomposed / "a.JPG", b"1")
    write(tmp_path / "ann" / "sub" / "b.png", b"2")
    write(tmp_path / "ann" / ".hidden.jpg", b"3")
    write(tmp_path / "ann" / "notes.txt", b"4")
    write(tmp_path / "loose.jpg", b"5")            # not in a label folder
    write(tmp_path / ".trash" / "c.jpg", b"6")
    items = scan_folder(tmp_path)
    assert [(i.label, i.path.name) for i in items] == [("José", "a.JPG"), ("ann", "b.png")]
    assert items[0].label == unicodedata.normalize("NFC", "José")  # what the server stores
    assert items[1].sha256 == hashlib.sha256(b"2").hexdigest()


def test_plan_skips_enrolled_files_and_refuses_conflicting_duplicates(tmp_path):
    done = write(tmp_path / "ann" / "1.jpg", b"enrolled")
    write(tmp_path / "ann" / "2.jpg", b"new")
    write(tmp_path / "ann" / "3.jpg", b"new")               # same content, same label: uploaded once
    write(tmp_path / "bob" / "4.jpg", b"new")               # same content, another label
    write(tmp_path / "bob" / "5.jpg", b"enrolled")          # enrolled as ann already
    face = {"id": 1, "identity_id": 1, "label": "ann", "box": [0, 0, 1, 1], "landmarks": [[0, 0]] * 5,
            "detection_score": 0.99, "source_sha256": done, "crop_size": 160, "crop_margin": 14,
            "created_at": "2026-01-01T00:00:00Z"}
    asked = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.extend(request.url.params.get_list("source_sha256"))
        return httpx.Response(200, json={"items": [face] if done in asked else []})

    client = FaceIDClient("http://faceid.test", transport=httpx.MockTransport(handler))
    report = EnrollReport()
    todo = plan_enrollment(client, scan_folder(tmp_path), report)
    assert len(asked) == 2  # every distinct hash asked about, once
    assert [(i.label, i.path.name) for i in todo] == [("ann", "2.jpg")]
    assert [(i.path.name, why) for i, why in report.skipped] == [("1.jpg", "already enrolled"),
                                                                  ("3.jpg", "same content as 2.jpg")]
    assert sorted((i.path.name, code) for i, code, _ in report.refused) == [("4.jpg", "duplicate_image"),
                                                                            ("5.jpg", "enrolled_as_other")]


def test_labels_from_folders_with_underscores_and_a_flat_folder_as_one_label(tmp_path):
    write(tmp_path / "George_W__Bush" / "a.jpg", b"1")
    write(tmp_path / "loose.jpg", b"2")
    assert [i.label for i in scan_folder(tmp_path)] == ["George_W__Bush"]
    assert [i.label for i in scan_folder(tmp_path, underscores_as_spaces=True)] == ["George W Bush"]
    assert [(i.label, i.path.name) for i in scan_folder(tmp_path, label="Ann")] == [("Ann", "a.jpg"),
                                                                                  ("Ann", "loose.jpg")]
    assert [p.name for p in loose_images(tmp_path)] == ["loose.jpg"]


def test_refusals_are_remembered_by_content_for_their_server(tmp_path):
    item = EnrollItem(tmp_path / "a.jpg", "ann", "0" * 64)
    log = RefusalLog(tmp_path / "state", "http://a")
    log.add(item, "no_face", "no face found")
    with open(tmp_path / "state", "a") as f:
        f.write('{"sha256": "1')  # a line cut short by a crash
    assert RefusalLog(tmp_path / "state", "http://a").entries == {"0" * 64: ("no_face", "no face found")}
    assert RefusalLog(tmp_path / "state", "http://b").entries == {}  # another server may well accept it
    unwritable = RefusalLog(tmp_path / "no" / "dir" / "state", "http://a")
    unwritable.add(item, "no_face", "no face found")
    assert unwritable.error and unwritable.entries  # remembered for this run; the caller warns


def test_a_corrupt_or_linked_refusal_state_is_never_fatal_nor_followed(tmp_path):
    """The state file lives in the folder enrolled, which may come from anyone: bytes that are not UTF-8 are
    lines cut short (skipped, not a traceback), and a link or a FIFO in its place is neither read nor written
    through (a link to ~/.bashrc would have had the server's messages appended to it; a FIFO hung the run)."""
    item = EnrollItem(tmp_path / "a.jpg", "ann", "0" * 64)
    corrupt = tmp_path / "corrupt"
    corrupt.write_bytes(b'\xff\xfe garbage\n{"sha256": "' + b"1" * 64 + b'", "url": "http://a", "code": "no_face", '
                        b'"message": "m"}\n')
    log = RefusalLog(corrupt, "http://a")
    assert log.entries == {"1" * 64: ("no_face", "m")} and log.error is None
    log.add(item, "no_face", "no face found")
    assert RefusalLog(corrupt, "http://a").entries.keys() == {"0" * 64, "1" * 64}

    target = tmp_path / "bashrc"
    target.write_text("export A=1\n")
    (tmp_path / "link").symlink_to(target)
    linked = RefusalLog(tmp_path / "link", "http://a")
    linked.add(item, "no_face", "no face found")
    assert "not a regular file" in linked.error and linked.entries  # remembered for this run only
    assert target.read_text() == "export A=1\n"

    os.mkfifo(tmp_path / "fifo")
    fifo = RefusalLog(tmp_path / "fifo", "http://a")
    fifo.add(item, "no_face", "no face found")
    assert "not a regular file" in fifo.error


def test_the_scan_state_is_not_followed_through_a_link_nor_fatal_when_corrupt(tmp_path):
    """`faceid scan`'s .faceid-scan is in a folder that may come from anyone, as .faceid-enroll is."""
    client = FaceIDClient("http://127.0.0.1:9", retries=0)  # nothing to send: no request is made
    target = tmp_path / "bashrc"
    target.write_text("export A=1\n")
    (tmp_path / "link").symlink_to(target)
    with pytest.raises(OSError, match="not a regular file"):
        scan_files(client, [], tmp_path / "link")
    assert target.read_text() == "export A=1\n"
    corrupt = tmp_path / "corrupt"
    corrupt.write_bytes(b"\xff\xfe\n" + b"a" * 64 + b"\n")
    assert scan_files(client, [], corrupt).errors == []
