"""pocketlm's decode graph, written node by node from the weights (not traced).

One graph serves prefill (S new tokens, P = 0), chunked prefill and decoding (S = 1), with the
caller owning the KV cache (pocketlm.manifest.GraphContract; DESIGN.md "ONNX graphs"):

    inputs   input_ids     int64   [1, S]
             position_ids  int64   [1, S]          positions P .. P+S-1 (= row indices in the cache)
             past.{i}.key  float32 [P, K, Hd]      the caller's cache rows 0 .. P-1 (position-major)
             past.{i}.value float32 [P, K, Hd]
    outputs  logits        float32 [1, S, V]       every position
             next_token    int64   [1]             ArgMax of the last position's logits (ties -> lowest id)
             logits_sum    float32 [1]             sum of that row (not finite <=> a NaN/inf logit)
             runner_up     int64   [1]             the row's second-best id (TopK k=2: ties -> lower id)
             new.{i}.key   float32 [S, K, Hd]      only the S new rows (keys already rotated)
             new.{i}.value float32 [S, K, Hd]
The greedy head (next_token, logits_sum) lets plain greedy decoding fetch two numbers instead of V
logits (pocketlm.generate); it is built when the contract names it (GraphContract.has_head), and with
runner_up a banned best token (ignore_eos) needs no second run (tasks/text.py ban_token).

Shapes: S new positions, P cached positions, T = P+S, D dim, H heads, K kv heads, R = H/K,
Hd head dim, F hidden dim, V vocab, M max_seq_len. Activations are 2-D [S, D] between layers.

What is folded into the stored weights (exact up to float rounding, checked against
export/model.py by tests/test_onnx_graph.py):
  * q, k, v projections are one [D, (H+2K)*Hd] MatMul; gate and up one [D, 2F] MatMul;
  * RMSNorm is x / sqrt(sum(x^2) + D*eps), and its gain times sqrt(D) is folded into the rows of
    the MatMul that follows (the final norm keeps an explicit Mul: the lm head is tied);
  * the attention scale 1/sqrt(Hd) is folded into the q columns (rotary is linear, so it commutes).
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

    def op(self, op_type: str, inputs: list[str], outputs: str | list[str], **attrs) -> str | list[str]:
        outs = [outputs] if isinstance(outputs, str) else list(outputs)
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=outs[0], **attrs))
        return outputs


def build_decode_graph(
    state_dict: dict, arch: Architecture, contract: GraphContract = GraphContract()
) -> onnx.ModelProto:
    """The decode graph for `state_dict` (export/model.py Transformer names; torch tensors or numpy)."""
    arch.validate()
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
    R, half = H // K, Hd // 2
    g = _Builder()

    emb = sd["tok_embeddings.weight"]  # [V, D]
    if emb.shape != (V, D):
        raise ValueError(f"tok_embeddings.weight is {emb.shape}, the architecture says {(V, D)}")
    g.init(EMBEDDING, emb)
    cos, sin = rope_tables(arch)
    g.init("rope.cos", cos)  # [M, Hd/2]
    g.init("rope.sin", sin)  # [M, Hd/2]
    g.init("key_index", np.arange(M, dtype=np.int64))  # [M]: cache row t holds position t
    g.init("norm.eps", np.array([D * arch.norm_eps], np.float32))  # [1]
    flat, col = g.const("shape.flat", [-1]), g.const("shape.col", [-1, 1])

    def rms(x: str, out: str) -> str:
        """x [S, D] -> x / sqrt(sum(x^2) + D*eps) [S, D]; the caller folds gain*sqrt(D) into weights."""
        ss = g.op("ReduceSumSquare", [x], out + ".ss", axes=[-1], keepdims=1)  # [S, 1]
        rt = g.op("Sqrt", [g.op("Add", [ss, "norm.eps"], out + ".ss_eps")], out + ".rms")  # [S, 1]
        return g.op("Div", [x, rt], out)  # [S, D]

    # ---- shared by all layers: token rows, rotary rows, causal mask -------------------------------
    ids = g.op("Reshape", [contract.input_ids, flat], "ids")  # [S]
    pos = g.op("Reshape", [contract.position_ids, col], "pos")  # [S, 1]
    x = g.op("Gather", [EMBEDDING, ids], "embed")  # [S, D]
    c = g.op("Gather", ["rope.cos", pos], "rope.c")  # [S, 1, Hd/2]
    s = g.op("Gather", ["rope.sin", pos], "rope.s")  # [S, 1, Hd/2]
    cos_f = g.op("Concat", [c, c], "rope.cos_f", axis=-1)  # [S, 1, Hd]: (cos, cos)
    sin_f = g.op("Concat", [g.op("Neg", [s], "rope.neg_s"), s], "rope.sin_f", axis=-1)  # [S, 1, Hd]: (-sin, sin)
    # rotate-half: out = x*(cos,cos) + (x2,x1)*(-sin,sin) = (x1 cos - x2 sin, x2 cos + x1 sin)
    g.const("rope.swap", np.concatenate([np.arange(half, Hd), np.arange(half)]))  # [Hd]
    mask = None  # [S, T], built from layer 0's key count (below)

    wq_scale = 1.0 / np.sqrt(Hd)
    for i in range(arch.n_layers):
        p, L = f"layers.{i}.", f"l{i}."
        past_k, past_v = contract.past_key.format(i=i), contract.past_value.format(i=i)
        new_k, new_v = contract.new_key.format(i=i), contract.new_value.format(i=i)

        # ---- attention ----
        gain = sd[p + "attn_norm.weight"][:, None] * np.sqrt(D)  # [D, 1]
        wqkv = np.concatenate([sd[p + "attn.wq.weight"].T * wq_scale,  # [D, H*Hd]
                               sd[p + "attn.wk.weight"].T,  # [D, K*Hd]
                               sd[p + "attn.wv.weight"].T], axis=1) * gain  # [D, K*Hd]
        g.init(p + "wqkv", wqkv)  # [D, (H+2K)*Hd]
        h = rms(x, L + "attn_norm")  # [S, D]
        qkv = g.op("MatMul", [h, p + "wqkv"], L + "qkv")  # [S, (H+2K)*Hd]
        qkv = g.op("Reshape", [qkv, g.const(L + "shape.qkv", [-1, H + 2 * K, Hd])], L + "qkv3")  # [S, H+2K, Hd]
        qk, _ = g.op("Split", [qkv, g.const(L + "split.qkv", [H + K, K])], [L + "qk", new_v], axis=1)
        # qk [S, H+K, Hd]; new_v [S, K, Hd] (graph output)
        swapped = g.op("Gather", [qk, "rope.swap"], L + "qk_swap", axis=2)  # [S, H+K, Hd]: (x2, x1)
        qk = g.op("Add", [g.op("Mul", [qk, cos_f], L + "qk_cos"),  # [S, H+K, Hd]
                          g.op("Mul", [swapped, sin_f], L + "qk_sin")], L + "qk_rot")  # [S, H+K, Hd]
        q, _ = g.op("Split", [qk, g.const(L + "split.qk", [H, K])], [L + "q", new_k], axis=1)
        # q [S, H, Hd] (pre-scaled); new_k [S, K, Hd] (graph output)
        k_all = g.op("Concat", [past_k, new_k], L + "k_all", axis=0)  # [T, K, Hd]
        v_all = g.op("Concat", [past_v, new_v], L + "v_all", axis=0)  # [T, K, Hd]
        if mask is None:
            t_len = g.op("Shape", [k_all], "t_len", start=0, end=1)  # [1] = T
            key_pos = g.op("Slice", ["key_index", g.const("zero", [0]), t_len], "key_pos")  # [T]
            hidden = g.op("Greater", [key_pos, pos], "mask.hidden")  # [S, T]: key after the query
            mask = g.op("Where", [hidden, g.const("mask.min", [np.finfo(np.float32).min], np.float32),
                                  g.const("mask.zero", [0.0], np.float32)], "mask")  # [S, T]
        if R == 1:  # multi-head: heads are the batch dimension
            qh = g.op("Transpose", [q], L + "qh", perm=[1, 0, 2])  # [H, S, Hd]
            kh = g.op("Transpose", [k_all], L + "kh", perm=[1, 2, 0])  # [H, Hd, T]
            vh = g.op("Transpose", [v_all], L + "vh", perm=[1, 0, 2])  # [H, T, Hd]
        else:  # grouped-query: query head h = kv head h//R, repeat r = h%R; broadcast over R
            q4 = g.op("Reshape", [q, g.const(L + "shape.q4", [-1, K, R, Hd])], L + "q4")  # [S, K, R, Hd]
            qh = g.op("Transpose", [q4], L + "qh", perm=[1, 2, 0, 3])  # [K, R, S, Hd]
            kh = g.op("Unsqueeze", [g.op("Transpose", [k_all], L + "kt", perm=[1, 2, 0]),  # [K, Hd, T]
                                    g.const(L + "axis1", [1])], L + "kh")  # [K, 1, Hd, T]
            vh = g.op("Unsqueeze", [g.op("Transpose", [v_all], L + "vt", perm=[1, 0, 2]),  # [K, T, Hd]
                                    L + "axis1"], L + "vh")  # [K, 1, T, Hd]
        scores = g.op("Add", [g.op("MatMul", [qh, kh], L + "qk_dot"), mask], L + "scores")  # [.., S, T]
        probs = g.op("Softmax", [scores], L + "probs", axis=-1)  # [H, S, T] or [K, R, S, T]
        ctx = g.op("MatMul", [probs, vh], L + "ctx")  # [H, S, Hd] or [K, R, S, Hd]
        perm = [1, 0, 2] if R == 1 else [2, 0, 1, 3]
        ctx = g.op("Transpose", [ctx], L + "ctx_t", perm=perm)  # [S, H, Hd] or [S, K, R, Hd]
        ctx = g.op("Reshape", [ctx, g.const(L + "shape.ctx", [-1, H * Hd])], L + "ctx2")  # [S, H*Hd]
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
    g.op("Unsqueeze", [logits, g.const("axis0", [0])], contract.logits)  # [1, S, V]
    if contract.has_head:  # greedy head over the last position (the one decoding continues from)
        g.inits.append(numpy_helper.from_array(np.array(-1, np.int64), "head.last_row"))  # scalar: drops the axis
        last = g.op("Gather", [logits, "head.last_row"], "head.last", axis=0)  # [V]
        if contract.has_runner_up:  # one TopK: its order puts the lower id first on a tie, as ArgMax
            best = g.op("TopK", [last, g.const("head.k", [2])], ["head.top_values", "head.top_ids"], axis=0)[1]  # [2]
            g.op("Split", [best, g.const("head.split", [1, 1])], [contract.next_token, contract.runner_up], axis=0)
        else:
            g.op("ArgMax", [last], contract.next_token, axis=0, keepdims=1, select_last_index=0)  # [1] int64
        g.op("ReduceSum", [last], contract.logits_sum, keepdims=1)  # [1]: NaN/inf anywhere -> not finite

    f32, i64 = TensorProto.FLOAT, TensorProto.INT64
    inputs = [helper.make_tensor_value_info(contract.input_ids, i64, [1, "S"]),
              helper.make_tensor_value_info(contract.position_ids, i64, [1, "S"])]
    outputs = [helper.make_tensor_value_info(contract.logits, f32, [1, "S", V])]
    if contract.has_head:
        outputs += [helper.make_tensor_value_info(contract.next_token, i64, [1]),
                    helper.make_tensor_value_info(contract.logits_sum, f32, [1])]
    if contract.has_runner_up:
        outputs.append(helper.make_tensor_value_info(contract.runner_up, i64, [1]))
    for i in range(arch.n_layers):
        for name in (contract.past_key, contract.past_value):
            inputs.append(helper.make_tensor_value_info(name.format(i=i), f32, ["P", K, Hd]))
        for name in (contract.new_key, contract.new_value):
            outputs.append(helper.make_tensor_value_info(name.format(i=i), f32, ["S", K, Hd]))
    graph = helper.make_graph(g.nodes, "pocketlm_decode", inputs, outputs, g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name=PRODUCER, producer_version="1")
    model.ir_version = 8  # onnx 1.13+ / onnxruntime >= 1.14 read it; opset 17 needs >= 8
    return model
