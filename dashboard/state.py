"""Shared state of the dashboard: the workspace folder, the job queue and loaded models.

Everything a page shows comes from the workspace on disk (run folders, the pair store, the chosen
model), so a reload, a second tab or a server restart shows the same project. Objects shared by all
sessions of one server (the job queue, loaded models) are ``st.cache_resource``.

Workspace layout (``RLHF_WORKSPACE``, default ``workspace/``)::

    workspace/model.json      the model chosen on the Model page (a ModelConfig)
    workspace/pairs.sqlite    preference pairs: uploaded, collected and simulated
    workspace/runs/<run-id>/  one run folder per job (reward model, PPO, simulated pairs)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from rlhf_engine.config import ModelConfig, from_dict, to_dict
from rlhf_engine.data.store import PairStore
from rlhf_engine.runs.queue import JobQueue
from rlhf_engine.runs.runfolder import ACTIVE_STATES, RunFolder, atomic_write_text, list_runs

LIVE_REFRESH_S = 1.0  # seconds between refreshes of a live view
APP_SHELL_KEY = "app_shell"  # set by app.py in every session it runs in


@dataclass(frozen=True)
class Workspace:
    """Paths of one project's files."""

    root: Path

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def store_path(self) -> Path:
        return self.root / "pairs.sqlite"

    @property
    def model_file(self) -> Path:
        return self.root / "model.json"

    def store(self) -> PairStore:
        return PairStore(self.store_path)

    def model_config(self) -> ModelConfig:
        """The model chosen on the Model page; the bundled default until one is chosen."""
        if self.model_file.is_file():
            return from_dict(ModelConfig, json.loads(self.model_file.read_text()))
        return default_model_config()

    def model_chosen(self) -> bool:
        return self.model_file.is_file()

    def save_model_config(self, config: ModelConfig) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.model_file, json.dumps(to_dict(config), indent=2) + "\n")

    def runs_of(self, *kinds: str) -> list[RunFolder]:
        """Run folders of these kinds (one, or several: every method's), newest first."""
        found = []
        for run in list_runs(self.runs):
            try:
                if run.config().get("kind") in kinds:
                    found.append(run)
            except (OSError, ValueError):
                continue
        return found


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
    """The workspace of this server: $RLHF_WORKSPACE or ./workspace."""
    root = Path(os.environ.get("RLHF_WORKSPACE", "workspace")).resolve()
    (root / "runs").mkdir(parents=True, exist_ok=True)
    return Workspace(root)


def default_model_config() -> ModelConfig:
    """The bundled model; unquantized on CPU, where fp32 generates faster than 4-bit (RESULTS.md)."""
    import torch

    return ModelConfig(quant="4bit" if torch.cuda.is_available() else "none")


@st.cache_resource
def job_queue() -> JobQueue:
    """One queue per server: one heavy job at a time, the rest wait in order."""
    return JobQueue()


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


def reward_model_for(folder: Path):
    meta = Path(folder) / "reward_model.json"
    return loaded_reward_model(str(folder), meta.stat().st_mtime)
