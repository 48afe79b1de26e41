"""Collections in the web UI (issue 29), in real Chromium against real servers: the switcher in the header, every
page acting on the chosen collection (and forgetting the other's at once), a reload staying in it, the Model
page's Collections section (make, list with counts, delete), a key bound to a collection, and axe-core on the new
controls."""
from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest

from app.core.security import hash_key
from tests.ui.test_ui import expect

pytestmark = [pytest.mark.slow, pytest.mark.faces]
AXE = Path(__file__).parent / "vendor" / "axe.min.js"
ADMIN = "ui-coll-admin-" + "a" * 24
DOORS = "ui-coll-doors-" + "d" * 24  # a write key bound to the collection doors


@pytest.fixture(scope="module")
def server(ui_server):
    return ui_server("ui-collections")


@pytest.fixture(scope="module")
def keyed(ui_server):
    keys = [{"name": "ui-admin", "sha256": hash_key(ADMIN), "scopes": ["admin"]},
            {"name": "ui-doors", "sha256": hash_key(DOORS), "scopes": ["write"], "collections": ["doors"]}]
    srv = ui_server("ui-collections-keyed", {"FACEID_API_KEYS": json.dumps(keys)})
    r = httpx.post(f"{srv.url}/collections", json={"name": "doors"}, headers={"X-API-Key": ADMIN}, timeout=120)
    assert r.status_code == 201, r.text
    return srv


def matt(faces, i):
    return sorted((faces / "photos" / "Matt_Damon").glob("*.jpg"))[i]


def switch(page, name):
    """Choose `name` in the header's switcher (listed, else typed) and press Switch."""
    options = page.locator("#collection-select option").all_text_contents()
    if name in options:
        page.select_option("#collection-select", name)
    else:
        page.select_option("#collection-select", "")
        page.fill("#collection-name", name)
    page.click("#collection-use")


def identify(page, path):
    page.goto("/#identify")
    page.set_input_files("#identify-file", str(path))
    expect(page.locator("#identify-result")).to_be_visible()
    expect(page.locator("#identify-summary")).to_contain_text("face")


def counts(api, name):
    return api.get(f"/collections/{name}").json()["counts"]


def test_enroll_in_doors_is_not_seen_in_default_and_a_reload_stays(server, api, new_page, console, faces, shots):
    console.allow_status(409, 422)  # a name taken, a name refused: on purpose
    page = new_page(server.url)
    page.goto("/#model")
    expect(page.locator("#collection-select")).to_have_value("default")
    expect(page.locator("#collections-rows tr")).to_have_count(1)  # default, always there

    # make one: the name's rule and a name taken are said in words
    page.fill("#collection-new-name", "Doors!")
    page.click("#collection-create-submit")
    expect(page.locator("#collections-msg")).to_contain_text('"Doors!" cannot be used: a collection name is 1 to 63 lowercase')
    page.fill("#collection-new-name", "doors")
    page.fill("#collection-new-fpir", "0.001")
    page.click("#collection-create-submit")
    expect(page.locator("#collections-msg")).to_have_text(
        "Made doors (about 1 in 1,000 strangers matched): choose it at the top of the page to fill it.")
    row = page.locator("#collections-rows tr[data-collection=doors]")
    expect(row).to_contain_text("0.001 (1 in 1,000)")
    expect(row.locator("td").nth(0)).to_have_text("0")
    page.fill("#collection-new-name", "doors")
    page.click("#collection-create-submit")
    expect(page.locator("#collections-msg")).to_have_text('There is already a collection named "doors" (or one being deleted).')
    expect(page.locator("#collection-select option")).to_have_text(["default", "doors", "Other name…"])

    # enroll Matt Damon into doors through the UI
    switch(page, "doors")
    expect(page.locator("#collection-msg")).to_have_text("Now acting on doors.")
    expect(page.locator("#server-line")).to_contain_text("Collection doors · 0 identities, 0 faces")
    assert page.title() == "faceid · doors"
    page.goto("/#enroll")
    page.fill("#enroll-label", "Matt Damon")
    page.set_input_files("#enroll-files", [str(matt(faces, 0)), str(matt(faces, 1))])
    page.click("#enroll-submit")
    expect(page.locator("#enroll-msg")).to_have_text(re.compile(r"^2 of 2 photos enrolled into Matt Damon"))
    assert counts(api, "doors") == {"identities": 1, "faces": 2}
    assert counts(api, "default") == {"identities": 0, "faces": 0}
    expect(page.locator("#server-line")).to_contain_text("Collection doors · 1 identities, 2 faces")
    identify(page, matt(faces, 2))
    expect(page.locator("#identify-boxes .box.match")).to_have_text([re.compile(r"^1 Matt Damon 0\.\d\d$")])
    expect(page.locator("#identify-summary")).to_contain_text("about 1 stranger in 1000 wrongly matched")  # doors' own
    expect(page.locator("#collection-name")).to_be_hidden()
    page.click("summary:text('curl')")
    expect(page.locator("#identify-curl")).to_contain_text(f"{server.url}/collections/doors/identify?top_k=5")
    page.screenshot(path=shots / "collections-identify-doors-1280.png", full_page=True)

    # default: the result of doors goes at once; the gallery is empty; identify says unknown for Matt
    switch(page, "default")
    expect(page.locator("#identify-result")).to_be_hidden()
    expect(page.locator("#server-line")).to_contain_text("Collection default · 0 identities, 0 faces")
    page.goto("/#gallery")
    expect(page.locator("#gallery-msg")).to_have_text("The gallery is empty: enroll someone first.")
    expect(page.locator(".card")).to_have_count(0)
    identify(page, matt(faces, 2))
    expect(page.locator("#identify-boxes .box")).to_have_count(2)  # Matt, and someone behind him
    expect(page.locator("#identify-boxes .box.match")).to_have_count(0)
    expect(page.locator("#identify-faces .chip")).to_have_text(["unknown", "unknown"])
    expect(page.locator("#identify-faces .topk .none").first).to_have_text("no enrolled identities to compare with")

    # back to doors: the match again; a reload stays there
    switch(page, "doors")
    identify(page, matt(faces, 2))
    expect(page.locator("#identify-boxes .box.match")).to_have_text([re.compile(r"^1 Matt Damon")])
    page.reload()
    expect(page.locator("#collection-select")).to_have_value("doors")
    expect(page.locator("#server-line")).to_contain_text("Collection doors · 1 identities, 2 faces")
    page.goto("/#gallery")
    expect(page.locator(".card h3")).to_have_text(["Matt Damon"])
    expect(page.locator(".card .crops img[src^='blob:']")).to_have_count(2)


def test_switching_leaves_no_card_of_the_other_collection_on_screen(server, api, new_page, faces):
    """While default's page is still loading, no card of doors is shown; a person page of doors goes back to the
    gallery (its id means someone else in another collection)."""
    if counts(api, "doors")["identities"] == 0:
        pytest.skip("needs the first test's Matt Damon in doors")
    page = new_page(server.url)
    page.add_init_script("localStorage.setItem('faceid.collection', 'doors')")
    page.goto("/#gallery")
    expect(page.locator(".card h3")).to_have_text(["Matt Damon"])
    held = []
    page.route(re.compile(r"/identities\?"), lambda route: held.append(route))  # default's list: held back
    with page.expect_request(re.compile(r"/identities\?")):
        switch(page, "default")
    expect(page.locator(".card")).to_have_count(0)  # at once, before default's answer
    expect(page.locator("#gallery-range")).to_have_text("")
    assert held and all("/collections/" not in r.request.url for r in held)
    for route in held:
        route.continue_()
    page.unroute(re.compile(r"/identities\?"))
    expect(page.locator("#gallery-msg")).to_have_text("The gallery is empty: enroll someone first.")

    switch(page, "doors")
    page.locator(".card h3 a").click()
    expect(page.locator("#person-name")).to_have_text("Matt Damon")
    switch(page, "default")
    expect(page).to_have_url(re.compile(r"#gallery$"))
    expect(page.locator("#person-name")).to_have_text("Person")


def test_a_key_bound_to_doors_is_offered_its_collection_and_works_there(keyed, new_page, console, faces):
    console.allow_status(401, 403)  # the default gallery is refused to this key (the list shows it its own)
    page = new_page(keyed.url)
    page.goto("/#gallery")
    page.fill("#api-key", DOORS)
    page.click("#key-form button[type=submit]")
    expect(page.locator("#key-msg")).to_have_text("Key accepted (it cannot reach default: choose one of its collections).")
    expect(page.locator("#gallery-msg")).to_contain_text(
        "403 forbidden: this key is bound to the collections ['doors'], not 'default'. Choose one of its collections")
    expect(page.locator("#collection-select option")).to_have_text(["doors", "default", "Other name…"])

    switch(page, "lobby")  # not this key's
    expect(page.locator("#collection-msg")).to_contain_text('This key cannot reach "lobby"')
    expect(page.locator("#collection-select")).to_have_value("")  # still typing; nothing switched
    switch(page, "doors")
    expect(page.locator("#collection-msg")).to_have_text("Now acting on doors.")
    expect(page.locator("#gallery-msg")).to_have_text("The gallery is empty: enroll someone first.")
    expect(page.locator("#server-line")).to_contain_text("Collection doors · 0 identities, 0 faces")

    page.goto("/#enroll")
    page.fill("#enroll-label", "Matt Damon")
    page.set_input_files("#enroll-files", str(matt(faces, 0)))
    page.click("#enroll-submit")
    expect(page.locator("#enroll-msg")).to_have_text(re.compile(r"^1 of 1 photo enrolled into Matt Damon"))
    identify(page, matt(faces, 2))
    expect(page.locator("#identify-boxes .box.match")).to_have_text([re.compile(r"^1 Matt Damon")])

    page.reload()  # the key is the tab's; the collection and the name typed are remembered
    expect(page.locator("#collection-select")).to_have_value("doors")
    expect(page.locator("#collection-select option")).to_have_text(["doors", "Other name…"])
    page.goto("/#model")
    expect(page.locator("#collections-rows tr[data-collection=doors]")).to_be_visible()  # its own, listed
    expect(page.locator("#collections-rows tr")).to_have_count(1)
    expect(page.locator("#model-ready")).to_contain_text("collection doors: 1 people, 1 faces")
    r = httpx.get(f"{keyed.url}/collections/doors", headers={"X-API-Key": ADMIN}).json()
    assert r["counts"] == {"identities": 1, "faces": 1}
    assert httpx.get(f"{keyed.url}/identities", headers={"X-API-Key": ADMIN}).json()["total"] == 0


def test_delete_a_collection_after_confirmation(server, api, new_page):
    assert api.post("/collections", json={"name": "lobby"}).status_code == 201
    page = new_page(server.url)
    page.add_init_script("localStorage.setItem('faceid.collection', 'lobby')")
    page.goto("/#model")
    expect(page.locator("#server-line")).to_contain_text("Collection lobby")
    row = page.locator("#collections-rows tr[data-collection=lobby]")
    expect(row.locator("th")).to_contain_text("in use")
    row.get_by_role("button", name="delete lobby").click()
    expect(page.locator("#confirm-text")).to_have_text(
        'Delete the collection "lobby" with its 0 people and 0 faces? The other collections are not touched. '
        "This cannot be undone.")
    page.click("#confirm-cancel")
    expect(row).to_have_count(1)
    row.get_by_role("button", name="delete lobby").click()
    page.click("#confirm-ok")
    expect(row).to_have_count(0)
    expect(page.locator("#collections-msg")).to_have_text("Deleted lobby.")
    expect(page.locator("#collection-select")).to_have_value("default")
    expect(page.locator("#collection-msg")).to_have_text("lobby was deleted: now acting on default.")
    assert api.get("/collections/lobby").status_code == 404


def test_no_serious_accessibility_violation_on_the_collection_controls(server, new_page, shots):
    page = new_page(server.url, bypass_csp=True)  # axe is injected as a script; the app's CSP allows its own only
    page.goto("/#model")
    expect(page.locator("#collections-rows tr").first).to_be_visible()
    page.select_option("#collection-select", "")  # the typed-name field shown
    expect(page.locator("#collection-name")).to_be_visible()
    page.click("#collection-create-submit")  # a message shown
    expect(page.locator("#collections-msg")).to_have_text("Type a name for the new collection.")
    page.add_script_tag(path=str(AXE))
    problems = page.evaluate("""async () => (await axe.run(document, {resultTypes: ['violations']})).violations
        .filter((v) => v.impact === 'serious' || v.impact === 'critical')
        .map((v) => `${v.id} (${v.impact}): ${v.nodes.slice(0, 3).map((n) => n.target.join(' ')).join(', ')}`)""")
    assert problems == []
    page.set_viewport_size({"width": 375, "height": 800})  # a phone: the header wraps, nothing scrolls sideways
    assert page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth") <= 0
    page.screenshot(path=shots / "collections-model-375.png", full_page=True)
