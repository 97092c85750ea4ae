"""Training data for reminder-extract: read ../shared/data/reminders/*.jsonl, split, pack.

Rows are `{"text", "reminder", "time", "recurrence"}` (other fields ignored; see the data's
README.txt for the conventions of each source). The validation split is a seeded share of the rows.

Packing: many short examples share one training sequence. A group is `<bos>` followed by examples
`text sep marked-copy sep json <eos>` (pocketlm.tasks.reminders), each in its own block of the attention
mask and with positions that continue from `<bos>`, so each example is computed exactly as on its own;
only the tokens after the first separator carry loss (unless prompt_loss). A row whose values cannot be
marked in its request (a value that is not a run of whole pre-tokens of it, or two values sharing
one: 118 of the 10 668 rows of reminders/train.jsonl) is left out.
"""

from __future__ import annotations

import os
import random
import re

from export.data import DataError, Group
from pocketlm.evals import reminders as evals_reminders
from pocketlm.tasks import reminders


def read_reminder_rows(path: str) -> list[dict]:
    """Rows {"text", "reminder", "time", "recurrence"} and "source" where given (the eval's reader and rules,
    so the held-out split's figures come per source too); duplicate texts dropped."""
    if not os.path.isfile(path):
        raise DataError(f"cannot read training data {path!r}: no such file; set DATA= to the data folder")
    rows, seen = [], set()
    for row in evals_reminders.read_reminder_rows(path):
        if row["text"] not in seen:
            seen.add(row["text"])
            rows.append({"text": row["text"], **{key: row.get(key) for key in reminders.KEYS},
                         **({"source": row["source"]} if "source" in row else {})})
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


WORD = re.compile(r"[A-Za-z]{3,}")
KEEP = {"the", "and", "for", "with", "that", "this", "about", "from", "your", "my", "her", "his", "their", "our",
        "remind", "reminder", "me", "to", "at", "on", "in", "by", "every", "each", "daily", "weekly"}


def word_pool(rows: list[dict]) -> list[str]:
    """Words of the training reminders, to draw replacements from (augmentation)."""
    return sorted({w.lower() for r in rows if r["reminder"] for w in WORD.findall(r["reminder"])} - KEEP)


def rename_words(row: dict, pool: list[str], rng: random.Random, share: float) -> dict:
    """Augmentation: replace a share of the reminder's words by other words, in the text and in the
    reminder alike, so the model must copy the reminder from the text rather than recall it.

    >>> rename_words({"text": "remind me to walk the dog at 7", "reminder": "walk the dog", "time": "at 7",
    ...               "recurrence": None}, ["feed", "cat"], random.Random(1), share=1.0)["text"]
    'remind me to feed the cat at 7'
    """
    if not row["reminder"] or row["reminder"] not in row["text"]:
        return row
    mapping = {}
    for w in WORD.findall(row["reminder"]):
        if w.lower() not in KEEP and rng.random() < share:
            mapping[w] = rng.choice(pool)
    if not mapping:
        return row
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, sorted(mapping, key=len, reverse=True))) + r")\b")
    new_reminder = pattern.sub(lambda m: mapping[m.group(1)], row["reminder"])
    text = row["text"].replace(row["reminder"], new_reminder, 1)
    if any(row[k] and row[k] not in text for k in ("time", "recurrence")):
        return row  # a time overlapped the renamed words: keep the original example
    return {**row, "text": text, "reminder": new_reminder}


def swap_spans(row: dict, donors: dict[str, list[str]], rng: random.Random) -> dict:
    """Augmentation: replace the row's reminder and/or time, where the text holds it once, by another
    training row's (the label follows), so the model sees real phrasing around new content and must
    copy the span rather than recall it. Unlike rename_words the new spans are real phrases.

    >>> swap_spans({"text": "remind me to walk the dog at 7", "reminder": "walk the dog", "time": "at 7",
    ...             "recurrence": None}, {"reminder": ["call mom"], "time": ["tomorrow"]}, random.Random(5))
    {'text': 'remind me to call mom tomorrow', 'reminder': 'call mom', 'time': 'tomorrow', 'recurrence': None}
    """
    for key in ("reminder", "time"):
        old = row[key]
        if not old or not donors.get(key) or row["text"].count(old) != 1 or rng.random() < 0.25:
            continue
        new = rng.choice(donors[key])
        text = row["text"].replace(old, new, 1)
        others = [k for k in reminders.KEYS if k != key and row[k]]
        if all(text.count(row[k]) == 1 and row[k] not in new and new not in row[k] for k in others):
            row = {**row, "text": text, key: new}
    return row


def span_donors(rows: list[dict]) -> dict[str, list[str]]:
    """The reminders and times of the training rows, to swap in (swap_spans)."""
    return {key: sorted({r[key] for r in rows if r[key] and r[key] in r["text"]}) for key in ("reminder", "time")}


def make_groups(tokenizer, rows: list[dict], *, bos_id: int, eos_id: int, max_seq_len: int, group_tokens: int,
                rng: random.Random, rename: float = 0.0, rename_share: float = 0.5,
                pool: list[str] | None = None, swap: float = 0.0,
                donors: dict[str, list[str]] | None = None, prompt_loss: bool = False,
                keys=reminders.KEYS) -> list[Group]:
    """Pack examples (shuffled) behind one `<bos>` into groups of <= group_tokens tokens; with
    probability `rename` an example's reminder words are partly renamed (rename_words), with
    probability `swap` its reminder/time are swapped for other rows' (swap_spans). With `prompt_loss`
    the request's own tokens carry loss too (a language-model signal on the text; validation keeps
    the loss on the marked copy and the JSON only)."""
    groups: list[Group] = []
    group = None
    order = list(range(len(rows)))
    rng.shuffle(order)
    for j in order:
        row = rows[j]
        if rename and pool and rng.random() < rename:
            row = rename_words(row, pool, rng, rename_share)
        if swap and donors and rng.random() < swap:
            row = swap_spans(row, donors, rng)
        example = reminders.training_ids(tokenizer, row, bos_id=bos_id, eos_id=eos_id, keys=keys)
        if example is None:  # a value the marked copy cannot hold (not in the kept text, or sharing a word)
            continue
        ids, start = example
        seg = ids[1:max_seq_len]  # without <bos>, which the group provides once
        if group is None or len(group.ids) + len(seg) > group_tokens:
            group = Group([bos_id], [0], [0], [-100])
            groups.append(group)
        seg_id = group.segment[-1] + 1
        group.ids += seg
        group.positions += list(range(1, len(seg) + 1))
        group.segment += [seg_id] * len(seg)
        # predict token k+1 from token k, only where k+1 is part of the JSON (or its <eos>)
        first = 0 if prompt_loss else start - 2
        group.targets += [seg[k + 1] if k >= first else -100 for k in range(len(seg) - 1)] + [-100]
    return groups


class ReminderTrainingData:
    """reminder-extract's training data for export.train.train."""

    def __init__(self, tokenizer, train_rows, val_rows, *, bos_id: int, eos_id: int, max_seq_len: int, cfg,
                 keys=reminders.KEYS):
        self.tokenizer, self.train_rows, self.val_rows, self.cfg = tokenizer, train_rows, val_rows, cfg
        self.args = dict(bos_id=bos_id, eos_id=eos_id, max_seq_len=max_seq_len, group_tokens=cfg.group_tokens,
                         keys=tuple(keys))
        self.key = [(r["text"], reminders.target_text(r, keys)) for r in train_rows]
        self.pool = word_pool(train_rows)
        self.donors = span_donors(train_rows)

    def val_groups(self) -> list[Group]:
        return make_groups(self.tokenizer, self.val_rows, rng=random.Random(0), **self.args)

    def train_groups(self, rng: random.Random) -> list[Group]:
        return make_groups(self.tokenizer, self.train_rows, rng=rng, rename=self.cfg.rename,
                           rename_share=self.cfg.rename_share, pool=self.pool, swap=self.cfg.swap,
                           donors=self.donors, prompt_loss=self.cfg.prompt_loss, **self.args)
