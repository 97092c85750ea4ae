"""manifest.json: the one definition of a pocketlm model folder.

A model folder holds manifest.json, tokenizer.json and one ONNX file per variant.
The exporter writes it with `Manifest.to_json()`, the CLI, the evals and the browser
read it with `load_manifest()`, which validates everything it can before any
inference starts, and raises `ManifestError` naming what was wrong and how to fix it.

Example (abridged):

    {"format_version": 2, "name": "sql-autocomplete", "task": "sql",
     "architecture": {"vocab_size": 2048, "dim": 256, ...},
     "tokenizer": {"file": "tokenizer.json", "sha256": "…", "vocab_size": 2048,
                   "bos_id": 1, "eos_id": 2, "pad_id": 0},
     "graph": {...the decode-graph contract, see GraphContract...},
     "variants": {"fp32": {"file": "model.onnx", "sha256": "…", "bytes": 123,
                           "quantization": "none", "session_config": {}}, ...},
     "default_variant": "fp32", "prompt": {...}, "sampling": {...}, "training": {...}}
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Any

# 2: the decode graph attends over the caller's whole cache buffer, which it writes in place
# (GraphContract); version 1's graph returned the new K/V rows for the caller to append.
FORMAT_VERSION = 2
MANIFEST_FILE = "manifest.json"


class ManifestError(ValueError):
    """A model folder or manifest that cannot be used; the message says why and how to fix it."""


@dataclass(frozen=True)
class Architecture:
    """Llama-style decoder: RMSNorm, rotary positions (rotate-half), SwiGLU MLP, tied embeddings."""

    vocab_size: int = 2048  # tokenizer size, including special tokens
    dim: int = 256  # residual stream width
    n_layers: int = 4
    n_heads: int = 8  # query heads; head_dim = dim // n_heads
    n_kv_heads: int = 8  # key/value heads (n_heads % n_kv_heads == 0: grouped-query attention)
    hidden_dim: int = 768  # SwiGLU inner width
    max_seq_len: int = 512  # context length: positions 0 .. max_seq_len-1
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = True  # lm head = token embedding matrix (transposed)

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    def validate(self) -> None:
        for name in ("vocab_size", "dim", "n_layers", "n_heads", "n_kv_heads", "hidden_dim", "max_seq_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ManifestError(f"architecture.{name} must be a positive integer, got {value!r}")
        if self.dim % self.n_heads:
            raise ManifestError(f"architecture.dim ({self.dim}) must be divisible by n_heads ({self.n_heads})")
        if self.n_heads % self.n_kv_heads:
            raise ManifestError(
                f"architecture.n_heads ({self.n_heads}) must be divisible by n_kv_heads ({self.n_kv_heads})"
            )
        if self.head_dim % 2:
            raise ManifestError(f"architecture head_dim ({self.head_dim}) must be even for rotary embeddings")


@dataclass(frozen=True)
class GraphContract:
    """Names and layout of the decode graph's inputs and outputs (`{i}` is the layer index).

    Inputs:  input_ids int64 [1, S]: S new tokens at positions P .. P+S-1 (P = cached positions);
             seqlens_k int32 [1] = P+S-1 and total_sequence_length int32 [] = P+S (onnxruntime's
             GroupQueryAttention inputs: the positions and the causal mask come from them);
             cache.{i}.key / cache.{i}.value float32 [1, n_kv_heads, max_seq_len, head_dim] — the
             caller's preallocated cache, whole: rows 0 .. P-1 are valid, the rest is ignored.
    Outputs: logits float32 [1, S, vocab] (every position: the last one for decoding, all for evals);
             present.{i}.key / present.{i}.value, the same shape: the cache with the S new rows
             (keys rotated) written at P .. P+S-1. A runtime binds each present output to its cache
             input's own memory (onnxruntime IO binding, or a preallocated output tensor in the page),
             and GroupQueryAttention then writes only the new rows, in place: no per-step copy of the
             past (measured, README "The model folder and the decode graph"). Unbound, they are
             copies, still correct;
             the greedy head (optional): next_token int64 [1] = ArgMax of the LAST position's logits
             (ties -> lowest id, as pocketlm.sampler.argmax) and logits_sum float32 [1] = the sum of
             that row (not finite <=> a NaN/inf logit: the runtime then re-runs for the row and the
             sampler raises its usual error). Plain greedy decoding fetches these two instead of
             `logits`, so Python never scans (and onnxruntime-web never copies) the whole vocabulary;
             with it (optional) runner_up int64 [1] = the second-best id of that row (TopK order: ties
             -> lower id first), the greedy token once the best one is banned (tasks/text.py ban_token).

    The head exists iff `next_token` and `logits_sum` are both names (both None: no head). New
    exports record them (the defaults below); a manifest written before the head existed has no
    such keys, and manifest_from_dict reads a missing key as None, so those models keep the logits
    path unchanged (a missing key is not the default here, on purpose). Likewise `runner_up`: a head
    written before it has none, and a banned best token then costs a second run for the row.
    """

    input_ids: str = "input_ids"
    seqlens_k: str = "seqlens_k"
    total_length: str = "total_sequence_length"
    cache_key: str = "cache.{i}.key"
    cache_value: str = "cache.{i}.value"
    logits: str = "logits"
    present_key: str = "present.{i}.key"
    present_value: str = "present.{i}.value"
    cache_layout: str = "whole buffer [1, n_kv_heads, max_seq_len, head_dim], written in place"
    logits_positions: str = "all"
    next_token: str | None = "next_token"
    logits_sum: str | None = "logits_sum"
    runner_up: str | None = "runner_up"

    @property
    def has_head(self) -> bool:
        """Whether the graph has the greedy head (next_token + logits_sum), see the class docstring."""
        return self.next_token is not None and self.logits_sum is not None

    @property
    def has_runner_up(self) -> bool:
        """Whether the head also answers the second-best token (runner_up), see the class docstring."""
        return self.has_head and self.runner_up is not None


@dataclass(frozen=True)
class TokenizerInfo:
    file: str
    sha256: str
    vocab_size: int
    bos_id: int
    eos_id: int
    pad_id: int


@dataclass(frozen=True)
class Variant:
    file: str
    sha256: str
    bytes: int
    quantization: str  # "none" | "int8-dynamic" | "q4-qdq-block32" ...
    # onnxruntime session config entries the file is made to run with, applied by every runtime
    # (pocketlm.native, web/src/engine.mjs); q4: {"session.disable_quant_qdq": "1"} (export/quantize.py)
    session_config: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Manifest:
    name: str
    task: str
    architecture: Architecture
    tokenizer: TokenizerInfo
    variants: dict[str, Variant]
    default_variant: str
    graph: GraphContract = field(default_factory=GraphContract)
    prompt: dict[str, Any] = field(default_factory=dict)  # task prompt format, see pocketlm.tasks
    sampling: dict[str, Any] = field(default_factory=dict)  # default sampling options
    training: dict[str, Any] = field(default_factory=dict)  # informational: data, steps, losses
    format_version: int = FORMAT_VERSION

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n"

    def require_prompt_format(self, fmt: str, what: str, default: str | None = None) -> None:
        """Refuse a model whose prompt format is not `fmt` (`default`: what a manifest without one means)."""
        got = self.prompt.get("format", default)
        if got != fmt:
            raise ValueError(f"model {self.name!r} uses prompt format {got!r}, not {fmt!r}: it is not {what}")

    def variant(self, name: str | None = None) -> Variant:
        name = name or self.default_variant
        if name not in self.variants:
            known = ", ".join(sorted(self.variants))
            raise ManifestError(f"model {self.name!r} has no variant {name!r}; it has: {known}")
        return self.variants[name]


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _build(cls, data: Any, where: str):
    """Build a frozen dataclass from a dict, rejecting unknown or missing keys by name."""
    if not isinstance(data, dict):
        raise ManifestError(f"{where} must be a JSON object, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ManifestError(f"{where} has unknown keys {unknown}; expected some of {sorted(names)}")
    required = {
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    missing = sorted(required - set(data))
    if missing:
        raise ManifestError(f"{where} is missing keys {missing}")
    return cls(**data)


def manifest_from_dict(data: Any) -> Manifest:
    """Parse and check a manifest's structure (no file access)."""
    if not isinstance(data, dict):
        raise ManifestError("manifest.json must hold a JSON object")
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise ManifestError(
            f"manifest format_version is {version!r}, this pocketlm reads version {FORMAT_VERSION}; "
            "re-export the model with this version of pocketlm"
        )
    data = dict(data)
    data["architecture"] = _build(Architecture, data.get("architecture"), "manifest.architecture")
    data["architecture"].validate()
    data["tokenizer"] = _build(TokenizerInfo, data.get("tokenizer"), "manifest.tokenizer")
    graph = data.get("graph", {})
    if isinstance(graph, dict):  # written before the greedy head: no head (GraphContract docstring)
        graph = {"next_token": None, "logits_sum": None, "runner_up": None, **graph}
    data["graph"] = _build(GraphContract, graph, "manifest.graph")
    head = (data["graph"].next_token, data["graph"].logits_sum)
    if any(not (x is None or (isinstance(x, str) and x)) for x in head) or (head[0] is None) != (head[1] is None):
        raise ManifestError(f"manifest.graph next_token / logits_sum must both be output names or both null, "
                            f"got {head!r}; re-export the model")
    runner_up = data["graph"].runner_up
    if runner_up is not None and not (isinstance(runner_up, str) and runner_up):  # unused without the head
        raise ManifestError(f"manifest.graph runner_up must be null or an output name, got {runner_up!r}; "
                            f"re-export the model")
    variants = data.get("variants")
    if not isinstance(variants, dict) or not variants:
        raise ManifestError("manifest.variants must be a non-empty object of variant name -> file")
    data["variants"] = {k: _build(Variant, v, f"manifest.variants.{k}") for k, v in variants.items()}
    for k, v in data["variants"].items():
        config = v.session_config
        if not isinstance(config, dict) or not all(isinstance(x, str) and x and isinstance(y, str)
                                                   for x, y in config.items()):
            raise ManifestError(f"manifest.variants.{k}.session_config must map option names to strings, "
                                f"got {config!r}; re-export the model")
    manifest = _build(Manifest, data, "manifest")
    _check_consistency(manifest)
    return manifest


def _check_consistency(m: Manifest) -> None:
    tok, arch = m.tokenizer, m.architecture
    if tok.vocab_size != arch.vocab_size:
        raise ManifestError(
            f"tokenizer.vocab_size ({tok.vocab_size}) != architecture.vocab_size ({arch.vocab_size}); "
            "the model and tokenizer do not belong together"
        )
    for name in ("bos_id", "eos_id", "pad_id"):
        value = getattr(tok, name)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < tok.vocab_size:
            raise ManifestError(f"tokenizer.{name} = {value!r} is not a token id in [0, {tok.vocab_size})")
    if m.default_variant not in m.variants:
        raise ManifestError(f"default_variant {m.default_variant!r} is not one of {sorted(m.variants)}")


def load_manifest(model_dir: str, check_files: bool = True) -> Manifest:
    """Read `model_dir/manifest.json`, validate it and (by default) every file's size and sha256.

    For example `load_manifest("web/models/sql-autocomplete").variant("int8").file` is "model.int8.onnx".
    """
    path = os.path.join(model_dir, MANIFEST_FILE)
    if not os.path.isfile(path):
        raise ManifestError(f"no {MANIFEST_FILE} in {model_dir!r}: is this a pocketlm model folder?")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ManifestError(f"{path} is not valid JSON ({e}); re-export the model") from None
    manifest = manifest_from_dict(data)
    if check_files:
        check_file(model_dir, manifest.tokenizer.file, manifest.tokenizer.sha256, "tokenizer")
        for name, v in manifest.variants.items():
            check_file(model_dir, v.file, v.sha256, f"variant {name!r}", size=v.bytes)
    return manifest


def check_file(model_dir: str, file: str, sha256: str, role: str, size: int | None = None) -> None:
    """Raise ManifestError unless `model_dir/file` exists with the recorded size and sha256."""
    if os.path.basename(file) != file or file in ("", ".", ".."):
        raise ManifestError(f"{role} file name {file!r} must be a plain file name inside the model folder")
    path = os.path.join(model_dir, file)
    if not os.path.isfile(path):
        raise ManifestError(f"{role} file {file!r} is missing from {model_dir!r}; re-export the model")
    actual_size = os.path.getsize(path)
    if size is not None and actual_size != size:  # the size error first, without hashing a wrong file
        check_digest(role, file, "", sha256, actual_size, size)
    check_digest(role, file, sha256_file(path), sha256)


def check_digest(role: str, file: str, actual: str, expected: str,
                 actual_size: int | None = None, expected_size: int | None = None) -> None:
    """Raise ManifestError unless a file's size and sha256 (hex) are what the manifest records.

    The one place that decides whether model bytes may be used, natively (check_file) and in the
    browser (the page computes the digest, pocketlm.session compares it here).

    >>> try:
    ...     check_digest("variant 'fp32'", "model.onnx", "ab" * 32, "cd" * 32)
    ... except ManifestError as e:
    ...     print(e)
    variant 'fp32' file 'model.onnx' has sha256 abababababab…, the manifest says cdcdcdcdcdcd…: the file is corrupt or was modified; re-export the model
    """
    if expected_size is not None and actual_size != expected_size:
        raise ManifestError(
            f"{role} file {file!r} is {actual_size} bytes, the manifest says {expected_size}: "
            "the file is truncated or replaced; re-export the model"
        )
    if actual != expected:
        raise ManifestError(
            f"{role} file {file!r} has sha256 {actual[:12]}…, the manifest says {expected[:12]}…: "
            "the file is corrupt or was modified; re-export the model"
        )
