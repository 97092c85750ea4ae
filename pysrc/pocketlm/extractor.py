"""ReminderExtractor: the reminder-extract task wired to any backend (native onnxruntime or the browser).

`extract(text)` builds the prompt, generates greedily (by default) and, unless asked not to,
constrains decoding: the model's marked copy of the request to a marked copy (pocketlm.echo_constraint),
decoded with a second look at its least certain marks (pocketlm.copy_search), then the JSON to the
response schema (pocketlm.json_constraint) by the generate loop: every output parses and validates, and
every string value is copied from the request text, each from its own place (values never overlap, as
slot annotations do not). The prompt format is pocketlm.tasks.reminders ("reminders-v2").

Key order: the model writes the keys in its manifest's prompt["keys"] order (the order it was trained
on); the constraint follows that order, and the result is the object in the schema's order.
"""

from __future__ import annotations

import codecs
import dataclasses
import json
import time
from typing import Any, Callable

from .constraints import TokenBytesIndex
from .copy_search import marked_copy
from .echo_constraint import EchoConstraint
from .generate import GenerateResult, generate
from .json_constraint import JsonConstraint
from .json_schema import ObjectSchema, Property, SchemaError, compile_schema
from .manifest import Manifest, ManifestError
from .sampler import SamplingOptions
from .tasks import reminders
from .tokenizer import Tokenizer


class ReminderExtractor:
    def __init__(self, manifest: Manifest, tokenizer: Tokenizer, backend: Any):
        if manifest.prompt.get("format") == "reminders-v1":
            raise ManifestError(f"model {manifest.name!r} writes the JSON alone (prompt format reminders-v1), which "
                                f"this version no longer reads ({reminders.FORMAT}: the request with its values "
                                "marked, then the JSON): re-export it (make export MODEL=reminder-extract)")
        manifest.require_prompt_format(reminders.FORMAT, "a reminder-extract model")
        self.manifest, self.tokenizer, self.backend = manifest, tokenizer, backend
        self.index = TokenBytesIndex.from_tokenizer(tokenizer)
        self.default_schema = compile_schema(reminders.SCHEMA)
        self.keys = list(manifest.prompt.get("keys") or reminders.KEYS)  # the order the model writes them
        self.markers = {}  # key -> (open, close) token ids of the marked copy
        for key in self.keys:
            found = [tokenizer.token_to_id(m) for m in reminders.markers(key)]
            if None in found or not all(tokenizer.is_special(i) for i in found):
                raise ManifestError(f"the tokenizer has no special tokens {list(reminders.markers(key))} that "
                                    f"format {reminders.FORMAT} needs for the key {key!r}: re-export the model "
                                    "(make export MODEL=reminder-extract)")
            self.markers[key] = tuple(found)
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
        flips: int | None = None,
    ) -> GenerateResult:
        """Generate the JSON for `text`. response_format: a JSON schema (the supported subset, see
        pocketlm.json_constraint), "default" (the task's schema) or None (no constraint at all).

        flips: the marks looked at again when decoding greedily (pocketlm.copy_search; None = its FLIPS,
        0 = plain greedy).

        result.text is the JSON text; result.token_ids the kept marked copy, then the JSON's tokens;
        result.stats["truncated_tokens"] counts input tokens dropped, "copies_tried" and "search_tokens"
        what the second look cost. A repetition penalty sees each phase's own tokens.
        """
        options = options or self.options()
        arch, tok = self.manifest.architecture, self.manifest.tokenizer
        max_input = int(self.manifest.prompt.get("max_input_tokens", reminders.MAX_INPUT_TOKENS))
        p = reminders.Request(self.tokenizer, text, max_input)
        ids = p.prompt(tok.bos_id)
        budget = min(options.max_new_tokens, arch.max_seq_len - len(ids))
        self._cache.truncate(0)
        if response_format is None:  # no constraint at all: the model writes what it likes
            result = await generate(
                self.backend.forward, self._cache, ids, options, eos_id=tok.eos_id,
                decode_bytes=self.tokenizer.decode_bytes, max_seq_len=len(ids) + budget, on_token=on_token,
                cancelled=cancelled)
            return self._finish(result, p)
        schema = self.default_schema if response_format == "default" else compile_schema(response_format)
        written = written_order(schema, self.keys)

        def make_echo() -> EchoConstraint:
            """The first phase: the request again with its values marked, then the separator."""
            return EchoConstraint(p.ids, self.markers, end=p.separator)

        def json_constraint(schema, max_tokens):
            # then the JSON, " {...}"; values are copied whole words (slot values are), which also stops a
            # weak copy mid-word
            return JsonConstraint(self.index, schema, eos_id=tok.eos_id, max_tokens=max_tokens,
                                  copy_source=p.kept if copy_input else None, prefix=b" ", whole_words=True,
                                  disjoint=True)

        longest_copy = make_echo().max_tokens
        try:  # the budget is checked before any work: the longest marked copy, then the JSON
            free = json_constraint(written, budget - longest_copy)
        except SchemaError as e:
            raise SchemaError(f"max_new_tokens={budget} cannot hold the marked copy of the request "
                              f"({longest_copy} tokens) and the shortest valid output ({e}); "
                              "raise max_new_tokens") from None
        t0 = time.perf_counter()
        copy = await marked_copy(self.backend.forward, self._cache, ids, make_echo, flips=flips, options=options,
                                 cancelled=cancelled)
        if on_token is not None:
            self._stream(copy.tokens, on_token)
        if copy.stop_reason == "cancelled":
            result = GenerateResult("", copy.tokens, "cancelled", {})
        else:
            # the JSON, its values those the model marked (follow_marks); unrestricted if those cannot fit
            # the tokens left (every byte counted as a token, as the constraint does)
            marked = {key: "".join(p.texts[first:last]).strip() for key, (first, last) in copy.echo.spans.items()}
            left = budget - len(copy.tokens)
            try:
                constraint = json_constraint(follow_marks(written, marked), left)
            except SchemaError:
                constraint = free
            result = await generate(
                self.backend.forward, self._cache, copy.tokens[-1:], dataclasses.replace(options, max_new_tokens=left),
                eos_id=tok.eos_id, decode_bytes=self.tokenizer.decode_bytes, start_pos=self._cache.length,
                max_seq_len=len(ids) + budget, constraint=constraint, on_token=on_token, cancelled=cancelled)
            result.token_ids = copy.tokens + result.token_ids
            if written is not schema and result.stop_reason == "eos":
                result.text = in_schema_order(result.text.lstrip(" "), schema)
        # timings of the whole extraction: the prompt's forward pass, then every token run (the search's too)
        total_ms = (time.perf_counter() - t0) * 1000.0
        decode_ms = total_ms - copy.prefill_ms
        run = len(result.token_ids) + copy.search_tokens - 1
        result.stats = {"prefill_ms": copy.prefill_ms, "decode_ms": decode_ms, "total_ms": total_ms,
                        "tokens_per_s": run / (decode_ms / 1000.0) if decode_ms > 0 and run > 0 else 0.0,
                        "copies_tried": copy.tried, "search_tokens": copy.search_tokens}
        return self._finish(result, p)

    def _finish(self, result: GenerateResult, p: reminders.Request) -> GenerateResult:
        # the text after the last separator is the JSON (a JSON text has no raw newline, so a separator
        # typed in the request, copied before it, cannot be the last)
        result.text = result.text.rsplit(reminders.SEPARATOR, 1)[-1].lstrip(" ")
        result.stats["truncated_tokens"] = p.dropped
        return result

    def _stream(self, tokens: list[int], on_token: Callable[[int, str], Any]) -> None:
        """on_token for the kept marked copy, once it is chosen (complete UTF-8 characters only)."""
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        for token in tokens:
            on_token(token, decoder.decode(self.tokenizer.decode_bytes([token])))


def follow_marks(schema: ObjectSchema, marked: dict[str, str]) -> ObjectSchema:
    """`schema` with each string property the model marked in its copy of the request fixed to the marked
    value, and each nullable string property it did not mark fixed to null. The rest (enums, required
    strings it did not mark, values longer than their maxLength) stays the model's choice.

    Why: the marks are the model's decision, made while re-reading the request in order; writing the JSON
    freely after them re-decided 4.6% of the dev rows, for the worse (TOPv2 exact_both 0.817 from the marks,
    0.805 from the free JSON; README "reminder-extract").

    >>> s = compile_schema({"type": "object", "properties": {"reminder": {"type": ["string", "null"]},
    ...     "time": {"type": ["string", "null"]}, "unit": {"enum": ["min", "h"]}}})
    >>> [(p.name, p.kind, p.members) for p in follow_marks(s, {"reminder": "walk the dog"}).properties]
    [('reminder', 'enum', ('walk the dog',)), ('time', 'null', ()), ('unit', 'enum', ('min', 'h'))]
    """
    def fixed(p: Property) -> Property:
        if p.kind != "string":
            return p
        value = marked.get(p.name)
        if value and (p.max_length is None or len(value) <= p.max_length):
            return dataclasses.replace(p, kind="enum", nullable=False, members=(value,), max_length=None)
        return dataclasses.replace(p, kind="null", nullable=False) if p.nullable and not value else p

    return dataclasses.replace(schema, properties=tuple(fixed(p) for p in schema.properties))


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
