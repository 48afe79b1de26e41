"""What another web page can make the operator's browser do (app/core/browser.py): DNS-rebinding Host names and
cross-site writes are refused; the server's own pages and clients that are not browsers are not affected.

In process (TestClient over the real FaceService with fake networks) for the rules, and once on a real uvicorn
server with the requests of issue 27 (curl's headers: a rebinding Host, a cross-site form post)."""
from __future__ import annotations

import httpx
import pytest
from fastapi.testclient import TestClient

from app.core.security import ApiKey, hash_key
from tests.app.fakes import tiles_png
from tests.app.test_routes import enroll, error, make_client, store  # noqa: F401 - fixtures

RED = (200, 30, 30)
EVIL = {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}


def _form(label="planted"):
    return {"data": {"label": label}, "files": [("files", ("x.png", tiles_png([RED]), "image/png"))]}


@pytest.fixture
def keyless(store, tmp_path):  # noqa: F811
    c, service = make_client(store, tmp_path)
    yield c
    service.close()


def test_host_names_are_parsed_and_loopback_is_recognised():
    from app.core.browser import host_name, is_loopback_host

    assert [host_name(h) for h in ("127.0.0.1:8000", "[::1]:8000", "LocalHost", "::1", "a.example:80")] == \
        ["127.0.0.1", "::1", "localhost", "::1", "a.example"]
    assert all(map(is_loopback_host, ("localhost", "app.localhost", "127.0.0.1", "127.9.9.9", "::1", "localhost.")))
    assert not any(map(is_loopback_host, ("rebind.evil.example", "localhost.evil.example", "10.0.0.1", "0.0.0.0",
                                          "", "127.0.0.1.nip.io")))


def test_a_keyless_server_answers_only_loopback_host_names(keyless, store):  # noqa: F811
    assert enroll(keyless, "Ada", [RED]).status_code == 201
    for host in ("localhost:8000", "127.0.0.1:8000", "[::1]:8000", "127.0.0.2"):
        assert keyless.get("/identities", headers={"Host": host}).status_code == 200, host
    for host in ("rebind.evil.example:8000", "rebind.evil.example", "localhost.evil.example", "10.1.2.3:8000"):
        for url in ("/identities", "/faces/1/crop", "/ready", "/"):
            error(keyless.get(url, headers={"Host": host}), 403, "host_not_allowed")
    error(keyless.post("/enroll", headers={"Host": "rebind.evil.example"}, **_form()), 403, "host_not_allowed")
    assert [i.label for i, _ in store.list_identities(0, 10)[0]] == ["Ada"]


def test_allowed_hosts_extend_the_keyless_host_rule(store, tmp_path):  # noqa: F811
    c, service = make_client(store, tmp_path, allowed_hosts=["api", "Faceid.Lan"])
    try:
        assert c.get("/identities", headers={"Host": "api:8000"}).status_code == 200
        assert c.get("/identities", headers={"Host": "faceid.lan"}).status_code == 200
        error(c.get("/identities", headers={"Host": "other.lan"}), 403, "host_not_allowed")
    finally:
        service.close()


def test_cross_site_writes_are_refused_and_change_nothing(keyless, store):  # noqa: F811
    base = keyless.base_url
    for headers in (EVIL, {"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"},
                    {"Origin": "null"}, {"Origin": "http://localhost:3000"}):  # another port is another origin
        error(keyless.post("/enroll", headers=headers, **_form()), 403, "cross_site_request")
        for url in ("/identify", "/verify", "/embed", "/feedback"):
            error(keyless.post(url, headers=headers, files={"file": ("x.png", tiles_png([RED]), "image/png")}),
                  403, "cross_site_request")
        error(keyless.delete("/identities/1", headers=headers), 403, "cross_site_request")
        error(keyless.patch("/identities/1", headers=headers, json={"label": "x"}), 403, "cross_site_request")
    assert store.list_identities(0, 10)[0] == []
    # the server's own page (same origin) and clients that are not browsers (no Origin) still write
    same = {"Origin": f"{base.scheme}://{base.netloc.decode()}", "Sec-Fetch-Site": "same-origin"}
    assert keyless.post("/enroll", headers=same, **_form("Ada")).status_code == 201
    assert keyless.post("/enroll", **_form("Bob")).status_code == 201
    # reads carry no state change: a cross-site GET is left to the Host rule and CORS
    assert keyless.get("/identities", headers=EVIL).status_code == 200


def test_another_sites_page_cannot_embed_what_a_keyless_server_shows(keyless):
    """An <img> or <script> on another site's page (no-cors: no CORS check, no Origin) loaded face crops and
    answers of a keyless server: whether /probes/N/crop loads told that page when someone was identified at the
    door. Refused, as writes are; a link to the server (a navigation), its own pages and non-browsers still work."""
    probe = keyless.post("/identify", files={"file": ("p.png", tiles_png([RED]), "image/png")}).json()
    crop = f"/probes/{probe['faces'][0]['probe_id']}/crop"
    for site in ("cross-site", "same-site"):  # same-site: another port of localhost
        for url in (crop, "/probes", "/identities?q=a"):
            error(keyless.get(url, headers={"Sec-Fetch-Site": site, "Sec-Fetch-Mode": "no-cors",
                                            "Sec-Fetch-Dest": "image"}), 403, "cross_site_request")
    assert keyless.get(crop, headers={"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "no-cors"}).status_code == 200
    assert keyless.get("/", headers={"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"}).status_code == 200
    assert keyless.get(crop).status_code == 200


def test_keyed_servers_refuse_cross_site_writes_too_unless_the_origin_is_trusted(store, tmp_path):  # noqa: F811
    keys = [ApiKey(name="w", sha256=hash_key("write-key"), scopes=["write"])]
    c, service = make_client(store, tmp_path, api_keys=keys, cors_origins=["https://admin.example"])
    try:
        h = {"X-API-Key": "write-key"}
        error(c.post("/enroll", headers={**h, **EVIL}, **_form()), 403, "cross_site_request")
        r = c.post("/enroll", headers={**h, "Origin": "https://admin.example", "Sec-Fetch-Site": "cross-site"},
                   **_form("Ada"))
        assert r.status_code == 201, r.text
        # no Host rule on a keyed server: it serves the network under whatever name it is given
        assert c.get("/identities", headers={**h, "Host": "faceid.example"}).status_code == 200
    finally:
        service.close()


@pytest.mark.slow
def test_a_real_keyless_server_refuses_rebinding_and_cross_site_form_posts(tmp_path):
    from harness import running

    with running(tmp_path / "g.db") as srv, httpx.Client(base_url=srv.url, timeout=120) as c:
        files = {"files": ("x.png", tiles_png([RED]), "image/png")}
        r = c.post("/enroll", headers=EVIL, data={"label": "planted", "face_index": "0"}, files=files)
        assert r.status_code == 403 and r.json()["error"]["code"] == "cross_site_request", r.text
        r = c.get("/identities", headers={"Host": f"rebind.evil.example:{srv.port}"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "host_not_allowed", r.text
        r = c.get("/faces/1/crop", headers={"Host": f"rebind.evil.example:{srv.port}"})
        assert r.status_code == 403, r.text
        assert c.get("/identities").json()["items"] == []
        same = {"Origin": srv.url, "Sec-Fetch-Site": "same-origin"}  # the web UI served at /
        r = c.post("/identify", headers=same, files={"file": ("x.png", tiles_png([RED]), "image/png")})
        assert r.status_code == 200, r.text
        assert c.get("/", headers={"Host": f"localhost:{srv.port}"}).status_code == 200
