"""The person page, the gallery's search, sort and selection, and the history of identifications, in real Chromium
against a real open server: every face of a person a page at a time with its source and date, set as cover, move,
delete (one or several), rename and delete the person, their reports; merge and delete several identities; recent
identifications newest first with crop and decision."""
from __future__ import annotations

import re

import pytest

from tests.ui.test_ui import expect, no_horizontal_scroll, photos

pytestmark = [pytest.mark.slow, pytest.mark.faces]
LFW_CENTRE = "75,75,175,175"  # LFW's 250 px images: the face is in the middle


@pytest.fixture(scope="module")
def server(ui_server):
    return ui_server("ui-person")


HEADINGS = """(root) => [...document.querySelector(root).querySelectorAll('h1, h2, h3, h4, h5, h6')]
    .filter((e) => e.offsetParent !== null).map((e) => [Number(e.tagName[1]), e.textContent])"""


def heading_jumps(page, root: str) -> list:
    """Visible headings that skip a level after the one before them (h1 then h3)."""
    levels = page.evaluate(HEADINGS, root)
    return [(a, b) for a, b in zip(levels, levels[1:]) if b[0] > a[0] + 1]


def lfw_enroll(api, faces, label, person, n) -> dict:
    """`n` LFW photos of `person` enrolled as `label`, ten per request; the identity."""
    paths = sorted((faces / "lfw" / person).glob("*.jpg"))[:n]
    for i in range(0, n, 10):
        r = api.post("/enroll", data={"label": label, "face_box": LFW_CENTRE},
                     files=[("files", (p.name, p.read_bytes())) for p in paths[i:i + 10]])
        assert r.status_code == 201, r.text
    return r.json()["identity"]


def test_a_person_page_shows_every_face_and_edits_them(server, api, new_page, faces, shots):
    bush = lfw_enroll(api, faces, "George W Bush", "George_W_Bush", 26)
    powell = lfw_enroll(api, faces, "Colin Powell", "Colin_Powell", 2)
    face_ids = [f["id"] for f in api.get(f"/identities/{bush['id']}").json()["faces"]]
    probe = api.post("/identify", files={"file": ("b.jpg", (faces / "lfw" / "George_W_Bush" /
                                                            "George_W_Bush_0100.jpg").read_bytes())}).json()
    r = api.post("/feedback", json={"kind": "is", "identity_id": bush["id"], "probe_id": probe["faces"][0]["probe_id"]})
    assert r.status_code == 201, r.text

    page = new_page(server.url)
    page.goto("/#gallery")
    page.fill("#gallery-q", "w bu")  # any part of the name, any case
    page.press("#gallery-q", "Enter")
    card = page.locator(f".card[data-identity='{bush['id']}']")
    expect(page.locator(".card")).to_have_count(1)
    expect(card.locator(".crops img")).to_have_count(8)
    expect(card.locator(".crops img").first).to_have_attribute("alt", "George W Bush, face 1")
    card.locator(".crops .more a").click()  # "+18 more": the person page, not a dead end
    expect(page).to_have_url(re.compile(rf"#person/{bush['id']}$"))
    expect(page.locator("#person-name")).to_have_text("George W Bush")
    expect(page.locator("nav a[aria-current=page]")).to_have_text("Gallery")
    faces_ = page.locator("#person-faces li")
    expect(faces_).to_have_count(24)
    expect(page.locator("#person-range")).to_have_text("faces 1–24 of 26")
    expect(faces_.first.locator("img")).to_have_attribute("alt", "George W Bush, face 1")
    expect(faces_.first).to_contain_text(re.compile(r"added .*From photo sha256 [0-9a-f]{12}… \(the photo is not stored"))
    expect(page.locator("#person-faces img[src^='blob:']")).to_have_count(24)
    expect(page.locator("#person-reports li")).to_have_count(1)
    expect(page.locator("#person-reports li")).to_contain_text("This is George W Bush")
    expect(page.locator("#person-reports img[src^='blob:']")).to_have_count(1)
    page.screenshot(path=shots / "person-1280.png")  # the top of it: docs/ui-person.png
    assert heading_jumps(page, "#page-person") == []
    page.click("#person-next")
    expect(faces_).to_have_count(2)
    expect(faces_.first.locator("img")).to_have_attribute("alt", "George W Bush, face 25")
    page.click("#person-prev")

    # set face 3 as the cover: the gallery card shows it first
    faces_.nth(2).locator("button", has_text="Set as cover").click()
    expect(page.locator("#person-msg")).to_have_text("Face 3 is now the cover of George W Bush.")
    expect(faces_.nth(2).locator(".chip")).to_have_text("cover")
    assert api.get(f"/identities/{bush['id']}").json()["cover_face_id"] == face_ids[2]
    gallery = new_page(server.url)
    gallery.goto("/#gallery")
    gallery.fill("#gallery-q", "George W")
    gallery.press("#gallery-q", "Enter")
    first = gallery.locator(f".card[data-identity='{bush['id']}'] .crops li").first
    expect(first).to_have_attribute("data-face", str(face_ids[2]))
    expect(first.locator("img")).to_have_attribute("alt", "George W Bush, face 3")
    assert heading_jumps(gallery, "#page-gallery") == []  # no duplicates listed: h1, then the cards' h3 under h2

    # move face 2 to Colin Powell
    faces_.nth(1).locator("button", has_text="Move").click()
    faces_.nth(1).locator(".tools input").fill("Colin Powell")
    faces_.nth(1).locator(".tools button", has_text="Move").click()
    expect(page.locator("#person-msg")).to_have_text("Moved 1 face to Colin Powell.")
    expect(page.locator("#person-range")).to_have_text("faces 1–24 of 25")
    assert api.get(f"/faces/{face_ids[1]}").json()["identity_id"] == powell["id"]

    # several faces: delete two, move one to a new person
    faces_.nth(3).locator("input.pick").check()
    faces_.nth(4).locator("input.pick").check()
    expect(page.locator("#person-picked")).to_have_text("2 faces selected")
    page.click("#person-delete-faces")
    expect(page.locator("#confirm-text")).to_have_text('Delete these 2 faces of "George W Bush"?')
    page.click("#confirm-ok")
    expect(page.locator("#person-msg")).to_have_text("Deleted 2 faces.")
    for fid in face_ids[4:6]:  # the 4th and 5th shown, face 2 having moved away
        assert api.get(f"/faces/{fid}").status_code == 404
    faces_.first.locator("input.pick").check()
    page.fill("#person-move-to", "Bush Look-alike")
    page.click("#person-move-submit")
    expect(page.locator("#person-msg")).to_have_text("Moved 1 face to Bush Look-alike.")
    assert api.get("/identities", params={"q": "look-alike"}).json()["items"][0]["face_count"] == 1
    expect(page.locator("#person-range")).to_have_text("faces 1–22 of 22")
    page.locator("#person-all").check()
    expect(page.locator("#person-picked")).to_have_text("22 faces selected")
    page.locator("#person-all").uncheck()
    expect(page.locator("#person-delete-faces")).to_be_disabled()

    page.click("#person-rename")
    page.locator("#person-tools input").fill("George Walker Bush")
    page.locator("#person-tools button", has_text="Save").click()
    expect(page.locator("#person-name")).to_have_text("George Walker Bush")
    narrow = new_page(server.url, width=375)
    narrow.goto(f"/#person/{bush['id']}")
    expect(narrow.locator("#person-faces img[src^='blob:']")).to_have_count(22)
    assert no_horizontal_scroll(narrow) <= 0, "the person page scrolls sideways at 375 px"

    page.click("#person-delete")
    expect(page.locator("#confirm-text")).to_contain_text('Delete "George Walker Bush" and 22 faces?')
    page.click("#confirm-ok")
    expect(page).to_have_url(re.compile("#gallery$"))
    assert api.get(f"/identities/{bush['id']}").status_code == 404


def test_gallery_sorts_selects_merges_and_deletes_several(server, api, new_page, faces, shots):
    ids = {label: lfw_enroll(api, faces, label, person, n)["id"]
           for label, person, n in [("Sel Tony Blair", "Tony_Blair", 3), ("Sel Blair Again", "Tony_Blair", 1),
                                    ("Sel Gerhard Schroeder", "Gerhard_Schroeder", 2)]}
    page = new_page(server.url)
    page.goto("/#gallery")
    page.fill("#gallery-q", "sel ")
    page.press("#gallery-q", "Enter")
    titles = page.locator(".card h3")
    expect(titles).to_have_text(["Sel Tony Blair", "Sel Blair Again", "Sel Gerhard Schroeder"])
    page.select_option("#gallery-sort", "label")
    expect(titles).to_have_text(["Sel Blair Again", "Sel Gerhard Schroeder", "Sel Tony Blair"])
    page.select_option("#gallery-sort", "faces")
    expect(titles).to_have_text(["Sel Tony Blair", "Sel Gerhard Schroeder", "Sel Blair Again"])
    expect(page.locator(".card .crops img[src^='blob:']")).to_have_count(6)  # every crop loaded
    assert heading_jumps(page, "#page-gallery") == []
    page.screenshot(path=shots / "gallery-selection-1280.png", full_page=True)  # docs/ui-gallery.png

    page.locator(f".card[data-identity='{ids['Sel Tony Blair']}'] input.pick").check()
    page.locator(f".card[data-identity='{ids['Sel Blair Again']}'] input.pick").check()
    expect(page.locator("#gallery-picked")).to_have_text("2 selected")
    page.click("#gallery-merge")
    expect(page.locator("#gallery-merge-into")).to_have_value(str(ids["Sel Tony Blair"]))  # most faces keeps its name
    page.locator("#gallery-bulk-tools button", has_text="Merge").click()
    expect(page.locator("#confirm-text")).to_have_text('Move the faces of "Sel Blair Again" into "Sel Tony Blair" and delete it?')
    page.click("#confirm-ok")
    expect(page.locator("#gallery-msg")).to_have_text("Merged 1 person into Sel Tony Blair.")
    expect(titles).to_have_text(["Sel Tony Blair", "Sel Gerhard Schroeder"])
    assert api.get(f"/identities/{ids['Sel Tony Blair']}").json()["face_count"] == 4

    page.locator("#gallery-all").check()
    expect(page.locator("#gallery-picked")).to_have_text("2 selected")
    page.click("#gallery-delete")
    expect(page.locator("#confirm-text")).to_have_text(
        "Delete 2 people (Sel Tony Blair, Sel Gerhard Schroeder) and their 6 faces? This cannot be undone.")
    page.click("#confirm-ok")
    expect(page.locator("#gallery-msg")).to_have_text("Deleted 2 people.")
    expect(page.locator(".card")).to_have_count(0)
    expect(page.locator("#gallery-bulk")).to_be_hidden()  # nothing to select
    assert api.get("/identities", params={"q": "sel "}).json()["total"] == 0


def test_history_lists_recent_identifications_newest_first(server, api, new_page, faces, shots):
    hist = lfw_enroll(api, faces, "Hist Laura Bush", "Laura_Bush", 2)
    for path in [faces / "lfw" / "Laura_Bush" / "Laura_Bush_0010.jpg", photos(faces, "Elon_Musk", 1)[0]]:
        assert api.post("/identify", files={"file": (path.name, path.read_bytes())}).status_code == 200
    probes = api.get("/probes").json()["items"]
    laura = next(p for p in probes if p["status"] == "match" and p["top_identity"]["id"] == hist["id"])
    page = new_page(server.url)
    page.goto("/#history")
    rows = page.locator("#history-list li")
    expect(rows).to_have_count(min(len(probes), 20))
    expect(rows.first).to_have_attribute("data-probe", str(probes[0]["id"]))  # the newest first
    expect(rows.first.locator(".chip")).to_have_text("unknown")  # Elon Musk is not enrolled
    match = page.locator(f"#history-list li[data-probe='{laura['id']}']")
    expect(match.locator(".chip")).to_have_text("match")
    expect(match.locator(".probe-decision")).to_contain_text(re.compile(r"^match Hist Laura Bush \(score 0\.\d{3}\)$"))
    expect(match.locator("img")).to_have_attribute("src", re.compile("^blob:"))
    page.screenshot(path=shots / "history-1280.png", full_page=True)
    match.locator("a", has_text="Hist Laura Bush").click()
    expect(page.locator("#person-name")).to_have_text("Hist Laura Bush")
    assert f"#person/{hist['id']}" in page.url
    narrow = new_page(server.url, width=375)
    narrow.goto("/#history")
    expect(narrow.locator("#history-list li")).to_have_count(min(len(probes), 20))
    assert no_horizontal_scroll(narrow) <= 0, "the history page scrolls sideways at 375 px"


def test_a_face_names_the_others_enrolled_from_the_same_photo(server, api, new_page, faces):
    couple = faces / "multi" / "couple.jpg"
    ids = []
    for i, label in enumerate(["Couple One", "Couple Two"]):
        r = api.post("/enroll", data={"label": label, "face_index": str(i)},
                     files=[("files", (couple.name, couple.read_bytes()))])
        assert r.status_code == 201, r.text
        ids.append(r.json()["identity"]["id"])
    page = new_page(server.url)
    page.goto(f"/#person/{ids[0]}")
    expect(page.locator("#person-faces .same-photo")).to_have_text("Also from this photo: Couple Two")
    page.locator("#person-faces .same-photo a").click()
    expect(page.locator("#person-name")).to_have_text("Couple Two")
    expect(page.locator("#person-faces .same-photo")).to_have_text("Also from this photo: Couple One")
