"""Preference data: reading, validating and writing pair files, plus a SQLite pair store.

Supported files are CSV, JSONL (or a ``.json`` list of objects), Parquet, folders
written by ``datasets.Dataset.save_to_disk``, and Hugging Face hub datasets named
``ORG/NAME[:split]`` (``datasets.load_dataset``, read from the local cache first; the split
defaults to train and may be sliced: ``train[:500]``). Three row shapes are understood:

* standard: ``prompt``, ``chosen``, ``rejected`` text columns;
* conversational (TRL style): message lists, with an explicit ``prompt`` column or an
  implicit prompt shared by the leading messages of ``chosen`` and ``rejected``;
* full transcripts without a ``prompt`` column, split at their longest common prefix.

A whole file is validated before anything is returned; the first problem raises
``DataError`` naming the file and the 1-based data row. Row numbers count data rows
only: a CSV header, blank CSV records and blank JSONL lines are not counted.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

Message = dict
Prompt = str | tuple[Message, ...]

PathLike = str | os.PathLike[str]

_FIELDS = ("prompt", "chosen", "rejected")
_SUPPORTED = "use .csv, .jsonl, .parquet, a datasets folder or a hub dataset ORG/NAME[:split]"
_FILE_SUFFIXES = (".csv", ".jsonl", ".json", ".parquet", ".txt")
_HUB_DATASET = re.compile(r"(?P<name>[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)(?::(?P<split>[\w.-]+(?:\[[^\]]*\])?))?")
_BUSY_TIMEOUT_S = 10.0


class DataError(ValueError):
    """A preference/prompt file is unusable; str() is one line: '<file>: row <n>: <problem>'."""

    def __init__(self, path: PathLike, problem: str, row: int | None = None) -> None:
        self.path = str(path)
        self.problem = " ".join(str(problem).split())
        self.row = row
        where = f"row {row}: " if row is not None else ""
        super().__init__(f"{self.path}: {where}{self.problem}")

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle with the original constructor arguments."""
        return (type(self), (self.path, self.problem, self.row))


@dataclass(frozen=True)
class PreferencePair:
    """One preference example: a prompt with a preferred and a dispreferred response."""

    prompt: Prompt
    chosen: str
    rejected: str


@dataclass(frozen=True)
class StoredPair:
    """A pair as kept in a PairStore, with its id, origin and UTC creation time."""

    id: int
    pair: PreferencePair
    source: str
    created_at: str


class _RowProblem(Exception):
    """Internal: a problem with one row, turned into a DataError by the caller."""


@dataclass
class _Table:
    """Rows read from a file, before validation."""

    columns: list[str]
    rows: list[dict[str, Any]]
    text_cells: bool  # cells are always strings, so JSON message lists are stored as text


# --------------------------------------------------------------------------- public API


def prompt_text(prompt: Prompt) -> str:
    """Return a readable one-string form of a prompt (last user message for conversations)."""
    if isinstance(prompt, str):
        return prompt
    messages = list(prompt)
    for message in reversed(messages):
        if message.get("role") == "user":
            return str(message.get("content", ""))
    return str(messages[-1].get("content", "")) if messages else ""


def read_pairs(path: PathLike) -> list[PreferencePair]:
    """Read and validate every preference pair in a file or datasets folder."""
    table = _load_table(path)
    if not table.rows:
        raise DataError(path, "no rows")
    explicit = "prompt" in table.columns
    required = _FIELDS if explicit else _FIELDS[1:]
    _require_columns(path, table.columns, required)
    pairs = []
    for number, row in enumerate(table.rows, start=1):
        try:
            values = [_cell(row, name, table.text_cells) for name in required]
            pair = _explicit_pair(*values) if explicit else _implicit_pair(*values)
        except _RowProblem as problem:
            raise DataError(path, str(problem), number) from None
        pairs.append(pair)
    return pairs


def read_prompts(path: PathLike) -> list[Prompt]:
    """Read prompts: one per non-empty line of a .txt file, else the 'prompt' column."""
    if Path(path).suffix.lower() == ".txt" and not Path(path).is_dir():
        if not Path(path).exists():
            raise DataError(path, "file not found")
        text = _read_text(path)
        lines = (line.removesuffix("\r") for line in text.split("\n"))
        prompts: list[Prompt] = [line for line in lines if line.strip()]
        if not prompts:
            raise DataError(path, "no rows")
        return prompts
    table = _load_table(path)
    if not table.rows:
        raise DataError(path, "no rows")
    _require_columns(path, table.columns, ("prompt",))
    prompts = []
    for number, row in enumerate(table.rows, start=1):
        try:
            prompt = _value(_cell(row, "prompt", table.text_cells), "prompt")
            _check_prompt(prompt)
        except _RowProblem as problem:
            raise DataError(path, str(problem), number) from None
        prompts.append(prompt)
    return prompts


def write_pairs(pairs: Iterable[PreferencePair], path: PathLike) -> None:
    """Write pairs to .jsonl, .json, .csv or .parquet (chosen by suffix), replacing the file."""
    target = Path(path)
    suffix = target.suffix.lower()
    if suffix not in (".jsonl", ".json", ".csv", ".parquet"):
        raise DataError(path, f"unsupported file type {suffix or '(none)'!r} ({_SUPPORTED})")
    rows = [_plain_row(pair) for pair in pairs]
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        if suffix == ".parquet":
            _write_parquet(rows, tmp)
        else:
            with open(tmp, "w", encoding="utf-8", newline="") as handle:
                if suffix == ".csv":
                    _write_csv(rows, handle)
                elif suffix == ".json":
                    json.dump(rows, handle, ensure_ascii=False, indent=1)
                else:
                    for row in rows:
                        handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


# --------------------------------------------------------------------------- loading


def hub_dataset(text: PathLike) -> tuple[str, str] | None:
    """(name, split) when ``text`` names a hub dataset ("ORG/NAME" or "ORG/NAME:split") rather than a local file:
    it is not a path that exists here, and its last part has no file extension of ours."""
    text = str(text)
    match = _HUB_DATASET.fullmatch(text)
    if match is None or Path(text).exists() or Path(match["name"]).suffix.lower() in _FILE_SUFFIXES:
        return None
    return match["name"], match["split"] or "train"


def _load_table(path: PathLike) -> _Table:
    """Read a supported file, datasets folder or hub dataset into unvalidated rows."""
    source = Path(path)
    hub = hub_dataset(path)
    if hub is not None:
        return _load_hub_dataset(str(path), *hub)
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
    raise DataError(path, f"unsupported file type {suffix or '(none)'!r} ({_SUPPORTED})")


def _read_text(path: PathLike) -> str:
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


def _load_csv(path: PathLike) -> _Table:
    """Read a CSV file with a header row; every cell is text."""
    text = _read_text(path)
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
    return _Table(header or [], rows, text_cells=True)


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """object_pairs_hook for json.loads: a key given twice is an error, not 'the last one wins'."""
    item: dict[str, Any] = {}
    for key, value in pairs:
        if key in item:
            raise _RowProblem(f"key {key!r} appears twice in one object")
        item[key] = value
    return item


def _decode_json(text: str) -> Any:
    """json.loads that reports every way a text can fail (bad syntax, a repeated key, deep nesting,
    an integer too long to convert) as _RowProblem."""
    try:
        return json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except RecursionError:
        raise _RowProblem("invalid JSON (nested too deeply)") from None
    except ValueError as exc:  # JSONDecodeError, and int() refusing a number of over 4300 digits
        raise _RowProblem(f"invalid JSON ({exc})") from None


def _load_json(path: PathLike, whole_list: bool) -> _Table:
    """Read JSON Lines, or a .json file holding a list of objects."""
    text = _read_text(path)
    if whole_list and text.lstrip().startswith("["):
        try:
            items = _decode_json(text)
        except _RowProblem as problem:
            raise DataError(path, str(problem)) from None
        records = list(enumerate(items, start=1))
    else:
        records = []
        for line in text.split("\n"):
            if not line.strip():
                continue
            number = len(records) + 1
            try:
                records.append((number, _decode_json(line)))
            except _RowProblem as problem:
                raise DataError(path, str(problem), number) from None
    columns: dict[str, None] = {}
    rows = []
    for number, item in records:
        if not isinstance(item, dict):
            raise DataError(path, f"expected a JSON object, got {_type_name(item)}", number)
        columns.update(dict.fromkeys(item))
        rows.append(item)
    return _Table(list(columns), rows, text_cells=False)


def _load_parquet(path: PathLike) -> _Table:
    """Read a Parquet file; only the pair columns are converted to Python objects."""
    import pyarrow.parquet as pq

    try:
        with pq.ParquetFile(path) as parquet:  # not read_table: its dataset reader fails on a repeated column
            table = parquet.read()
    except Exception as exc:  # pyarrow raises several unrelated types for corrupt files
        raise DataError(path, f"unreadable Parquet file ({exc})") from None
    columns = list(table.column_names)
    _require_unique_columns(path, columns)
    wanted = [name for name in _FIELDS if name in columns]
    try:
        rows = table.select(wanted).to_pylist()
    except Exception as exc:  # a column type pyarrow cannot turn into Python values
        raise DataError(path, f"unreadable Parquet file ({exc})") from None
    return _Table(columns, rows, text_cells=True)


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


def _load_hub_dataset(label: str, name: str, split: str) -> _Table:
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
    return _dataset_table(label, loaded)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _dataset_table(path: PathLike, loaded, what: str = "dataset") -> _Table:
    """A ``datasets.Dataset``'s rows (only the columns a pair can use) as an unvalidated table."""
    columns = list(loaded.column_names)
    wanted = [name for name in _FIELDS if name in columns]
    try:
        rows = loaded.select_columns(wanted).to_list()
    except Exception as exc:  # Arrow files are read lazily: damage can show only now
        raise DataError(path, f"not a readable {what} ({exc})") from None
    return _Table(columns, rows, text_cells=False)


def _load_datasets_folder(path: PathLike) -> _Table:
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


def _require_columns(path: PathLike, columns: Sequence[str], required: Sequence[str]) -> None:
    """Raise DataError naming every required column that is absent."""
    missing = [name for name in required if name not in columns]
    if not missing:
        return
    names = ", ".join(repr(name) for name in missing)
    found = ", ".join(name if name.strip() else repr(name) for name in columns) or "none"
    plural = "s" if len(missing) > 1 else ""
    raise DataError(path, f"missing column{plural} {names} (found: {found})")


# --------------------------------------------------------------------------- validation


def _type_name(value: object) -> str:
    """Name a value's type the way a user sees it in a data file."""
    if value is None:
        return "null"
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    return type(value).__name__


def _cell(row: dict[str, Any], name: str, text_cells: bool) -> Any:
    """Return one cell; in text-only formats a JSON list of message objects is decoded."""
    if name not in row:
        raise _RowProblem(f"missing {name!r}")
    value = row[name]
    if text_cells and isinstance(value, str) and value.lstrip().startswith("["):
        try:
            decoded = _decode_json(value)
        except _RowProblem:
            return value
        if isinstance(decoded, list) and decoded and all(isinstance(m, dict) for m in decoded):
            return decoded
    return value


def _check_unicode(text: str, field: str) -> str:
    """Refuse text holding a lone surrogate (JSON allows the escape "\\ud800"; UTF-8 has no such character)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _RowProblem(f"{field} holds an invalid character (lone surrogate U+{ord(text[exc.start]):04X} "
                          f"at character {exc.start + 1})") from None
    return text


def _value(value: Any, field: str) -> str | tuple[Message, ...]:
    """Check a cell is text or a list of messages; messages keep only role and content."""
    if isinstance(value, str):
        return _check_unicode(value, repr(field))
    if not isinstance(value, (list, tuple)):
        raise _RowProblem(f"{field!r} must be text or a list of messages, got {_type_name(value)}")
    messages = []
    for index, message in enumerate(value, start=1):
        if not isinstance(message, dict):
            got = _type_name(message)
            raise _RowProblem(
                f"{field!r} message {index} must be an object with 'role' and 'content', got {got}"
            )
        for key in ("role", "content"):
            if key not in message:
                raise _RowProblem(f"{field!r} message {index} has no {key!r}")
            if not isinstance(message[key], str):
                got = _type_name(message[key])
                raise _RowProblem(f"{field!r} message {index} {key!r} must be text, got {got}")
            _check_unicode(message[key], f"{field!r} message {index} {key!r}")
        messages.append({"role": message["role"], "content": message["content"]})
    return tuple(messages)


def _check_prompt(prompt: Prompt) -> None:
    """Reject a prompt with no visible text."""
    contents = [prompt] if isinstance(prompt, str) else [m["content"] for m in prompt]
    if not any(text.strip() for text in contents):
        raise _RowProblem("'prompt' is empty")


def _assistant_text(messages: Sequence[Message], field: str) -> str:
    """Join the contents of the assistant messages of a response."""
    replies = [m["content"] for m in messages if m["role"] == "assistant"]
    if not replies:
        raise _RowProblem(f"{field!r} has no assistant message")
    return "\n".join(replies)


def _check_responses(chosen: str, rejected: str, detail: str = "") -> None:
    """Reject empty or identical responses."""
    for field, text in (("chosen", chosen), ("rejected", rejected)):
        if not text.strip():
            raise _RowProblem(f"{field!r} is empty{detail}")
    if chosen.strip() == rejected.strip():
        raise _RowProblem("'chosen' and 'rejected' are identical")


def _explicit_pair(prompt: Any, chosen: Any, rejected: Any) -> PreferencePair:
    """Build a pair from a row with a prompt column."""
    prompt_value = _value(prompt, "prompt")
    _check_prompt(prompt_value)
    responses = []
    for field, raw in (("chosen", chosen), ("rejected", rejected)):
        value = _value(raw, field)
        text = value if isinstance(value, str) else _assistant_text(value, field)
        if not text.strip():
            raise _RowProblem(f"{field!r} is empty")
        responses.append(text)
    _check_responses(*responses)
    return PreferencePair(prompt_value, responses[0], responses[1])


def _implicit_pair(chosen: Any, rejected: Any) -> PreferencePair:
    """Build a pair from chosen/rejected that both include the prompt."""
    chosen_value = _value(chosen, "chosen")
    rejected_value = _value(rejected, "rejected")
    if isinstance(chosen_value, str) and isinstance(rejected_value, str):
        return _split_transcripts(chosen_value, rejected_value)
    if isinstance(chosen_value, tuple) and isinstance(rejected_value, tuple):
        return _split_conversations(chosen_value, rejected_value)
    raise _RowProblem(
        "'chosen' and 'rejected' must both be text or both be conversations "
        "when there is no 'prompt' column"
    )


def _is_word_char(char: str) -> bool:
    """Tell whether a character belongs to a word."""
    return char.isalnum() or char == "_"


def _split_transcripts(chosen: str, rejected: str) -> PreferencePair:
    """Split two transcripts at their longest common prefix, backing up to a word boundary."""
    _check_responses(chosen, rejected)
    cut = len(os.path.commonprefix([chosen, rejected]))
    mid_word = cut > 0 and _is_word_char(chosen[cut - 1]) and any(
        cut < len(text) and _is_word_char(text[cut]) for text in (chosen, rejected)
    )
    if mid_word:
        while cut > 0 and not chosen[cut - 1].isspace():
            cut -= 1
    prompt = chosen[:cut]
    if not prompt.strip():
        raise _RowProblem("'chosen' and 'rejected' share no common prefix to use as the prompt")
    pair = PreferencePair(prompt, chosen[cut:], rejected[cut:])
    _check_responses(pair.chosen, pair.rejected, " after removing the shared prompt")
    return pair


def _split_conversations(
    chosen: tuple[Message, ...], rejected: tuple[Message, ...]
) -> PreferencePair:
    """Use the shared leading messages (ending before an assistant turn) as the prompt."""
    if chosen == rejected:
        raise _RowProblem("'chosen' and 'rejected' are identical")
    shared = 0
    while shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]:
        shared += 1
    while shared > 0 and chosen[shared - 1]["role"] == "assistant":
        shared -= 1
    if shared == 0:
        raise _RowProblem("'chosen' and 'rejected' share no leading messages to use as the prompt")
    prompt = chosen[:shared]
    _check_prompt(prompt)
    responses = []
    for field, messages in (("chosen", chosen[shared:]), ("rejected", rejected[shared:])):
        if any(m["role"] == "user" for m in messages):
            raise _RowProblem(
                "'chosen' and 'rejected' differ before the assistant reply (in a user message)"
            )
        if not messages:
            raise _RowProblem(f"{field!r} is empty after removing the shared prompt")
        responses.append(_assistant_text(messages, field))
    _check_responses(*responses, detail=" after removing the shared prompt")
    return PreferencePair(prompt, responses[0], responses[1])


# --------------------------------------------------------------------------- writing


def _messages_of(prompt: Any) -> list[Message]:
    """Return a conversational prompt as plain role/content dicts, or raise TypeError."""
    if not isinstance(prompt, (list, tuple)):
        raise TypeError(f"prompt must be str or a tuple of messages, got {type(prompt).__name__}")
    messages = []
    for message in prompt:
        if not (
            isinstance(message, dict)
            and isinstance(message.get("role"), str)
            and isinstance(message.get("content"), str)
        ):
            raise TypeError(f"prompt messages need text 'role' and 'content', got {message!r}")
        messages.append({"role": message["role"], "content": message["content"]})
    return messages


def _plain_row(pair: PreferencePair) -> dict[str, Any]:
    """Return a pair as a JSON-ready dict (conversations as lists of messages)."""
    if not isinstance(pair, PreferencePair):
        raise TypeError(f"expected PreferencePair, got {type(pair).__name__}")
    if not isinstance(pair.chosen, str) or not isinstance(pair.rejected, str):
        raise TypeError("chosen and rejected must be str")
    prompt = pair.prompt if isinstance(pair.prompt, str) else _messages_of(pair.prompt)
    return {"prompt": prompt, "chosen": pair.chosen, "rejected": pair.rejected}


def _as_cell(value: str | list[Message]) -> str:
    """Return text as is and a message list as a JSON string."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _write_csv(rows: list[dict[str, Any]], handle: TextIO) -> None:
    """Write rows as CSV with a header; conversations become JSON strings."""
    writer = csv.writer(handle)
    writer.writerow(_FIELDS)
    for row in rows:
        writer.writerow([_as_cell(row[name]) for name in _FIELDS])


def _write_parquet(rows: list[dict[str, Any]], path: Path) -> None:
    """Write rows as Parquet: native message lists if every prompt is a conversation."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    chat = bool(rows) and all(isinstance(row["prompt"], list) for row in rows)
    message = pa.struct([("role", pa.string()), ("content", pa.string())])
    prompt_type = pa.list_(message) if chat else pa.string()
    schema = pa.schema(
        [("prompt", prompt_type), ("chosen", pa.string()), ("rejected", pa.string())]
    )
    columns = {
        "prompt": [row["prompt"] if chat else _as_cell(row["prompt"]) for row in rows],
        "chosen": [row["chosen"] for row in rows],
        "rejected": [row["rejected"] for row in rows],
    }
    pq.write_table(pa.Table.from_pydict(columns, schema=schema), path)


# --------------------------------------------------------------------------- store


def _search_text(prompt: str, prompt_is_chat: int, chosen: str, rejected: str) -> str:
    """Case-folded searchable text of a stored row (message contents only for chats)."""
    if prompt_is_chat:
        prompt = "\n".join(m["content"] for m in json.loads(prompt))
    return "\x00".join((prompt, chosen, rejected)).casefold()


_COLUMNS = "id, prompt, prompt_is_chat, chosen, rejected, source, created_at"
_INSERT = (
    "INSERT INTO pairs (prompt, prompt_is_chat, chosen, rejected, source, created_at)"
    " VALUES (?, ?, ?, ?, ?, ?)"
)
_SEARCH = "instr(search_text(prompt, prompt_is_chat, chosen, rejected), ?) > 0"


class PairStore:
    """Preference pairs in a SQLite database (WAL mode, one connection per call)."""

    def __init__(self, db_path: PathLike) -> None:
        """Open or create the database file and its table."""
        self.db_path = Path(db_path)
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            with conn:
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS pairs ("
                    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
                    " prompt TEXT NOT NULL,"
                    " prompt_is_chat INTEGER NOT NULL DEFAULT 0,"
                    " chosen TEXT NOT NULL,"
                    " rejected TEXT NOT NULL,"
                    " source TEXT NOT NULL,"
                    " created_at TEXT NOT NULL)"
                )

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """Yield a fresh connection that is closed afterwards."""
        conn = sqlite3.connect(self.db_path, timeout=_BUSY_TIMEOUT_S, isolation_level="IMMEDIATE")
        with closing(conn):
            conn.execute(f"PRAGMA busy_timeout = {int(_BUSY_TIMEOUT_S * 1000)}")
            conn.create_function("search_text", 4, _search_text, deterministic=True)
            yield conn

    @staticmethod
    def _values(pair: PreferencePair, source: str, created_at: str) -> tuple[Any, ...]:
        """Return the column values for inserting one pair."""
        row = _plain_row(pair)
        chat = not isinstance(row["prompt"], str)
        prompt = _as_cell(row["prompt"])
        return (prompt, int(chat), row["chosen"], row["rejected"], str(source), created_at)

    @staticmethod
    def _stored(row: tuple[Any, ...]) -> StoredPair:
        """Turn a selected row back into a StoredPair."""
        pair_id, prompt, is_chat, chosen, rejected, source, created_at = row
        value: Prompt = tuple(json.loads(prompt)) if is_chat else prompt
        return StoredPair(pair_id, PreferencePair(value, chosen, rejected), source, created_at)

    def add(self, pair: PreferencePair, source: str = "ui") -> int:
        """Store one pair and return its id."""
        return self.add_many([pair], source)[0]

    def add_many(self, pairs: Iterable[PreferencePair], source: str) -> list[int]:
        """Store pairs in one transaction (all or nothing) and return their ids."""
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        ids = []
        with self._connect() as conn, conn:
            for pair in pairs:
                cursor = conn.execute(_INSERT, self._values(pair, source, now))
                ids.append(int(cursor.lastrowid))
        return ids

    def count(self, search: str | None = None, source: str | None = None) -> int:
        """Count stored pairs, optionally only those matching a search string, or from one source."""
        where, params = self._where(search)
        if source is not None:
            where, params = (f"{where} AND source = ?" if where else " WHERE source = ?"), (*params, source)
        with self._connect() as conn:
            return int(conn.execute(f"SELECT COUNT(*) FROM pairs{where}", params).fetchone()[0])

    def list(
        self, limit: int = 100, offset: int = 0, search: str | None = None
    ) -> list[StoredPair]:
        """Return stored pairs newest first; search is a case-insensitive substring."""
        where, params = self._where(search)
        sql = f"SELECT {_COLUMNS} FROM pairs{where} ORDER BY id DESC LIMIT ? OFFSET ?"
        with self._connect() as conn:
            rows = conn.execute(sql, (*params, int(limit), int(offset))).fetchall()
        return [self._stored(row) for row in rows]

    def get(self, pair_id: int) -> StoredPair:
        """Return one stored pair; KeyError if there is none with this id."""
        with self._connect() as conn:
            row = conn.execute(f"SELECT {_COLUMNS} FROM pairs WHERE id = ?", (pair_id,)).fetchone()
        if row is None:
            raise KeyError(pair_id)
        return self._stored(row)

    def delete(self, pair_id: int) -> bool:
        """Delete one pair; return whether it existed."""
        with self._connect() as conn, conn:
            return conn.execute("DELETE FROM pairs WHERE id = ?", (pair_id,)).rowcount > 0

    def all_pairs(self) -> list[PreferencePair]:
        """Return every stored pair, oldest first."""
        with self._connect() as conn:
            rows = conn.execute(f"SELECT {_COLUMNS} FROM pairs ORDER BY id").fetchall()
        return [self._stored(row).pair for row in rows]

    def export(self, path: PathLike) -> int:
        """Write every stored pair to a file with write_pairs; return how many."""
        pairs = self.all_pairs()
        write_pairs(pairs, path)
        return len(pairs)

    @staticmethod
    def _where(search: str | None) -> tuple[str, tuple[str, ...]]:
        """Return the WHERE clause and parameters for an optional search."""
        if not search:
            return "", ()
        return f" WHERE {_SEARCH}", (search.casefold(),)
