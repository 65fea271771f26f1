"""A workshop room in a real browser: joining, the personal link kept across page changes, reloads and tabs
(Streamlit clears the query string when the page changes, which AppTest does not show), two participants kept
apart, the link-less visitor turned away, the projector's read-only frontier and the teacher's Room page.
Screenshots of the room's pages go to test-artifacts/screenshots/room-*.png (docs/room.md shows them)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from browser import APP, chromium_page, dashboard_server, nav_link, open_page, screenshot, wait_idle

from rlhf_engine.room.links import room_links
from rlhf_engine.room.room import Room
from rlhf_engine.runs.runfolder import RunFolder

SHOTS = Path(os.environ.get("SCREENSHOT_DIR", Path(__file__).resolve().parents[1] / "test-artifacts" / "screenshots"))

pytestmark = pytest.mark.skipif(not Path(os.environ.get("CHROMIUM", "/usr/bin/chromium")).exists(),
                                reason="no Chromium: `make test` installs Debian's chromium package")


def join(page, url: str, name: str) -> str:
    """Open the participants' link, join with a name; the personal link the page then shows."""
    open_page(page, url)
    page.get_by_label("Your name", exact=False).fill(name)
    page.get_by_role("button", name="Join").click()
    page.get_by_text("Keep this link").wait_for()
    wait_idle(page)
    return page.locator('[data-testid="stCode"]').first.inner_text().strip()


def signed_in_as(page) -> str:
    return page.get_by_text("Signed in as").first.inner_text()


def test_a_room_in_chromium(tmp_path):
    room = Room.open(tmp_path / "room")
    with dashboard_server(tmp_path / "unused", tmp_path / "streamlit.log",
                          env={"RLHF_ROOM": str(room.folder)}) as url, chromium_page() as page:
        links = room_links(room, url)
        open_page(page, url)  # no token: one line, no workspace made
        assert "open the link your teacher gives you" in page.locator(APP).inner_text()
        assert not (room.folder / "participants").exists() or not any((room.folder / "participants").iterdir())

        ana_link = join(page, links["participants"], "Ana")
        ana = room.participants()[0]
        assert ana_link.endswith(f"p={ana.secret}") and f"p={ana.secret}" in page.url
        screenshot(page, SHOTS / "room-joined.png")
        bo = room.join("Bo")
        secret_run = RunFolder(room.workspace(bo.id).ensure().runs / "bo-secret-run")
        secret_run.create("ppo", {"config": {}}, 3)

        page.reload()
        wait_idle(page)
        assert "bo-secret-run" not in page.locator(APP).inner_text()  # Home lists the workspace's runs
        nav_link(page, "Runs").click()  # the page change clears the query string; the app writes it back
        wait_idle(page)
        page.wait_for_url(f"**p={ana.secret}**")
        assert "No runs in" in page.locator(APP).inner_text()
        page.reload()
        wait_idle(page)
        nav_link(page, "Home").click()
        wait_idle(page)
        assert "Ana" in signed_in_as(page)
        second_tab = page.context.browser.new_page()  # a new tab with no session of its own
        open_page(second_tab, f"{url}/?p={ana.secret}")  # the link shown, on this test's loopback address
        assert "Ana" in signed_in_as(second_tab)
        second_tab.close()

        open_page(page, f"{url}/?p={bo.secret}")  # Bo's own link shows Bo's run
        assert "Bo" in signed_in_as(page) and "bo-secret-run" in page.locator(APP).inner_text()

        open_page(page, links["projector"])  # the frontier and nothing else; no teacher's token in the address
        assert room.token("teacher") not in page.url
        names = page.locator('[data-testid="stSidebarNav"]').inner_text() if page.locator(
            '[data-testid="stSidebarNav"]').count() else ""
        assert "Runs" not in names and "Room frontier" in page.locator(APP).inner_text()
        screenshot(page, SHOTS / "room-projector.png")

        open_page(page, links["teacher"])
        screenshot(page, SHOTS / "room-teacher.png")
        assert "Participants (2)" in page.locator(APP).inner_text()  # their table is a canvas: its count here
        assert page.locator('[data-testid="stImage"] img').count() >= 1  # the QR code of the participants' link
