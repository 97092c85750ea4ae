"""pocketlm's decode graph, written node by node from the weights (not traced).

One graph serves prefill (S new tokens, P = 0), chunked prefill and decoding (S = 1), with the
caller owning the KV cache (pocketlm.manifest.GraphContract; DESIGN.md "ONNX graphs"):

    inputs   input_ids       int64   [1, S]
             seqlens_k       int32   [1]             P+S-1
             total_sequence_length int32 []          P+S
             cache.{i}.key   float32 [1, K, M, Hd]   the caller's whole buffer; rows 0 .. P-1 valid
             cache.{i}.value float32 [1, K, M, Hd]
    outputs  logits          float32 [1, S, V]       every position
             next_token      int64   [1]             ArgMax of the last position's logits (ties -> lowest id)
             logits_sum      float32 [1]             sum of that row (not finite <=> a NaN/inf logit)
             runner_up       int64   [1]             the row's second-best id (TopK k=2: ties -> lower id)
             present.{i}.key float32 [1, K, M, Hd]   the buffer with rows P .. P+S-1 written (keys rotated)
             present.{i}.value float32 [1, K, M, Hd]
Attention is onnxruntime's GroupQueryAttention (com.microsoft; rotary, causal mask and grouped heads
inside). A runtime binds present.{i}.* to the memory of cache.{i}.*, and the op then writes the S new
rows in place and attends over rows 0 .. P+S-1 of the buffer: nothing of the past is copied per step.
The plain-op graph before it (Concat of past and new rows, Transposes, a mask) spent most of a small
model's growth with context there (README, "The model folder and the decode graph").
The greedy head (next_token, logits_sum) lets plain greedy decoding fetch two numbers instead of V
logits (pocketlm.generate); it is built when the contract names it (GraphContract.has_head), and with
runner_up a banned best token (ignore_eos) needs no second run (tasks/text.py ban_token).

Shapes: S new positions, P cached positions, D dim, H heads, K kv heads, Hd head dim, F hidden dim,
V vocab, M max_seq_len. Activations are 2-D [S, D] between layers.

What is folded into the stored weights (exact up to float rounding, checked against
export/model.py by tests/test_onnx_graph.py):
  * q, k, v projections are one [D, (H+2K)*Hd] MatMul; gate and up one [D, 2F] MatMul;
  * RMSNorm is x / sqrt(sum(x^2) + D*eps), and its gain times sqrt(D) is folded into the rows of
    the MatMul that follows (the final norm keeps an explicit Mul: the lm head is tied);
  * the attention scale 1/sqrt(Hd) is folded into the q columns (rotary is linear, so it commutes),
    and GroupQueryAttention runs with scale 1.
The token embedding [V, D] is stored once: Gather for the input and Gemm(transB=1) for the tied
lm head (no Transpose node, no second copy; Gemm pre-packs it at session start).
export/quantize.py rewrites that pair for the int8 / q4 variants.
An untied classifier (Architecture.tie_embeddings False, state key "output.weight" [V, D]) is a plain
MatMul with its own [D, V] initializer (LM_HEAD_UNTIED), named lm_head too: export/quantize.py's
embedding sharing looks for the tied Gemm and refuses this graph rather than tie it by mistake.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from pocketlm.manifest import Architecture, GraphContract

OPSET = 17
MS_DOMAIN = "com.microsoft"  # GroupQueryAttention's domain (onnxruntime's contrib ops, in onnxruntime-web too)
PRODUCER = "pocketlm.export.onnx_graph"
EMBEDDING = "tok_embeddings.weight"  # [V, D] — export/quantize.py looks it up by this name
LM_HEAD_NODE = "lm_head"  # the Gemm(transB=1) that reads EMBEDDING (tied), or the untied MatMul
LM_HEAD_UNTIED = "lm_head.weight"  # [D, V]: the untied classifier, transposed


def _np(t) -> np.ndarray:
    if hasattr(t, "detach"):
        t = t.detach().cpu().float().numpy()
    return np.ascontiguousarray(np.asarray(t, dtype=np.float32))


def rope_tables(arch: Architecture) -> tuple[np.ndarray, np.ndarray]:
    """cos, sin [M, Hd/2] float32, computed exactly as export/model.py rope_tables (float64 angles)."""
    half = arch.head_dim // 2
    inv_freq = 1.0 / (arch.rope_theta ** (np.arange(0, half, dtype=np.float64) / half))
    angles = np.outer(np.arange(arch.max_seq_len, dtype=np.float64), inv_freq)
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)


class _Builder:
    """Collects nodes and initializers; names every node after its (first) output."""

    def __init__(self):
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def init(self, name: str, array) -> str:
        array = np.asarray(array)
        if array.dtype == np.float64:  # folded gains are computed in float64, stored as float32
            array = array.astype(np.float32)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def const(self, name: str, values, dtype=np.int64) -> str:
        return self.init(name, np.asarray(values, dtype=dtype))

    def op(self, op_type: str, inputs: list[str], outputs: str | list[str], domain: str | None = None,
           **attrs) -> str | list[str]:
        outs = [outputs] if isinstance(outputs, str) else list(outputs)
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=outs[0], domain=domain, **attrs))
        return outputs


# onnxruntime's GroupQueryAttention (its CPU kernel, which WebAssembly runs too) takes only head sizes that are
# multiples of 16; another one fails at the graph's first run ("head_size shall be a multiple of 16").
GQA_HEAD_MULTIPLE = 16


class UnsupportedArchitecture(ValueError):
    pass


def check_supported(arch: Architecture) -> None:
    """Refuse, before any training or conversion, an architecture the decode graph cannot run.

    >>> a = Architecture(vocab_size=512, dim=64, n_layers=5, n_heads=8, n_kv_heads=4, hidden_dim=172, max_seq_len=512)
    >>> try:
    ...     check_supported(a)  # llama2.c's stories260K: 8 dimensions per head
    ... except UnsupportedArchitecture as e:
    ...     print(str(e)[:60])
    head_dim 8 (dim 64 / 8 heads) is not a multiple of 16: the d
    """
    arch.validate()
    if arch.head_dim % GQA_HEAD_MULTIPLE:
        raise UnsupportedArchitecture(
            f"head_dim {arch.head_dim} (dim {arch.dim} / {arch.n_heads} heads) is not a multiple of "
            f"{GQA_HEAD_MULTIPLE}: the decode graph's attention (onnxruntime's GroupQueryAttention) runs only "
            f"head sizes 16, 32, 48, 64, ...; choose dim and n_heads to match (llama2.c's stories260K, "
            f"8 per head, cannot be run)")


def build_decode_graph(
    state_dict: dict, arch: Architecture, contract: GraphContract = GraphContract()
) -> onnx.ModelProto:
    """The decode graph for `state_dict` (export/model.py Transformer names; torch tensors or numpy)."""
    check_supported(arch)
    sd = {k: _np(v) for k, v in state_dict.items() if not k.startswith("rope_")}
    per_layer = ("attn_norm.weight", "attn.wq.weight", "attn.wk.weight", "attn.wv.weight", "attn.wo.weight",
                 "mlp_norm.weight", "mlp.w_gate.weight", "mlp.w_up.weight", "mlp.w_down.weight")
    wanted = ["tok_embeddings.weight", "norm.weight"] + [
        f"layers.{i}.{name}" for i in range(arch.n_layers) for name in per_layer]
    if not arch.tie_embeddings:
        wanted.append("output.weight")
    missing = [k for k in wanted if k not in sd]
    if missing:
        raise ValueError(f"state_dict lacks {missing[:4]}{' ...' if len(missing) > 4 else ''} "
                         "(expected export/model.py Transformer names)")
    D, H, K, Hd, F, V, M = (arch.dim, arch.n_heads, arch.n_kv_heads, arch.head_dim,
                            arch.hidden_dim, arch.vocab_size, arch.max_seq_len)
    g = _Builder()

    emb = sd["tok_embeddings.weight"]  # [V, D]
    if emb.shape != (V, D):
        raise ValueError(f"tok_embeddings.weight is {emb.shape}, the architecture says {(V, D)}")
    g.init(EMBEDDING, emb)
    cos, sin = rope_tables(arch)
    g.init("rope.cos", cos)  # [M, Hd/2]: GroupQueryAttention's cos_cache (rotate-half: rotary_interleaved 0)
    g.init("rope.sin", sin)  # [M, Hd/2]
    g.init("norm.eps", np.array([D * arch.norm_eps], np.float32))  # [1]
    flat, axis0 = g.const("shape.flat", [-1]), g.const("axis0", [0])

    def rms(x: str, out: str) -> str:
        """x [S, D] -> x / sqrt(sum(x^2) + D*eps) [S, D]; the caller folds gain*sqrt(D) into weights."""
        ss = g.op("ReduceSumSquare", [x], out + ".ss", axes=[-1], keepdims=1)  # [S, 1]
        rt = g.op("Sqrt", [g.op("Add", [ss, "norm.eps"], out + ".ss_eps")], out + ".rms")  # [S, 1]
        return g.op("Div", [x, rt], out)  # [S, D]

    ids = g.op("Reshape", [contract.input_ids, flat], "ids")  # [S]
    x = g.op("Gather", [EMBEDDING, ids], "embed")  # [S, D]
    ctx_shape = g.const("shape.ctx", [-1, H * Hd])

    wq_scale = 1.0 / np.sqrt(Hd)
    for i in range(arch.n_layers):
        p, L = f"layers.{i}.", f"l{i}."

        # ---- attention ----
        gain = sd[p + "attn_norm.weight"][:, None] * np.sqrt(D)  # [D, 1]
        wqkv = np.concatenate([sd[p + "attn.wq.weight"].T * wq_scale,  # [D, H*Hd]
                               sd[p + "attn.wk.weight"].T,  # [D, K*Hd]
                               sd[p + "attn.wv.weight"].T], axis=1) * gain  # [D, K*Hd]
        g.init(p + "wqkv", wqkv)  # [D, (H+2K)*Hd]
        h = rms(x, L + "attn_norm")  # [S, D]
        qkv = g.op("MatMul", [h, p + "wqkv"], L + "qkv")  # [S, (H+2K)*Hd]
        qkv = g.op("Unsqueeze", [qkv, axis0], L + "qkv3")  # [1, S, (H+2K)*Hd]: packed q, k, v
        ctx = g.op("GroupQueryAttention",
                   [qkv, "", "", contract.cache_key.format(i=i), contract.cache_value.format(i=i),
                    contract.seqlens_k, contract.total_length, "rope.cos", "rope.sin"],
                   [L + "attn", contract.present_key.format(i=i), contract.present_value.format(i=i)],
                   domain=MS_DOMAIN, num_heads=H, kv_num_heads=K, scale=1.0, do_rotary=1,
                   rotary_interleaved=0)[0]  # [1, S, H*Hd]
        ctx = g.op("Reshape", [ctx, ctx_shape], L + "ctx2")  # [S, H*Hd]
        g.init(p + "wo", sd[p + "attn.wo.weight"].T)  # [H*Hd, D]
        x = g.op("Add", [x, g.op("MatMul", [ctx, p + "wo"], L + "attn_out")], L + "x_attn")  # [S, D]

        # ---- SwiGLU MLP ----
        gain = sd[p + "mlp_norm.weight"][:, None] * np.sqrt(D)  # [D, 1]
        g.init(p + "w_gate_up", np.concatenate([sd[p + "mlp.w_gate.weight"].T,  # [D, F]
                                                 sd[p + "mlp.w_up.weight"].T], axis=1) * gain)  # [D, 2F]
        h = rms(x, L + "mlp_norm")  # [S, D]
        gu = g.op("MatMul", [h, p + "w_gate_up"], L + "gate_up")  # [S, 2F]
        gate, up = g.op("Split", [gu, g.const(L + "split.gu", [F, F])], [L + "gate", L + "up"], axis=1)
        silu = g.op("Mul", [gate, g.op("Sigmoid", [gate], L + "sigmoid")], L + "silu")  # [S, F]
        act = g.op("Mul", [silu, up], L + "act")  # [S, F]
        g.init(p + "w_down", sd[p + "mlp.w_down.weight"].T)  # [F, D]
        x = g.op("Add", [x, g.op("MatMul", [act, p + "w_down"], L + "mlp_out")], L + "x_mlp")  # [S, D]

    # ---- final norm and lm head (tied: the embedding; untied: its own classifier) ----
    g.init("norm.gain", sd["norm.weight"] * np.float32(np.sqrt(D)))  # [D]
    h = g.op("Mul", [rms(x, "final_norm"), "norm.gain"], "final_norm.out")  # [S, D]
    if arch.tie_embeddings:
        logits = g.op("Gemm", [h, EMBEDDING], LM_HEAD_NODE, transB=1)  # [S, V] = h @ E^T
    else:
        if sd["output.weight"].shape != (V, D):
            raise ValueError(f"output.weight is {sd['output.weight'].shape}, the architecture says {(V, D)}")
        g.init(LM_HEAD_UNTIED, sd["output.weight"].T)  # [D, V]
        logits = g.op("MatMul", [h, LM_HEAD_UNTIED], LM_HEAD_NODE)  # [S, V]
    g.op("Unsqueeze", [logits, axis0], contract.logits)  # [1, S, V]
    if contract.has_head:  # greedy head over the last position (the one decoding continues from)
        g.inits.append(numpy_helper.from_array(np.array(-1, np.int64), "head.last_row"))  # scalar: drops the axis
        last = g.op("Gather", [logits, "head.last_row"], "head.last", axis=0)  # [V]
        if contract.has_runner_up:  # one TopK: its order puts the lower id first on a tie, as ArgMax
            best = g.op("TopK", [last, g.const("head.k", [2])], ["head.top_values", "head.top_ids"], axis=0)[1]  # [2]
            g.op("Split", [best, g.const("head.split", [1, 1])], [contract.next_token, contract.runner_up], axis=0)
        else:
            g.op("ArgMax", [last], contract.next_token, axis=0, keepdims=1, select_last_index=0)  # [1] int64
        g.op("ReduceSum", [last], contract.logits_sum, keepdims=1)  # [1]: NaN/inf anywhere -> not finite

    f32, i64, i32 = TensorProto.FLOAT, TensorProto.INT64, TensorProto.INT32
    inputs = [helper.make_tensor_value_info(contract.input_ids, i64, [1, "S"]),
              helper.make_tensor_value_info(contract.seqlens_k, i32, [1]),
              helper.make_tensor_value_info(contract.total_length, i32, [])]
    outputs = [helper.make_tensor_value_info(contract.logits, f32, [1, "S", V])]
    if contract.has_head:
        outputs += [helper.make_tensor_value_info(contract.next_token, i64, [1]),
                    helper.make_tensor_value_info(contract.logits_sum, f32, [1])]
    if contract.has_runner_up:
        outputs.append(helper.make_tensor_value_info(contract.runner_up, i64, [1]))
    for i in range(arch.n_layers):
        for name in (contract.cache_key, contract.cache_value):
            inputs.append(helper.make_tensor_value_info(name.format(i=i), f32, [1, K, M, Hd]))
        for name in (contract.present_key, contract.present_value):
            outputs.append(helper.make_tensor_value_info(name.format(i=i), f32, [1, K, M, Hd]))
    # onnx's shape inference does not know the contrib op: its output's type is written down, so that
    # tools downstream (onnxruntime's quantizers) still type every tensor after it
    typed = [helper.make_tensor_value_info(f"l{i}.attn", f32, [1, "S", H * Hd]) for i in range(arch.n_layers)]
    graph = helper.make_graph(g.nodes, "pocketlm_decode", inputs, outputs, g.inits, value_info=typed)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(MS_DOMAIN, 1)],
                              producer_name=PRODUCER, producer_version="1")
    model.ir_version = 8  # onnx 1.13+ / onnxruntime >= 1.14 read it; opset 17 needs >= 8
    return model


def empty_cache(arch: Architecture) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per layer (keys, values) zeros [1, K, M, Hd]: a cache for the graph's cache.{i}.* inputs."""
    shape = (1, arch.n_kv_heads, arch.max_seq_len, arch.head_dim)
    return [(np.zeros(shape, np.float32), np.zeros(shape, np.float32)) for _ in range(arch.n_layers)]


def graph_feeds(ids: list[int], cache: list, start: int = 0, contract: GraphContract = GraphContract()) -> dict:
    """The decode graph's inputs for `ids` at positions start .. start+S-1 over `cache` (per layer (keys,
    values) [1, K, M, Hd], rows < start valid), for a plain onnxruntime `run` (checks and tests; the
    runtimes bind the cache's memory instead: pocketlm.native, web/src/engine.mjs).

    >>> feeds = graph_feeds([5, 6], empty_cache(Architecture(n_layers=1, max_seq_len=8)), start=3)
    >>> feeds["seqlens_k"].tolist(), int(feeds["total_sequence_length"]), feeds["cache.0.key"].shape
    ([4], 5, (1, 8, 8, 32))
    """
    total = start + len(ids)
    feeds = {contract.input_ids: np.asarray([ids], dtype=np.int64),
             contract.seqlens_k: np.array([total - 1], dtype=np.int32),
             contract.total_length: np.array(total, dtype=np.int32)}
    for i, (keys, values) in enumerate(cache):
        feeds[contract.cache_key.format(i=i)], feeds[contract.cache_value.format(i=i)] = keys, values
    return feeds
