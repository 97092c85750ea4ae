"""Import a karpathy/llama2.c checkpoint (model.bin + tokenizer.bin) into a pocketlm model folder.

    python -m export llama2c stories15M.bin [--tokenizer tokenizer.bin] [--name NAME] [--out web/models]
    import_checkpoint("stories15M.bin") -> "web/models/stories15M" (manifest task "text", fp32/int8/q4)

The three checkpoint formats (llama2.c export.py writes them; run.c reads v0, runq.c v2), little-endian:

    v0 (legacy)  7 int32: dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len (28 bytes);
                 vocab_size < 0 means an untied classifier, stored last. Then fp32, in this order:
                 tok_embeddings [V, D], per layer: attention_norm [D] (all layers), wq [H*Hd, D], wk [K*Hd, D],
                 wv [K*Hd, D], wo [D, H*Hd], ffn_norm [D], w1 [F, D], w2 [D, F], w3 [F, D] (each for all
                 layers before the next), norm [D], the old rotary tables freq_cis_real / _imag
                 [seq_len, Hd/2] each (skipped), then output [V, D] if untied.
    v1           uint32 magic 0x616b3432 ("ak42"), int32 version 1, the 7 int32, uint8 shared_classifier,
                 zero padding to 256 bytes. Then fp32: attention_norm (all layers), ffn_norm (all layers),
                 norm, tok_embeddings, wq, wk, wv, wo, w1, w2, w3 (each for all layers), output if not shared.
    v2 (Q8_0)    as v1 with version 2 and an int32 group_size after the shared byte. The norms are fp32 (same
                 order); every other tensor (v1's order from tok_embeddings on) is int8 values [numel] followed
                 by fp32 scales [numel / group_size]: value = int8 * scale of its group (groups run along
                 the flattened tensor).

Worked example: stories15M.bin (v0) has the header 288, 768, 6, 6, 6, 32000, 256: dim 288, 6 layers of 6
heads (Hd 48), 32000 tokens, positive vocab = tied classifier; its size must be
28 + 4 * (32000*288 + 6*(288 + 4*288*288 + 288 + 3*768*288) + 288 + 2*256*24) = 60 816 028 bytes.

Conversion to pocketlm (export/model.py names): w1 -> mlp.w_gate, w3 -> mlp.w_up, w2 -> mlp.w_down,
attention_norm -> attn_norm, ffn_norm -> mlp_norm; norm_eps 1e-5, rope_theta 10000 (run.c's constants).
llama2.c rotates *interleaved* pairs (2i, 2i+1) of each head; pocketlm rotates halves (i, i + Hd/2), so
the rows of wq and wk are permuted per head (evens first, then odds), as Hugging Face's Llama conversion
does; q.k is unchanged because both sides get the same permutation. The fp32 graph is then held to
`reference_logits`, run.c's forward written in numpy on the unconverted weights.
"""

from __future__ import annotations

import math
import os
import struct
import tempfile
import time
from dataclasses import dataclass

import numpy as np

from pocketlm.manifest import Architecture

DEFAULT_OUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "web", "models")
MAGIC = 0x616B3432  # "ak42"
VERSIONED_HEADER_BYTES = 256
LEGACY_HEADER = struct.Struct("<7i")  # dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len
FORMAT_NAMES = {0: "v0 (legacy fp32)", 1: "v1 (fp32)", 2: "v2 (Q8_0)"}
NORM_EPS, ROPE_THETA = 1e-5, 10000.0  # run.c's constants
SAMPLING = {"temperature": 1.0, "top_p": 0.9}  # run.c's defaults (max_new_tokens: its 256 steps, within seq_len)
LAYER_ROLES = ("attention.wq", "attention.wk", "attention.wv", "attention.wo",
               "feed_forward.w1", "feed_forward.w2", "feed_forward.w3")


class Llama2cError(ValueError):
    """A checkpoint that cannot be imported; the message says what is wrong with which file."""


@dataclass(frozen=True)
class Header:
    version: int  # 0 legacy, 1 fp32, 2 Q8_0
    dim: int
    hidden_dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    vocab_size: int  # always positive here (v0's sign is `shared_classifier`)
    seq_len: int
    shared_classifier: bool
    group_size: int = 0  # v2 only

    @property
    def header_bytes(self) -> int:
        return LEGACY_HEADER.size if self.version == 0 else VERSIONED_HEADER_BYTES

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    def describe(self) -> str:
        return (f"{FORMAT_NAMES[self.version]}{f', group {self.group_size}' if self.version == 2 else ''}: "
                f"dim {self.dim}, hidden {self.hidden_dim}, {self.n_layers} layers, {self.n_heads} heads "
                f"({self.n_kv_heads} kv), vocab {self.vocab_size}, seq_len {self.seq_len}, "
                f"{'shared' if self.shared_classifier else 'separate'} classifier")

    def architecture(self) -> Architecture:
        return Architecture(vocab_size=self.vocab_size, dim=self.dim, n_layers=self.n_layers, n_heads=self.n_heads,
                            n_kv_heads=self.n_kv_heads, hidden_dim=self.hidden_dim, max_seq_len=self.seq_len,
                            rope_theta=ROPE_THETA, norm_eps=NORM_EPS, tie_embeddings=self.shared_classifier)


@dataclass(frozen=True)
class Tensor:
    """One tensor of the file, or `copies` of it back to back (one per layer), in file order.

    name: llama2.c model.py name, "{i}" standing for the layer ("" = stored but skipped)."""

    name: str
    shape: tuple[int, ...]
    q80: bool = False  # int8 values + fp32 group scales (v2), per copy
    copies: int = 1

    @property
    def numel(self) -> int:  # of one copy
        return math.prod(self.shape)

    def nbytes(self, group_size: int) -> int:  # of one copy
        return self.numel + 4 * (self.numel // group_size) if self.q80 else 4 * self.numel


# ------------------------------------------------------------------------------------------ header


def read_header(path: str) -> Header:
    """The header of `path`, checked for a valid shape and for the file size it implies."""
    if not os.path.isfile(path):
        raise Llama2cError(f"checkpoint {path!r} not found")
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(VERSIONED_HEADER_BYTES)
    if len(head) < 4:
        raise Llama2cError(f"{path} is truncated: {size} bytes, not even a llama2.c header")
    if struct.unpack_from("<I", head)[0] == MAGIC:
        header = _versioned_header(path, head, size)
    else:
        header = _legacy_header(path, head, size)
    _check_size(path, header, size)
    return header


def _versioned_header(path: str, head: bytes, size: int) -> Header:
    if len(head) < VERSIONED_HEADER_BYTES:
        raise Llama2cError(f"{path} is truncated: {size} bytes, inside its {VERSIONED_HEADER_BYTES}-byte header")
    version = struct.unpack_from("<i", head, 4)[0]
    if version not in (1, 2):
        raise Llama2cError(f"{path} has llama2.c's magic but version {version}: this importer reads versions "
                           "0 (legacy), 1 (fp32) and 2 (Q8_0)")
    params = LEGACY_HEADER.unpack_from(head, 8)  # 7 int32 at bytes 8..35
    shared = head[36] != 0
    group_size = struct.unpack_from("<i", head, 37)[0] if version == 2 else 0
    header = Header(version, *params, shared_classifier=shared, group_size=group_size)
    reason = _shape_problem(header)
    if reason:
        raise Llama2cError(f"{path} (llama2.c {FORMAT_NAMES[version]}) has an invalid header: {reason}")
    return header


def _legacy_header(path: str, head: bytes, size: int) -> Header:
    if len(head) < LEGACY_HEADER.size:
        raise Llama2cError(f"{path} is truncated: {size} bytes, inside the {LEGACY_HEADER.size}-byte legacy header")
    dim, hidden, layers, heads, kv_heads, vocab, seq_len = LEGACY_HEADER.unpack_from(head)
    header = Header(0, dim, hidden, layers, heads, kv_heads, abs(vocab), seq_len, shared_classifier=vocab > 0)
    reason = _shape_problem(header)
    if reason:
        magic = struct.unpack_from("<I", head)[0]
        raise Llama2cError(f"{path} is not a llama2.c checkpoint: unknown magic 0x{magic:08x} (versions 1 and 2 "
                           f"start with 0x{MAGIC:08x} 'ak42'), and read as a legacy v0 header {reason}")
    return header


def _shape_problem(h: Header) -> str | None:
    """Why the header's numbers are not a model llama2.c could have written (None when they are)."""
    numbers = {"dim": h.dim, "hidden_dim": h.hidden_dim, "n_layers": h.n_layers, "n_heads": h.n_heads,
               "n_kv_heads": h.n_kv_heads, "vocab_size": h.vocab_size, "seq_len": h.seq_len}
    bad = [f"{k}={v}" for k, v in numbers.items() if v <= 0]
    if bad:
        return f"has non-positive sizes ({', '.join(bad)})"
    if h.dim % h.n_heads or h.n_heads % h.n_kv_heads or h.head_dim % 2:
        return (f"has dim {h.dim}, {h.n_heads} heads, {h.n_kv_heads} kv heads: dim must divide into heads of an "
                "even size, and heads into kv heads")
    if h.version == 2 and h.group_size <= 0:
        return f"has group_size {h.group_size}"
    return None


def _check_size(path: str, h: Header, size: int) -> None:
    """The file must be exactly as long as the header implies (a different size means another model/version)."""
    tensors = layout(h)
    uneven = [t.name.format(i=0) for t in tensors if t.q80 and t.numel % h.group_size]
    if uneven:
        raise Llama2cError(f"{path} has an invalid header: its group_size {h.group_size} does not divide the "
                           f"size of {uneven[0]} ({h.describe()})")
    expected = h.header_bytes + sum(t.copies * t.nbytes(h.group_size) for t in tensors)
    if size < expected:
        raise Llama2cError(f"{path} is truncated: its header ({h.describe()}) implies {expected} bytes, the file "
                           f"has {size}")
    if size > expected:
        raise Llama2cError(f"{path} does not match its header: {h.describe()} implies {expected} bytes, the file "
                           f"has {size} ({size - expected} more); wrong version or not a llama2.c checkpoint")


# ------------------------------------------------------------------------------------------ layout


def layout(h: Header) -> list[Tensor]:
    """Every tensor of the file in storage order (module docstring), with llama2.c names and shapes."""
    D, F, V = h.dim, h.hidden_dim, h.vocab_size
    q_rows, kv_rows = h.n_heads * h.head_dim, h.n_kv_heads * h.head_dim
    shapes = {"attention.wq": (q_rows, D), "attention.wk": (kv_rows, D), "attention.wv": (kv_rows, D),
              "attention.wo": (D, q_rows), "feed_forward.w1": (F, D), "feed_forward.w2": (D, F),
              "feed_forward.w3": (F, D), "attention_norm": (D,), "ffn_norm": (D,)}

    def per_layer(role: str, q80=False) -> Tensor:
        return Tensor(f"layers.{{i}}.{role}.weight", shapes[role], q80, copies=h.n_layers)

    if h.version == 0:
        rotary = Tensor("", (h.seq_len, h.head_dim // 2))  # freq_cis_real, then freq_cis_imag
        tensors = [Tensor("tok_embeddings.weight", (V, D)), per_layer("attention_norm"),
                   *[per_layer(role) for role in LAYER_ROLES[:4]], per_layer("ffn_norm"),
                   *[per_layer(role) for role in LAYER_ROLES[4:]], Tensor("norm.weight", (D,)), rotary, rotary]
        return tensors + ([] if h.shared_classifier else [Tensor("output.weight", (V, D))])
    q80 = h.version == 2
    tensors = [per_layer("attention_norm"), per_layer("ffn_norm"), Tensor("norm.weight", (D,)),
               Tensor("tok_embeddings.weight", (V, D), q80), *[per_layer(role, q80) for role in LAYER_ROLES]]
    return tensors + ([] if h.shared_classifier else [Tensor("output.weight", (V, D), q80)])


def read_weights(path: str, h: Header, log=print) -> dict[str, np.ndarray]:
    """llama2.c name -> float32 array (Q8_0 tensors dequantized); the shared classifier is not repeated."""
    weights, offset = {}, h.header_bytes
    data = np.memmap(path, dtype=np.uint8, mode="r")
    total, started, next_report = len(data), time.monotonic(), 0.25
    for t in layout(h):
        n = t.nbytes(h.group_size)
        for i in range(t.copies):
            if t.name:
                weights[t.name.format(i=i)] = _decode(data[offset:offset + n], t, h.group_size)
            offset += n
        if offset / total >= next_report:  # progress for big checkpoints: a line per quarter
            log(f"  read {offset / 1e6:.0f} of {total / 1e6:.0f} MB ({time.monotonic() - started:.1f} s)")
            while next_report <= offset / total:
                next_report += 0.25
    return weights


def _decode(raw: np.ndarray, t: Tensor, group_size: int) -> np.ndarray:
    """One copy's bytes -> float32 [t.shape]."""
    if not t.q80:
        return raw.view("<f4").astype(np.float32).reshape(t.shape)
    values = raw[:t.numel].view(np.int8).astype(np.float32)  # [numel]
    scales = raw[t.numel:].view("<f4")  # [numel / group_size]: one per group of consecutive values
    return (values.reshape(-1, group_size) * scales[:, None]).reshape(t.shape)


# ------------------------------------------------------------------------------------- conversion


def interleaved_to_rotate_half(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Rows [heads*Hd, D] of wq / wk: per head, the pairs (2i, 2i+1) become rows (i, i + Hd/2).

    >>> interleaved_to_rotate_half(np.arange(8)[:, None], n_heads=2).ravel().tolist()  # Hd 4: 0 1 2 3 | 4 5 6 7
    [0, 2, 1, 3, 4, 6, 5, 7]
    """
    rows, cols = w.shape
    half = rows // n_heads // 2
    return w.reshape(n_heads, half, 2, cols).transpose(0, 2, 1, 3).reshape(rows, cols)


def to_pocketlm(weights: dict[str, np.ndarray], h: Header) -> dict[str, np.ndarray]:
    """llama2.c weights -> export/model.py Transformer state (names, rotate-half q/k rows)."""
    state = {"tok_embeddings.weight": weights["tok_embeddings.weight"], "norm.weight": weights["norm.weight"]}
    if not h.shared_classifier:
        state["output.weight"] = weights["output.weight"]
    for i in range(h.n_layers):
        src, dst = f"layers.{i}.", f"layers.{i}."
        state[dst + "attn_norm.weight"] = weights[src + "attention_norm.weight"]
        state[dst + "attn.wq.weight"] = interleaved_to_rotate_half(weights[src + "attention.wq.weight"], h.n_heads)
        state[dst + "attn.wk.weight"] = interleaved_to_rotate_half(weights[src + "attention.wk.weight"], h.n_kv_heads)
        state[dst + "attn.wv.weight"] = weights[src + "attention.wv.weight"]
        state[dst + "attn.wo.weight"] = weights[src + "attention.wo.weight"]
        state[dst + "mlp_norm.weight"] = weights[src + "ffn_norm.weight"]
        state[dst + "mlp.w_gate.weight"] = weights[src + "feed_forward.w1.weight"]
        state[dst + "mlp.w_up.weight"] = weights[src + "feed_forward.w3.weight"]
        state[dst + "mlp.w_down.weight"] = weights[src + "feed_forward.w2.weight"]
    return state


def reference_logits(weights: dict[str, np.ndarray], h: Header, ids: list[int]) -> np.ndarray:
    """run.c's forward for `ids` at positions 0.. (float64, interleaved rotary): logits [S, V]."""
    S, H, K, Hd = len(ids), h.n_heads, h.n_kv_heads, h.head_dim

    def w(name):
        return weights[name].astype(np.float64)

    def rmsnorm(x, gain):  # [S, D]
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + NORM_EPS) * gain

    angles = np.arange(S)[:, None] * ROPE_THETA ** (-np.arange(0, Hd, 2) / Hd)  # [S, Hd/2]
    cos, sin = np.cos(angles)[:, None, :], np.sin(angles)[:, None, :]  # [S, 1, Hd/2]

    def rotate(t):  # [S, heads, Hd], pairs (2i, 2i+1)
        out = np.empty_like(t)
        out[..., 0::2] = t[..., 0::2] * cos - t[..., 1::2] * sin
        out[..., 1::2] = t[..., 0::2] * sin + t[..., 1::2] * cos
        return out

    hidden = np.triu(np.full((S, S), -np.inf), 1)  # [S, S]: a query never sees later keys
    x = w("tok_embeddings.weight")[ids]  # [S, D]
    for i in range(h.n_layers):
        p = f"layers.{i}."
        a = rmsnorm(x, w(p + "attention_norm.weight"))
        q = rotate((a @ w(p + "attention.wq.weight").T).reshape(S, H, Hd))
        k = np.repeat(rotate((a @ w(p + "attention.wk.weight").T).reshape(S, K, Hd)), H // K, axis=1)  # [S, H, Hd]
        v = np.repeat((a @ w(p + "attention.wv.weight").T).reshape(S, K, Hd), H // K, axis=1)  # head h: kv h // (H/K)
        scores = np.einsum("shd,thd->hst", q, k) / np.sqrt(Hd) + hidden  # [H, S, S]
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        x = x + np.einsum("hst,thd->shd", probs, v).reshape(S, H * Hd) @ w(p + "attention.wo.weight").T
        m = rmsnorm(x, w(p + "ffn_norm.weight"))
        gate, up = m @ w(p + "feed_forward.w1.weight").T, m @ w(p + "feed_forward.w3.weight").T  # [S, F]
        x = x + (gate / (1 + np.exp(-gate)) * up) @ w(p + "feed_forward.w2.weight").T
    classifier = "tok_embeddings.weight" if h.shared_classifier else "output.weight"
    return rmsnorm(x, w("norm.weight")) @ w(classifier).T  # [S, V]


# ------------------------------------------------------------------------------------------ import


def import_checkpoint(model_path: str, tokenizer_path: str | None = None, out_root: str = DEFAULT_OUT,
                      name: str | None = None, variants: tuple[str, ...] = ("fp32", "int8", "q4"), log=print) -> str:
    """Write <out_root>/<name>/ from a llama2.c checkpoint; returns the folder. Errors: Llama2cError /
    TokenizerBinError (ValueError), ExportError. A failure never replaces an existing folder."""
    from export import llama2c_tokenizer, onnx_graph, pipeline  # torch and onnx only when importing for real
    from pocketlm.tasks import text as text_task

    name = name or os.path.splitext(os.path.basename(model_path))[0]
    if not name or name != os.path.basename(name) or name.startswith("."):
        raise Llama2cError(f"model name {name!r} must be a plain folder name (--name)")
    unknown = [v for v in variants if v not in pipeline.VARIANTS]
    if unknown or not variants:
        raise Llama2cError(f"unknown variants {unknown or list(variants)}: choose from {', '.join(pipeline.VARIANTS)}")
    tokenizer_path = tokenizer_path or os.path.join(os.path.dirname(model_path), "tokenizer.bin")
    header = read_header(model_path)
    onnx_graph.check_supported(header.architecture())
    llama2c_tokenizer.require_file(tokenizer_path)
    log(f"{model_path}: llama2.c {header.describe()}")
    with tempfile.TemporaryDirectory(prefix="llama2c-") as work:
        log("step 1/4: tokenizer")
        tok_json = os.path.join(work, "tokenizer.json")
        info = llama2c_tokenizer.convert(tokenizer_path, header.vocab_size, tok_json)
        llama2c_tokenizer.verify(tok_json, header.vocab_size)
        log(f"  {info['tokens']} tokens, {info['merges']} merges derived from the scores")
        log("step 2/4: weights")
        weights = read_weights(model_path, header, log)
        probe = pipeline.probe_ids(header.architecture())
        expected = reference_logits(weights, header, probe).astype(np.float32)  # [S, V]
        # float32 rounding grows with the logits' size: allow 1e-5 of the largest, at least the usual 1e-3
        tolerance = max(pipeline.FP32_TOLERANCE, 1e-5 * float(np.abs(expected).max()))
        return pipeline.write_model_folder(
            os.path.join(out_root, name), to_pocketlm(weights, header), header.architecture(), tok_json,
            (probe, expected), name=name, task="text", prompt={"format": text_task.FORMAT},
            sampling={**SAMPLING, "max_new_tokens": min(256, header.seq_len)},
            training=provenance(model_path, tokenizer_path, header, weights), variants=tuple(variants),
            fp32_tolerance=tolerance, log=log,
            stages=("step 3/4: ONNX variants (the fp32 graph is checked against run.c's forward in numpy)",
                    "step 4/4: packaging"))


def provenance(model_path: str, tokenizer_path: str, h: Header, weights: dict[str, np.ndarray]) -> dict:
    """The manifest's informational `training` entry: where the weights came from."""
    from pocketlm.manifest import sha256_file

    info = {"source": "llama2.c", "checkpoint": os.path.basename(model_path),
            "checkpoint_format": FORMAT_NAMES[h.version], "checkpoint_sha256": sha256_file(model_path),
            "tokenizer_bin_sha256": sha256_file(tokenizer_path), "shared_classifier": h.shared_classifier,
            "parameters": int(sum(a.size for a in weights.values()))}
    if h.version == 2:
        info["q8_0_group_size"] = h.group_size
    return info
