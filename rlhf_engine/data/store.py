"""The SQLite pair store: ``PairStore`` (the pairs the dashboard and the CLI collect, in one database file) and
``StoredPair`` (a pair as kept there, with its id, origin and creation time).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rlhf_engine.data.errors import PathLike
from rlhf_engine.data.pairs import PreferencePair, Prompt, as_cell, plain_row, write_pairs

_BUSY_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class StoredPair:
    """A pair as kept in a PairStore, with its id, origin and UTC creation time."""

    id: int
    pair: PreferencePair
    source: str
    created_at: str


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
        row = plain_row(pair)
        chat = not isinstance(row["prompt"], str)
        prompt = as_cell(row["prompt"])
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
