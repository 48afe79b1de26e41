"""The "Unknown people" page in real Chromium against a real open server: the clusters of kept unknown faces with
their crops, name one (enrolled, then recognised), dismiss one, open one and remove a face."""
from __future__ import annotations

import httpx
import pytest

from tests.ui.test_ui import expect, no_horizontal_scroll, photos

pytestmark = [pytest.mark.slow, pytest.mark.faces]


@pytest.fixture(scope="module")
def server(ui_server):
    return ui_server("ui-unknown")


def keep(api, paths):
    for p in paths:
        r = api.post("/identify", params={"remember_unknown": "true"}, files={"file": (p.name, p.read_bytes())})
        assert r.status_code == 200, r.text


def test_unknown_people_are_named_dismissed_and_cleaned(server, new_page, console, faces, shots):
    with httpx.Client(base_url=server.url, timeout=120) as api:
        page = new_page(server.url)
        page.goto("/#identify")  # Identify's "Remember unknown faces" keeps them
        page.check("#identify-remember")
        page.set_input_files("#identify-file", str(photos(faces, "Scarlett_Johansson", 1)[0]))
        expect(page.locator("#identify-faces .face")).to_have_count(1)
        assert api.get("/unknown", params={"min_faces": 1}).json()["total"] == 1
        keep(api, photos(faces, "Scarlett_Johansson", 3, skip=1) + photos(faces, "Matt_Damon", 3)
             + photos(faces, "Angelina_Jolie", 3))
        assert api.post("/unknown/refine").json()["applied"]
        clusters = api.get("/unknown").json()["items"]
        assert len(clusters) >= 2
        page.goto("/#unknown")
        cards = page.locator("#unknown-cards .card")
        expect(cards).to_have_count(len(clusters))
        expect(cards.first.locator(".crops img[src^='blob:']").first).to_be_visible()
        expect(page.locator("#unknown-cards .crops img:not([src])")).to_have_count(0)  # every crop loaded
        page.screenshot(path=shots / "unknown-1280.png", full_page=True)  # docs/ui-unknown.png
        narrow = new_page(server.url, width=375)
        narrow.goto("/#unknown")
        expect(narrow.locator("#unknown-cards .card")).to_have_count(len(clusters))
        assert no_horizontal_scroll(narrow) <= 0, "the Unknown people page scrolls sideways at 375 px"

        first = page.locator(f".card[data-cluster='{clusters[0]['id']}']")
        first.locator("input[type=text]").fill("First Person")
        first.locator("button:text('Name')").click()
        expect(page.locator("#unknown-msg")).to_contain_text("as First Person")
        expect(cards).to_have_count(len(clusters) - 1)
        assert api.get(f"/unknown/{clusters[0]['id']}").status_code == 404
        ident = api.get("/identities", params={"prefix": "First Person"}).json()["items"][0]
        assert ident["face_count"] == clusters[0]["size"]

        second = page.locator(f".card[data-cluster='{clusters[1]['id']}']")
        second.locator("button:text('Open')").click()
        faces_shown = second.locator(".tools li[data-face]")
        expect(faces_shown).to_have_count(clusters[1]["size"])
        gone = faces_shown.first.get_attribute("data-face")
        faces_shown.first.locator("button").click()
        expect(page.locator("#unknown-msg")).to_contain_text(f"Removed face #{gone}")
        assert api.get(f"/unknown/faces/{gone}/crop").status_code == 404
        page.locator(f".card[data-cluster='{clusters[1]['id']}'] button:text('Dismiss')").click()
        expect(page.locator("#unknown-msg")).to_contain_text("dismissed")
        assert api.get(f"/unknown/{clusters[1]['id']}").json()["dismissed"]
    console.allow_status(404)
