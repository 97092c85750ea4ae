"""ReminderExtractor: the reminder-extract task wired to any backend (native onnxruntime or the browser).

`extract(text)` builds the prompt, generates greedily (by default) and, unless asked not to,
constrains decoding to the response schema (pocketlm.json_constraint): every output parses and
validates, and every string value is copied from the request text, each from its own place
(values never overlap, as slot annotations do not).

Key order: the model writes the keys in its manifest's prompt["keys"] order (the order it was trained
on); the constraint follows that order, and the result is the object in the schema's order.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Callable

from .constraints import TokenBytesIndex
from .generate import GenerateResult, generate
from .json_constraint import JsonConstraint
from .json_schema import ObjectSchema, SchemaError, compile_schema
from .manifest import Manifest
from .sampler import SamplingOptions
from .tasks import reminders
from .tokenizer import Tokenizer


class ReminderExtractor:
    def __init__(self, manifest: Manifest, tokenizer: Tokenizer, backend: Any):
        manifest.require_prompt_format(reminders.FORMAT, "a reminder-extract model")
        self.manifest, self.tokenizer, self.backend = manifest, tokenizer, backend
        self.index = TokenBytesIndex.from_tokenizer(tokenizer)
        self.default_schema = compile_schema(reminders.SCHEMA)
        self.keys = list(manifest.prompt.get("keys") or reminders.KEYS)  # the order the model writes them
        JsonConstraint.prepare(self.index)  # the per-tokenizer tables, once, so the first request is fast
        # One KV cache for every request, reset per call. A cache per call leaked in the page: the engine's
        # caches live in JavaScript (2 MB each here) until dropped (make soak: +2 MB per extraction).
        self._cache = backend.new_cache()

    def options(self, **overrides) -> SamplingOptions:
        return SamplingOptions.from_dict(self.manifest.sampling, **overrides)

    async def extract(
        self,
        text: str,
        options: SamplingOptions | None = None,
        *,
        response_format: dict | None | str = "default",
        copy_input: bool = True,
        on_token: Callable[[int, str], Any] | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> GenerateResult:
        """Generate the JSON for `text`. response_format: a JSON schema (the supported subset, see
        pocketlm.json_constraint), "default" (the task's schema) or None (no constraint at all).

        result.text is the JSON text; result.stats["truncated_tokens"] counts input tokens dropped.
        """
        options = options or self.options()
        arch, tok = self.manifest.architecture, self.manifest.tokenizer
        max_input = int(self.manifest.prompt.get("max_input_tokens", reminders.MAX_INPUT_TOKENS))
        ids, dropped = reminders.prompt_ids(self.tokenizer, text, bos_id=tok.bos_id, max_input_tokens=max_input)
        budget = min(options.max_new_tokens, arch.max_seq_len - len(ids))
        constraint = None
        if response_format is not None:
            schema = self.default_schema if response_format == "default" else compile_schema(response_format)
            written = written_order(schema, self.keys)
            # the model writes " {" after the separator; the constraint starts at "{"
            # values are copied whole words (slot values are), which also stops a weak copy mid-word
            try:
                constraint = JsonConstraint(self.index, written, eos_id=tok.eos_id, max_tokens=budget,
                                            copy_source=text if copy_input else None, prefix=b" ", whole_words=True,
                                            disjoint=True)
            except SchemaError as e:
                raise SchemaError(f"max_new_tokens={budget} cannot hold the shortest valid output ({e}); "
                                  "raise max_new_tokens") from None
        self._cache.truncate(0)
        result = await generate(
            self.backend.forward, self._cache, ids, options, eos_id=tok.eos_id, decode_bytes=self.tokenizer.decode_bytes,
            max_seq_len=len(ids) + budget, constraint=constraint, on_token=on_token, cancelled=cancelled,
        )
        result.text = result.text.lstrip(" ")
        if constraint is not None and written is not schema and result.stop_reason == "eos":
            result.text = in_schema_order(result.text, schema)
        result.stats["truncated_tokens"] = dropped
        return result


def written_order(schema: ObjectSchema, keys: list[str]) -> ObjectSchema:
    """`schema` with its properties in the order the model writes them: `keys` first (those the schema
    has), then the others in schema order; `schema` itself when that is its order already.

    >>> s = compile_schema({"type": "object", "properties": {"reminder": {"type": "string"}, "time": {"type": "null"}}})
    >>> [p.name for p in written_order(s, ["time", "recurrence", "reminder"]).properties], written_order(s, ["reminder"]) is s
    (['time', 'reminder'], True)
    """
    rank = {k: i for i, k in enumerate(keys)}
    props = sorted(schema.properties, key=lambda p: rank.get(p.name, len(rank)))  # stable: others keep their order
    return schema if props == list(schema.properties) else dataclasses.replace(schema, properties=tuple(props))


def in_schema_order(text: str, schema: ObjectSchema) -> str:
    """The JSON object `text` re-written with its keys in schema order (canonical json.dumps spacing).

    >>> s = compile_schema({"type": "object", "properties": {"reminder": {"type": "string"}, "time": {"type": "null"}}})
    >>> in_schema_order('{"time": null, "reminder": "walk the dog"}', s)
    '{"reminder": "walk the dog", "time": null}'
    """
    obj = json.loads(text)
    return json.dumps({p.name: obj[p.name] for p in schema.properties if p.name in obj}, ensure_ascii=False)


def parse_json(text: str) -> dict | None:
    """The object in a model output, or None if it does not parse as a JSON object."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


__all__ = ["ReminderExtractor", "SchemaError", "parse_json"]
