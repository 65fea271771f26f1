"""Room: the teacher's page. The links to project, the slots, where every participant is, the queue (Stop on any
job, End the room), the β and method each participant runs, the names on the room's frontier, the models offered."""

from datetime import datetime

import streamlit as st

from dashboard.lab import placement_phrase
from dashboard.room import current_room, identity
from dashboard.state import job_queue, require_app_shell, stop_job
from dashboard.widgets import engine_errors, first_value, flash, md, show_flash, wait_phrase
from rlhf_engine.lab import workshop
from rlhf_engine.lab.sweep import parse_values
from rlhf_engine.methods import registry
from rlhf_engine.room.links import qr_png, room_base_url, room_links
from rlhf_engine.room.progress import progress_line, workshop_progress
from rlhf_engine.room.room import TEACHER

require_app_shell()

K = "room"
ROOM_REFRESH_S = 5.0  # seconds between refreshes of the participants and the queue
NOT_TEACHER = "The Room page is the teacher's: open the teacher's link to see it."

st.title("Room")
room = current_room()
if room is None or identity().role != "teacher":
    st.info(NOT_TEACHER)
    st.stop()
show_flash()
queue = job_queue()


@st.cache_data(max_entries=4, show_spinner=False)
def qr_code(link: str) -> bytes:
    return qr_png(link)


# ---- the links and the slots ------------------------------------------------------------------------------------
links = room_links(room, room_base_url())
col_qr, col_links = st.columns([1, 2])
col_qr.image(qr_code(links["participants"]), caption="The participants' link: scan to join", width=300)
col_links.markdown("**The participants' link** (project it, or the QR code): whoever opens it joins with a name and "
                   "gets a link of their own, to their own workspace.")
col_links.code(links["participants"], language=None)
col_links.markdown("**The projector's link**: the room's frontier only, for the screen everyone sees.")
col_links.code(links["projector"], language=None)
col_links.caption("Your own link, the teacher's, is the one in your address bar: it stops anyone's job, so keep it "
                  "off the projector.")
plan = getattr(queue, "plan", None)  # the SlotPlan the room's queue was made with (rlhf_engine.room.slots)
col_links.markdown(f"**Slots**: {queue.slots} job(s) train at once"
                   + (f". {md(plan.reason)}." if plan is not None else "."))
if getattr(queue, "cluster", None) is not None:
    col_links.markdown("Each job runs as a Ray task, asking for its CPUs, GPU share and memory; the queue says "
                       "where the cluster placed it.")
col_links.caption("`make room SLOTS=K` (or `python -m rlhf_engine room --slots K`) sets K instead when the room "
                  "starts. The queue takes the participants in turn"
                  + (f", at most {queue.cap} waiting jobs each." if queue.cap else "."))


# ---- the participants and the queue, live ------------------------------------------------------------------------
def joined(when: str) -> str:
    try:
        return datetime.fromisoformat(when).astimezone().strftime("%H:%M")
    except ValueError:
        return when


def participants_table(names: dict[str, str]) -> None:
    people = room.participants()
    st.subheader(f"Participants ({len(people)})")
    if not people:
        st.caption("Nobody has joined yet: project the participants' link.")
        return
    rows = []
    for person in people:
        progress = workshop_progress(room.workspace(person.id))
        last = progress["last_run"]
        mine = queue.jobs(owner=person.id)
        rows.append({"name": person.name, "joined": joined(person.joined_at), "workshop": progress_line(progress),
                     "last run": f"{last['id']}: {last['state']}, step {last['step']}/{last['total_steps'] or '?'}"
                     if last else "—",
                     "jobs": "; ".join(f"{job.run.id}: {wait_phrase(job)}" for job in mine) or "—"})
    st.dataframe(rows, hide_index=True)


def where(job) -> str:
    """Its place in the queue; for a job the queue started on a Ray cluster, where its task was placed (a run
    trained in a group: the group's task, placed afresh each time it starts)."""
    phrase = wait_phrase(job)
    placed = placement_phrase(getattr(job, "group", job).run.status()) if queue.position(job) == 0 else ""
    return f"{phrase} {placed}" if placed.startswith("on ") else placed or phrase


def queue_table(names: dict[str, str]) -> None:
    jobs = queue.jobs()
    st.subheader(f"Queue ({len(jobs)} job{'s' * (len(jobs) != 1)})")
    if not jobs:
        st.caption("No job is running or waiting.")
        return
    for i, job in enumerate(jobs):
        owner = queue.owner_of(job)
        col_who, col_run, col_place, col_stop = st.columns([2, 4, 3, 1])
        col_who.markdown(md(names.get(owner, owner or "?")))
        col_run.markdown(f"`{job.run.id}` — {md(job.run.status().get('state', 'unknown'))}")
        col_place.markdown(md(where(job)))
        if col_stop.button("Stop", key=f"{K}.stop.{i}.{job.run.path}",
                           help="Stop after the current step, keeping a checkpoint (a waiting job is taken off)"):
            with engine_errors("Stopping the job"):
                stop_job(job)
                st.rerun(scope="fragment")
    end_the_room()


def end_the_room() -> None:
    """Every job stopped, one call per job through the queue, after a confirmation."""
    if st.button("End the room", key=f"{K}.end", help="Stop every job of the room, each keeping a checkpoint"):
        st.session_state[f"{K}.ending"] = True
    if not st.session_state.get(f"{K}.ending"):
        return
    st.warning("Stop every job of the room? Running jobs stop after their current step and keep a checkpoint "
               "(Resume continues them); waiting ones are taken off the queue. The server keeps serving: stop it "
               "with Ctrl-C in its terminal; `make room` again reopens this room with the same links.")
    col_yes, col_no = st.columns(2)
    if col_yes.button("Yes, stop every job", key=f"{K}.end.yes", type="primary"):
        st.session_state.pop(f"{K}.ending")
        stopped = 0
        with engine_errors("Ending the room"):
            for job in queue.jobs():
                stop_job(job)
                stopped += 1
        flash(f"Stopped {stopped} job(s); each running one ends after its current step, with a checkpoint.")
    if col_no.button("Cancel", key=f"{K}.end.no"):
        st.session_state.pop(f"{K}.ending")
        st.rerun(scope="fragment")


def live_room() -> None:
    names = {p.id: p.name for p in room.participants()} | {TEACHER: "the teacher"}
    participants_table(names)
    queue_table(names)


st.fragment(live_room, run_every=ROOM_REFRESH_S)()


# ---- what the participants run: β and method ---------------------------------------------------------------------
st.subheader("Assignments: one sweep, built by the room")
st.caption("Spread values of β (and methods) over the participants in the order they joined: participant i gets "
           "the i-th β (round and round), and with several methods the next round of βs goes to the next method. "
           "Their Workshop page's step 4 then trains that one run instead of the whole sweep, and the room's "
           "frontier puts every run beside the others'. Someone who joins later gets nothing until you assign again.")
METHODS = registry.methods()
col_betas, col_methods = st.columns(2)
PRESET_BETAS = ", ".join(format(b, "g") for b in workshop.preset().betas)  # the workshop's own sweep
betas_text = col_betas.text_input("β values", key=f"{K}.betas", **first_value(f"{K}.betas", PRESET_BETAS))
methods = col_methods.multiselect("Methods", list(METHODS), key=f"{K}.methods",
                                  format_func=lambda name: METHODS[name].title,
                                  **first_value(f"{K}.methods", ["ppo"], "default"))
if st.button("Assign", key=f"{K}.assign", type="primary", disabled=not room.participants()):
    with engine_errors("Assigning"):
        given = room.assign(parse_values("kl_coef", betas_text), methods or None)
        flash(f"Assigned {len(given)} participant(s).")


def assignment_rows() -> list[dict]:
    """Who got what, in the order they joined."""
    given = room.settings()["assignments"]
    rows = []
    for person in room.participants():
        mine = given.get(person.id)
        method = METHODS[mine["method"]].title if mine and mine["method"] in METHODS else (mine or {}).get("method")
        rows.append({"name": person.name, "method": method or "— (joined after the last Assign)",
                     "β": mine["kl_coef"] if mine else None})
    return rows


if room.settings()["assignments"]:
    st.dataframe(assignment_rows(), hide_index=True)


# ---- the room's frontier and the models on offer -----------------------------------------------------------------
st.subheader("Settings")


def names_changed() -> None:
    room.update_settings(names_shown=st.session_state[f"{K}.names"])


st.toggle("Show names on the room's frontier", key=f"{K}.names", on_change=names_changed,
          help="Off: the projector and the participants see “participant 1”, “participant 2”, … instead of names",
          **first_value(f"{K}.names", room.settings()["names_shown"]))
models_text = st.text_area("Models participants may choose on the Model page beside the bundled one (Hugging Face "
                           "hub ids, one a line)", key=f"{K}.models",
                           **first_value(f"{K}.models", "\n".join(room.settings()["models"])))
if st.button("Save the models", key=f"{K}.models.save"):
    with engine_errors("Saving the models"):
        from huggingface_hub.utils import validate_repo_id

        offered = list(dict.fromkeys(line.strip() for line in models_text.splitlines() if line.strip()))
        for repo in offered:
            validate_repo_id(repo)  # a hub id, never a path on this server
        room.update_settings(models=offered)
        flash(f"Participants may choose {len(offered)} model(s) beside the bundled one.")


def in_cache(repo: str) -> bool:
    """Whether a hub model's config.json is in this server's Hugging Face cache (its weights then are too, as a
    rule: they are fetched together)."""
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(repo, "config.json"), str)
    except ValueError:
        return False


cached = [f"`{md(repo)}` {'is' if in_cache(repo) else 'is **not**'} in it" for repo in room.settings()["models"]]
st.caption("Only models in this server's Hugging Face cache load offline: a room often has no internet, so load each "
           "one once beforehand (on the Model page of your own workspace, say)." + (
               f" Of those offered: {'; '.join(cached)}." if cached else ""))
