"""Hugging Face hub datasets: telling a name ``ORG/NAME[:split]`` from a local path, and loading one.

A hub dataset is read with ``datasets.load_dataset``, from the local cache first (offline, so no network
retries), else from the hub when its host answers; when neither can serve it, a one-line DataError says how to
fetch it. The split defaults to train and may be sliced: ``train[:500]``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from rlhf_engine.data.errors import DataError, PathLike

if TYPE_CHECKING:
    import datasets

_FILE_SUFFIXES = (".csv", ".jsonl", ".json", ".parquet", ".txt")
_HUB_DATASET = re.compile(r"(?P<name>[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)(?::(?P<split>[\w.-]+(?:\[[^\]]*\])?))?")


def hub_dataset(text: PathLike) -> tuple[str, str] | None:
    """(name, split) when ``text`` names a hub dataset ("ORG/NAME" or "ORG/NAME:split") rather than a local file:
    it is not a path that exists here, and its last part has no file extension of ours."""
    text = str(text)
    match = _HUB_DATASET.fullmatch(text)
    if match is None or Path(text).exists() or Path(match["name"]).suffix.lower() in _FILE_SUFFIXES:
        return None
    return match["name"], match["split"] or "train"


@contextmanager
def _hub_offline() -> Iterator[None]:
    """The Hugging Face libraries in offline mode for a moment: the local cache only, no network retries (and
    without datasets' warnings that it is using its cache: that is the point)."""
    import datasets.config
    import datasets.utils.logging
    import huggingface_hub.constants

    before = (datasets.config.HF_HUB_OFFLINE, huggingface_hub.constants.HF_HUB_OFFLINE)
    verbosity = datasets.utils.logging.get_verbosity()
    datasets.config.HF_HUB_OFFLINE = huggingface_hub.constants.HF_HUB_OFFLINE = True
    datasets.utils.logging.set_verbosity_error()
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, huggingface_hub.constants.HF_HUB_OFFLINE = before
        datasets.utils.logging.set_verbosity(verbosity)


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the hub's host answers (HF_ENDPOINT's; never in the user's offline mode, HF_HUB_OFFLINE=1)."""
    import socket
    from urllib.parse import urlparse

    import huggingface_hub.constants

    if huggingface_hub.constants.is_offline_mode():
        return False
    url = urlparse(huggingface_hub.constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def load_hub_dataset(label: str, name: str, split: str) -> datasets.Dataset:
    """A hub dataset's split: from the local cache (datasets' own, as ``load_dataset`` left it), else
    downloaded when the hub can be reached; a one-line DataError saying how to fetch it when it cannot."""
    import datasets

    try:
        with _hub_offline():
            loaded = datasets.load_dataset(name, split=split)
    except (ConnectionError, FileNotFoundError):  # not in the cache
        if not _hub_reachable():
            raise DataError(label, f"no such file or folder here, and as a hub dataset not in the local Hugging Face "
                            f"cache ({datasets.config.HF_DATASETS_CACHE}) with the hub out of reach: fetch it once "
                            "where there is a network, with python -c "
                            f"\"import datasets; datasets.load_dataset('{name}')\", and copy that cache folder "
                            "here (or save it with save_to_disk and give the folder)") from None
        try:
            loaded = datasets.load_dataset(name, split=split)
        except Exception as exc:  # noqa: BLE001 - a hub error in one line
            raise DataError(label, f"cannot load from the hub ({_first_line(exc)})") from None
    except ValueError as exc:  # an unknown split or config
        raise DataError(label, _first_line(exc)) from None
    return loaded


def _first_line(exc: BaseException) -> str:
    """The first line of an error's message (its type's name when the message is empty)."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
