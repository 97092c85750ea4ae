"""ModelSession: one loaded model behind the generic API the page exposes as `window.pocketlm`.

The page hands over text and numbers only (JSON-able values): a prompt string, an options dict,
and for loading the manifest and tokenizer texts plus the sha256 the page computed for each file.
Everything that decides (is the manifest valid, do the bytes match it, which options exist, how
the task builds its prompt) happens here, in the same code that runs natively, so the browser
cannot drift from the CLI.

>>> sorted(option_names("sql"))[:4]
['max_new_tokens', 'min_p', 'repetition_penalty', 'schema']
"""

from __future__ import annotations

import json
from dataclasses import fields
from typing import Any, Callable

from .copy_search import checked_flips
from .manifest import Manifest, ManifestError, check_digest, manifest_from_dict
from .sampler import SamplingError, SamplingOptions
from .tokenizer import Tokenizer

# Options that are the task's inputs rather than sampling settings, per manifest.task.
TASK_INPUTS = {"sql": ("schema",), "reminders": ("response_format", "copy_input", "flips"), "text": ("ignore_eos",)}


def option_names(task: str) -> set[str]:
    return {f.name for f in fields(SamplingOptions)} | set(TASK_INPUTS.get(task, ()))


def open_model(manifest_text: str, tokenizer_text: str, variant: str | None,
               digests: dict[str, list]) -> tuple[Manifest, Tokenizer, str]:
    """Validate a model fetched by the page: manifest, tokenizer, and the bytes of the chosen variant.

    digests: file name -> [sha256 hex, size in bytes], as computed by the page over what it fetched.
    Returns (manifest, tokenizer, variant name). Raises ManifestError naming the file at fault.
    """
    try:
        data = json.loads(manifest_text)
    except json.JSONDecodeError as e:
        raise ManifestError(f"manifest.json is not valid JSON ({e}); re-export the model") from None
    manifest = manifest_from_dict(data)
    name = variant or manifest.default_variant
    chosen = manifest.variant(name)
    for role, file, sha256, size in (
        ("tokenizer", manifest.tokenizer.file, manifest.tokenizer.sha256, None),
        (f"variant {name!r}", chosen.file, chosen.sha256, chosen.bytes),
    ):
        if file not in digests:
            raise ManifestError(f"{role} file {file!r} was not loaded; the page must fetch it with the manifest")
        actual, actual_size = digests[file]
        check_digest(role, file, actual, sha256, actual_size, size)
    tokenizer = Tokenizer.from_str(tokenizer_text)
    if tokenizer.vocab_size != manifest.tokenizer.vocab_size:
        raise ManifestError(
            f"tokenizer.json has {tokenizer.vocab_size} tokens, the manifest says {manifest.tokenizer.vocab_size}"
        )
    return manifest, tokenizer, name


class ModelSession:
    """A model plus its task: `generate(prompt, options)` -> a JSON-able result dict.

    backend: `new_cache()` and `async forward(ids, cache)` (pocketlm.native.NativeModel, or
    pocketlm.browser.JsBackend in the page).
    """

    def __init__(self, manifest: Manifest, tokenizer: Tokenizer, backend: Any):
        self.manifest, self.tokenizer = manifest, tokenizer
        if manifest.task == "sql":
            from .completer import SqlCompleter

            self.runner = SqlCompleter(manifest, tokenizer, backend)
        elif manifest.task == "reminders":
            from .extractor import ReminderExtractor

            self.runner = ReminderExtractor(manifest, tokenizer, backend)
        elif manifest.task == "text":
            from .tasks.text import TextGenerator

            self.runner = TextGenerator(manifest, tokenizer, backend)
        else:
            raise ManifestError(f"task {manifest.task!r} of model {manifest.name!r} is not supported by this pocketlm")

    def options(self, options: dict[str, Any] | None) -> tuple[SamplingOptions, dict[str, Any]]:
        """Split an options dict into sampling options (manifest defaults + overrides) and task inputs.

        Unknown names are an error (a typo must not be silently ignored); None means "default".
        """
        options = dict(options or {})
        unknown = sorted(set(options) - option_names(self.manifest.task))
        if unknown:
            raise SamplingError(f"unknown options {unknown}; known: {sorted(option_names(self.manifest.task))}")
        inputs = {k: options.pop(k) for k in TASK_INPUTS.get(self.manifest.task, ()) if k in options}
        for key, value in inputs.items():
            if value is None:
                continue
            if key == "schema" and not isinstance(value, str):
                raise SamplingError(f"schema must be a string, got {type(value).__name__}")
            if key == "response_format" and not (isinstance(value, dict) or value in ("default", "none")):
                raise SamplingError(f"response_format must be a JSON schema object, 'default' or 'none', got {value!r}")
            if key in ("copy_input", "ignore_eos") and not isinstance(value, bool):
                raise SamplingError(f"{key} must be true or false, got {value!r}")
            if key == "flips":
                checked_flips(value)
        return SamplingOptions.from_dict(self.manifest.sampling, **options), inputs

    async def warm_up(self, cancelled: Callable[[], bool] | None = None, tokens: int = 8) -> bool:
        """One short generation through the whole stack (`tokens` new tokens for the sql and text tasks;
        a whole extraction for reminders, which also builds the constraint's vocabulary trie), so the first
        user request is not the first. Returns False if `cancelled()` stopped it."""
        if self.manifest.task == "sql":
            out = await self.generate("SELECT", {"max_new_tokens": tokens}, cancelled=cancelled)
        elif self.manifest.task == "text":
            # greedy whatever the manifest's sampling: a sampled step scans the whole row in Python, and
            # with a 32 000-token vocabulary these 8 steps took ~0.45 s of a cold page load (the page's
            # check before ready; the idle-time warm-up then runs the sampler's path too)
            out = await self.generate("", {"max_new_tokens": tokens, "temperature": 0.0}, cancelled=cancelled)
        else:
            out = await self.generate("remind me at 7pm to walk the dog", cancelled=cancelled)
        return out["stop_reason"] != "cancelled"

    async def generate(self, prompt: str, options: dict[str, Any] | None = None,
                       on_token: Callable[[int, str], Any] | None = None,
                       cancelled: Callable[[], bool] | None = None) -> dict[str, Any]:
        """sql-autocomplete: `prompt` is the query typed so far, options["schema"] the schema text;
        result["text"] is what to append to the prompt.
        reminder-extract: `prompt` is the request; result["text"] is the JSON text and result["json"]
        the parsed object (None if unconstrained output does not parse). options["response_format"]:
        a JSON schema (the subset in pocketlm.json_constraint), "default" (the task's) or "none";
        options["copy_input"] (default true): string values must be copied from the request;
        options["flips"] (default pocketlm.copy_search.FLIPS): uncertain marks looked at again, 0 = plain greedy.
        text (pocketlm.tasks.text): `prompt` is the text to continue; result["text"] the continuation;
        options["ignore_eos"] (default false): do not stop at <eos> (benchmarks: a fixed token count)."""
        if not isinstance(prompt, str):
            raise SamplingError(f"prompt must be a string, got {type(prompt).__name__}")
        sampling, inputs = self.options(options)
        extra: dict[str, Any] = {}
        if self.manifest.task == "reminders":
            from .extractor import parse_json

            fmt = inputs.get("response_format") or "default"
            result = await self.runner.extract(prompt, sampling, response_format=None if fmt == "none" else fmt,
                                               copy_input=inputs.get("copy_input", True) is not False,
                                               on_token=on_token, cancelled=cancelled, flips=inputs.get("flips"))
            extra["json"] = parse_json(result.text)
        elif self.manifest.task == "text":
            result = await self.runner.generate(prompt, sampling, ignore_eos=inputs.get("ignore_eos") is True,
                                                on_token=on_token, cancelled=cancelled)
        else:
            result = await self.runner.complete(inputs.get("schema") or "", prompt, sampling,
                                                on_token=on_token, cancelled=cancelled)
        return {"text": result.text, "token_ids": list(result.token_ids), "stop_reason": result.stop_reason,
                "stats": dict(result.stats), **extra}
