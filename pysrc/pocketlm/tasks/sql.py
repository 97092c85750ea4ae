"""The sql-autocomplete task format (prompt format "sql-v1"), shared by training, CLI, evals and page.

A training example and a prompt are token ids laid out as

    <bos> encode(compact_schema(schema)) encode("\\n\\n") encode(sql) <eos>

Each part is encoded on its own, so the schema part (<bos> .. separator) is the same ids whatever
the query, and its KV cache can be reused while the user types.

At inference the query prefix's last pre-token (the word being typed, or trailing whitespace) is
"healed": removed from the prompt and required as the first bytes of the output, so
"SELECT na" is completed from "SELECT" as the model saw " name" in training, not " na"+"me".

Stop rule (end of statement): <eos>, a ";" or a newline; the completion is cut before a ";" or newline.

Context policy when schema + prefix + the room for the completion exceed max_seq_len: keep the
most recent tokens, truncating the schema first (its oldest tokens, right after <bos>), then the
query prefix (its oldest tokens).
"""

from __future__ import annotations

from dataclasses import dataclass

FORMAT = "sql-v1"
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
        + tokenizer.encode(compact_schema(schema))
        + tokenizer.encode(SEPARATOR)
        + tokenizer.encode(sql)
        + [eos_id]
    )


def split_heal(tokenizer, prefix: str) -> tuple[str, str]:
    """Split the query prefix into (context, healed last pre-token).

    >>> class Words:  # stand-in for the tokenizer's pre-tokenizer
    ...     def pre_tokenize(self, text): return text.replace(" ", "\\0 ").split("\\0")
    >>> split_heal(Words(), "SELECT na")
    ('SELECT', ' na')
    >>> split_heal(Words(), "")
    ('', '')
    """
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
    schema_ids = [bos_id] + tokenizer.encode(compact_schema(schema)) + tokenizer.encode(SEPARATOR)
    prefix_ids = tokenizer.encode(context)
    heal_room = len(heal.encode("utf-8", "surrogatepass"))  # healing can take one token per byte, at most
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
    return SqlPrompt(schema_ids, prefix_ids, heal.encode("utf-8", "surrogatepass"), truncated)
