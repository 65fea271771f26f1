"""Property tests of every preference-file reader against hostile input (issue 6).

Each generated file goes through ``read_pairs`` (and ``read_prompts``) and must give either valid pairs
or one ``DataError``: one line, starting with the file's path, naming the row when one row is at fault.
Nothing else may escape. The CLI and the pair store are checked on generated bad files too: exit code 2,
one line, no traceback, nothing stored.
"""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from rlhf_engine.cli import main
from rlhf_engine.data.errors import DataError
from rlhf_engine.data.pairs import PreferencePair, read_pairs, read_prompts, write_pairs
from rlhf_engine.data.store import PairStore

FIELDS = ("prompt", "chosen", "rejected")
TEXT_FORMATS = ("csv", "jsonl", "json")
SETTINGS = settings()  # the profile's (tests/conftest.py): 100 examples, 1000 with HYPOTHESIS_PROFILE=deep
SLOW_SETTINGS = settings(max_examples=max(10, settings.default.max_examples // 4))  # files written per example


# --------------------------------------------------------------------------- what a reader may return


def check_pairs(pairs: list[PreferencePair]) -> None:
    """Every pair a reader returns is one the reward model can train on and the store can keep."""
    assert pairs
    for pair in pairs:
        assert isinstance(pair.chosen, str) and isinstance(pair.rejected, str)
        assert pair.chosen.strip() and pair.rejected.strip()
        assert pair.chosen.strip() != pair.rejected.strip()
        texts = [pair.chosen, pair.rejected]
        if isinstance(pair.prompt, str):
            assert pair.prompt.strip()
            texts.append(pair.prompt)
        else:
            assert pair.prompt and all(set(m) == {"role", "content"} for m in pair.prompt)
            assert any(m["content"].strip() for m in pair.prompt)
            texts += [m["role"] for m in pair.prompt] + [m["content"] for m in pair.prompt]
        for text in texts:
            assert isinstance(text, str)
            text.encode("utf-8")  # a lone surrogate would raise here, and in SQLite and the tokenizer


def check_error(error: DataError, path: Path) -> None:
    message = str(error)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    assert error.problem and error.path == str(path)
    assert (error.row is None) == (": row " not in message)


def outcome(path: Path, reader=read_pairs) -> list | DataError:
    """The reader's result, or the DataError it raised; any other exception fails the test."""
    try:
        result = reader(path)
    except DataError as error:
        check_error(error, path)
        return error
    if reader is read_pairs:
        check_pairs(result)
    else:
        assert result and all(isinstance(p, (str, tuple)) for p in result)
    return result


# --------------------------------------------------------------------------- files from rows


def cell_text(value: Any) -> str:
    """How a spreadsheet would hold a value: text as is, anything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value)


def write_rows(path: Path, rows: list[dict], columns: list[str]) -> Path:
    """Write rows as CSV (every cell text), JSON Lines or a JSON list, by the path's suffix."""
    suffix = path.suffix
    if suffix == ".csv":
        import csv

        with open(path, "w", encoding="utf-8", errors="surrogatepass", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(columns)
            for row in rows:
                writer.writerow([cell_text(row[c]) if c in row else "" for c in columns])
    elif suffix == ".jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    else:
        path.write_text(json.dumps(rows), encoding="utf-8")
    return path


words = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
whitespace = st.text(st.sampled_from(" \t\r\n\u00a0\u2028"), max_size=4)
roles = st.sampled_from(["user", "assistant", "system", "tool", ""])
message = st.fixed_dictionaries({"role": roles, "content": words | whitespace})
odd_message = st.dictionaries(st.sampled_from(["role", "content", "name"]),
                              st.none() | st.integers() | words, max_size=3)
conversation = st.lists(message, max_size=4)
json_scalar = st.none() | st.booleans() | st.integers() | st.floats() | words | whitespace
nested = st.recursive(json_scalar, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(words, inner, max_size=3), max_leaves=6)
cell = words | whitespace | conversation | st.lists(odd_message, max_size=3) | nested | st.just("\ud800")
column_names = st.sampled_from(["prompt", "chosen", "rejected", "extra", "Prompt", " chosen "])


@st.composite
def tables(draw) -> tuple[list[str], list[dict]]:
    """A key set (mostly the right one) and rows that each may drop or add a key."""
    columns = draw(st.sampled_from([list(FIELDS), ["chosen", "rejected"]]) | st.lists(column_names, max_size=5))
    extra = {} if "extra" in columns else {"extra": nested}
    rows = draw(st.lists(st.fixed_dictionaries({c: cell for c in columns}, optional=extra), max_size=6))
    for row in rows:
        if columns and draw(st.integers(0, 9)) == 0:
            row.pop(draw(st.sampled_from(columns)), None)
    return columns, rows


@SETTINGS
@given(fmt=st.sampled_from(TEXT_FORMATS), table=tables())
def test_random_rows_give_valid_pairs_or_one_line_naming_the_file(fmt: str, table) -> None:
    columns, rows = table
    with tempfile.TemporaryDirectory() as tmp:
        path = write_rows(Path(tmp) / f"pairs.{fmt}", rows, list(dict.fromkeys(columns)))
        outcome(path)
        outcome(path, read_prompts)


# Values that make a row unusable. In a CSV every cell is text, so there only empty text and broken message
# lists are wrong (a 3 or a "[" is text); in JSON a number, null or object is wrong too.
BAD_IN_ANY_FILE = ["", "   ", "\t\n\u00a0", [{"role": "user"}], [{"role": 1, "content": "x"}], [{"content": "x"}]]
BAD_IN_JSON = BAD_IN_ANY_FILE + [None, 3, 2.5, True, {"text": "x"}, [1, 2], [], "lone \ud800 surrogate"]


@SETTINGS
@given(fmt=st.sampled_from(TEXT_FORMATS), n=st.integers(1, 8), data=st.data())
def test_the_error_names_the_row_that_is_wrong(fmt: str, n: int, data) -> None:
    rows = [{"prompt": f"prompt {i}", "chosen": f"yes {i}", "rejected": f"no {i}"} for i in range(n)]
    bad = data.draw(st.integers(0, n - 1))
    field = data.draw(st.sampled_from(FIELDS + ("same",)))
    if field == "same":  # chosen == rejected, up to surrounding space
        rows[bad]["rejected"] = " " + rows[bad]["chosen"] + " "
    else:
        rows[bad][field] = data.draw(st.sampled_from(BAD_IN_ANY_FILE if fmt == "csv" else BAD_IN_JSON))
    with tempfile.TemporaryDirectory() as tmp:
        result = outcome(write_rows(Path(tmp) / f"pairs.{fmt}", rows, list(FIELDS)))
        assert isinstance(result, DataError), rows[bad]
        assert result.row == bad + 1, (result, rows[bad])


@SETTINGS
@given(suffix=st.sampled_from([".csv", ".jsonl", ".json", ".parquet", ".txt"]),
       content=st.binary(max_size=600)
       | st.text(max_size=200).map(lambda t: t.encode("utf-16"))
       | st.text(max_size=200).map(lambda t: t.encode("latin-1", "replace"))
       | st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_random_bytes_and_wrong_encodings_never_escape_as_anything_but_a_data_error(suffix: str,
                                                                                     content: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"upload{suffix}"
        path.write_bytes(content)
        if suffix != ".txt":
            outcome(path)
        outcome(path, read_prompts)


def valid_pairs(n: int) -> list[PreferencePair]:
    chat = ({"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi, ünï ✓"})
    return [PreferencePair(chat if i % 3 == 0 else f"Prompt, \"quoted\"\n{i}", f"Good answer {i}",
                           f"Bad answer {i}") for i in range(n)]


@SETTINGS
@given(fmt=st.sampled_from(["csv", "jsonl", "json", "parquet"]), n=st.integers(1, 6), data=st.data())
def test_truncated_files_read_as_an_error_or_a_prefix_of_the_pairs(fmt: str, n: int, data) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"pairs.{fmt}"
        pairs = valid_pairs(n)
        write_pairs(pairs, path)
        whole = path.read_bytes()
        cut = data.draw(st.integers(0, len(whole) - 1))
        path.write_bytes(whole[:cut])
        result = outcome(path)
        if not isinstance(result, DataError):
            # a cut inside the last CSV or JSON Lines field can leave a shorter, still valid last text
            assert fmt in ("csv", "jsonl") and len(result) <= n
            assert result[:-1] == pairs[:len(result) - 1]


# --------------------------------------------------------------------------- Parquet and datasets folders

ARROW_TYPES = {
    "string": (pa.string(), words | whitespace | st.none()),
    "large_string": (pa.large_string(), words | st.none()),
    "int": (pa.int64(), st.integers(-2**63, 2**63 - 1) | st.none()),
    "float": (pa.float64(), st.floats() | st.none()),
    "bool": (pa.bool_(), st.booleans() | st.none()),
    "binary": (pa.binary(), st.binary(max_size=8) | st.none()),
    "list_int": (pa.list_(pa.int64()), st.lists(st.integers(-5, 5), max_size=3) | st.none()),
    "messages": (pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())])),
                 st.lists(st.fixed_dictionaries({"role": roles | st.none(), "content": words | st.none()}),
                          max_size=3) | st.none()),
    "struct": (pa.struct([("text", pa.string())]), st.fixed_dictionaries({"text": words}) | st.none()),
    "map": (pa.map_(pa.string(), pa.string()),
            st.dictionaries(words, words, max_size=2).map(lambda d: list(d.items()))),
    "null": (pa.null(), st.none()),
}


@st.composite
def arrow_tables(draw) -> pa.Table:
    names = draw(st.sampled_from([list(FIELDS), ["chosen", "rejected"], ["prompt", "chosen"], ["text"]]))
    n = draw(st.integers(0, 5))
    columns = {}
    for name in names:
        kind = draw(st.sampled_from(["string"] * 4 + ["messages"] * 2 + sorted(ARROW_TYPES)))
        arrow_type, values = ARROW_TYPES[kind]
        columns[name] = pa.array(draw(st.lists(values, min_size=n, max_size=n)), type=arrow_type)
    return pa.table(columns) if columns else pa.table({"text": pa.array([], pa.string())})


@SETTINGS
@given(table=arrow_tables())
def test_parquet_with_any_column_types(table: pa.Table) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pairs.parquet"
        pq.write_table(table, path)
        outcome(path)
        outcome(path, read_prompts)


def test_parquet_with_a_repeated_column_is_refused(tmp_path: Path) -> None:
    table = pa.Table.from_arrays([pa.array(["q"]), pa.array(["a"]), pa.array(["x"]), pa.array(["b"])],
                                 names=["prompt", "chosen", "chosen", "rejected"])
    pq.write_table(table, tmp_path / "twice.parquet")
    error = outcome(tmp_path / "twice.parquet")
    assert isinstance(error, DataError) and "column 'chosen' appears twice" in error.problem


@SLOW_SETTINGS
@given(table=arrow_tables(), damage=st.sampled_from(["none", "truncate", "garble", "drop-state"]), data=st.data())
def test_datasets_folders_whole_or_damaged(table: pa.Table, damage: str, data) -> None:
    import datasets

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "ds"
        try:
            dataset = datasets.Dataset(table)
        except ValueError:  # a type datasets has no feature for (map): no such folder can exist
            assume(False)
        with contextlib.redirect_stderr(io.StringIO()):  # the save progress bar
            dataset.save_to_disk(str(folder))
        arrow = next(folder.glob("*.arrow"), None)  # an empty dataset has no data file
        whole = arrow.read_bytes() if arrow else b""
        if not whole and damage in ("truncate", "garble"):
            damage = "drop-state"
        if damage == "truncate":
            arrow.write_bytes(whole[:data.draw(st.integers(0, len(whole) - 1))])
        elif damage == "garble":
            at = data.draw(st.integers(0, len(whole) - 1))
            arrow.write_bytes(whole[:at] + bytes([whole[at] ^ 0xFF]) + whole[at + 1:])
        elif damage == "drop-state":
            (folder / "state.json").unlink()
        outcome(folder)
        outcome(folder, read_prompts)


# --------------------------------------------------------------------------- huge rows and nesting


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "json", "parquet"])
def test_a_huge_row_is_read_whole(tmp_path: Path, fmt: str) -> None:
    huge = "word " * 2_000_000  # 10 MB in one answer: kept whole; the reward model truncates to max_length
    path = tmp_path / f"huge.{fmt}"
    write_pairs([PreferencePair("q", huge, "short"), PreferencePair("q2", "a", "b")], path)
    pairs = read_pairs(path)
    assert len(pairs) == 2 and pairs[0].chosen == huge


@pytest.mark.parametrize("name, text, row, problem", [
    ("deep.jsonl", '{"prompt": ' + "[" * 50_000 + "]" * 50_000 + ', "chosen": "a", "rejected": "b"}\n', 1,
     "invalid JSON (nested too deeply)"),
    ("deep.json", '[{"prompt": ' + "[" * 50_000 + "]" * 50_000 + ', "chosen": "a", "rejected": "b"}]', None,
     "invalid JSON (nested too deeply)"),
    ("long-int.jsonl", '{"prompt": 1' + "0" * 5000 + ', "chosen": "a", "rejected": "b"}\n', 1,
     "invalid JSON (Exceeds the limit"),
    ("twice.jsonl", '{"prompt": "q", "chosen": "a", "chosen": "c", "rejected": "b"}\n', 1,
     "key 'chosen' appears twice in one object"),
    ("twice.csv", "prompt,chosen,chosen,rejected\nq,a,x,b\n", None, "column 'chosen' appears twice in the header"),
    ("surrogate.jsonl", '{"prompt": "q", "chosen": "a\\udc80", "rejected": "b"}\n', 1,
     "'chosen' holds an invalid character (lone surrogate U+DC80 at character 2)"),
    ("surrogate-message.jsonl",
     '{"prompt": [{"role": "user", "content": "\\ud83d"}], "chosen": "a", "rejected": "b"}\n', 1,
     "'prompt' message 1 'content' holds an invalid character"),
])
def test_nesting_numbers_repeated_names_and_bad_unicode(tmp_path: Path, name: str, text: str, row, problem) -> None:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    error = outcome(path)
    assert isinstance(error, DataError)
    assert error.row == row and problem in error.problem


def test_a_deeply_nested_csv_cell_is_text(tmp_path: Path) -> None:
    path = tmp_path / "deep.csv"
    path.write_text("prompt,chosen,rejected\n" + "[" * 50_000 + ",a,b\n", encoding="utf-8")
    assert read_pairs(path) == [PreferencePair("[" * 50_000, "a", "b")]


# --------------------------------------------------------------------------- CLI and store on bad files


@st.composite
def bad_files(draw) -> tuple[str, bytes]:
    """A pairs file with one bad row in a random format."""
    fmt = draw(st.sampled_from(TEXT_FORMATS))
    n = draw(st.integers(1, 4))
    rows = [{"prompt": f"p{i}", "chosen": f"c{i}", "rejected": f"r{i}"} for i in range(n)]
    rows[draw(st.integers(0, n - 1))][draw(st.sampled_from(FIELDS))] = draw(st.sampled_from(["", " ", "\ud800"]))
    with tempfile.TemporaryDirectory() as tmp:
        path = write_rows(Path(tmp) / f"bad.{fmt}", rows, list(FIELDS))
        return path.name, path.read_bytes()


@SLOW_SETTINGS
@given(bad=bad_files())
def test_the_cli_exits_2_with_one_line_and_the_store_keeps_nothing(bad: tuple[str, bytes]) -> None:
    name, content = bad
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(content)
        store = Path(tmp) / "ws" / "pairs.sqlite"
        PairStore(store).add(PreferencePair("kept", "yes", "no"), source="before")
        for argv in (["validate-data", str(path)], ["pairs", "--store", str(store), "add", str(path)]):
            err = io.StringIO()
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                assert main(argv) == 2
            lines = err.getvalue().strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith(f"error: {path}: ") and "Traceback" not in lines[0]
            # the row; or for bytes that are not UTF-8 (a lone surrogate in a CSV), the line and offset
            assert ": row " in lines[0] or "not UTF-8 text (byte 0xed at offset" in lines[0]
        assert [p.prompt for p in PairStore(store).all_pairs()] == ["kept"]
