"""Training data for sql-autocomplete: read, split by database, and pack into training groups.

Spider's databases are disjoint across its splits, so ours are too: the validation split holds
out whole databases (chosen by a seeded shuffle of the database ids), and the model is judged on
schemas it never saw.

Packing: a training group is one schema followed by several queries of that database. Each query
token sees the schema and its own query only (a block mask) and its positions continue from the
schema's, so the model computes exactly what it would for `<bos> schema sep query <eos>` on its
own, while the schema is processed once per group instead of once per query.
"""

from __future__ import annotations

import os
import random
import re
from collections import OrderedDict
from dataclasses import dataclass

from pocketlm.evals.sql import read_rows
from pocketlm.tasks.sql import SEPARATOR, parse_schema, schema_text


class DataError(ValueError):
    """Training data that cannot be used; the message names the file and line."""


def read_sql_rows(path: str) -> list[dict]:
    """Rows {"db_id", "schema", "sql"} from a JSON-lines file; duplicates (same db and sql) dropped."""
    if not os.path.isfile(path):
        raise DataError(f"cannot read training data {path!r}: no such file; set DATA= to the data folder")
    rows, seen = [], set()
    for row in read_rows(path, required=("db_id", "schema", "sql")):
        key = (row["db_id"], row["sql"])
        if key not in seen:
            seen.add(key)
            rows.append({"db_id": row["db_id"], "schema": row["schema"], "sql": row["sql"]})
    if not rows:
        raise DataError(f"{path} holds no rows")
    return rows


def split_by_database(rows: list[dict], val_fraction: float, seed: int) -> tuple[list[dict], list[dict], list[str]]:
    """(train rows, validation rows, validation db ids): whole databases go to validation.

    >>> rows = [{"db_id": d, "schema": "", "sql": str(i)} for i, d in enumerate("aabbccddee")]
    >>> train, val, dbs = split_by_database(rows, 0.2, seed=0)
    >>> len(val), len(dbs), set(r["db_id"] for r in train) & set(dbs)
    (2, 1, set())
    """
    dbs = sorted({r["db_id"] for r in rows})
    random.Random(seed).shuffle(dbs)
    n_val = max(1, round(len(dbs) * val_fraction)) if len(dbs) > 1 else 0
    val_dbs = sorted(dbs[:n_val])
    held = set(val_dbs)
    return [r for r in rows if r["db_id"] not in held], [r for r in rows if r["db_id"] in held], val_dbs


@dataclass
class Group:
    """One packed training sequence: a schema and the queries that follow it."""

    ids: list[int]  # [T] token ids: <bos> schema | sep q1 <eos> | sep q2 <eos> | ...
    positions: list[int]  # [T] position of each token as in an unpacked example
    segment: list[int]  # [T] 0 for the schema part, j >= 1 for query j (with its separator)
    targets: list[int]  # [T] next token within the same example, or -100 (no loss)


def group_by_database(rows: list[dict]) -> "OrderedDict[str, tuple[str, list[str]]]":
    """db_id -> (schema text, [query texts]), in first-seen order."""
    out: OrderedDict[str, tuple[str, list[str]]] = OrderedDict()
    for r in rows:
        out.setdefault(r["db_id"], (r["schema"], []))[1].append(r["sql"])
    return out


# Words that must never be renamed: renaming them would change the SQL, not just a name.
SQL_WORDS = frozenset(
    """select from where group by order having limit join on as and or not in like between is null count
    sum avg min max distinct union intersect except desc asc values inner left right outer cross natural
    case when then else end exists all any cast""".split()
)


def schema_identifiers(schema: str) -> list[str]:
    """Table and column names of a compact schema, in order of appearance, without duplicates.

    >>> schema_identifiers("head(head_ID, name)\\ndept(id, name)")
    ['head', 'head_ID', 'name', 'dept', 'id']
    """
    names: list[str] = []
    for table, columns in parse_schema(schema):
        for name in [table] + columns:
            if name not in names:
                names.append(name)
    return names


def _with_case_of(new: str, seen: str, original: str) -> str:
    """Keep the case pattern the query used for the old name (Spider often lower-cases schema names)."""
    if seen == original:
        return new
    if seen == seen.lower():
        return new.lower()
    if seen == seen.upper():
        return new.upper()
    return new


def rename_identifiers(schema: str, queries: list[str], pool: list[str], rng: random.Random, share: float):
    """Augmentation: give a share of the schema's identifiers other names (drawn from `pool`, names
    of other training databases), in the schema and in every query, outside string literals.

    The model cannot memorize which names a database has; it must copy them from the schema,
    which is exactly what it has to do for the unseen databases it is evaluated on.

    >>> rename_identifiers("t(a_id, Name)", ["SELECT name FROM t WHERE x = 'name'"], ["Label", "shop", "price"],
    ...                    random.Random(0), share=1.0)
    ('shop(price, Label)', ["SELECT label FROM shop WHERE x = 'name'"])
    """
    names = [n for n in schema_identifiers(schema) if n.lower() not in SQL_WORDS and re.fullmatch(r"\w+", n)]
    taken = {n.lower() for n in names}
    mapping: dict[str, str] = {}
    for name in names:
        if rng.random() >= share:
            continue
        for _ in range(8):  # draw a pool name that does not collide with this database's names
            new = rng.choice(pool)
            if new.lower() not in taken and new.lower() not in SQL_WORDS and re.fullmatch(r"\w+", new):
                mapping[name.lower()] = new
                taken.add(new.lower())
                break
    if not mapping:
        return schema, queries
    originals = {n.lower(): n for n in names}
    pattern = re.compile(r"(?<![\w])(" + "|".join(re.escape(k) for k in sorted(mapping, key=len, reverse=True))
                         + r")(?![\w])", re.IGNORECASE)

    def rename(text: str) -> str:
        return pattern.sub(lambda m: _with_case_of(mapping[m.group(1).lower()], m.group(1),
                                                   originals[m.group(1).lower()]), text)

    def rename_outside_literals(sql_text: str) -> str:
        parts = re.split(r"('(?:[^']|'')*'|\"[^\"]*\")", sql_text)  # odd parts are string literals
        return "".join(p if i % 2 else rename(p) for i, p in enumerate(parts))

    return rename(schema), [rename_outside_literals(q) for q in queries]


def shuffled_schema(schema: str, rng: random.Random) -> str:
    """Augmentation: the same tables in another order (the model must find identifiers anywhere).

    >>> shuffled_schema("a(x)\\nb(y)\\nc(z)", random.Random(1)).count("\\n")
    2
    """
    lines = schema_text(schema).split("\n")
    rng.shuffle(lines)
    return "\n".join(lines)


def make_groups(
    tokenizer, databases, *, bos_id: int, eos_id: int, max_seq_len: int, group_tokens: int, rng: random.Random,
    shuffle_tables: float = 0.5, rename: float = 0.0, rename_share: float = 0.5, pool: list[str] | None = None,
) -> list[Group]:
    """Pack each database's queries (shuffled) behind its schema into groups of <= group_tokens tokens.

    Every segment is `sep query <eos>`, so each query has its own separator and the separator's
    last token is trained to predict the query's first token, exactly as in an unpacked example.
    With probability `rename` a database's identifiers are partly renamed (rename_identifiers).
    """
    sep = tokenizer.encode(SEPARATOR)
    groups: list[Group] = []
    for schema, texts in databases.values():
        if rename and pool and rng.random() < rename:
            schema, texts = rename_identifiers(schema, texts, pool, rng, rename_share)
        queries = [tokenizer.encode(q) for q in texts]
        order = list(range(len(queries)))
        rng.shuffle(order)
        text = shuffled_schema(schema, rng) if rng.random() < shuffle_tables else schema_text(schema)
        head = [bos_id] + tokenizer.encode(text)
        keep_for_query = 48  # leave room for at least this many query tokens after a long schema
        if len(head) > max_seq_len - keep_for_query:  # keep the most recent schema tokens (the prompt policy)
            head = [bos_id] + head[len(head) - (max_seq_len - keep_for_query) + 1 :]
        group = None
        for j in order:
            seg = (sep + queries[j])[: max_seq_len - len(head) - 1] + [eos_id]
            if group is None or len(group.ids) + len(seg) > group_tokens:
                group = Group(list(head), list(range(len(head))), [0] * len(head), [-100] * len(head))
                groups.append(group)
            seg_id = group.segment[-1] + 1
            group.ids += seg
            group.positions += list(range(len(head), len(head) + len(seg)))
            group.segment += [seg_id] * len(seg)
            group.targets += seg[1:] + [-100]
    return groups


class SqlTrainingData:
    """sql-autocomplete's training data for export.train.train: databases packed by make_groups."""

    def __init__(self, tokenizer, train_dbs, val_dbs, *, bos_id: int, eos_id: int, max_seq_len: int, cfg):
        self.tokenizer, self.train_dbs, self.val_dbs, self.cfg = tokenizer, train_dbs, val_dbs, cfg
        self.group_args = dict(bos_id=bos_id, eos_id=eos_id, max_seq_len=max_seq_len, group_tokens=cfg.group_tokens)
        self.pool = sorted({name for schema, _ in train_dbs.values() for name in schema_identifiers(schema)})
        self.key = list(train_dbs.items())

    def val_groups(self) -> list[Group]:
        return make_groups(self.tokenizer, self.val_dbs, rng=random.Random(0), shuffle_tables=0.0, **self.group_args)

    def train_groups(self, rng: random.Random) -> list[Group]:
        cfg = self.cfg
        return make_groups(self.tokenizer, self.train_dbs, rng=rng, shuffle_tables=cfg.shuffle_tables,
                           rename=cfg.rename, rename_share=cfg.rename_share, pool=self.pool, **self.group_args)
