"""The web UI against a server with API keys: no key shows the 401 message, a read key the 403 one on
writes, an admin key works; the key lives in sessionStorage and goes out as X-API-Key."""
from __future__ import annotations

import json
import re

import pytest

from app.core.security import hash_key
from tests.ui.test_ui import expect

pytestmark = [pytest.mark.slow, pytest.mark.faces]
KEYS = {"read": "ui-read-" + "r" * 24, "admin": "ui-admin-" + "a" * 24}


@pytest.fixture(scope="module")
def keyed(ui_server):
    entries = [{"name": f"ui-{s}", "sha256": hash_key(k), "scopes": [s]} for s, k in KEYS.items()]
    return ui_server("ui-keyed", {"FACEID_API_KEYS": json.dumps(entries)})


def use_key(page, key):
    page.fill("#api-key", key)
    page.click("#key-form button[type=submit]")


def test_without_a_key_the_ui_says_401_and_with_one_it_works(keyed, new_page, console, faces, shots):
    console.allow_status(401, 403)
    page = new_page(keyed.url)
    sent = []
    page.on("request", lambda r: sent.append(r.headers.get("x-api-key")) if "/identities" in r.url else None)
    page.goto("/#gallery")
    expect(page.locator("#gallery-msg")).to_have_text(
        "401 unauthorized: a valid X-API-Key header is required. Enter an API key at the top of the page.")
    expect(page.locator("#server-line")).to_contain_text("server ready")  # /ready's details need a key
    page.goto("/#identify")
    page.set_input_files("#identify-file", str(faces / "multi" / "couple.jpg"))
    expect(page.locator("#identify-msg")).to_contain_text("401 unauthorized")
    page.screenshot(path=shots / "keyed-401.png", full_page=True)

    use_key(page, KEYS["read"])
    page.goto("/#enroll")
    page.fill("#enroll-label", "Matt Damon")
    page.set_input_files("#enroll-files", str(sorted((faces / "photos" / "Matt_Damon").glob("*.jpg"))[0]))
    page.click("#enroll-submit")
    expect(page.locator("#enroll-results li.refused")).to_contain_text("403 forbidden: this key lacks the 'write' scope")

    use_key(page, KEYS["admin"])
    assert page.evaluate("sessionStorage.getItem('faceid.apiKey')") == KEYS["admin"]
    page.reload()
    expect(page.locator("#api-key")).to_have_value(KEYS["admin"])  # kept for the browser tab's session
    expect(page.locator("#server-line")).to_contain_text("casia-webface")  # with a key: the details
    page.goto("/#enroll")
    page.fill("#enroll-label", "Matt Damon")
    page.set_input_files("#enroll-files", [str(p) for p in sorted((faces / "photos" / "Matt_Damon").glob("*.jpg"))[:2]])
    page.click("#enroll-submit")
    expect(page.locator("#enroll-msg")).to_have_text(re.compile(r"^2 of 2 photos enrolled into Matt Damon"))
    page.goto("/#gallery")
    expect(page.locator(".card h3")).to_have_text(["Matt Damon"])
    expect(page.locator(".card .crops img[src^='blob:']")).to_have_count(2)  # crops fetched with the key
    page.goto("/#identify")
    page.set_input_files("#identify-file", str(sorted((faces / "photos" / "Matt_Damon").glob("*.jpg"))[2]))
    expect(page.locator("#identify-boxes .box.match")).to_have_text([re.compile(r"^1 Matt Damon 0\.\d\d$")])
    expect(page.locator("#identify-curl")).to_contain_text('-H "X-API-Key: $FACEID_API_KEY"')
    assert KEYS["admin"] not in page.locator("#identify-curl").text_content()  # the key is never printed
    page.goto("/#model")
    expect(page.locator("#model-state")).to_contain_text("casia-webface")
    assert sent[0] is None and sent[-1] == KEYS["admin"]

    page.click("#key-clear")
    page.goto("/#model")
    expect(page.locator("#model-msg")).to_contain_text("401 unauthorized")


def test_a_wrong_key_is_said_at_once(keyed, new_page, console):
    """Pressing "Use" checks the key: a wrong one is refused there, not on the next page's request."""
    console.allow_status(401, 403)  # 403: the collection switcher asks for the list, which a read key may not see
    page = new_page(keyed.url)
    page.goto("/#identify")
    use_key(page, "ui-wrong-" + "w" * 24)
    expect(page.locator("#key-msg")).to_have_text("This key is not valid: the server refused it.")
    use_key(page, KEYS["read"])
    expect(page.locator("#key-msg")).to_have_text("Key accepted.")
