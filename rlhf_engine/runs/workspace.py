"""A workspace: one project's files (the chosen model, the pair store, the run folders).

A user alone has one (``$RLHF_WORKSPACE``, default ``workspace/``); in a workshop room each participant has one of
their own in the room's folder. Everything the pages and commands do takes a workspace, and a run named by a user is
looked up inside it only (``run``): a name with a path in it never reaches another workspace.

Layout::

    <workspace>/model.json      the model chosen on the Model page (a ModelConfig)
    <workspace>/pairs.sqlite    preference pairs: uploaded, collected and simulated
    <workspace>/runs/<run-id>/  one run folder per job (reward model, policy, sweep, simulated pairs)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from rlhf_engine.config import ModelConfig, from_dict, to_dict
from rlhf_engine.data.store import PairStore
from rlhf_engine.runs.runfolder import RunFolder, atomic_write_text, list_runs, safe_name


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

    def ensure(self) -> "Workspace":
        self.runs.mkdir(parents=True, exist_ok=True)
        return self

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

    def run(self, name: str) -> RunFolder:
        """The run of this name in this workspace; ValueError for a name that is a path (``../other/runs/x``)
        or names no run here."""
        folder = self.runs / safe_name(str(name))
        if not (folder / "status.json").is_file():
            raise ValueError(f"no run named {name!r} in this workspace")
        return RunFolder(folder)

    def holds(self, path: Path) -> bool:
        """Whether a path lies inside this workspace (links resolved)."""
        try:
            Path(path).resolve().relative_to(self.root.resolve())
        except ValueError:
            return False
        return True

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


def default_model_config() -> ModelConfig:
    """The bundled model; unquantized on CPU, where fp32 generates faster than 4-bit (RESULTS.md)."""
    import torch

    return ModelConfig(quant="4bit" if torch.cuda.is_available() else "none")


def archive(workspace: Workspace, destination: Path) -> Path:
    """The whole workspace (model choice, pairs, runs, exports) as one zip file at ``destination``.

    The pair store is copied through SQLite's backup (a consistent copy, write-ahead log included); every other
    file as it is. Files that vanish while the archive is written (a run's checkpoint being replaced) are skipped.
    """
    import sqlite3
    import tempfile
    import zipfile

    destination = Path(destination)
    root = workspace.root.resolve()
    with zipfile.ZipFile(destination, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as zf:
        for path in sorted(root.rglob("*")):
            if not path.is_file() or path.is_symlink() or path.name.startswith("pairs.sqlite"):
                continue
            try:
                zf.write(path, Path(root.name) / path.relative_to(root))
            except FileNotFoundError:
                continue
        if workspace.store_path.is_file():
            with tempfile.TemporaryDirectory() as tmp:
                copy = Path(tmp) / "pairs.sqlite"
                with sqlite3.connect(workspace.store_path) as src, sqlite3.connect(copy) as dst:
                    src.backup(dst)
                zf.write(copy, Path(root.name) / "pairs.sqlite")
    return destination
