"""The room's faults (issue 29): a server restarted mid-room, a participant who closes the tab mid-run, one who
floods the queue, and a disk that fills up.

The first three drive a real room server (``python -m rlhf_engine room`` on the loopback, one slot) through its
pages with benchmarks/st_client.py (Streamlit's browser protocol, no browser) and train tiny reward models in the
room's detached job processes. A job is held at a step for as long as the test wants it there: a sitecustomize on
the server's PYTHONPATH, which its job processes inherit, makes a job wait after writing a step's metrics while a
file ``<holds>/<run>-<step>`` exists, so that no outcome depends on the machine's speed (and has the server write
reward-model runs that normalise their scores on 4 short answers, the page's 64 taking half a minute on two busy
cores). Every wait has a deadline;
every process is killed at the end (the servers by their group, the jobs by the pids in their status.json and in
the room's queue.json, each checked to be that run's job first).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from browser import free_port, wait_for_health

from rlhf_engine.config import ModelConfig, to_dict
from rlhf_engine.data.pairs import PreferencePair
from rlhf_engine.room.room import Participant, Room
from rlhf_engine.runs.job import describe_error, process_alive, recorded_state, runs_job_of
from rlhf_engine.runs.queue import PROCESS_GONE, JobQueue
from rlhf_engine.runs.runfolder import RunFolder

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from st_client import StreamlitSession  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
STEPS = 3  # each reward model's steps: held at step 1, then two more
WAIT_S = 150  # the longest any one wait may take (a job process loads torch on two busy cores)
DISK_FULL = "the server's disk is full"

# The job processes' hook: after the metrics line of step s of run r, wait while <holds>/<r>-<s> exists.
HOLD_HOOK = textwrap.dedent("""
    import os

    if os.environ.get("RLHF_TEST_HOLDS"):
        import time
        from pathlib import Path

        from rlhf_engine.runs.runfolder import RunFolder

        _append_metrics = RunFolder.append_metrics

        def _append_then_hold(self, metrics):
            _append_metrics(self, metrics)
            hold = Path(os.environ["RLHF_TEST_HOLDS"]) / f"{self.path.name}-{metrics.get('step')}"
            deadline = time.monotonic() + 300
            while hold.exists():  # the test removes it to let the job go on
                if time.monotonic() > deadline:
                    os._exit(3)
                time.sleep(0.05)

        RunFolder.append_metrics = _append_then_hold
        _create = RunFolder.create

        def _create_small(self, kind, config, total_steps):  # in the server: what the Reward model page prepares
            if kind == "reward_model":  # scores normalised on 4 short answers, not 64 (as conftest's configs do)
                config = {**config, "config": {**config["config"], "norm_samples": 4, "norm_response_length": 4}}
            _create(self, kind, config, total_steps)

        RunFolder.create = _create_small
""")


def wait_for(what: str, predicate, timeout: float = WAIT_S, logs: tuple[Path, ...] = ()) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {log}\n{log.read_text()[-2000:]}" for log in logs if log.is_file())
            raise AssertionError(f"timed out waiting for {what}\n{tails}")
        time.sleep(0.1)


def steps_of(run: RunFolder) -> list[int]:
    return [m["step"] for m in run.metrics()]


def status_of(run: RunFolder) -> dict:
    return json.loads((run.path / "status.json").read_text())


def kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


class RoomServer:
    """A room folder with participants whose workspaces name the tiny model, and the servers started on it."""

    def __init__(self, root: Path, tiny_model_dir: str):
        self.root, self.model = root, tiny_model_dir
        self.room = Room.open(root / "room")
        self.holds = root / "holds"
        self.holds.mkdir()
        (root / "hook").mkdir()
        (root / "hook" / "sitecustomize.py").write_text(HOLD_HOOK)
        self.servers: list[subprocess.Popen] = []
        self.logs: list[Path] = []

    def join(self, name: str) -> Participant:
        """A participant with the tiny model chosen and twelve easy pairs stored."""
        person = self.room.join(name)
        ws = self.room.workspace(person.id).ensure()
        model = ModelConfig(source=self.model, quant="none", lora_r=4, lora_alpha=8)
        ws.model_file.write_text(json.dumps(to_dict(model)))
        ws.store().add_many([PreferencePair(f"Say something about item {i}.", "Lovely, great, wonderful.",
                                            "Awful, bad, terrible.") for i in range(12)], source="test")
        return person

    def run(self, person: Participant, name: str) -> RunFolder:
        return RunFolder(self.room.workspace(person.id).runs / name)

    def hold(self, run: str, step: int) -> None:
        (self.holds / f"{run}-{step}").touch()

    def release(self, run: str, step: int) -> None:
        (self.holds / f"{run}-{step}").unlink()

    def start(self, cap: int | None = None) -> str:
        """``python -m rlhf_engine room`` on a free loopback port, one slot; the launcher execs Streamlit, so the
        process is the server. Its own session and process group, like a server started in a terminal."""
        port = free_port()
        log = self.root / f"server-{len(self.servers)}.log"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(self.root / "hook"), str(REPO)]),
               "RLHF_TEST_HOLDS": str(self.holds), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        env.pop("RLHF_ROOM_CAP", None)
        if cap is not None:
            env["RLHF_ROOM_CAP"] = str(cap)
        with open(log, "w") as out:
            proc = subprocess.Popen([sys.executable, "-m", "rlhf_engine", "room", "--folder", str(self.room.folder),
                                     "--address", "127.0.0.1", "--port", str(port), "--slots", "1"],
                                    cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        self.servers.append(proc)
        self.logs.append(log)
        wait_for_health(f"http://127.0.0.1:{port}", proc, log, timeout=WAIT_S)
        return f"http://127.0.0.1:{port}"

    def ctrl_c(self) -> None:
        """What a terminal's Ctrl-C does: SIGINT to the server's whole process group; the server ends."""
        proc = self.servers[-1]
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=30)

    def job_logs(self) -> tuple[Path, ...]:
        return (*self.logs, *self.room.folder.glob("participants/*/runs/*/process.log"))

    def wait_for(self, what: str, predicate) -> None:
        wait_for(what, predicate, logs=self.job_logs())

    def kill_all(self) -> None:
        for proc in self.servers:
            if proc.poll() is None:
                kill_group(proc.pid)
                proc.wait(timeout=10)
        pids = []
        for status in self.room.folder.glob("participants/*/runs/*/status.json"):
            with contextlib.suppress(OSError, ValueError):
                pids.append((json.loads(status.read_text()).get("pid"), RunFolder(status.parent)))
        with contextlib.suppress(OSError, ValueError):
            running = json.loads(self.room.queue_file.read_text())["running"]
            pids += [(entry.get("pid"), RunFolder(entry["run"])) for entry in running]
        for pid, run in pids:
            if pid and runs_job_of(pid, run):  # that run's job process, never a pid since given to another
                kill_group(pid)  # a detached job leads its own group


@pytest.fixture
def server(tmp_path, tiny_model_dir):
    made = RoomServer(tmp_path, tiny_model_dir)
    try:
        yield made
    finally:
        made.kill_all()


def session(url: str) -> StreamlitSession:
    return StreamlitSession(url, timeout_s=90)


async def sign_in(s: StreamlitSession, person: Participant):
    """Open the participant's personal link (it lands on Home)."""
    home = await s.rerun(query=f"p={person.secret}")
    assert home.ok, home.errors
    return home


async def train(s: StreamlitSession, name: str):
    """Fill the Reward model page's form (a run name, STEPS steps) and click Train."""
    if s.page != s.pages.get("Reward model"):
        await s.rerun(page="Reward model")
    shown = await s.rerun(widgets={"Run name": name, "steps": STEPS, "Train": True})
    assert shown.ok, shown.errors
    return shown


async def show_run(s: StreamlitSession, name: str):
    """The Reward model page with one run picked."""
    await s.rerun(page="Reward model")
    shown = await s.rerun(widgets={"Reward model run": name})
    assert shown.ok, shown.errors
    return shown


def labels(shown) -> set[str]:
    return {w.label for w in shown.widgets.values()}


def queue_empty(server: RoomServer) -> bool:
    """Whether the room's queue.json holds no job (a job's process ends a moment after its run says completed)."""
    state = json.loads(server.room.queue_file.read_text())
    return not state["running"] and not state["waiting"]


def event_time(run: RunFolder, event: str) -> str:
    """The time stamp of a run's first events.log line that is ``event``."""
    return next(line.split(" ", 1)[0] for line in run.events().splitlines() if line.split(" ", 1)[1:] == [event])


@pytest.mark.slow
def test_a_server_restarted_mid_room_keeps_the_links_and_the_queue_and_adopts_the_running_job(server):
    ana = server.join("Ana")
    alpha, beta, gamma = (server.run(ana, name) for name in ("alpha", "beta", "gamma"))
    server.hold("alpha", 1)
    url = server.start()

    async def queue_two():
        async with session(url) as s:
            await sign_in(s, ana)
            return await train(s, "alpha"), await train(s, "beta")

    first, second = asyncio.run(queue_two())
    assert first.shows("Started alpha.") and second.shows("Queued beta: number 1 in the queue."), second.texts
    server.wait_for("alpha to reach step 1", lambda: steps_of(alpha) == [1])
    pid = status_of(alpha)["pid"]
    assert runs_job_of(pid, alpha) and os.getpgid(pid) == pid  # a process group of its own
    assert recorded_state(beta) == "queued"

    server.ctrl_c()
    assert process_alive(pid) and recorded_state(alpha) == "running"  # the Ctrl-C was the server's only
    assert "stopping" not in alpha.events() and recorded_state(beta) == "queued"

    url = server.start()

    async def come_back():
        async with session(url) as s:
            return await sign_in(s, ana)

    home = asyncio.run(come_back())
    assert home.shows("Signed in as **Ana**"), home.texts  # the personal link still opens Ana's workspace
    assert home.shows("**alpha**: running.") and home.shows("**beta**: number 1 in the queue."), home.texts
    state = json.loads(server.room.queue_file.read_text())
    assert [(e["run"], e["pid"]) for e in state["running"]] == [(str(alpha.path.resolve()), pid)]  # adopted
    assert [e["run"] for e in state["waiting"]] == [str(beta.path.resolve())]  # waits: the slot is alpha's
    assert recorded_state(beta) == "queued" and "followed again" in alpha.events()

    server.release("alpha", 1)
    server.wait_for("alpha, then beta, to complete and leave the queue",
                    lambda: recorded_state(alpha) == recorded_state(beta) == "completed" and queue_empty(server))
    assert steps_of(alpha) == steps_of(beta) == [1, 2, 3]  # each step once: alpha was not run twice
    assert status_of(alpha)["pid"] == pid and alpha.events().count(" started\n") == 1
    assert event_time(beta, "started") >= event_time(alpha, "completed")  # beta waited for the adopted job

    # A job process killed while the server is down: the next server shows its run interrupted, with Resume.
    server.hold("gamma", 1)

    async def queue_one():
        async with session(url) as s:
            await sign_in(s, ana)
            return await train(s, "gamma")

    assert asyncio.run(queue_one()).shows("Started gamma.")
    server.wait_for("gamma to reach step 1", lambda: steps_of(gamma) == [1])
    gamma_pid = status_of(gamma)["pid"]
    server.ctrl_c()
    kill_group(gamma_pid)
    server.wait_for("gamma's process to end", lambda: not process_alive(gamma_pid))
    assert recorded_state(gamma) == "running"  # nobody was there to record its end
    url = server.start()

    async def look():
        async with session(url) as s:
            await sign_in(s, ana)
            return await show_run(s, "gamma")

    shown = asyncio.run(look())
    assert status_of(gamma)["state"] == "interrupted" and status_of(gamma)["error"] == PROCESS_GONE
    assert any("**gamma** — interrupted" in text for text in shown.texts), shown.texts
    assert "Resume" in labels(shown)


@pytest.mark.slow
def test_a_participant_who_closes_the_tab_mid_run_finds_it_went_on_meanwhile(server):
    bo = server.join("Bo")
    delta = server.run(bo, "delta")
    server.hold("delta", 1)
    url = server.start()

    async def queue_then_close():
        async with session(url) as s:
            await sign_in(s, bo)
            started = await train(s, "delta")
            deadline = time.monotonic() + WAIT_S
            while steps_of(delta) != [1]:  # the tab stays open until the run is under way
                assert time.monotonic() < deadline, [log.read_text()[-2000:] for log in server.job_logs()]
                await asyncio.sleep(0.1)
        return started  # the websocket is closed: the tab is gone

    assert asyncio.run(queue_then_close()).shows("Started delta.")
    assert steps_of(delta) == [1]
    server.release("delta", 1)
    server.wait_for("delta to complete with nobody watching", lambda: recorded_state(delta) == "completed")

    async def come_back():
        async with session(url) as s:
            await sign_in(s, bo)
            return await show_run(s, "delta")

    shown = asyncio.run(come_back())
    assert steps_of(delta) == [1, 2, 3]
    assert any(f"**delta** — completed, step {STEPS}/{STEPS}" in text for text in shown.texts), shown.texts
    assert shown.shows("Evaluation on held-out pairs")


@pytest.mark.slow
def test_a_participant_flooding_the_queue_meets_the_cap_and_leaves_no_stray_queued_run(server):
    from dashboard.widgets import md

    cy = server.join("Cy")
    names = ("one", "two", "three", "four", "five")
    server.hold("one", 1)  # the slot stays taken; the others wait
    url = server.start(cap=3)

    async def flood():
        async with session(url) as s:
            await sign_in(s, cy)
            shown = [await train(s, name) for name in names]
            return shown, await show_run(s, "five")

    shown, five = asyncio.run(flood())
    assert shown[0].shows("Started one.")
    for name, page in zip(names[1:4], shown[1:4]):
        assert page.shows(f"Queued {name}: number"), page.texts
    refusal = "you have 3 jobs waiting, the room's cap; wait for one to start or stop one"
    assert ("ERROR", f"Starting the reward model failed: {md(f'QueueFull: {refusal}')}") in shown[4].alerts, \
        shown[4].alerts
    runs = {name: server.run(cy, name) for name in names}
    state = json.loads(server.room.queue_file.read_text())
    assert [e["run"] for e in state["waiting"]] == [str(runs[n].path.resolve()) for n in ("two", "three", "four")]
    server.wait_for("one to be under way", lambda: recorded_state(runs["one"]) == "running")  # its process starts
    assert {n for n, run in runs.items() if recorded_state(run) == "queued"} == {"two", "three", "four"}
    assert status_of(runs["five"])["state"] == "stopped"  # refused: kept, stopped with the reason, never queued
    assert status_of(runs["five"])["error"] == f"not queued: {refusal}"
    assert any("**five** — stopped" in text for text in five.texts) and "Resume" in labels(five)  # for later


# ------------------------------------------------------------------------------------------------ a full disk

def full_disk(monkeypatch, name: str) -> None:
    """From now on every atomic write of a file called ``name`` fails as a full disk does (at its fsync)."""
    real_fsync = os.fsync

    def fsync(fd):
        if Path(os.readlink(f"/proc/self/fd/{fd}")).name.startswith(f".{name}."):  # atomic_write_text's temp
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)


def temp_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(".*") if p.name != ".lock" and p.name != ".created"]


def test_a_full_disk_during_a_join_keeps_the_room_whole_and_says_so(tmp_path, monkeypatch):
    room = Room.open(tmp_path / "room")
    ana = room.join("Ana")
    before = (room.folder / "participants.json").read_bytes()
    full_disk(monkeypatch, "participants.json")
    with pytest.raises(OSError) as refused:
        room.join("Bo")
    assert describe_error(refused.value).startswith(f"{DISK_FULL} (No space left on device)")
    assert (room.folder / "participants.json").read_bytes() == before  # the old file, whole
    assert room.participants() == [ana] and room.participant(ana.secret) == ana
    assert [p.name for p in (room.folder / "participants").iterdir()] == [ana.id]  # no workspace of nobody
    assert temp_files(room.folder) == []


def test_a_full_disk_during_a_queue_write_keeps_the_old_state_and_the_queue_going(tmp_path, monkeypatch):
    import threading

    from rlhf_engine.runs.job import Job

    releases = {}

    def job(name: str) -> Job:
        run = RunFolder(tmp_path / "runs" / name)
        run.create("test", {}, 1)
        release = releases[name] = threading.Event()
        return Job(run, lambda job: "completed" if release.wait(30) else "failed")

    state_file = tmp_path / "queue.json"
    queue = JobQueue(slots=1, cap=3, state_file=state_file)
    first, second = queue.submit(job("first"), owner="a"), queue.submit(job("second"), owner="a")
    before = state_file.read_bytes()
    full_disk(monkeypatch, "queue.json")
    third = job("third")
    with pytest.raises(OSError) as refused:
        queue.submit(third, owner="a")
    assert describe_error(refused.value).startswith(DISK_FULL)
    assert state_file.read_bytes() == before and queue.jobs() == [first, second]  # not taken, not recorded
    assert temp_files(tmp_path) == []

    releases["first"].set()  # its end cannot be written to queue.json: the queue goes on regardless
    wait_for("the second job to start", lambda: queue.position(second) == 0, timeout=30)
    assert state_file.read_bytes() == before and temp_files(tmp_path) == []
    monkeypatch.undo()
    releases["second"].set()
    assert queue.wait_idle(30)
    assert json.loads(state_file.read_text())["running"] == [] and second.state == "completed"


def test_a_full_disk_shows_one_line_on_the_join_form_and_on_train(tmp_path, monkeypatch, tiny_model_dir):
    from streamlit.testing.v1 import AppTest

    from dashboard.room import IDENTITY_KEY, Identity
    from dashboard.state import APP_SHELL_KEY

    rig = RoomServer(tmp_path, tiny_model_dir)
    room = rig.room
    monkeypatch.setenv("RLHF_ROOM", str(room.folder))
    monkeypatch.setenv("RLHF_ROOM_SLOTS", "1")
    ana = rig.join("Ana")
    full_disk(monkeypatch, "participants.json")
    # The join form alone (in app.py it is st.navigation's one page, whose form AppTest does not click through;
    # tests/test_room_browser.py joins through app.py in Chromium)
    at = AppTest.from_string("from dashboard.room import join_page\njoin_page()", default_timeout=60)
    at.run()
    at.text_input[0].input("Bo")
    at.button[0].click()
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert [e.value for e in at.error] == [
        "Joining failed: the server's disk is full (No space left on device): nothing more can be saved until "
        "some space is freed"]
    assert room.participants() == [ana]

    # Train on the Reward model page: the job is refused (queue.json cannot be written), its run left stopped.
    room.queue_file.write_text(json.dumps({"seq": 0, "turn": 0, "running": [], "waiting": []}))
    full_disk(monkeypatch, "queue.json")
    at = AppTest.from_file(str(REPO / "pages" / "reward_model.py"), default_timeout=60)
    at.session_state[APP_SHELL_KEY] = True
    at.session_state[IDENTITY_KEY] = Identity("participant", ana.id, ana.name, "p", ana.secret)
    at.run()
    at.text_input(key="rm.name").input("refused")
    at.number_input(key="rm.steps").set_value(STEPS)
    next(b for b in at.button if b.label == "Train").click()
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and errors[0].startswith("Starting the reward model failed: the server") \
        and "disk is full" in errors[0], errors
    run = rig.run(ana, "refused")
    assert status_of(run)["state"] == "stopped" and status_of(run)["error"].startswith(f"not queued: {DISK_FULL}")
    assert json.loads(room.queue_file.read_text())["waiting"] == [] and temp_files(room.folder) == []
