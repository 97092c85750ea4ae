"""Reading JSON-lines data files (eval sets, training data): one reader, one error style."""

from __future__ import annotations

import json
from typing import Callable


def read_jsonl(path: str, limit: int | None = None, *, valid: Callable[[dict], bool], need: str) -> list[dict]:
    """The first `limit` rows (all if None) of a JSON-lines file; blank lines are skipped.

    A row that is not a JSON object, or that `valid` rejects, raises ValueError naming the file and
    line: "{path}:{n}: each row needs {need}". Rows past the limit are not read.
    """
    rows = []
    try:
        f = open(path, encoding="utf-8")
    except OSError as e:
        raise ValueError(f"cannot read {path!r}: {e.strerror}") from None
    with f:
        for n, line in enumerate(f, 1):
            if limit is not None and len(rows) >= limit:
                break
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict) or not valid(row):
                raise ValueError(f"{path}:{n}: each row needs {need}")
            rows.append(row)
    return rows
