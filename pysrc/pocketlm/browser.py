"""The one Pyodide-aware module: a pocketlm backend whose forward pass is web/src/engine.mjs.

The engine (JavaScript) owns the onnxruntime-web session and the KV caches; Python holds only a
cache id and receives the last position's logits (a Float32Array, converted with one copy), or, for
plain greedy steps on a graph with the greedy head, just [token, logits_sum] (pocketlm.generate).
Everything else (tokenizer, sampler, generate loop, task formats) is the same code as in CPython,
which is what lets browser output be checked token for token against the native run.

It imports nothing from Pyodide at module level, so it can be imported (not used) anywhere.
"""

from __future__ import annotations

from typing import Any

from .generate import Greedy, head_aware


class JsCache:
    """A KV cache that lives in JavaScript; `length` and `truncate` as pocketlm.native.KVCache."""

    def __init__(self, engine: Any, cache_id: int):
        self.engine, self.id = engine, cache_id

    @property
    def length(self) -> int:
        return int(self.engine.length(self.id))

    def truncate(self, n: int) -> None:
        self.engine.truncate(self.id, n)


class JsBackend:
    """Backend for pocketlm.completer.SqlCompleter / pocketlm.generate backed by a JS Engine."""

    def __init__(self, engine: Any):
        self.engine = engine
        self.has_head = bool(getattr(engine, "hasHead", False))  # the graph has next_token + logits_sum

    def new_cache(self) -> JsCache:
        return JsCache(self.engine, int(self.engine.newCache()))

    @head_aware
    async def forward(self, token_ids: list[int], cache: JsCache, want: str = "logits"):
        """The last position's logits, or with want="argmax" (and the head) a Greedy: no logits cross."""
        from pyodide.ffi import to_js  # only here: this path runs in Pyodide alone

        if want not in ("logits", "argmax"):
            raise ValueError(f"want must be 'logits' or 'argmax', got {want!r}")
        if want == "argmax" and self.has_head:
            token, total = (await self.engine.forward(cache.id, to_js(list(token_ids)), "argmax")).to_py()
            return Greedy(int(token), float(total))  # [next_token, logits_sum] as JS numbers
        logits = await self.engine.forward(cache.id, to_js(list(token_ids)), "logits")
        return logits.to_py()  # memoryview of float32, [vocab]: the sampler reads it as floats


class PageModel:
    """What the worker (web/src/worker.mjs) holds for a loaded model; strings in, strings out.

    Built from the texts the page fetched and the sha256 it computed over each file (digests_json:
    file -> [hex, bytes]); validation is pocketlm.session.open_model, the same rules as natively.
    """

    def __init__(self, manifest_text: str, tokenizer_text: str, variant: str | None, digests_json: str):
        import json

        from .session import open_model

        self.manifest, self.tokenizer, self.variant = open_model(
            manifest_text, tokenizer_text, variant, json.loads(digests_json))
        self.file = self.manifest.variant(self.variant).file
        self.session = None

    def attach(self, engine: Any) -> None:
        from .session import ModelSession

        self.session = ModelSession(self.manifest, self.tokenizer, JsBackend(engine))

    async def warm_up(self) -> None:
        await self.session.warm_up()

    async def generate(self, prompt: str, options_json: str, on_token: Any = None, cancelled: Any = None) -> str:
        import json

        result = await self.session.generate(prompt, json.loads(options_json), on_token=on_token,
                                             cancelled=(lambda: bool(cancelled())) if cancelled else None)
        return json.dumps(result)
