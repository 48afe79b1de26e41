"""The web UI's files are served in process: the page at /, assets under /ui/, nothing else disturbed."""
from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from app.api.routes.ui import UI_DIR
from app.core.config import Settings
from app.main import create_app


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    db = tmp_path_factory.mktemp("ui") / "g.db"
    return TestClient(create_app(Settings(database_url=f"sqlite:///{db}", api_keys=[])), base_url="http://localhost")  # no lifespan: no model


def test_the_page_is_served_at_root_with_a_strict_policy(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert '<script type="module" src="ui/js/main.js">' in r.text


def test_every_asset_the_page_names_is_served_and_nothing_comes_from_outside(client):
    html = client.get("/").text
    refs = re.findall(r'(?:src|href)="([^"#]+)"', html)
    assert refs and all(not re.match(r"^[a-z]+:|^//", ref) for ref in refs)
    for ref in refs:
        assert client.get("/" + ref).status_code == 200, ref
    for js in (UI_DIR / "js").glob("*.js"):
        text = js.read_text()
        assert client.get(f"/ui/js/{js.name}").headers["content-type"].split(";")[0] in (
            "text/javascript", "application/javascript")
        assert not re.search(r"https?://", text), f"{js.name} names an outside URL"
        assert not re.search(r"\.(inner|outer)HTML\s*[+]?=|insertAdjacentHTML|document\.write", text), js.name
        for imported in re.findall(r"from '\./([\w.]+)'", text):
            assert (UI_DIR / "js" / imported).is_file(), (js.name, imported)


def test_the_api_around_it_is_unchanged(client):
    assert client.get("/docs").status_code == 200
    assert client.get("/health").json() == {"status": "ok"}
    r = client.get("/no-such-page")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    assert client.get("/ui/no-such-file.js").status_code == 404
    assert "/" not in client.get("/openapi.json").json()["paths"]
