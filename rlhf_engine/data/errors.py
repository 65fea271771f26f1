"""The error every reader of pair and prompt data raises, and the pieces its messages are made of.

``DataError`` is the one public error: a file (or datasets folder, or hub dataset) is unusable, and its
message is one line naming the file and, where there is one, the 1-based data row. ``RowProblem`` is the
internal problem with one row that the row's reader turns into a DataError with the row number;
``type_name`` names a value's type as the messages show it.
"""

from __future__ import annotations

import math
import os
from typing import Any

PathLike = str | os.PathLike[str]


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


class RowProblem(Exception):
    """Internal: a problem with one row, turned into a DataError by the caller."""


def type_name(value: object) -> str:
    """Name a value's type the way a user sees it in a data file."""
    if value is None:
        return "null"
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    return type(value).__name__
