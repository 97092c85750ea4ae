"""Training data for reminder-extract: read ../shared/data/reminders/*.jsonl, split, pack.

Rows are `{"text", "reminder", "time", "recurrence"}` (other fields ignored; see the data's
README.txt for the conventions of each source). The validation split is a seeded share of the rows.

Packing: many short examples share one training sequence. A group is `<bos>` followed by examples
`text sep json <eos>`, each in its own block of the attention mask and with positions that continue
from `<bos>`, so each example is computed exactly as on its own; only JSON tokens carry loss.
"""

from __future__ import annotations

import json
import os
import random

from export.data import DataError, Group
from pocketlm.tasks import reminders


def read_reminder_rows(path: str) -> list[dict]:
    """Rows with a string `text` and string-or-null `reminder`, `time`, `recurrence`; duplicates dropped."""
    if not os.path.isfile(path):
        raise DataError(f"cannot read training data {path!r}: no such file; set DATA= to the data folder")
    rows, seen = [], set()
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{n}: not valid JSON ({e.msg})") from None
            if not isinstance(raw, dict) or not isinstance(raw.get("text"), str):
                raise DataError(f"{path}:{n}: each row needs a string field 'text'")
            row = {"text": raw["text"]}
            for key in reminders.KEYS:
                value = raw.get(key)
                if value is not None and not isinstance(value, str):
                    raise DataError(f"{path}:{n}: {key!r} must be a string or null, got {type(value).__name__}")
                row[key] = value
            if row["text"] not in seen:
                seen.add(row["text"])
                rows.append(row)
    if not rows:
        raise DataError(f"{path} holds no rows")
    return rows


def split_rows(rows: list[dict], val_fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """(train, validation): a seeded shuffle, the first share held out.

    >>> train, val = split_rows([{"text": str(i)} for i in range(10)], 0.2, seed=0)
    >>> len(train), len(val), {r["text"] for r in train} & {r["text"] for r in val}
    (8, 2, set())
    """
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    n_val = max(1, round(len(rows) * val_fraction)) if len(rows) > 1 else 0
    held = set(order[:n_val])
    return [r for i, r in enumerate(rows) if i not in held], [r for i, r in enumerate(rows) if i in held]


def make_groups(tokenizer, rows: list[dict], *, bos_id: int, eos_id: int, max_seq_len: int, group_tokens: int,
                rng: random.Random) -> list[Group]:
    """Pack examples (shuffled) behind one `<bos>` into groups of <= group_tokens tokens."""
    groups: list[Group] = []
    group = None
    order = list(range(len(rows)))
    rng.shuffle(order)
    for j in order:
        ids, start = reminders.training_ids(tokenizer, rows[j], bos_id=bos_id, eos_id=eos_id)
        seg = ids[1:max_seq_len]  # without <bos>, which the group provides once
        if group is None or len(group.ids) + len(seg) > group_tokens:
            group = Group([bos_id], [0], [0], [-100])
            groups.append(group)
        seg_id = group.segment[-1] + 1
        group.ids += seg
        group.positions += list(range(1, len(seg) + 1))
        group.segment += [seg_id] * len(seg)
        # predict token k+1 from token k, only where k+1 is part of the JSON (or its <eos>)
        group.targets += [seg[k + 1] if k + 2 >= start else -100 for k in range(len(seg) - 1)] + [-100]
    return groups


class ReminderTrainingData:
    """reminder-extract's training data for export.train.train."""

    def __init__(self, tokenizer, train_rows, val_rows, *, bos_id: int, eos_id: int, max_seq_len: int, cfg):
        self.tokenizer, self.train_rows, self.val_rows = tokenizer, train_rows, val_rows
        self.args = dict(bos_id=bos_id, eos_id=eos_id, max_seq_len=max_seq_len, group_tokens=cfg.group_tokens)
        self.key = [(r["text"], reminders.target_text(r)) for r in train_rows]

    def val_groups(self) -> list[Group]:
        return make_groups(self.tokenizer, self.val_rows, rng=random.Random(0), **self.args)

    def train_groups(self, rng: random.Random) -> list[Group]:
        return make_groups(self.tokenizer, self.train_rows, rng=rng, **self.args)
