"""Shared state of the dashboard: this session's workspace, the job queue and loaded models.

Everything a page shows comes from the workspace on disk (run folders, the pair store, the chosen
model: see rlhf_engine/runs/workspace.py), so a reload, a second tab or a server restart shows the same
project. A user alone has one workspace (``RLHF_WORKSPACE``, default ``workspace/``); in a workshop room each
participant has their own (dashboard/room.py says who a session is). Objects shared by all sessions of one
server (the job queue, loaded models) are ``st.cache_resource``.
"""

from __future__ import annotations

import contextlib
import json
import os
from contextlib import contextmanager
from pathlib import Path

import streamlit as st

from rlhf_engine.config import ModelConfig, from_dict, to_dict
from rlhf_engine.room.links import RAY_ENV
from rlhf_engine.runs.queue import JobQueue
from rlhf_engine.runs.runfolder import ACTIVE_STATES, RunFolder
from rlhf_engine.runs.workspace import Workspace

from .room import current_room, identity

LIVE_REFRESH_S = 1.0  # seconds between refreshes of a live view
APP_SHELL_KEY = "app_shell"  # set by app.py in every session it runs in


def require_app_shell() -> None:
    """Make sure a page runs inside app.py's navigation; call it first on every page.

    Streamlit treats an app with a `pages/` folder as an old-style multipage app until app.py's
    st.navigation has run once in the server: a first visit straight to, say, /runs after a restart
    would run pages/runs.py alone, under Streamlit's automatic page list. app.py marks the sessions it
    has run in; in any other, clear that (pinned Streamlit's) flag and rerun, so that app.py runs.
    """
    from streamlit.runtime.pages_manager import PagesManager

    if not st.session_state.get(APP_SHELL_KEY):
        PagesManager.uses_pages_directory = False
        st.rerun()


def workspace() -> Workspace:
    """This session's workspace: alone, $RLHF_WORKSPACE or ./workspace; in a room, the participant's own (or the
    teacher's). A session of the room with no identity never gets here (dashboard.room.gate stops it)."""
    who = identity()
    if who.role == "alone":
        return Workspace(Path(os.environ.get("RLHF_WORKSPACE", "workspace")).resolve()).ensure()
    if not who.pid:  # the projector: shows the room's frontier and owns no workspace
        raise PermissionError("the projector link shows the room's frontier only")
    return current_room().workspace(who.pid).ensure()


def job_queue() -> JobQueue:
    """The server's queue: alone, one heavy job at a time in order; in a room, the room's fair queue (on a Ray
    cluster with ``room --ray``: a cluster that cannot be joined is one line on every page, tried again on the next)."""
    room = current_room()
    if room is None:
        return _single_queue()
    if not os.environ.get(RAY_ENV):
        return _room_queue(str(room.folder))
    from rlhf_engine.cluster.connect import ClusterError  # no Ray: the error's class only

    try:
        return _room_queue(str(room.folder))
    except ClusterError as err:
        st.error(f"The room's jobs cannot run: {err}")
        st.stop()


@st.cache_resource
def _single_queue() -> JobQueue:
    return JobQueue()


@st.cache_resource
def _room_queue(folder: str) -> JobQueue:
    from rlhf_engine.room.scheduler import room_queue

    return room_queue(current_room())


@st.cache_resource(max_entries=1, show_spinner=False)
def loaded_model(config_json: str):
    """(model, tokenizer, facts) of a ModelConfig given as JSON; the last one loaded stays in memory."""
    from rlhf_engine.core.models import load_model_and_tokenizer

    config = from_dict(ModelConfig, json.loads(config_json))
    model, tokenizer = load_model_and_tokenizer(config)
    param = next(model.parameters())
    facts = {
        "source": config.source,
        "parameters": sum(p.numel() for p in model.parameters()),
        "memory_mib": model.get_memory_footprint() / 2**20,
        "device": str(param.device),
        "dtype": str(param.dtype).replace("torch.", ""),
        "quantization": config.quant,
        "vocabulary": len(tokenizer),
    }
    return model, tokenizer, facts


def model_for(config: ModelConfig):
    """The cached (model, tokenizer, facts) of a ModelConfig."""
    return loaded_model(json.dumps(to_dict(config), sort_keys=True))


@st.cache_resource(max_entries=1, show_spinner=False)
def loaded_reward_model(folder: str, saved_at: float):
    """A trained reward model, reloaded when its folder is rewritten (saved_at = mtime of its metadata)."""
    from rlhf_engine.core.reward import RewardModel

    return RewardModel.load(Path(folder))


@st.cache_resource(max_entries=32, show_spinner=False)
def _metric_figures(folder: str, signature: tuple, panels: tuple, kind: str, pending_json: str):
    from rlhf_engine.lab.figures import metric_figure

    rows = RunFolder(Path(folder)).metrics()
    pending = json.loads(pending_json) if pending_json else None
    return [metric_figure(rows, metrics, title, kind, pending) for title, metrics in panels], len(rows)


def file_signature(path: Path) -> tuple[int, int] | None:
    """(size, mtime) of a file, None if absent: changes whenever the file is written."""
    stat = path.stat() if path.is_file() else None
    return (stat.st_size, stat.st_mtime_ns) if stat else None


def data_signature(run: RunFolder) -> tuple:
    """Changes whenever a run's view has something new to draw: metrics, samples, probes, evaluation, or
    the rollout point of a step still updating."""
    rollout = run.status().get("rollout")
    files = (file_signature(run.path / name)
             for name in ("metrics.jsonl", "samples.jsonl", "probes.jsonl", "eval.json"))
    return (*files, rollout.get("step") if rollout else None)


def metric_figures(run: RunFolder, panels: tuple, kind: str, pending: dict | None = None):
    """(figures, number of logged steps) of a run's panels, rebuilt only when metrics.jsonl changes
    (several sessions may show the same run; building plotly figures costs CPU that training needs)."""
    signature = file_signature(run.path / "metrics.jsonl")
    return _metric_figures(str(run.path), signature, panels, kind, json.dumps(pending) if pending else "")


def is_live(run: RunFolder) -> bool:
    """Queued or running, or its job (process) not yet ended."""
    return run.status().get("state") in ACTIVE_STATES or job_queue().find(run.path) is not None


def refresh_interval(run: RunFolder) -> float | None:
    """Live parts refresh once a second while a run is live, and not at all otherwise."""
    return LIVE_REFRESH_S if is_live(run) else None


def submit_run(run: RunFolder):
    """Queue a prepared run folder's job in a process of its own (see ProcessJob; a Ray task in a room on a
    cluster), owned by this session's participant in a room; returns the job. A job the queue refuses (the room's
    cap, a full disk) leaves its run stopped with the reason, where Resume queues it later, not queued for good;
    the error is raised on."""
    from rlhf_engine.runs.job import ProcessJob, describe_error, end_run
    from rlhf_engine.runs.queue import QueueFull

    room = current_room()
    if room is None:
        job, owner = ProcessJob(run), ""
    else:
        from rlhf_engine.room.scheduler import room_job

        job, owner = room_job(room, run, job_queue()), identity().pid
    try:
        return job_queue().submit(job, owner=owner)
    except (QueueFull, OSError) as err:
        why = f"not queued: {err if isinstance(err, QueueFull) else describe_error(err)}"
        with contextlib.suppress(OSError):  # a full disk may not take this either: the run then reads interrupted
            end_run(run, "stopped", why)
            run.log(why)
        raise


def may_stop(job) -> bool:
    """Whether this session may stop a job: alone, always; in a room, its owner and the teacher only."""
    who = identity()
    return who.role in ("alone", "teacher") or job_queue().owner_of(job) == who.pid


def stop_job(job) -> None:
    """Stop a job as this session (the run's events say who asked); PermissionError if it may not."""
    who = identity()
    if who.role == "alone":
        job_queue().stop(job)
    else:
        job_queue().stop(job, by=who.pid, by_label=who.name)


@st.cache_resource(max_entries=4, show_spinner=False)
def _shared_base(config_json: str):
    from rlhf_engine.room.shared_models import SharedBase

    return SharedBase(from_dict(ModelConfig, json.loads(config_json)))


def shared_base(config: ModelConfig):
    """A room's one copy of a base model (per source, quantization, dtype and device) for every participant."""
    return _shared_base(json.dumps(to_dict(config), sort_keys=True))


@contextmanager
def generating_model(config: ModelConfig):
    """(model, tokenizer) to generate with, for the block: alone, the cached model; in a room, the shared base
    with every adapter off (one participant at a time)."""
    if current_room() is None:
        model, tokenizer, _ = model_for(config)
        yield model, tokenizer
        return
    with shared_base(config).plain() as pair:
        yield pair


@contextmanager
def scoring_model(folder: Path):
    """A trained reward model to score with, for the block: alone, loaded whole (and cached); in a room, its
    adapter on the shared copy of its base."""
    if current_room() is None:
        yield reward_model_for(folder)
        return
    from rlhf_engine.core.reward import META_FILE

    meta = json.loads((Path(folder) / META_FILE).read_text())
    with shared_base(from_dict(ModelConfig, meta["model"])).reward_model(folder) as model:
        yield model


def reward_model_for(folder: Path):
    meta = Path(folder) / "reward_model.json"
    return loaded_reward_model(str(folder), meta.stat().st_mtime)
