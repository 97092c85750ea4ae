"""The one Pyodide-aware module: a pocketlm backend whose forward pass is web/src/engine.mjs.

The engine (JavaScript) owns the onnxruntime-web session and the KV caches (in wasm memory); Python
holds only a cache id and receives the last position's logits (a Float32Array, converted with one
copy), or, for plain greedy steps on a graph with the greedy head, just [token, logits_sum(, runner_up)]
— for a greedy chunk, a list of those, one per step the worker ran (pocketlm.generate).
Everything else (tokenizer, sampler, generate loop, task formats) is the same code as in CPython,
which is what lets browser output be checked token for token against the native run.

The worker steps each generation itself (`Stepper`): the backend's forward passes are `ForwardCall`s
that suspend the coroutine back to the worker's JavaScript loop, which runs the engine and resumes
Python with the result. Awaiting the engine's promise from Python would instead resume through
Pyodide's event loop, one macrotask per token: measured in the page on sql-autocomplete, Python's
share of a decode step went from 1.3-1.4 ms to 0.7-0.9 ms, and an 8-token suggestion from 31-36 ms
to 22-29 ms (same run, alternating builds, 25 requests each).

It imports nothing from Pyodide at module level, so it can be imported (not used) anywhere.
"""

from __future__ import annotations

from typing import Any

from .generate import Greedy, chunked, head_aware

CHECK_TOKENS = 2  # new tokens of the load's check generation (PageModel._check)


class JsCache:
    """A KV cache that lives in JavaScript; `length` and `truncate` as pocketlm.native.KVCache."""

    def __init__(self, engine: Any, cache_id: int):
        self.engine, self.id = engine, cache_id

    @property
    def length(self) -> int:
        return int(self.engine.length(self.id))

    def truncate(self, n: int) -> None:
        self.engine.truncate(self.id, n)


class ForwardCall:
    """An awaitable forward pass that the worker runs: awaiting it suspends the coroutine up to whoever
    drives it (`Stepper`), which runs the JS engine and resumes the coroutine with the result.

    Why not `await engine.forward(...)`: awaiting a JS promise resumes Python through Pyodide's event
    loop, one macrotask per forward pass; a coroutine stepped from JS resumes with a plain call.
    """

    __slots__ = ("request",)

    def __init__(self, cache_id: int, token_ids: list[int], want: str, steps: int = 1, ban: int | None = None):
        self.request = (cache_id, token_ids, want, steps, ban)

    def __await__(self):
        return (yield self)


class Stepper:
    """Runs one coroutine (a generation) from JS: `step(value)` resumes it with the last forward's
    result and returns the next forward request [cache_id, token_ids, want, steps, ban] (the worker
    runs `steps` greedy steps itself, pocketlm.generate "Greedy chunks"), or None when it finished
    (`result` then holds its value); `fail(message)` raises a forward's error inside it instead."""

    def __init__(self, coro):
        self.coro, self.result = coro, None

    def step(self, value: Any = None):
        return self._resume(self.coro.send, value)

    def fail(self, message: str):
        return self._resume(self.coro.throw, RuntimeError(message))

    def _resume(self, method, arg):
        try:
            call = method(arg)
        except StopIteration as stop:
            self.result = stop.value
            return None
        if not isinstance(call, ForwardCall):
            self.coro.close()
            raise RuntimeError(f"a generation awaited {type(call).__name__}, which the worker cannot run")
        from pyodide.ffi import to_js

        return to_js(call.request)


class JsBackend:
    """Backend for pocketlm.completer.SqlCompleter / pocketlm.generate backed by a JS Engine.

    Its forward passes are ForwardCalls: run the coroutines that use it with a Stepper.
    """

    def __init__(self, engine: Any):
        self.engine = engine
        self.has_head = bool(getattr(engine, "hasHead", False))  # the graph has next_token + logits_sum

    def new_cache(self) -> JsCache:
        return JsCache(self.engine, int(self.engine.newCache()))

    @chunked
    @head_aware
    async def forward(self, token_ids: list[int], cache: JsCache, want: str = "logits", steps: int = 1,
                      ban: int | None = None):
        """The last position's logits, or with want="argmax" (and the head) a Greedy: no logits cross;
        with steps > 1, a list of the Greedy results of up to `steps` steps the worker ran itself."""
        if want not in ("logits", "argmax"):
            raise ValueError(f"want must be 'logits' or 'argmax', got {want!r}")
        want = "argmax" if want == "argmax" and self.has_head else "logits"
        out = await ForwardCall(cache.id, list(token_ids), want, int(steps), ban)  # a JsProxy, from Stepper.step
        if want == "argmax":
            # [next_token, logits_sum(, runner_up)] as JS numbers, or a list of such for a chunk
            head = out.to_py()
            if head and isinstance(head[0], list):
                return [Greedy(int(h[0]), float(h[1]), int(h[2]) if len(h) > 2 else None) for h in head]
            return Greedy(int(head[0]), float(head[1]), int(head[2]) if len(head) > 2 else None)
        return out.to_py()  # memoryview of float32, [vocab]: the sampler reads it as floats


class PageModel:
    """What the worker (web/src/worker.mjs) holds for a loaded model; strings in, strings out.

    Built from the texts the page fetched and the sha256 it computed over each file (digests_json:
    file -> [hex, bytes]); validation is pocketlm.session.open_model, the same rules as natively.
    `start_warm_up()` and `start(...)` return Steppers the worker drives.
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

        self.backend = JsBackend(engine)
        self.session = ModelSession(self.manifest, self.tokenizer, self.backend)

    def start_check(self) -> Stepper:
        """One short generation of the task before the model is called ready: a model that cannot generate
        (NaN logits, a graph that fails at run time) fails its load instead of its first request."""
        return Stepper(self._check())

    async def _check(self) -> str:
        # two tokens: the prompt's forward pass and one decode step with a cache, each checked for NaN/inf
        # (8 took 164 ms of the 15 M model's cold load; the idle-time warm-up runs the longer one after ready)
        await self.session.warm_up(tokens=CHECK_TOKENS)
        return "{}"

    def start_warm_up(self, max_steps: int = 600, budget_ms: float = 1000.0, cancelled: Any = None) -> Stepper:
        """Decode steps through the whole stack, then one generation of the task; they stop early when
        `cancelled()` (the worker runs this while idle and gives way to requests). Result: JSON
        {steps, ms, done} — done: the steps and the task generation all ran (not cancelled)."""
        return Stepper(self._warm_up(max_steps, budget_ms, (lambda: bool(cancelled())) if cancelled else lambda: False))

    async def _warm_up(self, max_steps: int, budget_ms: float, cancelled) -> str:
        """Chromium compiles a wasm function to its optimizing tier only after it ran a few hundred times,
        and that holds for the Python interpreter (Pyodide) as much as for onnxruntime's kernels: a warm-up
        of engine runs alone left the first generation after load at ~0.5-0.6 x steady-state speed on the
        small models (make bench, "first generation after load"). So every warm-up step goes through
        Python: the forward call, the JS hand-off, half of them with the logits and the sampler (the path
        of constrained and sampled decoding), half with the greedy head.
        Measured against the engine-only warm-up (200 steps), same machine, alternating builds, two runs each:
        first generation / steady state 0.46-0.71 -> 0.79-1.32; sql-autocomplete keystroke p95 32.7-40.3 ->
        24.0-24.9 ms. The worker runs it after the model is ready, in idle time (worker.mjs, "warm-up")."""
        import json
        import time

        from .sampler import Sampler, SamplingOptions

        arch = self.manifest.architecture
        sampler = Sampler(SamplingOptions(temperature=0.0))
        cache, t0, steps = self.backend.new_cache(), time.perf_counter(), 0
        try:
            while steps < max_steps and (time.perf_counter() - t0) * 1000.0 < budget_ms and not cancelled():
                if cache.length >= arch.max_seq_len - 1:
                    cache.truncate(0)
                out = await self.backend.forward([steps % arch.vocab_size], cache,
                                                 want="argmax" if steps % 2 else "logits")
                if not isinstance(out, Greedy):
                    sampler.sample(out, [], None)
                steps += 1
        finally:
            self.backend.engine.dropCache(cache.id)
        done = not cancelled() and await self.session.warm_up(cancelled)
        return json.dumps({"steps": steps, "ms": (time.perf_counter() - t0) * 1000.0, "done": bool(done)})

    def start(self, prompt: str, options_json: str, on_token: Any = None, cancelled: Any = None) -> Stepper:
        """A generation; the Stepper's result is ModelSession.generate's dict as JSON text."""
        return Stepper(self._generate(prompt, options_json, on_token, cancelled))

    async def _generate(self, prompt: str, options_json: str, on_token: Any, cancelled: Any) -> str:
        import json

        result = await self.session.generate(prompt, json.loads(options_json), on_token=on_token,
                                             cancelled=(lambda: bool(cancelled())) if cancelled else None)
        return json.dumps(result)
