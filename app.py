"""RLHF Workbench dashboard entry point (`make run`, `make room`). Pages live in pages/, one file each."""

from pathlib import Path

import pandas  # noqa: F401 - imported once here: plotly reads a half-imported pandas if two sessions race to it
import streamlit as st
from streamlit.runtime.pages_manager import PagesManager

from dashboard.heap import freeze_long_lived_heap
from dashboard.room import gate
from dashboard.state import APP_SHELL_KEY

# A local favicon: a page's material icon as favicon would be fetched from fonts.gstatic.com (offline rooms)
FAVICON = Path(__file__).parent / "dashboard" / "favicon.png"
freeze_long_lived_heap()  # once per server: Streamlit's gc after each script run then walks only what runs made
if PagesManager.uses_pages_directory:  # the server's first script run, before any st.navigation: Streamlit would
    PagesManager.uses_pages_directory = False  # run this script under its pages/ list, with other widget ids (a
    st.rerun()  # join form's first click would be lost); see dashboard.state.require_app_shell
st.set_page_config(page_title="RLHF Workbench", page_icon=str(FAVICON), layout="wide")
who = gate()  # alone; or in a room, the participant, teacher or projector of this session (else it stops here)
st.session_state[APP_SHELL_KEY] = True  # pages check it: see dashboard.state.require_app_shell


def pages_for(role: str) -> list:
    """The sidebar of each kind of visitor: alone, everything; a participant, everything in their workspace and
    the room's frontier; the teacher, the Room page first; the projector, the room's frontier only."""
    first = {"teacher": "room", "projector": "frontier"}.get(role, "home")
    page = lambda name, title, icon: st.Page(f"pages/{name}.py", title=title, icon=f":material/{icon}:",  # noqa: E731
                                             default=name == first)
    frontier = page("frontier", "Room frontier", "groups")
    if role == "projector":
        return [frontier]
    pages = [
        page("home", "Home", "home"),
        page("workshop", "Workshop", "school"),
        page("model", "Model", "neurology"),
        page("preferences", "Preferences", "balance"),
        page("reward_model", "Reward model", "military_tech"),
        page("ppo", "Policy training", "autorenew"),
        page("sweep", "KL sweep", "tune"),
        page("runs", "Runs", "monitoring"),
    ]
    if role == "teacher":
        return [page("room", "Room", "co_present"), *pages, frontier]
    return [*pages, frontier] if role == "participant" else pages


st.navigation(pages_for(who.role)).run()
