"""The native backend: a pocketlm model folder run with onnxruntime (the CLI and the evals use it).

    model = NativeModel("web/models/sql-autocomplete", variant="int8", threads=1)
    cache = model.new_cache()
    logits = model.forward_all(prompt_ids, cache)      # np.ndarray [S, vocab]; cache.length += S
    next_logits = await model.forward([token], cache)  # list[float], last position only
    greedy = await model.forward([token], cache, want="argmax")  # pocketlm.generate.Greedy(token, logits_sum)
    cache.truncate(n)                                  # roll back to the first n positions

The decode graph's contract (names, layouts) comes from the manifest (pocketlm.manifest.GraphContract):
the caller owns the KV cache — one preallocated [1, n_kv_heads, max_seq_len, head_dim] buffer per
layer for keys and one for values — and hands each buffer to the graph as `cache.{i}.*` with the
graph's `present.{i}.*` output bound to the same memory (onnxruntime IO binding), so the graph writes
the S new rows in place.

numpy and onnxruntime are imported inside functions only: the rest of pocketlm is standard library.
"""

from __future__ import annotations

import operator
import os

from .generate import Greedy, chunked, greedy_steps, head_aware
from .manifest import Architecture, GraphContract, Manifest, load_manifest


class ModelLoadError(RuntimeError):
    """A model file that onnxruntime cannot load or that does not match its manifest."""


def _import_runtime():
    try:
        import numpy
        import onnxruntime
    except ImportError as e:
        raise ModelLoadError(
            f"the native backend needs numpy and onnxruntime ({e.name} is not installed); "
            "install them with: pip install -r requirements.txt"
        ) from None
    return numpy, onnxruntime


class KVCache:
    """Preallocated keys/values per layer, each float32 [1, n_kv_heads, max_seq_len, head_dim].

    Rows 0 .. length-1 are valid. The graph takes each buffer whole (cache.{i}.*) and, with its
    present.{i}.* output bound to the same memory (NativeModel._run), writes the new rows in place.
    """

    def __init__(self, n_layers: int, max_seq_len: int, n_kv_heads: int, head_dim: int):
        np, ort = _import_runtime()
        self.max_seq_len = max_seq_len
        shape = (1, n_kv_heads, max_seq_len, head_dim)
        self.keys = [np.zeros(shape, np.float32) for _ in range(n_layers)]
        self.values = [np.zeros(shape, np.float32) for _ in range(n_layers)]
        # onnxruntime views of the same memory (no copy): bound as both input and output of a run
        self._ort = [(ort.OrtValue.ortvalue_from_numpy(k), ort.OrtValue.ortvalue_from_numpy(v))
                     for k, v in zip(self.keys, self.values)]
        self._length = 0

    @property
    def length(self) -> int:
        """Number of cached positions (the next token's position)."""
        return self._length

    def truncate(self, n: int) -> None:
        """Roll back to the first n positions (0 <= n <= length); later rows are overwritten by appends."""
        n = operator.index(n)
        if not 0 <= n <= self._length:
            raise ValueError(f"cannot truncate a cache of {self._length} positions to {n}")
        self._length = n

    def reset(self) -> None:
        self._length = 0

    def past(self, layer: int):
        """(keys, values) views [n_kv_heads, length, head_dim] of one layer's valid rows."""
        n = self._length
        return self.keys[layer][0, :, :n], self.values[layer][0, :, :n]

    def __repr__(self) -> str:
        return f"KVCache(length={self._length}, max_seq_len={self.max_seq_len}, layers={len(self.keys)})"


class NativeModel:
    """One variant of a model folder, loaded into an onnxruntime CPU session."""

    def __init__(self, model_dir: str, variant: str | None = None, threads: int = 1, *, check_files: bool = True):
        """Validate the manifest (and, with check_files, every file's size and sha256) and load the graph.

        Raises pocketlm.manifest.ManifestError for a bad folder/manifest/hash and ModelLoadError when
        onnxruntime cannot load the file or its inputs/outputs differ from the manifest's contract.
        """
        if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
            raise ValueError(f"threads must be a positive integer, got {threads!r}")
        self.manifest: Manifest = load_manifest(model_dir, check_files=check_files)
        self.arch: Architecture = self.manifest.architecture
        self.variant_name = variant or self.manifest.default_variant
        self.variant = self.manifest.variant(variant)
        self.path = os.path.join(model_dir, self.variant.file)
        np, ort = _import_runtime()
        self._np = np

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3  # errors only; failures are raised below
        for key, value in self.variant.session_config.items():  # what the file is made to run with (manifest)
            options.add_session_config_entry(key, value)
        try:
            self._session = ort.InferenceSession(self.path, options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own pybind exception types (InvalidProtobuf, Fail, ...)
            detail = (str(e).strip().splitlines() or [type(e).__name__])[0].rstrip(".")
            raise ModelLoadError(
                f"onnxruntime cannot load variant {self.variant_name!r} file {self.path!r}: {detail}. "
                "The file is corrupt, truncated or not a pocketlm decode graph; re-export the model."
            ) from None
        self._bind_contract(self.manifest.graph)

    def _bind_contract(self, c: GraphContract) -> None:
        n = self.arch.n_layers
        self._caches = [(c.cache_key.format(i=i), c.cache_value.format(i=i)) for i in range(n)]
        self._presents = [(c.present_key.format(i=i), c.present_value.format(i=i)) for i in range(n)]
        self._outputs = [c.logits]
        # the greedy head: fetch two numbers instead of [1, S, V] logits (GraphContract)
        self.has_head = c.has_head
        head = [c.next_token, c.logits_sum] + ([c.runner_up] if c.has_runner_up else [])
        self._head_outputs = head if c.has_head else None
        self._head_size = len(head)
        self._ids, self._seqlens, self._total = c.input_ids, c.seqlens_k, c.total_length
        want_in = {c.input_ids, c.seqlens_k, c.total_length} | {name for pair in self._caches for name in pair}
        want_out = set(self._outputs + (self._head_outputs or [])) | {name for pair in self._presents for name in pair}
        have_in = {x.name for x in self._session.get_inputs()}
        have_out = {x.name for x in self._session.get_outputs()}
        missing = sorted(want_in - have_in) + sorted(want_out - have_out)
        extra = sorted(have_in - want_in)
        if missing or extra:
            raise ModelLoadError(
                f"{self.path!r} does not match the manifest's graph contract: "
                f"missing {missing[:6]}, unexpected inputs {extra[:6]}; re-export the model"
            )

    def new_cache(self) -> KVCache:
        a = self.arch
        return KVCache(a.n_layers, a.max_seq_len, a.n_kv_heads, a.head_dim)

    def _check(self, token_ids, cache: KVCache) -> list[int]:
        if not isinstance(cache, KVCache) or len(cache.keys) != self.arch.n_layers or cache.keys[0].shape != (
            1, self.arch.n_kv_heads, self.arch.max_seq_len, self.arch.head_dim
        ):
            raise ValueError("cache was not made by this model's new_cache()")
        try:
            ids = [operator.index(t) for t in token_ids]
        except TypeError:
            raise ValueError(f"token_ids must be a list of ints, got {token_ids!r:.80}") from None
        if not ids:
            raise ValueError("token_ids is empty: forward needs at least one token")
        vocab = self.arch.vocab_size
        bad = [t for t in ids if not 0 <= t < vocab]
        if bad:
            raise ValueError(f"token ids {bad[:5]} are out of range for vocab_size {vocab}")
        if cache.length + len(ids) > self.arch.max_seq_len:
            raise ValueError(
                f"{cache.length} cached + {len(ids)} new positions exceed the model's context of "
                f"{self.arch.max_seq_len} (max_seq_len); truncate the cache or shorten the input"
            )
        return ids

    def _run(self, token_ids: list[int], cache: KVCache, outputs: list[str]) -> list:
        """Run S new tokens at positions cache.length .. +S-1 fetching `outputs`; their K/V rows go
        into the cache in place (each present output bound to its cache buffer)."""
        np = self._np
        ids = self._check(token_ids, cache)
        total = cache.length + len(ids)
        binding = self._session.io_binding()
        binding.bind_cpu_input(self._ids, np.asarray([ids], dtype=np.int64))
        binding.bind_cpu_input(self._seqlens, np.asarray([total - 1], dtype=np.int32))
        binding.bind_cpu_input(self._total, np.asarray(total, dtype=np.int32))
        for (key_in, value_in), (key_out, value_out), (k, v) in zip(self._caches, self._presents, cache._ort):
            binding.bind_ortvalue_input(key_in, k)
            binding.bind_ortvalue_input(value_in, v)
            binding.bind_ortvalue_output(key_out, k)
            binding.bind_ortvalue_output(value_out, v)
        for name in outputs:
            binding.bind_output(name)
        self._session.run_with_iobinding(binding)
        cache._length = total
        # outputs come back in binding order: the presents first, then what was asked for
        return [x.numpy() for x in binding.get_outputs()[2 * self.arch.n_layers:]]

    def forward_all(self, token_ids: list[int], cache: KVCache):
        """Run S new tokens at positions cache.length .. +S-1; append their K/V; return logits [S, vocab] float32."""
        return self._run(token_ids, cache, self._outputs)[0][0]

    @chunked
    @head_aware
    async def forward(self, token_ids: list[int], cache: KVCache, want: str = "logits", steps: int = 1,
                      ban: int | None = None):
        """The generate loop's forward: the last position's logits as a Python list, or with
        want="argmax" (and a graph with the head) a pocketlm.generate.Greedy — no logits fetched; with
        steps > 1 as well, a list of up to `steps` greedy steps' Greedy results (pocketlm.generate,
        "Greedy chunks"), as the page's worker runs them."""
        if want not in ("logits", "argmax"):
            raise ValueError(f"want must be 'logits' or 'argmax', got {want!r}")
        if want == "argmax" and self.has_head:
            if steps > 1 and (ban is None or self._head_size > 2):
                return greedy_steps(self._greedy, token_ids, cache, steps, ban)
            return self._greedy(token_ids, cache)
        return self.forward_all(token_ids, cache)[-1].tolist()

    def _greedy(self, token_ids: list[int], cache: KVCache) -> Greedy:
        out = self._run(token_ids, cache, self._head_outputs)
        # next_token int64 [1], logits_sum float32 [1], runner_up int64 [1] when the graph has it
        return Greedy(int(out[0][0]), float(out[1][0]), int(out[2][0]) if self._head_size > 2 else None)

    def __repr__(self) -> str:
        return f"NativeModel({self.manifest.name!r}, variant={self.variant_name!r}, file={self.variant.file!r})"
