"""Tests for rlhf_engine.data.pairs: reading, validating, writing and storing preference pairs."""

from __future__ import annotations

import json
import pickle
import sqlite3
import tempfile
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from rlhf_engine.data.errors import DataError
from rlhf_engine.data.pairs import PreferencePair, prompt_text, read_pairs, read_prompts, write_pairs
from rlhf_engine.data.store import PairStore, StoredPair

FORMATS = ["csv", "jsonl", "json", "parquet"]

CHAT = (
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": 'Say "hi", please.\nThanks'},
)

TRICKY_PAIRS = [
    PreferencePair("Plain, with \"quotes\",\nnewlines\r\nand ünïcødé ✓ 😀", "NA", "null"),
    PreferencePair(CHAT, "hi", "Hello, \"friend\"\n\u2028line"),
    PreferencePair("  padded prompt  ", "[1] not json", "{}"),
]


def user(text: str) -> dict[str, str]:
    """A user message."""
    return {"role": "user", "content": text}


def assistant(text: str) -> dict[str, str]:
    """An assistant message."""
    return {"role": "assistant", "content": text}


def write_file(path: Path, content: Any) -> Path:
    """Write raw text/bytes, or a dict of columns / Arrow table as Parquet."""
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, str):
        path.write_text(content, encoding="utf-8", newline="")
    else:
        table = content if isinstance(content, pa.Table) else pa.table(content)
        pq.write_table(table, path)
    return path


def jsonl(*rows: Any) -> str:
    """JSON Lines text from Python objects (strings are used as raw lines)."""
    return "".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows)


def csv_text(*lines: str) -> str:
    """CSV text with a standard header."""
    return "\n".join(("prompt,chosen,rejected", *lines)) + "\n"


GOOD = {"prompt": "q", "chosen": "a", "rejected": "b"}


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_mixed_pairs(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"pairs.{fmt}"
    write_pairs(TRICKY_PAIRS, path)
    assert read_pairs(path) == TRICKY_PAIRS


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_chat_only(tmp_path: Path, fmt: str) -> None:
    pairs = [PreferencePair(CHAT, "a", "b"), PreferencePair((user("x"),), "NA", "c, d")]
    path = tmp_path / f"pairs.{fmt}"
    write_pairs(pairs, path)
    assert read_pairs(path) == pairs


def test_parquet_chat_only_uses_native_message_lists(tmp_path: Path) -> None:
    path = tmp_path / "chat.parquet"
    write_pairs([PreferencePair(CHAT, "a", "b")], path)
    assert pa.types.is_list(pq.read_schema(path).field("prompt").type)


def test_csv_keeps_na_and_empty_looking_text(tmp_path: Path) -> None:
    path = write_file(tmp_path / "na.csv", csv_text("NA,null,None", "N/A,nan,NaN"))
    assert read_pairs(path) == [
        PreferencePair("NA", "null", "None"),
        PreferencePair("N/A", "nan", "NaN"),
    ]


def test_write_pairs_replaces_file_and_creates_parent(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "pairs.jsonl"
    write_pairs(TRICKY_PAIRS, path)
    write_pairs(TRICKY_PAIRS[:1], path)
    assert read_pairs(path) == TRICKY_PAIRS[:1]
    assert [p.name for p in path.parent.iterdir()] == ["pairs.jsonl"]


def test_write_pairs_rejects_bad_input(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"unsupported file type '\.xlsx'"):
        write_pairs(TRICKY_PAIRS, tmp_path / "pairs.xlsx")
    with pytest.raises(TypeError):
        write_pairs(["not a pair"], tmp_path / "pairs.jsonl")  # type: ignore[list-item]
    assert not (tmp_path / "pairs.jsonl").exists()


_text = st.text(min_size=1, max_size=30)


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(prompt=_text, chosen=_text, rejected=_text)
def test_round_trip_any_text(fmt: str, prompt: str, chosen: str, rejected: str) -> None:
    assume(all(text.strip() for text in (prompt, chosen, rejected)))
    assume(chosen.strip() != rejected.strip())
    assume(not any(text.lstrip().startswith("[") for text in (prompt, chosen, rejected)))
    pairs = [PreferencePair(prompt, chosen, rejected)]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"pairs.{fmt}"
        write_pairs(pairs, path)
        assert read_pairs(path) == pairs


# --------------------------------------------------------------------------- shapes


def test_extra_columns_ignored_and_text_kept_exactly(tmp_path: Path) -> None:
    row = {"id": 7, "prompt": " q ", "chosen": "a\n", "rejected": " b", "score": [1, 2]}
    path = write_file(tmp_path / "extra.jsonl", jsonl(row))
    assert read_pairs(path) == [PreferencePair(" q ", "a\n", " b")]


def test_conversational_explicit_prompt(tmp_path: Path) -> None:
    row = {
        "prompt": [{"role": "system", "content": "s", "name": "x"}, user("hi")],
        "chosen": [assistant("Hello"), assistant("there")],
        "rejected": [{"role": "assistant", "content": "Go away", "tool_calls": None}],
    }
    path = write_file(tmp_path / "conv.jsonl", jsonl(row))
    assert read_pairs(path) == [
        PreferencePair(({"role": "system", "content": "s"}, user("hi")), "Hello\nthere", "Go away")
    ]


def test_conversational_csv_cells(tmp_path: Path) -> None:
    prompt = json.dumps([user("hi, you")]).replace('"', '""')
    chosen = json.dumps([assistant("yo")]).replace('"', '""')
    path = write_file(tmp_path / "conv.csv", csv_text(f'"{prompt}","{chosen}",plain no'))
    assert read_pairs(path) == [PreferencePair((user("hi, you"),), "yo", "plain no")]


def test_conversational_implicit_prompt(tmp_path: Path) -> None:
    system = {"role": "system", "content": "Be nice."}
    rows = [
        {"chosen": [system, user("hi"), assistant("Hello!")],
         "rejected": [system, user("hi"), assistant("Go away.")]},
        {"chosen": [user("a"), assistant("b"), user("c"), assistant("d1")],
         "rejected": [user("a"), assistant("b"), user("c"), assistant("d2")]},
    ]
    path = write_file(tmp_path / "implicit.jsonl", jsonl(*rows))
    assert read_pairs(path) == [
        PreferencePair((system, user("hi")), "Hello!", "Go away."),
        PreferencePair((user("a"), assistant("b"), user("c")), "d1", "d2"),
    ]


HH_PROMPT = "\n\nHuman: What is 2+2?\n\nAssistant:"


@pytest.mark.parametrize(
    ("chosen", "rejected", "expected"),
    [
        (HH_PROMPT + " It is 4.", HH_PROMPT + " Five.", (HH_PROMPT + " ", "It is 4.", "Five.")),
        (HH_PROMPT + " Sure, 4.", HH_PROMPT + " Sorry.", (HH_PROMPT + " ", "Sure, 4.", "Sorry.")),
        ("Q: word? A: don't", "Q: word? A: done", ("Q: word? A: ", "don't", "done")),
        ("Say it:\tYes", "Say it:\tYesterday", ("Say it:\t", "Yes", "Yesterday")),
        ("Hi there", "Hi, there", ("Hi", " there", ", there")),
    ],
    ids=["hh", "hh-mid-word", "mid-word-apostrophe", "word-continues-in-rejected", "word-end"],
)
def test_transcript_split(
    tmp_path: Path, chosen: str, rejected: str, expected: tuple[str, str, str]
) -> None:
    path = write_file(tmp_path / "hh.jsonl", jsonl({"chosen": chosen, "rejected": rejected}))
    assert read_pairs(path) == [PreferencePair(*expected)]


def test_transcript_split_in_csv(tmp_path: Path) -> None:
    text = "chosen,rejected\n\"Q: hi A: Sure\",\"Q: hi A: Sorry\"\n"
    path = write_file(tmp_path / "hh.csv", text)
    assert read_pairs(path) == [PreferencePair("Q: hi A: ", "Sure", "Sorry")]


# --------------------------------------------------------------------------- hub datasets


def test_hub_datasets_load_from_the_local_cache_in_every_shape_and_say_how_to_fetch_a_missing_one(hub_cache,
                                                                                                   capsys) -> None:
    from rlhf_engine.cli import main
    from rlhf_engine.data.hub import hub_dataset

    plain = [{"prompt": f"q{i}", "chosen": "a", "rejected": "b", "score_chosen": 9.0} for i in range(5)]
    chat = [{"chosen": [user("hi"), assistant("A")], "rejected": [user("hi"), assistant("B")]}]  # TRL's implicit
    transcripts = [{"chosen": "\n\nHuman: hi\n\nAssistant: yes", "rejected": "\n\nHuman: hi\n\nAssistant: no"}]
    hub_cache("testorg/prefs", {"train": plain, "test": plain[:2]})
    hub_cache("testorg/chat", {"train": chat})
    hub_cache("anthro/hh", {"train": transcripts})
    hub_cache("testorg/broken", {"train": [plain[0], {"prompt": "q", "chosen": "", "rejected": "b"}]})
    capsys.readouterr()  # the cache's own progress bars

    assert read_pairs("testorg/prefs") == [PreferencePair(f"q{i}", "a", "b") for i in range(5)]
    assert read_pairs("testorg/prefs:test") == [PreferencePair(f"q{i}", "a", "b") for i in range(2)]
    assert read_pairs("testorg/prefs:train[1:3]") == [PreferencePair(f"q{i}", "a", "b") for i in (1, 2)]
    assert read_pairs("testorg/chat") == [PreferencePair((user("hi"),), "A", "B")]
    assert read_pairs("anthro/hh") == [PreferencePair("\n\nHuman: hi\n\nAssistant: ", "yes", "no")]
    assert read_prompts("testorg/prefs:test") == ["q0", "q1"]
    assert hub_dataset("data/pairs.jsonl") is None and hub_dataset("org/name:test") == ("org/name", "test")

    for spec, words in (("testorg/broken", ["testorg/broken: row 2:", "chosen"]),
                        ("testorg/prefs:validation", ["testorg/prefs:validation", "validation", "train", "test"]),
                        ("nobody/missing", ["nobody/missing: no such file or folder here",
                                            "not in the local Hugging Face cache", "hub out of reach",
                                            "datasets.load_dataset('nobody/missing')"])):
        assert main(["validate-data", spec]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and all(w in err for w in words), err
    assert main(["validate-data", "testorg/prefs:test"]) == 0
    assert "2" in capsys.readouterr().out


# --------------------------------------------------------------------------- datasets folders


def test_datasets_folders(tmp_path: Path) -> None:
    from datasets import Dataset, DatasetDict

    plain = [{"prompt": "q", "chosen": "a", "rejected": "b", "extra": 1}]
    chat = [{"prompt": [user("hi")], "chosen": [assistant("A")], "rejected": [assistant("B")]}]
    Dataset.from_list(plain).save_to_disk(tmp_path / "ds")
    DatasetDict(
        {"test": Dataset.from_list(plain), "train": Dataset.from_list(chat)}
    ).save_to_disk(tmp_path / "dd")
    DatasetDict({"validation": Dataset.from_list(plain)}).save_to_disk(tmp_path / "one")
    two = DatasetDict({"a": Dataset.from_list(plain), "b": Dataset.from_list(plain)})
    two.save_to_disk(tmp_path / "two")

    assert read_pairs(tmp_path / "ds") == [PreferencePair("q", "a", "b")]
    assert read_pairs(tmp_path / "dd") == [PreferencePair((user("hi"),), "A", "B")]
    assert read_pairs(tmp_path / "one") == [PreferencePair("q", "a", "b")]
    assert read_prompts(tmp_path / "dd") == [(user("hi"),)]
    with pytest.raises(DataError, match=r"no 'train' split \(splits: a, b\)") as info:
        read_pairs(tmp_path / "two")
    assert info.value.path == str(tmp_path / "two")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(DataError, match="not a readable datasets folder"):
        read_pairs(tmp_path / "empty_dir")


# --------------------------------------------------------------------------- bad files

HEADER_ONLY = "prompt,chosen,rejected\n"
OK_LINE = "q,a,b"
BAD_CASES: list[tuple[str, str, Any, int | None, str]] = [
    # id, file name, content, expected row, expected problem text
    ("csv-missing-column", "p.csv", "prompt,chosen\nq,a\n", None,
     "missing column 'rejected' (found: prompt, chosen)"),
    ("csv-missing-columns", "p.csv", "text,label\nq,a\n", None,
     "missing columns 'chosen', 'rejected' (found: text, label)"),
    ("csv-empty-file", "p.csv", "", None, "no rows"),
    ("csv-header-only", "p.csv", HEADER_ONLY, None, "no rows"),
    ("csv-empty-text", "p.csv", csv_text(OK_LINE, "q,a,c", "q,,b"), 3, "'chosen' is empty"),
    ("csv-whitespace-text", "p.csv", csv_text(OK_LINE, "q,a, \t "), 2, "'rejected' is empty"),
    ("csv-empty-prompt", "p.csv", csv_text("  ,a,b"), 1, "'prompt' is empty"),
    ("csv-identical", "p.csv", csv_text(*[OK_LINE] * 4, "q,same,same"), 5,
     "'chosen' and 'rejected' are identical"),
    ("csv-field-count", "p.csv", csv_text(OK_LINE, "q,a,b,extra"), 2,
     "has 4 fields but the header has 3"),
    ("csv-bad-message", "p.csv", csv_text(OK_LINE, '"[{""role"": ""user""}]",a,b'), 2,
     "'prompt' message 1 has no 'content'"),
    ("csv-not-utf8", "p.csv", b"prompt,chosen,rejected\nq,a,b\nq,\xff,b\n", None,
     "not UTF-8 text (byte 0xff at offset 31, line 3)"),
    ("csv-transcript-no-prefix", "p.csv", "chosen,rejected\nHello,Bye\n", 1,
     "share no common prefix"),
    ("csv-transcript-empty-after-split", "p.csv",
     "chosen,rejected\nQ: a,Q: b\nHi. Yes,Hi. Yes!\n", 2,
     "'chosen' is empty after removing the shared prompt"),
    ("jsonl-missing-column", "p.jsonl", jsonl({"prompt": "q", "chosen": "a"}), None,
     "missing column 'rejected' (found: prompt, chosen)"),
    ("jsonl-empty-file", "p.jsonl", "", None, "no rows"),
    ("jsonl-blank-lines-only", "p.jsonl", "\n  \n\n", None, "no rows"),
    ("jsonl-empty-text-after-blank-line", "p.jsonl",
     jsonl(GOOD, "", GOOD, {**GOOD, "chosen": ""}), 3, "'chosen' is empty"),
    ("jsonl-identical", "p.jsonl", jsonl(*[GOOD] * 4, {**GOOD, "rejected": "a"}), 5,
     "'chosen' and 'rejected' are identical"),
    ("jsonl-int", "p.jsonl", jsonl(GOOD, {**GOOD, "prompt": 3}), 2,
     "'prompt' must be text or a list of messages, got int"),
    ("jsonl-null", "p.jsonl", jsonl(GOOD, {**GOOD, "chosen": None}), 2,
     "'chosen' must be text or a list of messages, got null"),
    ("jsonl-dict", "p.jsonl", jsonl(GOOD, {**GOOD, "rejected": {"text": "b"}}), 2,
     "'rejected' must be text or a list of messages, got dict"),
    ("jsonl-bool", "p.jsonl", jsonl({**GOOD, "chosen": True}), 1,
     "'chosen' must be text or a list of messages, got bool"),
    ("jsonl-float", "p.jsonl", jsonl({**GOOD, "chosen": 1.5}), 1,
     "'chosen' must be text or a list of messages, got float"),
    ("jsonl-list-of-ints", "p.jsonl", jsonl({**GOOD, "prompt": [1, 2]}), 1,
     "'prompt' message 1 must be an object with 'role' and 'content', got int"),
    ("jsonl-message-without-role", "p.jsonl", jsonl({**GOOD, "prompt": [{"content": "x"}]}), 1,
     "'prompt' message 1 has no 'role'"),
    ("jsonl-role-not-text", "p.jsonl",
     jsonl({**GOOD, "prompt": [user("x"), {"role": 1, "content": "x"}]}), 1,
     "'prompt' message 2 'role' must be text, got int"),
    ("jsonl-empty-conversation", "p.jsonl", jsonl({**GOOD, "prompt": []}), 1, "'prompt' is empty"),
    ("jsonl-no-assistant", "p.jsonl", jsonl({**GOOD, "chosen": [user("x")]}), 1,
     "'chosen' has no assistant message"),
    ("jsonl-invalid-json", "p.jsonl", jsonl(GOOD, GOOD, GOOD, '{"prompt": "q", '), 4,
     "invalid JSON (Expecting property name"),
    ("jsonl-not-object", "p.jsonl", jsonl(GOOD, [1, 2]), 2, "expected a JSON object, got list"),
    ("jsonl-missing-key", "p.jsonl", jsonl(GOOD, {"prompt": "q", "chosen": "a"}), 2,
     "missing 'rejected'"),
    ("jsonl-not-utf8", "p.jsonl", jsonl(GOOD).encode() + b'{"prompt": "\xe9"}\n', None,
     "not UTF-8 text (byte 0xe9 at offset 60, line 2)"),
    ("jsonl-implicit-no-shared", "p.jsonl",
     jsonl({"chosen": [user("a"), assistant("x")], "rejected": [user("b"), assistant("y")]}), 1,
     "share no leading messages"),
    ("jsonl-implicit-identical", "p.jsonl",
     jsonl({"chosen": [user("a"), assistant("x")], "rejected": [user("a"), assistant("x")]}), 1,
     "'chosen' and 'rejected' are identical"),
    ("jsonl-implicit-user-differs", "p.jsonl",
     jsonl({"chosen": [user("a"), assistant("x"), user("b"), assistant("y")],
            "rejected": [user("a"), assistant("x"), user("c"), assistant("y")]}), 1,
     "differ before the assistant reply"),
    ("jsonl-implicit-mixed", "p.jsonl", jsonl({"chosen": "a", "rejected": [assistant("b")]}), 1,
     "must both be text or both be conversations"),
    ("json-invalid", "p.json", '[{"prompt": ', None, "invalid JSON ("),
    ("json-not-object", "p.json", '[{"prompt": "q", "chosen": "a", "rejected": "b"}, 1]', 2,
     "expected a JSON object, got int"),
    ("json-empty-list", "p.json", "[]", None, "no rows"),
    ("parquet-missing-column", "p.parquet", {"prompt": ["q"], "chosen": ["a"]}, None,
     "missing column 'rejected' (found: prompt, chosen)"),
    ("parquet-no-rows", "p.parquet",
     pa.table({name: pa.array([], pa.string()) for name in GOOD}), None, "no rows"),
    ("parquet-empty-text", "p.parquet",
     {"prompt": ["q"] * 3, "chosen": ["a", "a", " "], "rejected": ["b"] * 3}, 3,
     "'chosen' is empty"),
    ("parquet-identical", "p.parquet",
     {"prompt": ["q"] * 5, "chosen": ["a"] * 5, "rejected": ["b"] * 4 + ["a"]}, 5,
     "'chosen' and 'rejected' are identical"),
    ("parquet-int", "p.parquet", {"prompt": [1, 2], "chosen": ["a"] * 2, "rejected": ["b"] * 2},
     1, "'prompt' must be text or a list of messages, got int"),
    ("parquet-null", "p.parquet",
     {"prompt": ["q"] * 2, "chosen": ["a", None], "rejected": ["b"] * 2}, 2,
     "'chosen' must be text or a list of messages, got null"),
    ("parquet-nan", "p.parquet", {"prompt": ["q"], "chosen": ["a"], "rejected": [float("nan")]},
     1, "'rejected' must be text or a list of messages, got NaN"),
    ("parquet-corrupt", "p.parquet", b"PAR1 this is not parquet", None,
     "unreadable Parquet file ("),
    ("unsupported-suffix", "p.xlsx", b"PK\x03\x04", None,
     "unsupported file type '.xlsx' (use .csv, .jsonl, .parquet, a datasets folder or a hub dataset "
     "ORG/NAME[:split])"),
    ("not-found", "missing.csv", None, None, "file not found"),
]


@pytest.mark.parametrize(
    ("name", "content", "row", "problem"),
    [case[1:] for case in BAD_CASES],
    ids=[case[0] for case in BAD_CASES],
)
def test_bad_files(tmp_path: Path, name: str, content: Any, row: int | None, problem: str) -> None:
    path = tmp_path / name
    if content is not None:
        write_file(path, content)
    result = None
    with pytest.raises(DataError) as info:
        result = read_pairs(path)
    assert result is None
    error = info.value
    message = str(error)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    assert error.path == str(path)
    assert error.row == row
    assert problem in error.problem
    if row is None:
        assert ": row " not in message
    else:
        assert f": row {row}: " in message


def test_data_error_format_and_pickle() -> None:
    error = DataError(Path("data/p.csv"), "something\nwent wrong", row=4)
    assert str(error) == "data/p.csv: row 4: something went wrong"
    assert isinstance(error, ValueError)
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.path, copy.row, copy.problem, str(copy)) == (
        error.path, error.row, error.problem, str(error)
    )
    assert str(DataError("x.csv", "no rows")) == "x.csv: no rows"


# --------------------------------------------------------------------------- prompts


def test_read_prompts_txt(tmp_path: Path) -> None:
    path = write_file(tmp_path / "p.txt", "first prompt\r\n\n   \n  second, with comma \nthird")
    assert read_prompts(path) == ["first prompt", "  second, with comma ", "third"]


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_read_prompts_tables(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"p.{fmt}"
    write_pairs([PreferencePair("NA, maybe", "a", "b"), PreferencePair(CHAT, "a", "b")], path)
    assert read_prompts(path) == ["NA, maybe", CHAT]


def test_read_prompts_only_needs_prompt_column(tmp_path: Path) -> None:
    path = write_file(tmp_path / "p.csv", "id,prompt\n1,hello\n2,world\n")
    assert read_prompts(path) == ["hello", "world"]


@pytest.mark.parametrize(
    ("name", "content", "row", "problem"),
    [
        ("p.txt", "\n \n", None, "no rows"),
        ("p.txt", b"ok\n\xff\n", None, "not UTF-8 text (byte 0xff at offset 3, line 2)"),
        ("p.csv", "text\nhello\n", None, "missing column 'prompt' (found: text)"),
        ("p.jsonl", jsonl({"prompt": "q"}, {"prompt": 3}), 2, "got int"),
        ("p.jsonl", jsonl({"prompt": "q"}, {"prompt": " "}), 2, "'prompt' is empty"),
        ("p.doc", "x", None, "unsupported file type '.doc'"),
        ("missing.txt", None, None, "file not found"),
    ],
)
def test_read_prompts_errors(
    tmp_path: Path, name: str, content: Any, row: int | None, problem: str
) -> None:
    path = tmp_path / name
    if content is not None:
        write_file(path, content)
    with pytest.raises(DataError) as info:
        read_prompts(path)
    assert info.value.row == row
    assert problem in str(info.value)
    assert str(path) in str(info.value)


def test_prompt_text() -> None:
    assert prompt_text("plain") == "plain"
    assert prompt_text(CHAT) == CHAT[1]["content"]
    assert prompt_text((user("a"), assistant("b"), user("c"))) == "c"
    assert prompt_text(({"role": "system", "content": "s"},)) == "s"
    assert prompt_text(()) == ""


# --------------------------------------------------------------------------- store


@pytest.fixture
def store(tmp_path: Path) -> PairStore:
    """A fresh store in a not-yet-existing folder."""
    return PairStore(tmp_path / "db" / "nested" / "pairs.sqlite")


def test_store_basics(store: PairStore, tmp_path: Path) -> None:
    first = store.add(PreferencePair("What is Python?", "A language", "A snake"))
    second = store.add(PreferencePair(CHAT, "hi", "École"), source="upload:pairs.csv")
    third = store.add(PreferencePair("Other", "x", "y"), source="simulated")
    assert first < second < third
    assert store.count() == 3

    stored = store.get(second)
    assert isinstance(stored, StoredPair)
    assert stored.pair == PreferencePair(CHAT, "hi", "École")
    assert stored.source == "upload:pairs.csv"
    assert datetime.fromisoformat(stored.created_at).utcoffset() == timezone.utc.utcoffset(None)

    assert [s.id for s in store.list()] == [third, second, first]
    assert [s.id for s in store.list(limit=1, offset=1)] == [second]
    assert [s.id for s in store.list(search="PYTHON")] == [first]
    assert [s.id for s in store.list(search="école")] == [second]
    assert [s.id for s in store.list(search="please.\nthanks")] == [second]
    assert store.count(search="snake") == 1
    assert store.count(search="role") == 0  # JSON keys of chat prompts are not searched
    assert store.count(search="") == 3
    assert store.all_pairs()[0] == PreferencePair("What is Python?", "A language", "A snake")

    assert store.delete(first) is True
    assert store.delete(first) is False
    with pytest.raises(KeyError):
        store.get(first)
    assert store.count() == 2
    assert store.add(PreferencePair("new", "a", "b")) > third


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_store_export(store: PairStore, tmp_path: Path, fmt: str) -> None:
    store.add_many(TRICKY_PAIRS, source="upload:x.csv")
    path = tmp_path / f"export.{fmt}"
    assert store.export(path) == len(TRICKY_PAIRS)
    assert read_pairs(path) == TRICKY_PAIRS == store.all_pairs()


def test_store_add_many_is_atomic(store: PairStore) -> None:
    good = PreferencePair("q", "a", "b")
    with pytest.raises(TypeError):
        store.add_many([good, "not a pair", good], source="upload")  # type: ignore[list-item]
    assert store.count() == 0
    ids = store.add_many([good, good], source="upload")
    assert len(set(ids)) == 2 and store.count() == 2


def test_store_wal_and_reopen(store: PairStore) -> None:
    store.add(PreferencePair("q", "a", "b"))
    with sqlite3.connect(store.db_path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert PairStore(store.db_path).count() == 1


def test_store_concurrent_writers(store: PairStore) -> None:
    errors: list[BaseException] = []

    def writer(tag: str) -> None:
        try:
            for i in range(100):
                store.add(PreferencePair(f"{tag} {i}", "a", "b"), source=tag)
        except BaseException as exc:  # surfaced by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(tag,)) for tag in ("t1", "t2")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert store.count() == 200
    assert len({s.id for s in store.list(limit=500)}) == 200
