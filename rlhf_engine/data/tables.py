"""Loading a pair or prompt file into unvalidated rows (a ``Table``), before pairs.py checks them.

Supported are CSV (every cell text), JSONL (or a ``.json`` list of objects), Parquet, folders written by
``datasets.Dataset.save_to_disk`` (the 'train' split), and hub datasets named ``ORG/NAME[:split]`` (fetched by
hub.py). Problems with the file itself (not UTF-8, bad CSV or JSON, a repeated column, a damaged Parquet file or
datasets folder) raise DataError here. Row numbers count data rows only: a CSV header, blank CSV records and
blank JSONL lines are not counted.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhf_engine.data.errors import DataError, PathLike, RowProblem, type_name
from rlhf_engine.data.hub import hub_dataset, load_hub_dataset

FIELDS = ("prompt", "chosen", "rejected")
SUPPORTED = "use .csv, .jsonl, .parquet, a datasets folder or a hub dataset ORG/NAME[:split]"


@dataclass
class Table:
    """Rows read from a file, before validation."""

    columns: list[str]
    rows: list[dict[str, Any]]
    text_cells: bool  # cells are always strings, so JSON message lists are stored as text


def load_table(path: PathLike) -> Table:
    """Read a supported file, datasets folder or hub dataset into unvalidated rows."""
    source = Path(path)
    hub = hub_dataset(path)
    if hub is not None:
        return _dataset_table(path, load_hub_dataset(str(path), *hub))
    if not source.exists():
        raise DataError(path, "file not found")
    if source.is_dir():
        return _load_datasets_folder(path)
    suffix = source.suffix.lower()
    if suffix == ".csv":
        return _load_csv(path)
    if suffix in (".jsonl", ".json"):
        return _load_json(path, whole_list=suffix == ".json")
    if suffix == ".parquet":
        return _load_parquet(path)
    raise DataError(path, f"unsupported file type {suffix or '(none)'!r} ({SUPPORTED})")


def read_text(path: PathLike) -> str:
    """Read a file as UTF-8 text (a leading BOM is dropped), reporting bad bytes."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise DataError(path, f"cannot read file ({exc.strerror or exc})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        where = f"byte 0x{data[exc.start]:02x} at offset {exc.start}, line {line}"
        raise DataError(path, f"not UTF-8 text ({where})") from None


def _load_csv(path: PathLike) -> Table:
    """Read a CSV file with a header row; every cell is text."""
    text = read_text(path)
    csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    rows: list[dict[str, Any]] = []
    try:
        for record in reader:
            if not record:
                continue
            if header is None:
                header = [name.strip() for name in record]
                _require_unique_columns(path, header)
                continue
            if len(record) != len(header):
                problem = f"has {len(record)} fields but the header has {len(header)}"
                raise DataError(path, problem, len(rows) + 1)
            rows.append(dict(zip(header, record)))
    except csv.Error as exc:
        raise DataError(path, f"invalid CSV ({exc})", len(rows) + 1) from None
    return Table(header or [], rows, text_cells=True)


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """object_pairs_hook for json.loads: a key given twice is an error, not 'the last one wins'."""
    item: dict[str, Any] = {}
    for key, value in pairs:
        if key in item:
            raise RowProblem(f"key {key!r} appears twice in one object")
        item[key] = value
    return item


def decode_json(text: str) -> Any:
    """json.loads that reports every way a text can fail (bad syntax, a repeated key, deep nesting,
    an integer too long to convert) as RowProblem."""
    try:
        return json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except RecursionError:
        raise RowProblem("invalid JSON (nested too deeply)") from None
    except ValueError as exc:  # JSONDecodeError, and int() refusing a number of over 4300 digits
        raise RowProblem(f"invalid JSON ({exc})") from None


def _load_json(path: PathLike, whole_list: bool) -> Table:
    """Read JSON Lines, or a .json file holding a list of objects."""
    text = read_text(path)
    if whole_list and text.lstrip().startswith("["):
        try:
            items = decode_json(text)
        except RowProblem as problem:
            raise DataError(path, str(problem)) from None
        records = list(enumerate(items, start=1))
    else:
        records = []
        for line in text.split("\n"):
            if not line.strip():
                continue
            number = len(records) + 1
            try:
                records.append((number, decode_json(line)))
            except RowProblem as problem:
                raise DataError(path, str(problem), number) from None
    columns: dict[str, None] = {}
    rows = []
    for number, item in records:
        if not isinstance(item, dict):
            raise DataError(path, f"expected a JSON object, got {type_name(item)}", number)
        columns.update(dict.fromkeys(item))
        rows.append(item)
    return Table(list(columns), rows, text_cells=False)


def _load_parquet(path: PathLike) -> Table:
    """Read a Parquet file; only the pair columns are converted to Python objects."""
    import pyarrow.parquet as pq

    try:
        with pq.ParquetFile(path) as parquet:  # not read_table: its dataset reader fails on a repeated column
            table = parquet.read()
    except Exception as exc:  # pyarrow raises several unrelated types for corrupt files
        raise DataError(path, f"unreadable Parquet file ({exc})") from None
    columns = list(table.column_names)
    _require_unique_columns(path, columns)
    wanted = [name for name in FIELDS if name in columns]
    try:
        rows = table.select(wanted).to_pylist()
    except Exception as exc:  # a column type pyarrow cannot turn into Python values
        raise DataError(path, f"unreadable Parquet file ({exc})") from None
    return Table(columns, rows, text_cells=True)


def _dataset_table(path: PathLike, loaded, what: str = "dataset") -> Table:
    """A ``datasets.Dataset``'s rows (only the columns a pair can use) as an unvalidated table."""
    columns = list(loaded.column_names)
    wanted = [name for name in FIELDS if name in columns]
    try:
        rows = loaded.select_columns(wanted).to_list()
    except Exception as exc:  # Arrow files are read lazily: damage can show only now
        raise DataError(path, f"not a readable {what} ({exc})") from None
    return Table(columns, rows, text_cells=False)


def _load_datasets_folder(path: PathLike) -> Table:
    """Read a folder saved by Dataset/DatasetDict.save_to_disk (the 'train' split)."""
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as exc:  # not a datasets folder, or a damaged one
        raise DataError(path, f"not a readable datasets folder ({exc})") from None
    if isinstance(loaded, datasets.DatasetDict):
        splits = list(loaded)
        if "train" in loaded:
            loaded = loaded["train"]
        elif len(splits) == 1:
            loaded = loaded[splits[0]]
        else:
            problem = f"datasets folder has no 'train' split (splits: {', '.join(splits)})"
            raise DataError(path, problem)
    return _dataset_table(path, loaded, "datasets folder")


def _require_unique_columns(path: PathLike, columns: Sequence[str]) -> None:
    """Raise DataError if a column name appears twice (which one would be meant is a guess)."""
    seen: set[str] = set()
    for name in columns:
        if name in seen:
            raise DataError(path, f"column {name!r} appears twice in the header")
        seen.add(name)
