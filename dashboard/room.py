"""Who is at this page: a user alone (``make run``), or in a workshop room (``make room``) a participant, the
teacher or the projector. app.py calls ``gate()`` before it draws any page.

In a room (``$RLHF_ROOM`` names its folder) every session needs a token in its link: the room's token opens the
join form, a participant's personal secret their workspace, the teacher's token the Room page, the projector's the
room's frontier only. A session without one sees one line on how to join and touches no workspace. The identity is
kept in the session and written back into the address bar on every script run (Streamlit clears the query string
when the page changes), so a reload, a second tab or a bookmarked link finds the same workspace.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from rlhf_engine.room.links import PERSONAL_PARAM as PERSONAL
from rlhf_engine.room.links import ROOM_ENV
from rlhf_engine.room.links import ROOM_PARAM as JOIN
from rlhf_engine.room.links import TEACHER_PARAM as TEACHER_LINK
from rlhf_engine.room.links import VIEW_PARAM as PROJECTOR
from rlhf_engine.room.room import TEACHER, Room

IDENTITY_KEY = "room.identity"
NOT_IN = "This is a workshop room: open the link your teacher gives you to join."


@dataclass(frozen=True)
class Identity:
    """Who this session is: ``role`` alone, participant, teacher or projector; ``pid`` the owner id of their jobs."""

    role: str
    pid: str = ""
    name: str = ""
    link_key: str = ""  # the query parameter that carries their token
    link_value: str = ""

    @property
    def owns_jobs(self) -> bool:
        return self.role in ("alone", "participant", "teacher")


ALONE = Identity("alone")


@st.cache_resource
def _room(folder: str) -> Room:
    return Room.open(Path(folder))


def current_room() -> Room | None:
    """The room this server hosts, None for a user alone."""
    folder = os.environ.get(ROOM_ENV)
    return _room(str(Path(folder).resolve())) if folder else None


def identity() -> Identity:
    """This session's identity (``gate`` has run first)."""
    if current_room() is None:
        return ALONE
    found = st.session_state.get(IDENTITY_KEY)
    if found is None:
        st.info(NOT_IN)
        st.stop()
    return found


def gate() -> Identity:
    """The session's identity, from the session or the link; without one, one line and the script stops."""
    room = current_room()
    if room is None:
        return ALONE
    known = st.session_state.get(IDENTITY_KEY) or _from_link(room)
    if known is None:
        if room.role_of(st.query_params.get(JOIN)) == "participant":
            # The form is a page of st.navigation's, the one page there is: its widgets keep their ids from one
            # run to the next (drawn before any navigation, a first click could come back with other ids, lost)
            st.navigation([st.Page(join_page, title="Join the workshop", url_path="join", default=True)]).run()
        else:
            st.info(NOT_IN)
        st.stop()
    st.session_state[IDENTITY_KEY] = known
    if st.query_params.get(known.link_key) != known.link_value:
        st.query_params[known.link_key] = known.link_value  # back into the address bar after a page change
    return known


def _from_link(room: Room) -> Identity | None:
    params = st.query_params
    person = room.participant(params.get(PERSONAL))
    if person is not None:
        return Identity("participant", person.id, person.name, PERSONAL, person.secret)
    if room.role_of(params.get(TEACHER_LINK)) == "teacher":
        return Identity("teacher", TEACHER, "the teacher", TEACHER_LINK, params[TEACHER_LINK])
    if room.role_of(params.get(PROJECTOR)) == "projector":
        return Identity("projector", "", "projector", PROJECTOR, params[PROJECTOR])
    return None


def join_page() -> None:
    """The join form: a display name, then this participant's own link and workspace."""
    room = current_room()
    st.title("Join the workshop")
    with st.form("room.join"):
        name = st.text_input("Your name (shown to the teacher and on the room's charts)", max_chars=40)
        joined = st.form_submit_button("Join", type="primary")
    if joined:
        try:
            person = room.join(name)
        except ValueError as err:
            st.error(str(err))
            st.stop()
        except OSError as err:  # the server's disk is full, say: one line, not a traceback
            from rlhf_engine.runs.job import describe_error

            st.error(f"Joining failed: {describe_error(err)}")
            st.stop()
        st.session_state[IDENTITY_KEY] = Identity("participant", person.id, person.name, PERSONAL, person.secret)
        st.query_params.clear()
        st.query_params[PERSONAL] = person.secret
        st.session_state["room.just_joined"] = True
        st.rerun()


def personal_link_notice(who: Identity) -> None:
    """A participant's own link, to keep: it is their way back to their workspace."""
    if who.role != "participant":
        return
    from rlhf_engine.room.links import personal_link, room_base_url

    from .widgets import md  # a name is the participant's text: shown as text, never as Markdown

    link = personal_link(room_base_url(), current_room().by_id(who.pid))
    if st.session_state.pop("room.just_joined", False):
        st.success(f"Welcome, {md(who.name)}! Keep this link to come back to your workspace (from any tab or "
                   "after a reload):")
    else:
        st.caption(f"Signed in as **{md(who.name)}**. Your link, to come back later:")
    st.code(link, language=None)
