"""reminder-extract: an everyday request -> a JSON object with the reminder, its time, its recurrence.

Prompt format "reminders-v1": `<bos> text SEPARATOR` and the model continues with the canonical
JSON object (keys in the manifest's prompt["keys"] order, KEYS by default, as `json.dumps` prints
them) and `<eos>`. Every value is copied
from the text or null; decoding is constrained by SCHEMA (pocketlm.json_constraint) so the output
always parses.

>>> target_text({"reminder": "walk the dog", "time": "at 7pm"})
'{"reminder": "walk the dog", "time": "at 7pm", "recurrence": null}'

Context policy: the text is cut to its first MAX_INPUT_TOKENS tokens (a request states the reminder
up front; what follows a very long paste is less likely to matter), and the output has the rest of
the context.
"""

from __future__ import annotations

import json
import re

from ..tokenizer import replace_lone_surrogates

FORMAT = "reminders-v1"
SEPARATOR = "\n=>"
KEYS = ("reminder", "time", "recurrence")
SCHEMA = {
    "type": "object",
    "properties": {key: {"type": ["string", "null"]} for key in KEYS},
    "required": list(KEYS),
    "additionalProperties": False,
}
MAX_INPUT_TOKENS = 160
MAX_OUTPUT_TOKENS = 128  # the constraint reserves one token per byte of the shortest ending


def target_text(row: dict, keys: tuple[str, ...] | list[str] = KEYS) -> str:
    """The canonical JSON the model is trained to write for a data row (missing keys are null).

    >>> target_text({"reminder": "walk the dog", "time": "at 7pm"}, keys=("time", "recurrence", "reminder"))
    '{"time": "at 7pm", "recurrence": null, "reminder": "walk the dog"}'
    """
    return json.dumps({key: row.get(key) for key in keys}, ensure_ascii=False)


def prompt_ids(tokenizer, text: str, *, bos_id: int, max_input_tokens: int = MAX_INPUT_TOKENS) -> tuple[list[int], int]:
    """(ids of `<bos> text SEPARATOR`, tokens of text dropped by the context policy)."""
    ids = tokenizer.encode(replace_lone_surrogates(text))
    dropped = max(len(ids) - max_input_tokens, 0)
    return [bos_id] + ids[:max_input_tokens] + tokenizer.encode(SEPARATOR), dropped


def training_ids(tokenizer, row: dict, *, bos_id: int, eos_id: int, keys=KEYS) -> tuple[list[int], int]:
    """(ids of one training example, index of its first target token): loss is on the JSON only."""
    head, _ = prompt_ids(tokenizer, row["text"], bos_id=bos_id)
    return head + tokenizer.encode(" " + target_text(row, keys)) + [eos_id], len(head)


# ---- scoring (the eval's definitions) ----
OUTER_PUNCT = " \t\n.,;:!?\"'()[]{}"
LEADING_PREPOSITIONS = ("at", "on", "for", "by", "in")


def normalize(value: str | None) -> str | None:
    """Strict comparison form: lower-cased, whitespace collapsed, outer punctuation trimmed.

    >>> normalize("  At 7 PM. "), normalize(None)
    ('at 7 pm', None)
    """
    if value is None:
        return None
    return " ".join(value.lower().split()).strip(OUTER_PUNCT)


def normalize_time_lenient(value: str | None) -> str | None:
    """Also drops one leading preposition (at/on/for/by/in).

    >>> normalize_time_lenient("at 7pm"), normalize_time_lenient("in"), normalize_time_lenient("Tuesday")
    ('7pm', 'in', 'tuesday')
    """
    v = normalize(value)
    if v is None:
        return None
    m = re.match(r"(?:%s)\s+(.+)$" % "|".join(LEADING_PREPOSITIONS), v)
    return m.group(1) if m else v
