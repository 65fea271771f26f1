"""The teacher's Room page, the room's frontier and a participant's progress, on run folders written by hand
(no training): a room made with Room.open, two participants, the session's identity set as dashboard.room keeps it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from dashboard.room import IDENTITY_KEY, Identity
from dashboard.state import APP_SHELL_KEY
from rlhf_engine.lab import figures
from rlhf_engine.room.frontier import room_points
from rlhf_engine.room.progress import progress_line, workshop_progress
from rlhf_engine.room.room import TEACHER, Room
from rlhf_engine.runs.runfolder import RunFolder

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ["Review a cafe:", "Review a lamp:", "Review a film:"]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def policy_run(runs: Path, name: str, beta: float, kind: str = "ppo", gain: float = 0.3, probed: bool = True,
               torn: bool = False, state: str = "completed") -> RunFolder:
    """A finished policy run of 4 steps: metrics, and the reference's and the policy's probe answers at step 4
    (``torn``: the policy answered only part of the held-out prompts, as read while the probe is written)."""
    run = RunFolder(runs / name)
    run.create(kind, {"config": {"kl_coef": beta, "adaptive_kl": False}}, 4)
    run.set_status(state, step=4)
    write_jsonl(run.path / "metrics.jsonl", [{"step": s, "beta": beta, "objective/kl": 0.5 * s,
                                              "objective/scores": 0.1 * s, "gold/score": 0.2} for s in (1, 2, 3, 4)])
    if probed:
        reference = [{"step": 0, "policy": "reference", "prompt": p, "score": 0.1, "kl": 0.0, "gold": 0.2}
                     for p in PROMPTS]
        answered = PROMPTS[:1] if torn else PROMPTS
        policy = [{"step": 4, "policy": "policy", "prompt": p, "score": 0.1 + gain + 0.01 * i, "kl": 1.0 + i * 0.1,
                   "gold": 0.2 + gain / 2 + 0.02 * (i - 1)} for i, p in enumerate(answered)]
        write_jsonl(run.path / "probes.jsonl", reference + policy)
    return run


def best_of_n_sweep(runs: Path, name: str) -> None:
    """A sweep folder whose best-of-n run has finished (its rows), and no members."""
    (runs / name).mkdir(parents=True)
    (runs / name / "sweep.json").write_text(json.dumps({"vary": "kl_coef", "members": [],
                                                       "best_of_n": {"n": 4, "run": f"{name}-best-of-4"}}))
    (runs / f"{name}-best-of-4").mkdir()
    (runs / f"{name}-best-of-4" / "best_of_n.json").write_text(json.dumps({"rows": [
        {"n": 1, "kl": 0.0, "score": 0.1, "gold": 0.2}, {"n": 4, "kl": 0.64, "score": 0.5, "gold": 0.3}]}))


@pytest.fixture
def room(tmp_path, monkeypatch) -> Room:
    """A room with Alice and Bob (in that order), the server's RLHF_ROOM pointing at it."""
    room = Room.open(tmp_path / "room")
    room.join("Alice")
    room.join("Bob")
    monkeypatch.setenv("RLHF_ROOM", str(room.folder))
    return room


class FakeJob:
    def __init__(self, run: RunFolder):
        self.run = run


class FakeQueue:
    """The room's queue as the pages read it (runs.queue.JobQueue's names), holding jobs that never run."""

    slots, cap = 2, 3

    def __init__(self, held: list[tuple[FakeJob, str]]):
        self.held, self.stopped = list(held), []

    def jobs(self, owner=None):
        return [job for job, who in self.held if owner is None or who == owner]

    def owner_of(self, job):
        return next((who for j, who in self.held if j is job), None)

    def position(self, job):
        jobs = self.jobs()
        return max(jobs.index(job) - self.slots + 1, 0) if job in jobs else -1

    def estimate_wait_s(self, job):
        return None

    def find(self, path):
        return None

    def stop(self, job, by=None, by_label=None):
        if by not in (TEACHER, self.owner_of(job)):
            raise PermissionError("only the run's owner or the teacher can stop it")
        self.stopped.append((job.run.id, by))
        self.held = [(j, who) for j, who in self.held if j is not job]


@pytest.fixture
def queue(room, monkeypatch) -> FakeQueue:
    alice, bob = room.participants()
    jobs = [(FakeJob(policy_run(room.workspace(p.id).ensure().runs, f"job-{p.name}", 0.1, probed=False,
                                state="queued")), p.id) for p in (alice, bob)]
    fake = FakeQueue(jobs)
    import dashboard.state

    monkeypatch.setattr(dashboard.state, "job_queue", lambda: fake)
    return fake


def open_as(page: str, who: Identity, **query) -> AppTest:
    at = AppTest.from_file(str(ROOT / page), default_timeout=60)
    at.session_state[APP_SHELL_KEY] = True
    at.session_state[IDENTITY_KEY] = who
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def teacher() -> Identity:
    return Identity("teacher", TEACHER, "the teacher", "teacher", "x")


def test_the_teacher_sees_both_participants_the_links_and_assigns_values(room, queue):
    at = open_as("pages/room.py", teacher())
    table = at.dataframe[0].value
    assert list(table["name"]) == ["Alice", "Bob"]
    assert list(table["workshop"]) == ["0/5 · at 1. The model"] * 2
    assert "job-Alice: running" in table["jobs"][0]
    assert any(room.token("participant") in c.value for c in at.code)
    assert any(room.token("projector") in c.value for c in at.code)
    assert not any(room.token("teacher") in c.value for c in at.code)  # never on the page that is projected
    assert len(at.get("image")) == 1  # the QR code
    assert "2 job(s) train at once" in " ".join(m.value for m in at.markdown)
    from rlhf_engine.room.slots import plan_slots

    queue.plan = plan_slots(2**30, cores=2, free_memory_bytes=8 * 2**30, device="cpu")  # what the room's queue keeps
    at.run()
    assert "2 cores / 1 thread per job = 2" in " ".join(m.value for m in at.markdown).replace("\\", "")

    at.text_input(key="room.betas").set_value("0, 0.2")
    at.button(key="room.assign").click().run()
    assert not at.exception, [e.value for e in at.exception]
    alice, bob = room.participants()
    assert room.assignment(alice.id) == {"kl_coef": 0.0, "method": "ppo"}
    assert room.assignment(bob.id) == {"kl_coef": 0.2, "method": "ppo"}
    assert [row for row in at.dataframe[1].value["β"]] == [0.0, 0.2]


def test_the_teacher_stops_one_job_then_ends_the_room_after_a_confirm(room, queue):
    at = open_as("pages/room.py", teacher())
    first = queue.jobs()[0]
    at.button(key=f"room.stop.0.{first.run.path}").click().run()
    assert queue.stopped == [(first.run.id, TEACHER)]
    at.button(key="room.end").click().run()
    assert len(queue.stopped) == 1  # nothing more until confirmed
    at.button(key="room.end.yes").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert len(queue.stopped) == 2 and queue.jobs() == []


def test_the_teacher_toggles_names_and_saves_models(room, queue):
    at = open_as("pages/room.py", teacher())
    at.toggle(key="room.names").set_value(False).run()
    assert room.settings()["names_shown"] is False
    at.text_area(key="room.models").set_value("HuggingFaceTB/SmolLM2-360M-Instruct\n\n../../etc").run()
    at.button(key="room.models.save").click().run()
    assert "failed" in at.error[0].value and room.settings()["models"] == []  # a path is no hub id
    at.text_area(key="room.models").set_value("HuggingFaceTB/SmolLM2-360M-Instruct").run()
    at.button(key="room.models.save").click().run()
    assert room.settings()["models"] == ["HuggingFaceTB/SmolLM2-360M-Instruct"]


def test_a_participant_opening_the_room_page_sees_one_line(room, queue):
    alice = room.participants()[0]
    at = open_as("pages/room.py", Identity("participant", alice.id, alice.name, "p", alice.secret))
    assert [i.value for i in at.info] == ["The Room page is the teacher's: open the teacher's link to see it."]
    assert not at.dataframe and not at.code and not at.button


def two_finished_runs(room: Room) -> None:
    alice, bob = room.participants()
    policy_run(room.workspace(alice.id).ensure().runs, "workshop-sweep-1-beta-0", 0.0, gain=0.6)
    policy_run(room.workspace(bob.id).ensure().runs, "workshop-sweep-1-beta-0.2", 0.2, gain=0.2)


def chart_traces(at: AppTest) -> list[list[str]]:
    charts = [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]
    return [[trace.get("name", "") for trace in chart["data"]] for chart in charts]


@pytest.mark.parametrize("shown", [True, False])
def test_the_frontier_draws_a_point_per_participant_and_hides_names(room, queue, shown):
    two_finished_runs(room)
    room.update_settings(names_shown=shown)
    at = open_as("pages/frontier.py", Identity("projector", "", "projector", "view", "x"))
    reward, gold = chart_traces(at)
    names = ["Alice", "Bob"] if shown else ["participant 1", "participant 2"]
    assert reward == [f"{n}: RM score" for n in names]
    assert gold == [f"{n}: gold" for n in names]
    text = " ".join(m.value for m in at.markdown) + " ".join(c.value for c in at.caption)
    assert "the 3 held-out prompts" in text
    assert ("Alice" in text) is shown and ("Alice" in json.dumps([c.proto.spec for c in at.get("plotly_chart")])) \
        is shown
    assert "PPO**], **β = 0.2**: Bob" in text if shown else "PPO**], **β = 0.2**: participant 2" in text
    specs = [json.loads(chart.proto.spec)["data"] for chart in at.get("plotly_chart")]
    colours = {t["marker"].get("color") or t["line"]["color"] for chart in specs for t in chart}
    assert colours == {figures.method_colour("ppo")[0]}  # one method: one colour
    assert [t["marker"]["symbol"] for t in specs[0]] == ["circle", "diamond"]  # β 0, β 0.2: a marker each
    assert [t["marker"]["symbol"] for t in specs[1]] == ["circle-open", "diamond-open"]
    assert all(t["error_y"]["array"][0] > 0 for t in specs[1])  # each run's one gold point, ± 1 SE
    assert "marker: β (● β = 0, ◆ β = 0.2)" in text and "Colour: the method (PPO blue)" in text


def test_room_points_take_each_run_s_last_full_probe_with_its_owner_and_the_teacher_s_best_of_n(room):
    alice, bob = room.participants()
    alice_runs, bob_runs = (room.workspace(p.id).ensure().runs for p in (alice, bob))
    policy_run(alice_runs, "ppo-a", 0.05)
    policy_run(alice_runs, "grpo-a", 0.04, kind="grpo")
    policy_run(bob_runs, "no-probe-yet", 0.2, probed=False)
    policy_run(bob_runs, "being-written", 0.2, torn=True)
    best_of_n_sweep(bob_runs, "bob-sweep")
    points, best_of_n = room_points(room)
    assert sorted(p["label"] for p in points) == ["Alice · GRPO β 0.04", "Alice · PPO β 0.05"]
    ppo = next(p for p in points if p["method"] == "ppo")
    assert ppo["pid"] == alice.id and ppo["who"] == "Alice" and ppo["beta"] == 0.05 and ppo["prompts"] == 3
    assert ppo["kl"] == pytest.approx(1.1) and ppo["sqrt_kl"] == pytest.approx(1.1 ** 0.5)
    assert ppo["score"] == pytest.approx(0.41) and ppo["gold"] == pytest.approx(0.35)
    assert [row["who"] for row in best_of_n] == ["Bob", "Bob"]
    best_of_n_sweep(room.workspace(TEACHER).ensure().runs, "teacher-sweep")
    assert room_points(room)[1][0]["who"] == "teacher"  # the teacher's baseline first
    room.update_settings(names_shown=False)
    assert {p["who"] for p in room_points(room)[0]} == {"participant 1"}


def test_workshop_progress_follows_the_workshop_page_s_steps(room):
    ws = room.workspace(room.participants()[0].id).ensure()
    empty = workshop_progress(ws)
    assert (empty["done"], empty["at"], empty["last_run"]) == (0, 1, None)
    from rlhf_engine.config import ModelConfig
    from rlhf_engine.data.pairs import read_pairs
    from rlhf_engine.lab import workshop

    ws.save_model_config(ModelConfig())
    ws.store().add_many(read_pairs(workshop.PAIRS_FILE), source=workshop.PAIRS_SOURCE)
    rm = RunFolder(ws.runs / "workshop-rm-1")
    rm.create("reward_model", {"config": {}}, 20)
    rm.set_status("completed", step=20)
    policy_run(ws.runs, "workshop-sweep-1-beta-0.05", 0.05, state="running")
    (ws.runs / "workshop-sweep-1").mkdir()
    (ws.runs / "workshop-sweep-1" / "sweep.json").write_text(json.dumps(
        {"vary": "kl_coef", "members": [{"label": "beta-0.05", "run": "workshop-sweep-1-beta-0.05", "changes": {}}],
         "best_of_n": None}))
    progress = workshop_progress(ws)
    assert [s["state"] for s in progress["steps"]] == ["done", "done", "done", "running", "", "", ""]
    assert progress["assigned"] and progress["at"] == 4
    assert progress_line(progress) == "3/5 · at 4. PPO with a KL penalty: the sweep (running)"
    assert progress["last_run"]["id"] == "workshop-sweep-1-beta-0.05"


def test_the_projector_link_opens_the_room_frontier_only(room, queue):
    two_finished_runs(room)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.query_params["view"] = room.token("projector")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value == "Room frontier" and len(at.get("plotly_chart")) == 2


@pytest.mark.parametrize(("method", "beta", "member"), [("ppo", 0.05, "beta-0.05"), ("grpo", 0.04, "grpo-beta-0.04")])
def test_an_assigned_participant_s_step_4_trains_the_one_assigned_run(room, queue, monkeypatch, method, beta, member):
    alice = room.participants()[0]
    room.update_settings(assignments={alice.id: {"kl_coef": beta, "method": method}})
    ws = room.workspace(alice.id).ensure()
    rm = RunFolder(ws.runs / "workshop-rm-1")
    rm.create("reward_model", {"config": {}}, 20)
    rm.set_status("completed", step=20)
    (rm.path / "reward_model.json").write_text("{}")
    submitted = []
    import dashboard.lab

    monkeypatch.setattr(dashboard.lab, "submit_sweep", lambda name, jobs, key: submitted.append((name, jobs)))
    at = open_as("pages/workshop.py", Identity("participant", alice.id, alice.name, "p", alice.secret))
    title = {"ppo": "PPO", "grpo": "GRPO"}[method]
    assert any(f"The teacher assigned you β = {beta:g} ({title}): the room's frontier puts your run beside the "
               "others'" in i.value for i in at.info)
    at.button(key="workshop.sweep").click().run()
    assert not at.exception, [e.value for e in at.exception]
    [(name, jobs)] = submitted
    from rlhf_engine.lab.sweep import Sweep

    members = Sweep(ws.runs / name).members()
    assert [m.label for m in members] == [member]
    assert members[0].run.config()["kind"] == method and members[0].run.config()["config"]["kl_coef"] == beta
    # a policy run with a job of its own (the room's scheduler may group it with others'), and the best-of-n's
    assert [job.run.id for job in jobs] == [Sweep(ws.runs / name).best_of_n_run().id, members[0].run.id]
