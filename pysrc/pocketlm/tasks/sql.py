"""The sql-autocomplete task format (prompt format "sql-v2"), shared by training, CLI, evals and page.

A training example and a prompt are token ids laid out as

    <bos> encode(schema_text(schema)) encode("\\n\\n") encode(sql) <eos>

Each part is encoded on its own, so the schema part (<bos> .. separator) is the same ids whatever
the query, and its KV cache can be reused while the user types.

The schema is given as one line per table, `table(col1, col2, ...)` (Spider's compact form), and
rendered for the model as ` table ( col1, col2, ... )`: every name then follows a space, so it
tokenizes the way it most often appears in a query (" salary" after SELECT, FROM, WHERE, a comma),
and copying it from the schema is copying the same tokens. (Rendered as given, a table name at the
start of a line and a first column after "(" would be tokens that never appear after FROM or SELECT;
measured on the held-out databases, see README.)

At inference the query prefix's last pre-token (the word being typed, or trailing whitespace) is
"healed": removed from the prompt and required as the first bytes of the output, so
"SELECT na" is completed from "SELECT" as the model saw " name" in training, not " na"+"me".

Finishing names: when the user has typed part of a word (letters, digits, "_") outside a string
literal, and some table or column of the schema (or an SQL keyword or alias) starts with it, the
completion must finish the word as one of those names (`name_endings`); the model's scores choose
which. Otherwise the model is free.

Stop rule (end of statement): <eos>, a ";" or a newline; the completion is cut before a ";" or newline.

Context policy when schema + prefix + the room for the completion exceed max_seq_len: keep the
most recent tokens, truncating the schema first (its oldest tokens, right after <bos>), then the
query prefix (its oldest tokens).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from ..constraints import WordConstraint
from ..tokenizer import replace_lone_surrogates

FORMAT = "sql-v2"
SEPARATOR = "\n\n"
STOP_STRINGS = (";", "\n")


class PromptError(ValueError):
    """A prompt that cannot be built (e.g. no room left in the context for the completion)."""


def compact_schema(schema: str) -> str:
    """One line per table, whitespace collapsed; empty lines dropped.

    >>> compact_schema("  head(head_ID,   name)\\n\\n  dept(id)  ")
    'head(head_ID, name)\\ndept(id)'
    """
    lines = (" ".join(line.split()) for line in schema.splitlines())
    return "\n".join(line for line in lines if line)


SCHEMA_LINE = re.compile(r"^([^\s(]+)\s*\((.*)\)$")


def parse_schema(schema: str) -> list[tuple[str, list[str]]]:
    """(table, columns) per line of a compact schema; a line that is not `name(...)` is a table
    with no columns named by its text.

    >>> parse_schema("head(head_ID, name)\\nnotes")
    [('head', ['head_ID', 'name']), ('notes', [])]
    """
    tables = []
    for line in compact_schema(schema).split("\n"):
        if not line:
            continue
        m = SCHEMA_LINE.match(line)
        if m:
            tables.append((m.group(1), [c.strip() for c in m.group(2).split(",") if c.strip()]))
        else:
            tables.append((line, []))
    return tables


def schema_text(schema: str) -> str:
    """The schema as the model reads it: one line per table, every name after a space.

    >>> schema_text("head(head_ID,  name)\\ndept(id)")
    ' head ( head_ID, name )\\n dept ( id )'
    """
    lines = []
    for table, columns in parse_schema(schema):
        lines.append(f" {table} ( {', '.join(columns)} )" if columns else f" {table}")
    return "\n".join(lines)


SQL_NAMES = tuple(
    """SELECT FROM WHERE GROUP BY ORDER HAVING LIMIT JOIN ON AS AND OR NOT IN LIKE BETWEEN IS NULL
    DISTINCT UNION INTERSECT EXCEPT DESC ASC INNER LEFT OUTER CASE WHEN THEN ELSE END EXISTS
    count sum avg min max""".split()
) + tuple(f"T{i}" for i in range(1, 10))
# what may start a word right after SELECT / WHERE / BY / a comma ...: besides the schema's names
CLAUSE_NAMES = ("count", "sum", "avg", "min", "max", "DISTINCT", "NOT") + tuple(f"T{i}" for i in range(1, 10))
PARTIAL_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*$")


AFTER_TABLE_KEYWORD = re.compile(r"\b(FROM|JOIN)\s+([A-Za-z_][A-Za-z0-9_]*)?$", re.IGNORECASE)
ENDS_WITH_TABLE_KEYWORD = re.compile(r"\b(FROM|JOIN)$", re.IGNORECASE)
AFTER_CLAUSE = re.compile(
    r"(?:\b(?:SELECT|WHERE|BY|AND|OR|ON|HAVING|DISTINCT)\s+|[,(]\s*)([A-Za-z_][A-Za-z0-9_]*)?$", re.IGNORECASE
)
AFTER_QUALIFIER = re.compile(r"\b[A-Za-z_][A-Za-z0-9_]*\.([A-Za-z_][A-Za-z0-9_]*)?$")


@functools.lru_cache(maxsize=8)
def _schema_names(schema: str) -> tuple[list[str], list[str]]:
    """(table names, column names), parsed once per schema: name_endings runs at every word boundary
    of a suggestion, and a schema can have hundreds of tables. Callers must not mutate the lists."""
    tables = parse_schema(schema)
    return [t for t, _ in tables], [c for _, cols in tables for c in cols]


def name_endings(schema: str, prefix: str, grammar_only: bool = False) -> list[str]:
    """Ways to finish the word at the end of `prefix` with a schema name or an SQL word.

    Where the grammar says what comes next, the candidates are narrower, and apply even before the
    first letter is typed: after FROM or JOIN a table name; after `alias.` a column name. After
    SELECT, WHERE, BY, AND, OR, ON, HAVING, DISTINCT, a comma or "(", a word that starts is a schema
    name, an aggregate, DISTINCT, NOT, an alias T1..T9 (or SELECT after "("); after SELECT, DISTINCT,
    a comma or "(", '' is among the endings: something that is not a word, such as `*`, may come.
    Elsewhere a half-typed word is finished as any schema name, SQL keyword or alias.
    Matching ignores case; an ending keeps the name's case, and is also offered in lower case when
    the user types in lower case (Spider's queries often lower-case the schema's names). Empty (the
    model is free) inside a string literal, when no word is being typed, or when nothing matches.
    grammar_only: only the grammar points above, not a half-typed word elsewhere (used inside a
    suggestion, where the model's own words are not half-typed).

    >>> name_endings("instructor(ID, name, dept_name)", "SELECT * FROM instr")
    ['uctor']
    >>> name_endings("Instructor(ID, name)\\ndept(x)", "SELECT * FROM ")
    ['Instructor', 'dept', 'instructor']
    >>> name_endings("dept(x)", "SELECT x FROM")   # the keyword itself typed: a space, then a table
    [' dept']
    >>> name_endings("instructor(ID, name)", "SELECT T1.")
    ['ID', 'id', 'name']
    >>> name_endings("t(Dept_ID)", "SELECT dept_i"), name_endings("t(x)", "WHERE y = 'x")
    (['D', 'd'], [])
    """
    if prefix.count("'") % 2 or prefix.count('"') % 2:
        return []
    table_names, column_names = _schema_names(schema)
    if ENDS_WITH_TABLE_KEYWORD.search(prefix):
        endings = {" " + t for t in table_names} | {" " + t.lower() for t in table_names}
        return sorted(endings)
    after_table_kw = AFTER_TABLE_KEYWORD.search(prefix)
    after_qualifier = not after_table_kw and AFTER_QUALIFIER.search(prefix)
    after_clause = not after_table_kw and not after_qualifier and AFTER_CLAUSE.search(prefix)
    if after_table_kw:
        partial, candidates = after_table_kw.group(2) or "", table_names
    elif after_qualifier:
        partial, candidates = after_qualifier.group(1) or "", column_names
    elif after_clause:
        partial = after_clause.group(1) or ""
        may_skip = not partial and re.search(r"(\b(SELECT|DISTINCT)\s+|[,(]\s*)$", prefix, re.IGNORECASE)
        candidates = column_names + table_names + list(CLAUSE_NAMES) + ([""] if may_skip else [])
        if re.search(r"\(\s*[A-Za-z_]*$", prefix):
            candidates.append("SELECT")  # a subquery
    elif grammar_only:
        return []
    else:
        m = PARTIAL_WORD.search(prefix)
        if not m or (m.start() > 0 and (prefix[m.start() - 1].isalnum() or prefix[m.start() - 1] == "_")):
            return []
        partial, candidates = m.group(0), column_names + table_names + list(SQL_NAMES)
    endings = set()
    for name in candidates:
        if len(name) >= len(partial) and name.lower().startswith(partial.lower()):
            ending = name[len(partial):]
            endings.add(ending)
            if partial == partial.lower():  # lower-case typing (or none yet): the lower-case form too
                endings.add(ending.lower())
    return sorted(endings)


@dataclass(frozen=True)
class SqlPrompt:
    schema_ids: list[int]  # <bos> + schema + separator: reusable across keystrokes
    prefix_ids: list[int]  # the query prefix minus the healed part
    heal: bytes  # bytes the completion must start with (the partial last word), b"" for none
    truncated: int  # tokens dropped by the context policy (0 normally)

    @property
    def ids(self) -> list[int]:
        return self.schema_ids + self.prefix_ids


def training_ids(tokenizer, schema: str, sql: str, bos_id: int, eos_id: int) -> list[int]:
    """The ids of one training example: the same layout as a prompt, plus the query and <eos>."""
    return (
        [bos_id]
        + tokenizer.encode(schema_text(schema))
        + tokenizer.encode(SEPARATOR)
        + tokenizer.encode(sql)
        + [eos_id]
    )


def split_heal(tokenizer, prefix: str) -> tuple[str, str]:
    """Split the query prefix into (context, healed last pre-token).

    Lone surrogates (possible in JavaScript strings) are first replaced by U+FFFD, as the tokenizer
    does, so the two parts are exactly what gets encoded.

    >>> class Words:  # stand-in for the tokenizer's pre-tokenizer
    ...     def pre_tokenize(self, text): return text.replace(" ", "\\0 ").split("\\0")
    >>> split_heal(Words(), "SELECT na")
    ('SELECT', ' na')
    >>> split_heal(Words(), "")
    ('', '')
    """
    prefix = replace_lone_surrogates(prefix)
    if not prefix:
        return "", ""
    pieces = [p for p in tokenizer.pre_tokenize(prefix) if p]
    last = pieces[-1] if pieces else ""
    return prefix[: len(prefix) - len(last)], last


def build_prompt(
    tokenizer, schema: str, prefix: str, *, bos_id: int, max_seq_len: int, reserve: int
) -> SqlPrompt:
    """Token ids for completing `prefix` given `schema`, leaving `reserve` positions for the output."""
    if reserve < 1 or reserve >= max_seq_len - 1:
        raise PromptError(f"cannot reserve {reserve} of {max_seq_len} positions for the completion")
    context, heal = split_heal(tokenizer, prefix)
    schema_ids = [bos_id] + tokenizer.encode(schema_text(schema)) + tokenizer.encode(SEPARATOR)
    prefix_ids = tokenizer.encode(context)
    heal_room = len(heal.encode("utf-8"))  # healing can take one token per byte, at most
    budget = max_seq_len - reserve - min(heal_room, reserve)
    over = len(schema_ids) + len(prefix_ids) - budget
    truncated = max(over, 0)
    if over > 0:  # drop the schema's oldest tokens first (keep <bos> and the separator)
        sep = len(tokenizer.encode(SEPARATOR))
        body = schema_ids[1 : len(schema_ids) - sep]
        cut = min(over, len(body))
        schema_ids = [schema_ids[0]] + body[cut:] + schema_ids[len(schema_ids) - sep :]
        over -= cut
    if over > 0:  # then the query prefix's oldest tokens
        prefix_ids = prefix_ids[over:]
    return SqlPrompt(schema_ids, prefix_ids, heal.encode("utf-8"), truncated)


class SqlNameConstraint:
    """Finish the word being typed (name_endings), then keep doing so inside the suggestion.

    Each time the text so far (the prefix plus what was generated) reaches a point where the grammar
    says a name comes next — after FROM/JOIN a table, after `alias.` a column — the next word is
    constrained to the schema's names in the same way; after SELECT, WHERE, a comma ... a word that
    starts must be a schema name, SQL keyword or alias. Elsewhere (values, strings) the model is free.
    `heal` is SqlPrompt.heal: the bytes of the prefix's last pre-token, which are generated again.
    """

    def __init__(self, index, schema: str, prefix: str, heal: bytes, finish_names: bool = True):
        self.index, self.schema, self.finish_names = index, schema, finish_names
        prefix = replace_lone_surrogates(prefix)
        encoded = prefix.encode("utf-8")
        self.before = encoded[: len(encoded) - len(heal)]  # the prefix minus what is re-generated
        self.generated = b""
        endings = name_endings(schema, prefix) if finish_names else []
        self.current = WordConstraint(index, heal, [e.encode("utf-8") for e in endings])

    def allowed(self):
        if not self.current.done:
            return self.current.allowed()
        if not self.finish_names:
            return None
        text = (self.before + self.generated).decode("utf-8", "replace")
        endings = name_endings(self.schema, text, grammar_only=True)
        if not endings:
            return None
        self.current = WordConstraint(self.index, b"", [e.encode("utf-8") for e in endings])
        return self.current.allowed()

    def advance(self, token_id: int) -> None:
        self.current.advance(token_id)
        self.generated += self.index.token_bytes(token_id)
