"""Twenty participants on one server: page render times, runs and memory, in a workshop room and in today's
single-user dashboard under the same load (run by hand, alone on the machine).

    .venv/bin/python benchmarks/room_load.py --out /tmp/room-load [--participants 20 --browsers 2 --mode both]

The server process alone runs on CPU 0 (``sched_setaffinity`` before it starts), the jobs on CPU 1: the room's
slot plan is told so by ``RLHF_ROOM_JOB_CPUS=1`` (each slot's job then gets ``RLHF_JOB_CPUS=1``); the single-user
server passes ``RLHF_JOB_CPUS=1`` and ``RLHF_THREADS=1`` on to its jobs through its environment. This script, its
clients and Chromium are not pinned (a 2-core machine has no third core for them).

Each participant is a session of the dashboard: ``--browsers`` of them Chromium through Playwright, the others
``st_client.StreamlitSession`` (Streamlit's own websocket protocol). The preset is ``workshop.LOAD``
(``RLHF_WORKSHOP_PRESET=load``): the shipped pairs, a reward model of 4 steps, one PPO run of 2 steps of 4 prompts
x 16 tokens.

* ``room`` (``python -m rlhf_engine room``): each participant opens the participants' link, joins through the join
  form, and once everyone is in, the teacher assigns the preset's β values (``Room.assign``), so that step 4 of each
  Workshop page is one run. Each then clicks the Workshop page's first four steps: "Use the bundled model",
  "Add the … simulated pairs", "Train the reward model", and when it has trained, "Run my assigned run".
* ``single`` (``streamlit run app.py``, one ``RLHF_WORKSPACE`` for all): a first session adds the model and the
  pairs on the Workshop page; then each participant trains a reward model of its own name on the Reward model page
  and a PPO run of its own name on the Policy training page, with the preset's sizes (but for what that page has no
  knob for: the reward model is normalised on its default 64 answers of 32 tokens, the preset's on 16 of 16).

While a participant's job waits or runs, its page sends the reruns of its ``run_every`` fragments at their
interval (a page without one is reloaded every 5 s). **Render time**, the same measure for both kinds of client:
from a rerun request (a click, a page change or a fragment's timer) to the run's ``script_finished``. The light
client times its own requests; for Chromium it is read off the page's websocket frames (Chrome DevTools'
``Network.webSocketFrameSent/Received`` timestamps): from the first rerun request not yet answered to the next
``script_finished`` (requests sent while a run is going count from the first).

Runs are counted from the run folders (reward models and PPO runs: queued, completed, lost = not completed, with
each kind's job and queue times); errors are exceptions drawn on a page, Join clicks the server lost (the participant
clicks again, up to 3 times) and participants that could not go on (a timeout, a failed run). Peak RSS: the server's
``VmHWM`` and the jobs' (``run-job`` processes under the room's folder or the workspace, found in /proc: a room's
jobs run in sessions of their own), sampled every 0.5 s. Privacy (room): each participant's workspace holds only
its own runs and names no other's; no page a participant saw names another participant (name, id, secret) or
another's runs (run ids that are not also its own: the Workshop page names runs by the time).

Every render, with who and when, goes to ``<out>/room-renders.jsonl`` and ``<out>/single-renders.jsonl``.
Writes benchmarks/results/room-load.json (``--results``): the room's figures at the top level, ``single_queue``
the single-user server's, the side-by-side ratios from room-side-by-side.json (null if absent) and the machine.
A run of one mode keeps the other mode's figures found in the file. ``--timeout-min`` bounds each mode (runs not
done by then are lost); every process it starts is ended at the end of each mode, on an error too.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs

from bench import ROOT, TESTS, machine, on_path, write_json

on_path(TESTS)

from browser import (
    APP,
    app_button,
    chromium_page,
    fill_number,
    free_port,
    nav_link,
    select_option,
    wait_for_health,
)
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from st_client import StreamlitSession
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

from rlhf_engine.lab import workshop
from rlhf_engine.room.links import PERSONAL_PARAM, ROOM_ENV, ROOM_PARAM
from rlhf_engine.room.room import Room
from rlhf_engine.room.scheduler import JOB_CPUS_ENV
from rlhf_engine.runs.job import CPUS_ENV, THREADS_ENV
from rlhf_engine.runs.reward_job import REWARD_KIND
from rlhf_engine.runs.runfolder import list_runs

RESULTS = ROOT / "benchmarks" / "results" / "room-load.json"
SIDE_BY_SIDE = ROOT / "benchmarks" / "results" / "room-side-by-side.json"
PRESET = "load"  # workshop.NAMED: the sizes every participant's runs take (workshop.LOAD)
SIZES = workshop.NAMED[PRESET]
SERVER_CPU, JOB_CPU = 0, 1
JOIN_LABEL = "Your name (shown to the teacher and on the room's charts)"
REQUEST_TIMEOUT_S = 180.0  # longest wait for one run's script_finished
JOIN_TRIES = 3  # clicks on Join before a participant gives up (a click can be lost: each is counted as an error)
RELOAD_S = 5.0  # a page with no run_every fragment is reloaded this often while its participant waits
FINAL = ("completed", "failed", "stopped", "interrupted")
# The Policy training page's labels of the fields the preset sets (dashboard.widgets.PPO_FORM and its popover)
PPO_LABELS = {"steps": "PPO steps", "batch_size": "batch (prompts per step)",
              "response_length": "response length (tokens)", "ppo_epochs": "PPO epochs",
              "learning_rate": "learning rate", "checkpoint_every": "checkpoint every (steps)",
              "probe_every": "probe answers every (steps)", "probe_prompts": "held-out probe prompts",
              "reference_probe_samples": "reference answers per probe prompt"}
PPO_POPOVER = "More: γ, implementation details, seed"
PPO_IN_POPOVER = ("checkpoint_every", "probe_every", "probe_prompts", "reference_probe_samples")
RM_LABELS = {"steps": "steps", "batch_size": "batch size (pairs)", "learning_rate": "learning rate",
             "pooling": "pooling"}


class RunFailed(RuntimeError):
    """A participant's run ended other than completed: it goes on no further."""


# ---------------------------------------------------------------------------------------------- what is recorded

@dataclass
class Participant:
    index: int
    name: str
    browser: bool
    secret: str = ""  # room: the personal link's secret
    pid: str = ""  # room: the participant's id (their workspace's folder)
    texts: list[str] = field(default_factory=list)  # every text its pages showed
    error: str = ""  # why it stopped early, if it did
    done_s: float | None = None  # seconds from the start to its last run's end

    @property
    def kind(self) -> str:
        return "browser" if self.browser else "client"


class Record:
    """Render times and errors from every participant (asyncio clients and browser threads alike)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.start = time.monotonic()
        self.renders: list[dict] = []  # each render: when it was asked for (s from the start), who, kinds, seconds
        self.errors: list[str] = []

    def render(self, who: Participant, run_kind: str, seconds: float) -> None:
        with self.lock:
            self.renders.append({"at_s": time.monotonic() - self.start - seconds, "who": who.name,
                                 "client": who.kind, "run": run_kind, "s": seconds})

    def save(self, path: Path) -> None:
        """Every render, one JSON line each (the figures' raw data, for a look at where slow ones fall)."""
        with self.lock:
            path.write_text("".join(json.dumps({**row, "at_s": round(row["at_s"], 3), "s": round(row["s"], 4)})
                                    + "\n" for row in self.renders))

    def error(self, who: Participant | None, text: str) -> None:
        with self.lock:
            self.errors.append(f"{who.name if who else 'setup'}: {text}"[:400])


class Start:
    """The room's start line: everyone joins, then the teacher assigns; the walk begins when `assigned` is set."""

    def __init__(self, participants: int) -> None:
        self.left = participants
        self.lock = threading.Lock()
        self.everyone_in = threading.Event()
        self.assigned = threading.Event()

    def arrive(self) -> None:
        with self.lock:
            self.left -= 1
            if self.left <= 0:
                self.everyone_in.set()


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))], 3)


def render_figures(renders: list[dict]) -> dict:
    """p50 and p95 of every render (``Record.renders``), then by kind of run and of client."""
    def summary(values):
        return {"n": len(values), "p50_s": percentile(values, 0.5), "p95_s": percentile(values, 0.95),
                "max_s": round(max(values), 3) if values else None}

    every = [r["s"] for r in renders]
    return {"render_p50_s": percentile(every, 0.5), "render_p95_s": percentile(every, 0.95),
            "renders": summary(every),
            "by_run": {k: summary([r["s"] for r in renders if r["run"] == k]) for k in ("full", "fragment")},
            "by_client": {k: summary([r["s"] for r in renders if r["client"] == k]) for k in ("client", "browser")}}


# ---------------------------------------------------------------------------------------------- processes

def start_server(cmd: list[str], env: dict, log_path: Path) -> subprocess.Popen:
    """The dashboard's server on CPU 0 alone, in a process group of its own (ended as one at the end)."""
    with open(log_path, "w") as log:
        return subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, start_new_session=True,
                                preexec_fn=lambda: os.sched_setaffinity(0, {SERVER_CPU}))


def job_pids(folder: Path) -> list[int]:
    """The ``run-job`` processes of run folders under ``folder`` (a room's jobs are in sessions of their own)."""
    found, marker = [], str(folder.resolve())
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"run-job" in args and any(os.fsdecode(a).startswith(marker) for a in args):
            found.append(int(entry.name))
    return found


def memory_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process in KiB; (0, 0) once it is gone."""
    try:
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                      if ":" in line)
        return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])
    except (OSError, KeyError, ValueError):
        return 0, 0


class MemorySampler(threading.Thread):
    """Every 0.5 s: the server's peak RSS, each job's, and the most RSS its jobs held at once."""

    def __init__(self, server_pid: int, folder: Path):
        super().__init__(daemon=True)
        self.server_pid, self.folder = server_pid, folder
        self.server_kib = self.job_kib = self.jobs_at_once_kib = 0
        self.jobs_seen: set[int] = set()
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.5):
            self.sample()

    def sample(self) -> None:
        self.server_kib = max(self.server_kib, memory_kib(self.server_pid)[1])
        held = 0
        for pid in job_pids(self.folder):
            rss, hwm = memory_kib(pid)
            self.jobs_seen.add(pid)
            self.job_kib, held = max(self.job_kib, hwm), held + rss
        self.jobs_at_once_kib = max(self.jobs_at_once_kib, held)

    def figures(self) -> dict:
        return {"server_peak_rss_mib": round(self.server_kib / 1024), "job_peak_rss_mib": round(self.job_kib / 1024),
                "jobs_at_once_peak_rss_mib": round(self.jobs_at_once_kib / 1024), "job_processes": len(self.jobs_seen)}


def end_processes(server: subprocess.Popen | None, folder: Path) -> list[str]:
    """End the server's process group and every job under ``folder``: SIGTERM, then SIGKILL; say what was left."""
    groups = [server.pid] if server is not None else []
    groups += [pid for pid in job_pids(folder) if pid not in groups]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for group in groups:
            try:
                os.killpg(group, sig)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and (job_pids(folder) or (server and server.poll() is None)):
            time.sleep(0.2)
        groups += [pid for pid in job_pids(folder) if pid not in groups]
    if server is not None:
        try:
            server.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
    return [str(pid) for pid in job_pids(folder)] + ([f"server {server.pid}"] if server and server.poll() is None
                                                     else [])


# ---------------------------------------------------------------------------------------------- the runs on disk

def run_states(runs_dir: Path, names: tuple[str, ...] | None = None) -> dict[str, tuple[str, str]]:
    """run id -> (kind, state) of the run folders in ``runs_dir`` (only ``names`` when given)."""
    found = {}
    for run in list_runs(runs_dir):
        if names is not None and run.id not in names:
            continue
        try:
            kind = run.config().get("kind", "?")
        except (OSError, ValueError):
            kind = "?"
        found[run.id] = ("reward_model" if kind == REWARD_KIND else "policy", run.status().get("state", "unknown"))
    return found


def job_times(runs: list[Path]) -> dict:
    """Per kind of run: seconds from its job's start to its end, and from its queueing to its start (the events.log
    and status.json times), p50 and max over the completed runs."""
    from datetime import datetime

    times: dict[str, dict[str, list[float]]] = {}
    for path in runs:
        try:
            status = json.loads((path / "status.json").read_text())
            lines = (path / "events.log").read_text().splitlines()
            kind = json.loads((path / "config.json").read_text()).get("kind")
        except (OSError, ValueError):
            continue
        started = next((line.split(" ", 1)[0] for line in lines  # "started", "started in group …"
                        if line.partition(" ")[2].startswith("started")), None)
        if status.get("state") != "completed" or started is None:
            continue
        at = {k: datetime.fromisoformat(v).timestamp() for k, v in
              (("created", status["created_at"]), ("started", started), ("ended", lines[-1].split(" ", 1)[0]))}
        mine = times.setdefault("reward_model" if kind == REWARD_KIND else "policy", {"run_s": [], "wait_s": []})
        mine["run_s"].append(at["ended"] - at["started"])
        mine["wait_s"].append(at["started"] - at["created"])
    return {kind: {f"{name}_{q}": (round(f(values), 1) if values else None) for name, values in parts.items()
                   for q, f in (("p50", statistics.median), ("max", max))} for kind, parts in times.items()}


def count_runs(states: dict[str, tuple[str, str]], folders: list[Path]) -> dict:
    by_kind = {}
    for kind in ("reward_model", "policy"):
        mine = [s for k, s in states.values() if k == kind]
        by_kind[kind] = {"queued": len(mine), "completed": mine.count("completed")}
    queued = len(states)
    completed = sum(s == "completed" for _, s in states.values())
    errors = {f.name: json.loads((f / "status.json").read_text()).get("error") for f in folders
              if (f / "status.json").is_file()}
    failed = sorted(f"{run}: {s}" + (f" ({errors[run.rsplit('/', 1)[-1]]})" if errors.get(run.rsplit("/", 1)[-1])
                                     else "") for run, (_, s) in states.items() if s != "completed")
    return {"runs_queued": queued, "runs_completed": completed, "runs_lost": queued - completed,
            "runs_by_kind": by_kind, "runs_not_completed": failed, "job_times": job_times(folders)}


def state_of(runs_dir: Path, kind: str) -> str | None:
    """The state of the (newest) run of a kind ("reward_model" or "policy") in a workspace; None before one exists."""
    states = [s for k, s in run_states(runs_dir).values() if k == kind]
    return states[0] if states else None


def final_or_fail(state: str | None, what: str) -> bool:
    if state in FINAL and state != "completed":
        raise RunFailed(f"the {what} ended {state}")
    return state == "completed"


# ---------------------------------------------------------------------------------------------- a light client

class Client:
    """A participant as a StreamlitSession: every run it asks for is timed and read."""

    def __init__(self, who: Participant, session: StreamlitSession, record: Record, deadline: float, think_s: float):
        self.who, self.session, self.record, self.deadline = who, session, record, deadline
        self.think_s, self.random = think_s, random.Random(who.index)
        self.due: dict[str, float] = {}  # fragment id -> when its timer fires next

    def _read(self, run, run_kind: str):
        self.record.render(self.who, run_kind, run.elapsed_s)
        self.who.texts.extend(run.texts)
        for error in run.errors:
            self.record.error(self.who, f"on the page: {error}")
        return run

    async def rerun(self, **kwargs):
        return self._read(await self.session.rerun(timeout_s=REQUEST_TIMEOUT_S, **kwargs), "full")

    async def click(self, key: str, fields: dict | None = None):
        """Think a moment, then click a button (with the form's ``fields``), waiting while it is disabled."""
        await asyncio.sleep(self.random.uniform(0, self.think_s))
        await self.wait(lambda: not self.session.widget(key).proto.disabled, f"{key} enabled")
        return await self.rerun(widgets={**(fields or {}), key: True})

    async def tick(self) -> None:
        """What the page does next while its participant waits: the rerun of the fragment whose timer comes first
        (each run_every fragment at its own interval), or without one a reload after ``RELOAD_S``."""
        timers, now = self.session.fragments, time.monotonic()
        if not timers:
            await asyncio.sleep(RELOAD_S)
            await self.rerun()
            return
        self.due = {f: self.due.get(f, now + seconds) for f, seconds in timers.items()}
        fragment = min(self.due, key=self.due.get)
        await asyncio.sleep(max(self.due[fragment] - now, 0))
        self.due[fragment] = time.monotonic() + timers[fragment]
        self._read(await self.session.rerun_fragment(fragment, timeout_s=REQUEST_TIMEOUT_S), "fragment")

    async def wait(self, done, what: str) -> None:
        """Until ``done()``, the page ticking (``tick``)."""
        while not done():
            if time.monotonic() > self.deadline:
                raise TimeoutError(f"the benchmark's time ran out waiting for {what}")
            await self.tick()

    async def settle(self, seconds: float = 30.0) -> None:
        """After the last run ended: tick until the page has dropped its timers (it reran without them)."""
        end = min(time.monotonic() + seconds, self.deadline)
        while self.session.fragments and time.monotonic() < end:
            await self.tick()


async def client_room(who: Participant, url: str, room: Room, start: Start, record: Record, deadline: float,
                      think_s: float, t0: float) -> None:
    arrived = False
    try:
        async with StreamlitSession(url, timeout_s=REQUEST_TIMEOUT_S) as session:
            c = Client(who, session, record, deadline, think_s)
            await c.rerun(query=f"{ROOM_PARAM}={room.token('participant')}")
            await asyncio.sleep(c.random.uniform(0, think_s))
            for attempt in range(JOIN_TRIES):
                await c.rerun(widgets={JOIN_LABEL: who.name, "Join": True})
                who.secret = parse_qs(session.query_string).get(PERSONAL_PARAM, [""])[0]
                if who.secret:
                    break
                record.error(who, f"Join click {attempt + 1} was ignored: the join form came back")
            person = room.participant(who.secret)
            if person is None:
                raise RuntimeError(f"joining did not give a personal link (address bar: {session.query_string!r})")
            who.pid = person.id
            start.arrive()
            arrived = True
            if not await asyncio.to_thread(start.assigned.wait, max(deadline - time.monotonic(), 0)):
                raise TimeoutError("the teacher never assigned the runs")
            runs = room.workspace(who.pid).runs
            await c.rerun(page="workshop")
            await c.click("workshop.model")
            await c.click("workshop.pairs")
            await c.click("workshop.rm")
            await c.wait(lambda: final_or_fail(state_of(runs, "reward_model"), "reward model"), "the reward model")
            await c.click("workshop.sweep")
            await c.wait(lambda: final_or_fail(state_of(runs, "policy"), "PPO run"), "the PPO run")
            who.done_s = time.monotonic() - t0
            await c.settle()
    except Exception as err:  # noqa: BLE001 - one participant's failure is a figure, not the end of the benchmark
        who.error = f"{type(err).__name__}: {err}"
        record.error(who, who.error)
    finally:
        if not arrived:
            start.arrive()


async def client_single(who: Participant, url: str, runs: Path, record: Record, deadline: float, think_s: float,
                        t0: float, rm_fields: dict, ppo_fields: dict) -> None:
    rm_name, ppo_name = f"load-{who.index:02d}-rm", f"load-{who.index:02d}-ppo"
    try:
        async with StreamlitSession(url, timeout_s=REQUEST_TIMEOUT_S) as session:
            c = Client(who, session, record, deadline, think_s)
            await c.rerun()
            await c.rerun(page="reward_model")
            await c.click("Train", {"rm.name": rm_name, **{f"rm.{k}": v for k, v in rm_fields.items()}})
            await c.wait(lambda: final_or_fail(run_states(runs, (rm_name,)).get(rm_name, ("", None))[1],
                                               "reward model"), "the reward model")
            await c.rerun(page="ppo")
            await c.click("Start", {"ppo.name": ppo_name, "ppo.reward": rm_name,
                                    **{f"ppo.{k}": v for k, v in ppo_fields.items()}})
            await c.wait(lambda: final_or_fail(run_states(runs, (ppo_name,)).get(ppo_name, ("", None))[1],
                                               "PPO run"), "the PPO run")
            who.done_s = time.monotonic() - t0
            await c.settle()
    except Exception as err:  # noqa: BLE001 - one participant's failure is a figure, not the end of the benchmark
        who.error = f"{type(err).__name__}: {err}"
        record.error(who, who.error)


# ---------------------------------------------------------------------------------------------- a browser

class Browser:
    """A participant in Chromium; its render times read off the page's websocket frames (CDP)."""

    def __init__(self, who: Participant, page, record: Record, deadline: float, think_s: float):
        self.who, self.page, self.record, self.deadline = who, page, record, deadline
        self.think_s, self.random = think_s, random.Random(who.index)
        self.asked: tuple[float, str] | None = None  # (browser time, run kind) of the first unanswered request
        cdp = page.context.new_cdp_session(page)
        cdp.send("Network.enable")
        cdp.on("Network.webSocketFrameSent", self._sent)
        cdp.on("Network.webSocketFrameReceived", self._received)

    def _sent(self, event) -> None:
        if event["response"].get("opcode") != 2:
            return
        message = BackMsg.FromString(base64.b64decode(event["response"]["payloadData"]))
        if message.WhichOneof("type") == "rerun_script" and self.asked is None:
            self.asked = (event["timestamp"], "fragment" if message.rerun_script.fragment_id else "full")

    def _received(self, event) -> None:
        if event["response"].get("opcode") != 2:
            return
        message = ForwardMsg.FromString(base64.b64decode(event["response"]["payloadData"]))
        kind = message.WhichOneof("type")
        if kind == "delta" and message.delta.new_element.WhichOneof("type") == "exception":
            error = message.delta.new_element.exception
            self.record.error(self.who, f"on the page: {error.type}: {error.message}")
        elif (kind == "script_finished" and message.script_finished != ForwardMsg.FINISHED_EARLY_FOR_RERUN
              and self.asked is not None):
            self.record.render(self.who, self.asked[1], event["timestamp"] - self.asked[0])
            self.asked = None

    def idle(self) -> None:
        """The script run the last action asked for has finished; the page's text is kept."""
        self.page.wait_for_timeout(300)  # the run starts a moment after the click
        self.page.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]',
                                    timeout=REQUEST_TIMEOUT_S * 1000)
        self.who.texts.append(self.page.locator(APP).inner_text())

    def click(self, button, what: str) -> None:
        """Think a moment, then click a button once it is enabled."""
        self.page.wait_for_timeout(self.random.uniform(0, self.think_s) * 1000)
        self.wait(lambda: button.count() > 0 and button.first.is_enabled(), f"{what} enabled")
        button.first.click()
        self.idle()

    def wait(self, done, what: str) -> None:
        """Until ``done()``, the page left to itself (its fragments rerun on their own timers)."""
        while not done():
            if time.monotonic() > self.deadline:
                raise TimeoutError(f"the benchmark's time ran out waiting for {what}")
            self.page.wait_for_timeout(1000)

    def settle(self, seconds: float = 10.0) -> None:
        self.page.wait_for_timeout(seconds * 1000)  # the page's timer sees the run end and reruns the page
        self.idle()


def open_expander(page, title: str, inside: str) -> None:
    """Open a collapsed expander (a shared workspace's pages collapse their forms once a run exists): ``inside``,
    the label of a widget in it, is then visible."""
    if not page.get_by_label(inside).first.is_visible():
        page.locator("summary", has_text=title).first.click()
        page.get_by_label(inside).first.wait_for(state="visible")


def browser_room(who: Participant, url: str, room: Room, start: Start, record: Record, deadline: float,
                 think_s: float, t0: float) -> None:
    arrived = False
    try:
        with chromium_page(1400, 900, int(REQUEST_TIMEOUT_S * 1000)) as page:
            b = Browser(who, page, record, deadline, think_s)
            page.goto(f"{url}/?{ROOM_PARAM}={room.token('participant')}")
            b.idle()
            for attempt in range(JOIN_TRIES):
                page.get_by_label(JOIN_LABEL).fill(who.name)
                b.click(page.get_by_role("button", name="Join", exact=True), "Join")
                try:
                    page.wait_for_url(re.compile(rf"[?&]{PERSONAL_PARAM}="), timeout=15_000)
                    break
                except PlaywrightTimeout:
                    record.error(who, f"Join click {attempt + 1} was ignored: the join form came back")
            who.secret = parse_qs(page.url.split("?", 1)[1]).get(PERSONAL_PARAM, [""])[0]
            who.pid = room.participant(who.secret).id
            start.arrive()
            arrived = True
            if not start.assigned.wait(max(deadline - time.monotonic(), 0)):
                raise TimeoutError("the teacher never assigned the runs")
            runs = room.workspace(who.pid).runs
            nav_link(page, "Workshop").click()
            b.idle()
            b.click(app_button(page, "Use the bundled model"), "Use the bundled model")
            b.click(app_button(page, "simulated pairs"), "Add the pairs")
            b.click(app_button(page, "Train the reward model"), "Train the reward model")
            b.wait(lambda: final_or_fail(state_of(runs, "reward_model"), "reward model"), "the reward model")
            b.click(app_button(page, "Run my assigned run"), "Run my assigned run")
            b.wait(lambda: final_or_fail(state_of(runs, "policy"), "PPO run"), "the PPO run")
            who.done_s = time.monotonic() - t0
            b.settle()
    except Exception as err:  # noqa: BLE001 - one participant's failure is a figure, not the end of the benchmark
        who.error = f"{type(err).__name__}: {err}".splitlines()[0]
        record.error(who, who.error + "\n" + traceback.format_exc(limit=3))
    finally:
        if not arrived:
            start.arrive()


def browser_single(who: Participant, url: str, runs: Path, record: Record, deadline: float, think_s: float,
                   t0: float, rm_fields: dict, ppo_fields: dict) -> None:
    rm_name, ppo_name = f"load-{who.index:02d}-rm", f"load-{who.index:02d}-ppo"
    try:
        with chromium_page(1400, 900, int(REQUEST_TIMEOUT_S * 1000)) as page:
            b = Browser(who, page, record, deadline, think_s)
            page.goto(url)
            b.idle()
            nav_link(page, "Reward model").click()
            b.idle()
            open_expander(page, "Train a new reward model", "Run name")
            page.get_by_label("Run name").fill(rm_name)
            for name, value in rm_fields.items():
                if name == "pooling":
                    select_option(page, RM_LABELS[name], value)
                else:
                    fill_number(page, RM_LABELS[name], value)
            b.click(page.get_by_role("button", name="Train", exact=True), "Train")
            b.wait(lambda: final_or_fail(run_states(runs, (rm_name,)).get(rm_name, ("", None))[1],
                                         "reward model"), "the reward model")
            nav_link(page, "Policy training").click()
            b.idle()
            open_expander(page, "Start a new run", "Run name")
            page.get_by_label("Run name").fill(ppo_name)
            select_option(page, "Reward model", rm_name)
            for name, value in ppo_fields.items():
                if name not in PPO_IN_POPOVER:
                    fill_number(page, PPO_LABELS[name], value)
            page.get_by_role("button", name=PPO_POPOVER).click()
            for name in PPO_IN_POPOVER:
                fill_number(page, PPO_LABELS[name], ppo_fields[name])
            page.keyboard.press("Escape")
            b.click(page.get_by_role("button", name="Start", exact=True), "Start")
            b.wait(lambda: final_or_fail(run_states(runs, (ppo_name,)).get(ppo_name, ("", None))[1],
                                         "PPO run"), "the PPO run")
            who.done_s = time.monotonic() - t0
            b.settle()
    except Exception as err:  # noqa: BLE001 - one participant's failure is a figure, not the end of the benchmark
        who.error = f"{type(err).__name__}: {err}".splitlines()[0]
        record.error(who, who.error + "\n" + traceback.format_exc(limit=3))


# ---------------------------------------------------------------------------------------------- the two modes

def participants(n: int, browsers: int) -> list[Participant]:
    """Browsers first (so that a smoke run with one participant still drives Chromium)."""
    return [Participant(i, f"Load P{i:02d}", i < browsers) for i in range(n)]


async def drive(people, start_client, start_browser, record: Record, deadline: float) -> None:
    """Every participant at once: the light clients as tasks, the browsers as threads; bounded by ``deadline``."""
    threads = [threading.Thread(target=start_browser, args=(p,), daemon=True) for p in people if p.browser]
    for thread in threads:
        thread.start()
    tasks = {asyncio.ensure_future(start_client(p)): p for p in people if not p.browser}
    if tasks:
        await asyncio.wait(tasks, timeout=max(deadline - time.monotonic(), 1))
    for task, who in tasks.items():
        if not task.done():
            task.cancel()
            who.error = "TimeoutError: the benchmark's time ran out"
            record.error(who, who.error)
    await asyncio.gather(*tasks, return_exceptions=True)
    for thread in threads:
        await asyncio.to_thread(thread.join, max(deadline - time.monotonic(), 0) + 60)


def leaks(people: list[Participant], runs_of: dict[str, set[str]]) -> list[str]:
    """Pages of one participant that name another: their name, id, secret, or a run id not also its own."""
    found = []
    for who in people:
        seen = "\n".join(who.texts)
        for other in people:
            if other is who:
                continue
            words = [other.name, other.pid, other.secret]
            words += sorted(runs_of.get(other.name, set()) - runs_of.get(who.name, set()))
            named = [w for w in words if w and w in seen]
            if named:
                found.append(f"{who.name} saw {other.name}'s {', '.join(named[:3])}")
    return found


def room_mode(args, out: Path, record: Record) -> dict:
    folder = out / "room"
    room = Room.open(folder)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, workshop.PRESET_ENV: PRESET, JOB_CPUS_ENV: str(JOB_CPU)}
    cmd = [sys.executable, "-m", "rlhf_engine", "room", "--address", "127.0.0.1", "--port", str(port),
           "--folder", str(folder)]
    people = participants(args.participants, args.browsers)
    server, sampler, t0 = None, None, time.monotonic()
    deadline = t0 + args.timeout_min * 60
    result: dict = {}
    try:
        server = start_server(cmd, env, out / "room-server.log")
        wait_for_health(url, server, out / "room-server.log", timeout=120)
        result["server_start_s"] = round(time.monotonic() - t0, 1)
        sampler = MemorySampler(server.pid, folder)
        sampler.start()
        start = Start(len(people))

        def teacher() -> None:
            start.everyone_in.wait(max(deadline - time.monotonic(), 0))
            room.assign(list(SIZES.betas))
            start.assigned.set()

        threading.Thread(target=teacher, daemon=True).start()
        walk_t0 = time.monotonic()
        asyncio.run(drive(
            people,
            lambda p: client_room(p, url, room, start, record, deadline, args.think_s, walk_t0),
            lambda p: browser_room(p, url, room, start, record, deadline, args.think_s, walk_t0),
            record, deadline))
        result["wall_s"] = round(time.monotonic() - walk_t0, 1)
        sampler.sample()
        queue = json.loads(room.queue_file.read_text()) if room.queue_file.is_file() else {}
        result["slots"] = queue.get("slots")
    finally:
        if sampler is not None:
            sampler.done.set()
        left = end_processes(server, folder)
    by_id = {p.pid: p for p in people if p.pid}
    states, runs_of, foreign, folders = {}, {}, [], []
    for person in room.participants():
        mine = run_states(room.workspace(person.id).runs)
        states.update({f"{person.id}/{run}": state for run, state in mine.items()})
        runs_of[person.name] = set(mine)
        others = [p.id for p in room.participants() if p.id != person.id]
        for run in list_runs(room.workspace(person.id).runs):  # its settings name no one else's workspace
            folders.append(run.path)
            text = "".join(f.read_text(errors="replace") for f in run.path.glob("*.json"))
            foreign += [f"{person.id}/{run.id} names {o}" for o in others if o in text]
    result.update(count_runs(states, folders))
    result["participants_joined"] = len(by_id)
    result["privacy"] = {"pages_naming_another": leaks(people, runs_of), "workspaces_naming_another": foreign,
                         "run_ids_shared_by_participants": sorted(
                             {r for a in runs_of for b in runs_of if a < b for r in runs_of[a] & runs_of[b]})}
    return finish(result, people, record, sampler, left, t0)


def single_mode(args, out: Path, record: Record) -> dict:
    workspace = out / "workspace"
    (workspace / "runs").mkdir(parents=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "RLHF_WORKSPACE": str(workspace), CPUS_ENV: str(JOB_CPU), THREADS_ENV: "1",
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.pop(ROOM_ENV, None)
    env.pop(workshop.PRESET_ENV, None)  # today's server: its Workshop page is not used for the runs
    cmd = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true", "--server.port",
           str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"]
    from rlhf_engine.runs.workspace import default_model_config

    model = default_model_config()
    rm, ppo = workshop.reward_config(model, SIZES), workshop.ppo_config(model, SIZES)
    rm_fields = {"steps": rm.steps, "batch_size": rm.batch_size, "learning_rate": rm.learning_rate,
                 "pooling": rm.pooling}
    ppo_fields = {name: getattr(ppo, name) for name in PPO_LABELS}
    people = participants(args.participants, args.browsers)
    server, sampler, t0 = None, None, time.monotonic()
    deadline = t0 + args.timeout_min * 60
    result: dict = {}
    try:
        server = start_server(cmd, env, out / "single-server.log")
        wait_for_health(url, server, out / "single-server.log", timeout=120)
        result["server_start_s"] = round(time.monotonic() - t0, 1)
        sampler = MemorySampler(server.pid, workspace)
        sampler.start()

        async def setup() -> None:  # someone chooses the model and adds the shipped pairs, once for all
            async with StreamlitSession(url, timeout_s=REQUEST_TIMEOUT_S) as session:
                await session.rerun()
                await session.rerun(page="workshop")
                for key in ("workshop.model", "workshop.pairs"):
                    run = await session.rerun(widgets={key: True})
                    for error in run.errors:
                        record.error(None, error)

        asyncio.run(setup())
        walk_t0 = time.monotonic()
        asyncio.run(drive(
            people,
            lambda p: client_single(p, url, workspace / "runs", record, deadline, args.think_s, walk_t0,
                                    rm_fields, ppo_fields),
            lambda p: browser_single(p, url, workspace / "runs", record, deadline, args.think_s, walk_t0,
                                     rm_fields, ppo_fields),
            record, deadline))
        result["wall_s"] = round(time.monotonic() - walk_t0, 1)
        sampler.sample()
        result["slots"] = 1
    finally:
        if sampler is not None:
            sampler.done.set()
        left = end_processes(server, workspace)
    names = tuple(f"load-{p.index:02d}-{k}" for p in people for k in ("rm", "ppo"))
    result.update(count_runs(run_states(workspace / "runs", names), [workspace / "runs" / n for n in names]))
    runs_of = {p.name: {f"load-{p.index:02d}-rm", f"load-{p.index:02d}-ppo"} for p in people}
    result["privacy"] = {"pages_naming_another": leaks(people, runs_of),
                         "note": "one shared workspace: every page lists everyone's runs, by design"}
    return finish(result, people, record, sampler, left, t0)


def finish(result: dict, people, record: Record, sampler, left: list[str], t0: float) -> dict:
    errors = list(record.errors)
    done = [p.done_s for p in people if p.done_s is not None]
    result = {"participants": len(people), "browsers": sum(p.browser for p in people),
              **render_figures(record.renders), **result, "errors": len(errors), "error_samples": errors[:20],
              "participants_finished": len(done), "last_participant_done_s": round(max(done), 1) if done else None,
              "total_s": round(time.monotonic() - t0, 1), **(sampler.figures() if sampler else {}),
              "processes_left": left}
    return result


# ---------------------------------------------------------------------------------------------- main

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="new folder: the room, the workspace, the logs")
    parser.add_argument("--participants", type=int, default=20)
    parser.add_argument("--browsers", type=int, default=2, help="participants driven in Chromium (the rest: st_client)")
    parser.add_argument("--mode", choices=("room", "single", "both"), default="both")
    parser.add_argument("--timeout-min", type=float, default=45.0, help="each mode ends by then, runs done or not")
    parser.add_argument("--think-s", type=float, default=2.0, help="a participant waits up to this before a click")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the JSON result goes")
    args = parser.parse_args()
    if len(os.sched_getaffinity(0)) < 2 or not {SERVER_CPU, JOB_CPU} <= os.sched_getaffinity(0):
        parser.error(f"needs CPUs {SERVER_CPU} and {JOB_CPU}: the server runs on one, the jobs on the other")
    args.out.mkdir(parents=True, exist_ok=False)
    previous = json.loads(args.results.read_text()) if args.results.is_file() else {}
    side = json.loads(SIDE_BY_SIDE.read_text()) if SIDE_BY_SIDE.is_file() else {}
    result = {key: previous.get(key) for key in ("participants", "render_p50_s", "render_p95_s", "runs_queued",
                                                  "runs_completed", "runs_lost", "errors", "room")}
    result.update(single_queue=previous.get("single_queue"),
                  side_by_side_rss_ratio=side.get("side_by_side_rss_ratio"),
                  side_by_side_throughput_ratio=side.get("side_by_side_throughput_ratio"),
                  preset={"name": PRESET, **{k: v for k, v in vars(SIZES).items() if k not in ("minutes",)}},
                  cpus={"server": SERVER_CPU, "jobs": JOB_CPU, "clients": "unpinned"},
                  timeout_min=args.timeout_min, think_s=args.think_s, machine=machine(),
                  command=" ".join([".venv/bin/python", "benchmarks/room_load.py", *sys.argv[1:]]))
    if args.mode in ("room", "both"):
        print(f"room: {args.participants} participants ({args.browsers} in Chromium)", flush=True)
        record = Record()
        room = room_mode(args, args.out, record)
        record.save(args.out / "room-renders.jsonl")
        result.update({key: room[key] for key in ("participants", "render_p50_s", "render_p95_s", "runs_queued",
                                                  "runs_completed", "runs_lost", "errors")}, room=room)
        write_json(args.results, result)
    if args.mode in ("single", "both"):
        print(f"single: {args.participants} participants ({args.browsers} in Chromium), one workspace", flush=True)
        record = Record()
        result["single_queue"] = single_mode(args, args.out, record)
        record.save(args.out / "single-renders.jsonl")
        write_json(args.results, result)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
