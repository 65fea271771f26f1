"""Preference pairs and prompts: the types, reading and validating pair and prompt files, and writing them.

Files are loaded into rows by tables.py (CSV, JSONL or a ``.json`` list of objects, Parquet, a datasets folder,
a hub dataset ``ORG/NAME[:split]``); here each row is checked and turned into a pair. Three row shapes are
understood:

* standard: ``prompt``, ``chosen``, ``rejected`` text columns;
* conversational (TRL style): message lists, with an explicit ``prompt`` column or an
  implicit prompt shared by the leading messages of ``chosen`` and ``rejected``;
* full transcripts without a ``prompt`` column, split at their longest common prefix.

A whole file is validated before anything is returned; the first problem raises
``DataError`` (errors.py) naming the file and the 1-based data row. Row numbers count data rows
only: a CSV header, blank CSV records and blank JSONL lines are not counted.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from rlhf_engine.data.errors import DataError, PathLike, RowProblem, type_name
from rlhf_engine.data.tables import FIELDS, SUPPORTED, decode_json, load_table, read_text

Message = dict
Prompt = str | tuple[Message, ...]


@dataclass(frozen=True)
class PreferencePair:
    """One preference example: a prompt with a preferred and a dispreferred response."""

    prompt: Prompt
    chosen: str
    rejected: str


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
    table = load_table(path)
    if not table.rows:
        raise DataError(path, "no rows")
    explicit = "prompt" in table.columns
    required = FIELDS if explicit else FIELDS[1:]
    _require_columns(path, table.columns, required)
    pairs = []
    for number, row in enumerate(table.rows, start=1):
        try:
            values = [_cell(row, name, table.text_cells) for name in required]
            pair = _explicit_pair(*values) if explicit else _implicit_pair(*values)
        except RowProblem as problem:
            raise DataError(path, str(problem), number) from None
        pairs.append(pair)
    return pairs


def read_prompts(path: PathLike) -> list[Prompt]:
    """Read prompts: one per non-empty line of a .txt file, else the 'prompt' column."""
    if Path(path).suffix.lower() == ".txt" and not Path(path).is_dir():
        if not Path(path).exists():
            raise DataError(path, "file not found")
        text = read_text(path)
        lines = (line.removesuffix("\r") for line in text.split("\n"))
        prompts: list[Prompt] = [line for line in lines if line.strip()]
        if not prompts:
            raise DataError(path, "no rows")
        return prompts
    table = load_table(path)
    if not table.rows:
        raise DataError(path, "no rows")
    _require_columns(path, table.columns, ("prompt",))
    prompts = []
    for number, row in enumerate(table.rows, start=1):
        try:
            prompt = _value(_cell(row, "prompt", table.text_cells), "prompt")
            _check_prompt(prompt)
        except RowProblem as problem:
            raise DataError(path, str(problem), number) from None
        prompts.append(prompt)
    return prompts


def write_pairs(pairs: Iterable[PreferencePair], path: PathLike) -> None:
    """Write pairs to .jsonl, .json, .csv or .parquet (chosen by suffix), replacing the file."""
    target = Path(path)
    suffix = target.suffix.lower()
    if suffix not in (".jsonl", ".json", ".csv", ".parquet"):
        raise DataError(path, f"unsupported file type {suffix or '(none)'!r} ({SUPPORTED})")
    rows = [plain_row(pair) for pair in pairs]
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


# --------------------------------------------------------------------------- validation


def _require_columns(path: PathLike, columns: Sequence[str], required: Sequence[str]) -> None:
    """Raise DataError naming every required column that is absent."""
    missing = [name for name in required if name not in columns]
    if not missing:
        return
    names = ", ".join(repr(name) for name in missing)
    found = ", ".join(name if name.strip() else repr(name) for name in columns) or "none"
    plural = "s" if len(missing) > 1 else ""
    raise DataError(path, f"missing column{plural} {names} (found: {found})")


def _cell(row: dict[str, Any], name: str, text_cells: bool) -> Any:
    """Return one cell; in text-only formats a JSON list of message objects is decoded."""
    if name not in row:
        raise RowProblem(f"missing {name!r}")
    value = row[name]
    if text_cells and isinstance(value, str) and value.lstrip().startswith("["):
        try:
            decoded = decode_json(value)
        except RowProblem:
            return value
        if isinstance(decoded, list) and decoded and all(isinstance(m, dict) for m in decoded):
            return decoded
    return value


def _check_unicode(text: str, field: str) -> str:
    """Refuse text holding a lone surrogate (JSON allows the escape "\\ud800"; UTF-8 has no such character)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise RowProblem(f"{field} holds an invalid character (lone surrogate U+{ord(text[exc.start]):04X} "
                          f"at character {exc.start + 1})") from None
    return text


def _value(value: Any, field: str) -> str | tuple[Message, ...]:
    """Check a cell is text or a list of messages; messages keep only role and content."""
    if isinstance(value, str):
        return _check_unicode(value, repr(field))
    if not isinstance(value, (list, tuple)):
        raise RowProblem(f"{field!r} must be text or a list of messages, got {type_name(value)}")
    messages = []
    for index, message in enumerate(value, start=1):
        if not isinstance(message, dict):
            got = type_name(message)
            raise RowProblem(
                f"{field!r} message {index} must be an object with 'role' and 'content', got {got}"
            )
        for key in ("role", "content"):
            if key not in message:
                raise RowProblem(f"{field!r} message {index} has no {key!r}")
            if not isinstance(message[key], str):
                got = type_name(message[key])
                raise RowProblem(f"{field!r} message {index} {key!r} must be text, got {got}")
            _check_unicode(message[key], f"{field!r} message {index} {key!r}")
        messages.append({"role": message["role"], "content": message["content"]})
    return tuple(messages)


def _check_prompt(prompt: Prompt) -> None:
    """Reject a prompt with no visible text."""
    contents = [prompt] if isinstance(prompt, str) else [m["content"] for m in prompt]
    if not any(text.strip() for text in contents):
        raise RowProblem("'prompt' is empty")


def _assistant_text(messages: Sequence[Message], field: str) -> str:
    """Join the contents of the assistant messages of a response."""
    replies = [m["content"] for m in messages if m["role"] == "assistant"]
    if not replies:
        raise RowProblem(f"{field!r} has no assistant message")
    return "\n".join(replies)


def _check_responses(chosen: str, rejected: str, detail: str = "") -> None:
    """Reject empty or identical responses."""
    for field, text in (("chosen", chosen), ("rejected", rejected)):
        if not text.strip():
            raise RowProblem(f"{field!r} is empty{detail}")
    if chosen.strip() == rejected.strip():
        raise RowProblem("'chosen' and 'rejected' are identical")


def _explicit_pair(prompt: Any, chosen: Any, rejected: Any) -> PreferencePair:
    """Build a pair from a row with a prompt column."""
    prompt_value = _value(prompt, "prompt")
    _check_prompt(prompt_value)
    responses = []
    for field, raw in (("chosen", chosen), ("rejected", rejected)):
        value = _value(raw, field)
        text = value if isinstance(value, str) else _assistant_text(value, field)
        if not text.strip():
            raise RowProblem(f"{field!r} is empty")
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
    raise RowProblem(
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
        raise RowProblem("'chosen' and 'rejected' share no common prefix to use as the prompt")
    pair = PreferencePair(prompt, chosen[cut:], rejected[cut:])
    _check_responses(pair.chosen, pair.rejected, " after removing the shared prompt")
    return pair


def _split_conversations(
    chosen: tuple[Message, ...], rejected: tuple[Message, ...]
) -> PreferencePair:
    """Use the shared leading messages (ending before an assistant turn) as the prompt."""
    if chosen == rejected:
        raise RowProblem("'chosen' and 'rejected' are identical")
    shared = 0
    while shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]:
        shared += 1
    while shared > 0 and chosen[shared - 1]["role"] == "assistant":
        shared -= 1
    if shared == 0:
        raise RowProblem("'chosen' and 'rejected' share no leading messages to use as the prompt")
    prompt = chosen[:shared]
    _check_prompt(prompt)
    responses = []
    for field, messages in (("chosen", chosen[shared:]), ("rejected", rejected[shared:])):
        if any(m["role"] == "user" for m in messages):
            raise RowProblem(
                "'chosen' and 'rejected' differ before the assistant reply (in a user message)"
            )
        if not messages:
            raise RowProblem(f"{field!r} is empty after removing the shared prompt")
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


def plain_row(pair: PreferencePair) -> dict[str, Any]:
    """Return a pair as a JSON-ready dict (conversations as lists of messages)."""
    if not isinstance(pair, PreferencePair):
        raise TypeError(f"expected PreferencePair, got {type(pair).__name__}")
    if not isinstance(pair.chosen, str) or not isinstance(pair.rejected, str):
        raise TypeError("chosen and rejected must be str")
    prompt = pair.prompt if isinstance(pair.prompt, str) else _messages_of(pair.prompt)
    return {"prompt": prompt, "chosen": pair.chosen, "rejected": pair.rejected}


def as_cell(value: str | list[Message]) -> str:
    """Return text as is and a message list as a JSON string."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _write_csv(rows: list[dict[str, Any]], handle: TextIO) -> None:
    """Write rows as CSV with a header; conversations become JSON strings."""
    writer = csv.writer(handle)
    writer.writerow(FIELDS)
    for row in rows:
        writer.writerow([as_cell(row[name]) for name in FIELDS])


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
        "prompt": [row["prompt"] if chat else as_cell(row["prompt"]) for row in rows],
        "chosen": [row["chosen"] for row in rows],
        "rejected": [row["rejected"] for row in rows],
    }
    pq.write_table(pa.Table.from_pydict(columns, schema=schema), path)
