"""Collections in the client (issue 29): a client or command given a collection sends its gallery calls under
/collections/{name} and its service-wide calls as before; the collection admin calls; key bindings; the CLI's
local state (refusals, scanned photos) kept per collection. The server's answers are scripted (MockTransport)."""
from __future__ import annotations

import json
import zipfile

import httpx
import pytest
from typer.testing import CliRunner

from faceid_client import cli
from faceid_client.archive import export_gallery
from faceid_client.bulk import EnrollItem, RefusalLog, scan_files
from faceid_client.client import FaceIDClient
from faceid_client.collection_names import check_collection_name
from faceid_client.keys import hash_key, new_key

NOW = "2026-12-04T10:00:00Z"
READY = {"status": "ready", "model_version": "v1", "model_name": "m", "device": "cpu", "threshold": 0.5,
         "identities": 0, "faces": 0}
IDENTITY = {"id": 1, "label": "ann", "face_count": 1, "created_at": NOW, "updated_at": NOW}
FACE = {"id": 7, "identity_id": 1, "box": [1.0, 2.0, 3.0, 4.0], "landmarks": [[1.0, 2.0]] * 5,
        "detection_score": 0.99, "source_sha256": "0" * 64, "crop_size": 160, "crop_margin": 14, "created_at": NOW}
ENROLLED = {"model_version": "v1", "created": True, "identity": IDENTITY, "faces": [FACE]}
IDENTIFIED = {"model_version": "v1", "threshold": 0.5, "faces": []}
DOORS = {"name": "doors", "created_at": NOW, "counts": {"identities": 2, "faces": 5},
         "settings": {"target_fpir": 0.001, "match_threshold": None, "remember_unknown": True,
                      "unknown_retention_s": None, "probe_retention_s": None}}
DEFAULT = {"name": "default", "created_at": None, "counts": {"identities": 2, "faces": 5}, "settings": {}}
PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 4 + b"IHDR" + (160).to_bytes(4, "big") * 2


def answer(request: httpx.Request) -> httpx.Response:
    """What a server with collections answers, by route (the prefix stripped): enough for every client call."""
    path = request.url.path
    tail = path.split("/", 3)[3] if path.startswith("/collections/") and path.count("/") > 2 else path
    tail = "/" + tail.lstrip("/")
    method = request.method
    if path == "/ready":
        return httpx.Response(200, json=READY)
    if path == "/collections":
        return httpx.Response(201 if method == "POST" else 200,
                              json={**DOORS, "name": json.loads(request.content)["name"]} if method == "POST"
                              else {"collections": [{**DEFAULT}, DOORS]})
    if path.startswith("/collections/") and path.count("/") == 2:
        return httpx.Response(200, json={"deleted": "doors"} if method == "DELETE" else DOORS)
    routes = {"/enroll": ENROLLED, "/faces/import": ENROLLED, "/identify": IDENTIFIED,
              "/verify": {"model_version": "v1", "same_person": True, "score": 0.9, "threshold": 0.5},
              "/identities": {"items": [IDENTITY], "total": 1}, "/identities/duplicates": {"items": [], "total": 0},
              "/identities/1": {**IDENTITY, "faces": [FACE]}, "/identities/1/merge": IDENTITY,
              "/faces": {"items": [{**FACE, "label": "ann"}]}, "/unknown": {"items": [], "total": 0},
              "/unknown/refine": {"applied": True}, "/ready": READY}
    if tail == "/faces/7/crop":
        return httpx.Response(200, content=PNG)
    if tail == "/identities/1/not-duplicate":
        return httpx.Response(204)
    return httpx.Response(200, json=routes[tail])


def recording(collection: str | None = None, handler=answer, **kwargs):
    """A client of the scripted server; returns (client, the paths it asked, in order)."""
    paths: list[str] = []

    def record(request: httpx.Request) -> httpx.Response:
        paths.append(f"{request.method} {request.url.path}")
        return handler(request)

    return FaceIDClient("http://faceid.test", retries=0, transport=httpx.MockTransport(record),
                        collection=collection, **kwargs), paths


def every_gallery_call(c: FaceIDClient) -> None:
    c.enroll("ann", [b"img"])
    c.identify(b"img", remember_unknown=True)
    c.verify(b"img", identity_id=1)
    list(c.identities())
    list(c.duplicates())
    c.identity(1)
    c.merge(1, 2)
    c.not_duplicate(1, 2)
    c.face_crop(7)
    c.faces_by_source(["0" * 64])
    c.import_faces("ann", [{"crop": PNG}])
    c.unknown_people()
    c.refine_unknown()


GALLERY_PATHS = ["POST /enroll", "POST /identify", "POST /verify", "GET /identities", "GET /identities/duplicates",
                 "GET /identities/1", "POST /identities/1/merge", "POST /identities/1/not-duplicate",
                 "GET /faces/7/crop", "GET /faces", "POST /faces/import", "GET /unknown", "POST /unknown/refine"]


def test_a_collection_prefixes_every_gallery_call_and_no_service_wide_one():  # (its /ready is its own)
    c, paths = recording("doors")
    every_gallery_call(c)
    c.ready()
    c.collections()
    c.collection("lobby")
    assert paths == [f"{m} /collections/doors{p}" for m, p in (g.split() for g in GALLERY_PATHS)] + \
        ["GET /collections/doors/ready", "GET /collections", "GET /collections/lobby"]  # the collection's readiness
    assert c.collection_name == "doors" and c.gallery_path("/identify") == "/collections/doors/identify"


@pytest.mark.parametrize("collection", [None, "default"])
def test_no_collection_or_default_uses_the_routes_as_they_were(collection):
    c, paths = recording(collection)
    every_gallery_call(c)
    assert paths == GALLERY_PATHS and c.collection_name == "default"


@pytest.mark.parametrize("name", ["Doors", "../admin", "", "-x", "a" * 64, "d%2fe", "doors/identify", "é"])
def test_a_name_that_is_not_a_collections_never_reaches_a_url(name):
    with pytest.raises(ValueError, match="not a collection name"):
        FaceIDClient("http://faceid.test", collection=name)
    c, paths = recording()
    for call in (c.collection, c.delete_collection, c.update_collection, c.create_collection):
        with pytest.raises(ValueError):
            call(name)
    assert paths == []


def test_names_by_the_servers_rule():
    for good in ("default", "doors", "0", "a" * 63, "lobby_2-east"):
        assert check_collection_name(good) == good


def test_the_collection_admin_calls_send_what_the_api_takes_and_read_its_answer():
    bodies = []

    def handler(request):
        bodies.append((request.method, request.url.path, json.loads(request.content) if request.content else None))
        return answer(request)

    c, _ = recording("lobby", handler=handler)  # the client's own collection does not change these routes
    made = c.create_collection("doors", target_fpir=0.001, remember_unknown=True)
    assert made.name == "doors" and made.settings["target_fpir"] == 0.001 and made.counts["faces"] == 5
    assert made.created_at.tzinfo is not None
    cols = c.collections()
    assert [col.name for col in cols] == ["default", "doors"] and cols[0].settings == {}
    assert cols[0].created_at is None  # default was never made
    c.update_collection("doors", match_threshold=0.6, target_fpir=None)
    c.delete_collection("doors")
    assert bodies == [
        ("POST", "/collections", {"name": "doors", "settings": {"target_fpir": 0.001, "remember_unknown": True}}),
        ("GET", "/collections", None),
        ("PATCH", "/collections/doors", {"settings": {"match_threshold": 0.6, "target_fpir": None}}),
        ("DELETE", "/collections/doors", None)]


def test_new_key_binds_collections_once_each_and_unbound_keys_are_as_before():
    key, entry = new_key("door-1", ["identify"], ["doors", "lobby", "doors"])
    assert entry == {"name": "door-1", "sha256": hash_key(key), "scopes": ["identify"],
                     "collections": ["doors", "lobby"]}
    assert "collections" not in new_key("x", ["read"])[1] and "collections" not in new_key("x", ["read"], [])[1]
    with pytest.raises(ValueError, match="not a collection name"):
        new_key("x", ["read"], ["Doors"])


# --- local state -------------------------------------------------------------------------------------------
def test_refusals_are_remembered_per_collection(tmp_path):
    state = tmp_path / ".faceid-enroll"
    state.write_text(json.dumps({"sha256": "1" * 64, "url": "http://a", "code": "no_face", "message": "m"}) + "\n")
    RefusalLog(state, "http://a", "doors").add(EnrollItem(tmp_path / "a.jpg", "ann", "0" * 64), "no_face", "x")
    assert RefusalLog(state, "http://a", "doors").entries == {"0" * 64: ("no_face", "x")}
    # a line from before collections is default's; doors' refusal is not default's
    assert RefusalLog(state, "http://a").entries == {"1" * 64: ("no_face", "m")}
    assert RefusalLog(state, "http://a", "lobby").entries == {}


def test_scanned_photos_are_remembered_per_collection(tmp_path):
    photos = [tmp_path / "a.jpg", tmp_path / "b.jpg"]
    for i, p in enumerate(photos):
        p.write_bytes(b"photo %d" % i)
    state = tmp_path / ".faceid-scan"
    doors, doors_paths = recording("doors")
    assert len(scan_files(doors, photos, state, concurrency=1).scanned) == 2
    assert doors_paths == ["POST /collections/doors/identify"] * 2
    again = scan_files(doors, photos, state, concurrency=1)
    assert (again.scanned, len(again.skipped)) == ([], 2)

    default, default_paths = recording()  # the same photos, never scanned into default
    assert len(scan_files(default, photos, state, concurrency=1).scanned) == 2
    assert default_paths == ["POST /identify"] * 2
    assert len(scan_files(default, photos, state, concurrency=1).skipped) == 2
    lines = state.read_text().split("\n")
    assert [len(line.split()) for line in lines if line] == [2, 2, 1, 1]  # default's lines as before collections


def test_export_follows_the_clients_collection_and_records_its_model(tmp_path):
    def bound(request):  # a key bound to doors: its routes only (its own /ready too)
        if not request.url.path.startswith("/collections/doors/"):
            return httpx.Response(403, json={"error": {"code": "collection_forbidden", "message": "bound key"}})
        return answer(request)

    c, paths = recording("doors", handler=bound)
    planned = []
    r = export_gallery(c, tmp_path / "doors.zip", concurrency=1, on_plan=planned.append)
    assert (r.identities, r.faces, planned) == (1, 1, [1])
    with zipfile.ZipFile(tmp_path / "doors.zip") as zf:
        source = json.loads(zf.read("manifest.json"))["source"]
    assert source == {"url": "http://faceid.test", "collection": "doors", "model_name": "m", "model_version": "v1"}


# --- the command ---------------------------------------------------------------------------------------------
@pytest.fixture
def faceid(monkeypatch):
    """`faceid ARGS` whose client talks to the scripted server; returns (run, the paths asked)."""
    paths: list[str] = []
    handler = {"fn": answer}

    def record(request: httpx.Request) -> httpx.Response:
        paths.append(f"{request.method} {request.url.path}")
        return handler["fn"](request)

    real = FaceIDClient
    monkeypatch.setattr(cli, "FaceIDClient", lambda *a, **kw: real(*a, transport=httpx.MockTransport(record), **kw))

    def run(*args, env=None, script=None):
        if script is not None:
            handler["fn"] = script
        paths.clear()
        r = CliRunner(env={"FACEID_URL": "http://faceid.test", "FACEID_API_KEY": "", "FACEID_RETRIES": "0",
                           "FACEID_COLLECTION": None, **(env or {})}).invoke(cli.app, [str(a) for a in args])
        assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
        return r

    return run, paths


def test_the_collection_option_before_or_after_the_command_or_in_the_environment(faceid, tmp_path):
    run, paths = faceid
    img = tmp_path / "a.jpg"
    img.write_bytes(b"img")
    for args, env in (((img,), None), (("--collection", "default", img), None)):
        assert run("identify", *args, env=env).exit_code == 0 and paths == ["POST /identify"]
    for args, env in ((("--collection", "doors", "identify", img), None),
                      (("identify", img, "--collection", "doors"), None),
                      (("identify", img), {"FACEID_COLLECTION": "doors"}),
                      (("--collection", "lobby", "identify", img, "--collection", "doors"), None),
                      (("identify", img, "--collection", "doors"), {"FACEID_COLLECTION": "lobby"})):
        r = run(*args, env=env)
        assert r.exit_code == 0 and paths == ["POST /collections/doors/identify"], (args, r.output)
    assert run("--collection", "doors", "status").exit_code == 0 and paths == ["GET /ready"]  # service-wide
    bad = run("--collection", "Doors", "identify", img)
    assert bad.exit_code == 2 and "not a collection name" in bad.output and paths == []
    assert run("identify", img, env={"FACEID_COLLECTION": "../admin"}).exit_code == 2 and paths == []


@pytest.mark.parametrize("command", [["enroll", "DIR"], ["enroll-face", "IMG", "--label", "ann", "--face", "1"],
                                     ["verify", "IMG", "--identity", "1"], ["duplicates"], ["merge", "1", "2"],
                                     ["not-duplicate", "1", "2"], ["export", "OUT"], ["import", "ZIP"],
                                     ["scan", "DIR"]])
def test_every_gallery_command_works_in_the_collection(faceid, tmp_path, command):
    run, paths = faceid
    (tmp_path / "ann").mkdir()
    (tmp_path / "ann" / "a.jpg").write_bytes(b"img")
    c, _ = recording("doors")
    export_gallery(c, tmp_path / "in.zip")  # ann's one face, FACE's hash and box: present on import
    where = {"DIR": tmp_path, "IMG": tmp_path / "ann" / "a.jpg", "OUT": tmp_path / "out.zip",
             "ZIP": tmp_path / "in.zip"}
    r = run("--collection", "doors", *[where.get(a, a) for a in command], "--json")
    assert r.exit_code == 0, r.output
    assert paths and all(p.split()[1].startswith("/collections/doors/") for p in paths if p != "GET /ready"), paths


def test_scan_says_where_to_name_a_person_in_the_collection(faceid, tmp_path):
    run, _ = faceid
    (tmp_path / "a.jpg").write_bytes(b"img")

    def people(request):
        if request.url.path.endswith("/unknown"):
            return httpx.Response(200, json={"items": [{"id": 3, "size": 4, "last_seen": NOW}], "total": 1})
        return answer(request)

    r = run("--collection", "doors", "scan", tmp_path, "--no-progress", script=people)
    assert r.exit_code == 0 and "http://faceid.test/collections/doors/unknown/ID/enroll" in r.stdout, r.output


@pytest.mark.parametrize("code, status, hint",
                         [("unknown_collection", 404, "faceid collections list"),
                          ("collection_forbidden", 403, "--collection NAME or FACEID_COLLECTION")])
def test_collection_errors_are_one_line_with_what_to_do(faceid, tmp_path, code, status, hint):
    run, _ = faceid
    img = tmp_path / "a.jpg"
    img.write_bytes(b"img")
    r = run("--collection", "nope", "identify", img,
            script=lambda _: httpx.Response(status, json={"error": {"code": code, "message": "no such thing"}}))
    assert r.exit_code == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {code} ({status}): ") and hint in lines[0], r.stderr


def test_collections_commands(faceid):
    run, paths = faceid
    r = run("collections", "list")
    assert r.exit_code == 0 and paths == ["GET /collections"]
    assert r.stdout.startswith("default: 2 identities, 5 faces; settings: the service's\n")
    assert "doors: 2 identities, 5 faces, created 2026-12-04 10:00; settings: " in r.stdout
    assert "doors: 2 identities, 5 faces" in r.stdout and "target_fpir 0.001, remember_unknown true" in r.stdout
    assert [c["name"] for c in json.loads(run("collections", "list", "--json").stdout)["collections"]] == \
        ["default", "doors"]

    r = run("--collection", "lobby", "collections", "create", "doors", "--target-fpir", "0.001",
            "--no-remember-unknown")
    assert r.exit_code == 0 and paths == ["POST /collections"] and r.stdout.startswith("created doors: "), r.output
    assert run("collections", "show", "doors", "--json").exit_code == 0 and paths == ["GET /collections/doors"]
    r = run("collections", "update", "doors", "--match-threshold", "0.6", "--unset", "target-fpir")
    assert r.exit_code == 0 and paths == ["PATCH /collections/doors"] and r.stdout.startswith("updated doors: ")
    r = run("collections", "delete", "doors", "--yes", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout) == {"deleted": "doors"} and paths == ["DELETE /collections/doors"]


def test_collections_usage_errors_send_nothing(faceid):
    run, paths = faceid
    for args in (["create", "Doors"], ["show", "../admin"], ["update", "doors"],
                 ["update", "doors", "--unset", "colour"], ["update", "doors", "--target-fpir", "0.1", "--unset",
                                                            "target_fpir"],
                 ["delete", "doors"],  # no terminal to confirm on: --yes is needed
                 ["create", "doors", "--target-fpir", "2"]):
        r = run("collections", *args)
        assert r.exit_code == 2 and paths == [], (args, r.output)


def test_keys_new_binds_the_key_to_collections(faceid):
    run, _ = faceid
    r = run("keys", "new", "--name", "door-1", "--scopes", "identify", "--collections", "doors, lobby", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["entry"] == {"name": "door-1", "sha256": hash_key(out["key"]), "scopes": ["identify"],
                            "collections": ["doors", "lobby"]}
    human = run("keys", "new", "--name", "door-1", "--collections", "doors")
    assert '"collections": ["doors"]' in human.stdout
    for bad in ("Doors", ",", "doors,../x"):
        r = run("keys", "new", "--name", "x", "--collections", bad)
        assert r.exit_code == 2 and "--collections" in r.output, r.output
