"""The `hf/` export: a pocketlm model folder's weights in the transformers.js / Optimum layout.

    python -m export.hf_export MODEL_DIR [--out DIR] [--no-quantized]
    write_hf(model_dir, out_dir=None, *, quantized=True, log=print) -> the hf folder path

writes (DESIGN.md "ONNX graphs", item 2), by default into MODEL_DIR/hf/:
    config.json                model_type llama / LlamaForCausalLM; transformers.js builds the empty past
                               tensors from num_hidden_layers, num_key_value_heads and head_dim
    tokenizer.json             the folder's, copied
    tokenizer_config.json      PreTrainedTokenizerFast, special token strings, add_bos_token false (pocketlm
                               prompts start with <bos> themselves), clean_up_tokenization_spaces false
    generation_config.json     bos / eos / pad ids
    onnx/model.onnx            fp32
    onnx/model_quantized.onnx  int8 (transformers.js dtype "q8"): export/quantize.quantize_int8, i.e.
                               quantize_dynamic of every MatMul incl. the lm head, embedding shared with it

The graph (Optimum decoder-with-past contract). B batch, S new positions, P cached, T = P+S, N = B*S,
D dim, H heads, K kv heads, R = H/K, Hd head dim, F hidden dim, V vocab:
    inputs   input_ids                  int64   [B, S]
             attention_mask             int64   [B, T]         1 = attend, 0 = padding (never attended)
             position_ids               int64   [B, S]         rotary positions (transformers.js: cumsum(mask)-1)
             past_key_values.{i}.key    float32 [B, K, P, Hd]  keys already rotated
             past_key_values.{i}.value  float32 [B, K, P, Hd]
    outputs  logits                     float32 [B, S, V]      every position
             present.{i}.key            float32 [B, K, T, Hd]  past + the S new rows
             present.{i}.value          float32 [B, K, T, Hd]
Symbolic axes "batch_size", "sequence_length", "past_sequence_length", "total_sequence_length"; K, Hd, V
static. A query's causal limit is its cache index (new query j sits at P+j), combined with attention_mask,
as transformers' LlamaModel does; position_ids only pick the rotary angles. Standard ONNX ops, opset 17.

Weights are taken as stored in the folder's fp32 model.onnx (export/onnx_graph.py), i.e. *folded*: RMSNorm
gain x sqrt(D) in the rows of the fused q|k|v and gate|up MatMuls, 1/sqrt(Hd) in the q columns, the final
gain in an explicit Mul, the tied embedding once (Gather rows + Gemm(transB=1) lm head). That is the same
function as an unfolded Llama (the norm is x / sqrt(sum(x^2) + D*eps)); it is not meant for re-import
into transformers (Python), which would need the unfolded weights as safetensors.

The new folder is assembled beside the target and swapped in only when both graphs pass the check
against the folder's own model.onnx, run through the pocketlm contract (prefill + cached steps,
onnxruntime, one thread): fp32 max |logit diff| <= 1e-4, quantized top-1 agreement reported.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from export.onnx_graph import EMBEDDING, LM_HEAD_NODE, OPSET, _Builder, rope_tables
from export.swap import swap_in
from pocketlm.manifest import Architecture, ManifestError, check_file, load_manifest

PRODUCER = "pocketlm.export.hf_export"
FP32_FILE, QUANTIZED_FILE = "onnx/model.onnx", "onnx/model_quantized.onnx"
FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json", "onnx")
FP32_TOLERANCE = 1e-4
MIN_QUANTIZED_AGREEMENT = 0.5  # top-1 vs fp32 on the probe: catches a broken graph, not int8 rounding
PROBE_LEN, PROBE_STEPS = 24, 8


class HfExportError(RuntimeError):
    pass


def folded_weights(model: onnx.ModelProto, arch: Architecture) -> dict[str, np.ndarray]:
    """The folded weights of a pocketlm fp32 decode graph (export/onnx_graph.py names), shapes checked."""
    D, H, K, Hd, F, V = arch.dim, arch.n_heads, arch.n_kv_heads, arch.head_dim, arch.hidden_dim, arch.vocab_size
    want = {EMBEDDING: (V, D), "norm.gain": (D,)}
    for i in range(arch.n_layers):
        want.update({f"layers.{i}.wqkv": (D, (H + 2 * K) * Hd), f"layers.{i}.wo": (H * Hd, D),
                     f"layers.{i}.w_gate_up": (D, 2 * F), f"layers.{i}.w_down": (F, D)})
    inits = {t.name: t for t in model.graph.initializer}
    weights = {}
    for name, shape in want.items():
        if name not in inits:
            raise HfExportError(f"the fp32 graph has no initializer {name!r}: not a pocketlm fp32 decode graph "
                                "(quantized variants cannot be exported; re-export the model)")
        array = numpy_helper.to_array(inits[name])
        if array.shape != shape or array.dtype != np.float32:
            raise HfExportError(f"initializer {name!r} is {array.dtype} {array.shape}, the manifest's "
                                f"architecture says float32 {shape}")
        weights[name] = array
    return weights


def build_hf_graph(weights: dict[str, np.ndarray], arch: Architecture) -> onnx.ModelProto:
    """The Optimum-layout decoder-with-past graph (module docstring) from folded_weights()."""
    D, H, K, Hd, F, V = arch.dim, arch.n_heads, arch.n_kv_heads, arch.head_dim, arch.hidden_dim, arch.vocab_size
    R, half = H // K, Hd // 2
    g = _Builder()
    for name, array in weights.items():
        g.init(name, array)
    cos, sin = rope_tables(arch)
    g.init("rope.cos", cos)  # [M, Hd/2]
    g.init("rope.sin", sin)  # [M, Hd/2]
    g.init("norm.eps", np.array([D * arch.norm_eps], np.float32))  # [1]
    g.const("rope.swap", np.concatenate([np.arange(half, Hd), np.arange(half)]))  # [Hd]
    flat, zero, one = g.const("shape.flat", [-1]), g.const("zero", 0), g.const("one", 1)  # [1], [], []

    def rms(x: str, out: str) -> str:
        """x [N, D] -> x / sqrt(sum(x^2) + D*eps) [N, D]; gain*sqrt(D) is folded into the next weights."""
        ss = g.op("ReduceSumSquare", [x], out + ".ss", axes=[-1], keepdims=1)  # [N, 1]
        rt = g.op("Sqrt", [g.op("Add", [ss, "norm.eps"], out + ".ss_eps")], out + ".rms")  # [N, 1]
        return g.op("Div", [x, rt], out)  # [N, D]

    # ---- shared: shapes, token rows (flat, so export/quantize.py can share the embedding), rotary, mask ----
    bs = g.op("Shape", ["input_ids"], "shape.bs")  # [2] = (B, S)
    qkv_shape = g.op("Concat", [bs, g.const("shape.heads", [H + 2 * K, Hd])], "shape.qkv", axis=0)  # [4]
    ids = g.op("Reshape", ["input_ids", flat], "ids")  # [N]
    x = g.op("Gather", [EMBEDDING, ids], "embed")  # [N, D] (export/quantize.py replaces this node by name)
    c = g.op("Gather", ["rope.cos", "position_ids"], "rope.c")  # [B, S, Hd/2]
    s = g.op("Gather", ["rope.sin", "position_ids"], "rope.s")  # [B, S, Hd/2]
    axis1 = g.const("axis1", [1])
    cos_f = g.op("Unsqueeze", [g.op("Concat", [c, c], "rope.cc", axis=-1), axis1], "rope.cos_f")  # [B, 1, S, Hd]
    sin_f = g.op("Unsqueeze", [g.op("Concat", [g.op("Neg", [s], "rope.neg_s"), s], "rope.ss", axis=-1), axis1],
                 "rope.sin_f")  # [B, 1, S, Hd]: (-sin, sin); rotate-half as in export/onnx_graph.py
    t_len = g.op("Squeeze", [g.op("Shape", ["attention_mask"], "t_len1", start=1, end=2)], "t_len")  # [] = T
    s_len = g.op("Squeeze", [g.op("Shape", ["input_ids"], "s_len1", start=1, end=2)], "s_len")  # [] = S
    key_idx = g.op("Range", [zero, t_len, one], "mask.key_idx")  # [T]
    query_idx = g.op("Range", [g.op("Sub", [t_len, s_len], "p_len"), t_len, one], "mask.query_idx")  # [S]
    future = g.op("Greater", [key_idx, g.op("Unsqueeze", [query_idx, axis1], "mask.q_col")], "mask.future")  # [S, T]
    padded = g.op("Equal", ["attention_mask", g.const("zero_i", [0])], "mask.padded")  # [B, T]
    padded = g.op("Unsqueeze", [padded, g.const("axes12", [1, 2])], "mask.padded4")  # [B, 1, 1, T]
    hidden = g.op("Or", [future, padded], "mask.hidden")  # [B, 1, S, T]
    mask = g.op("Where", [hidden, g.const("mask.min", [np.finfo(np.float32).min], np.float32),
                          g.const("mask.zero", [0.0], np.float32)], "mask")  # [B, 1, S, T]
    if R > 1:
        mask = g.op("Unsqueeze", [mask, g.const("axis2", [2])], "mask5")  # [B, 1, 1, S, T]

    for i in range(arch.n_layers):
        p, L = f"layers.{i}.", f"l{i}."
        past_k, past_v = f"past_key_values.{i}.key", f"past_key_values.{i}.value"  # [B, K, P, Hd]
        # ---- attention ----
        h = rms(x, L + "attn_norm")  # [N, D]
        qkv = g.op("MatMul", [h, p + "wqkv"], L + "qkv")  # [N, (H+2K)*Hd]
        qkv = g.op("Reshape", [qkv, qkv_shape], L + "qkv4")  # [B, S, H+2K, Hd]
        qkv = g.op("Transpose", [qkv], L + "qkv_t", perm=[0, 2, 1, 3])  # [B, H+2K, S, Hd]
        qk, v = g.op("Split", [qkv, g.const(L + "split.qkv", [H + K, K])], [L + "qk", L + "v"], axis=1)
        # qk [B, H+K, S, Hd]; v [B, K, S, Hd]
        swapped = g.op("Gather", [qk, "rope.swap"], L + "qk_swap", axis=3)  # [B, H+K, S, Hd]: (x2, x1)
        qk = g.op("Add", [g.op("Mul", [qk, cos_f], L + "qk_cos"),  # [B, H+K, S, Hd]
                          g.op("Mul", [swapped, sin_f], L + "qk_sin")], L + "qk_rot")  # [B, H+K, S, Hd]
        q, k = g.op("Split", [qk, g.const(L + "split.qk", [H, K])], [L + "q", L + "k"], axis=1)
        # q [B, H, S, Hd] (pre-scaled by 1/sqrt(Hd)); k [B, K, S, Hd]
        k_all = g.op("Concat", [past_k, k], f"present.{i}.key", axis=2)  # [B, K, T, Hd] (graph output)
        v_all = g.op("Concat", [past_v, v], f"present.{i}.value", axis=2)  # [B, K, T, Hd] (graph output)
        kt = g.op("Transpose", [k_all], L + "kt", perm=[0, 1, 3, 2])  # [B, K, Hd, T]
        vh = v_all
        if R > 1:  # grouped-query: query head h = kv head h//R, repeat h%R; broadcast over R
            q = g.op("Reshape", [q, g.const(L + "shape.q5", [0, K, R, -1, Hd])], L + "q5")  # [B, K, R, S, Hd]
            kt = g.op("Unsqueeze", [kt, "axis2"], L + "kt5")  # [B, K, 1, Hd, T]
            vh = g.op("Unsqueeze", [v_all, "axis2"], L + "v5")  # [B, K, 1, T, Hd]
        dots = g.op("MatMul", [q, kt], L + "qk_dot")  # [B, H, S, T] | [B, K, R, S, T]
        scores = g.op("Add", [dots, mask], L + "scores")  # [B, H, S, T] | [B, K, R, S, T]
        probs = g.op("Softmax", [scores], L + "probs", axis=-1)  # as scores
        ctx = g.op("MatMul", [probs, vh], L + "ctx")  # [B, H, S, Hd] | [B, K, R, S, Hd]
        perm = [0, 2, 1, 3] if R == 1 else [0, 3, 1, 2, 4]
        ctx = g.op("Transpose", [ctx], L + "ctx_t", perm=perm)  # [B, S, H, Hd] | [B, S, K, R, Hd]
        ctx = g.op("Reshape", [ctx, g.const(L + "shape.ctx", [-1, H * Hd])], L + "ctx2")  # [N, H*Hd]
        x = g.op("Add", [x, g.op("MatMul", [ctx, p + "wo"], L + "attn_out")], L + "x_attn")  # [N, D]
        # ---- SwiGLU MLP ----
        h = rms(x, L + "mlp_norm")  # [N, D]
        gu = g.op("MatMul", [h, p + "w_gate_up"], L + "gate_up")  # [N, 2F]
        gate, up = g.op("Split", [gu, g.const(L + "split.gu", [F, F])], [L + "gate", L + "up"], axis=1)  # [N, F] x2
        silu = g.op("Mul", [gate, g.op("Sigmoid", [gate], L + "sigmoid")], L + "silu")  # [N, F]
        act = g.op("Mul", [silu, up], L + "act")  # [N, F]
        x = g.op("Add", [x, g.op("MatMul", [act, p + "w_down"], L + "mlp_out")], L + "x_mlp")  # [N, D]

    # ---- final norm, tied lm head (export/quantize.py unties this Gemm by name) ----
    h = g.op("Mul", [rms(x, "final_norm"), "norm.gain"], "final_norm.out")  # [N, D]
    logits = g.op("Gemm", [h, EMBEDDING], LM_HEAD_NODE, transB=1)  # [N, V] = h @ E^T
    out_shape = g.op("Concat", [bs, g.const("shape.vocab", [V])], "shape.logits", axis=0)  # [3] = (B, S, V)
    g.op("Reshape", [logits, out_shape], "logits")  # [B, S, V]

    f32, i64 = TensorProto.FLOAT, TensorProto.INT64
    B, S, P, T = "batch_size", "sequence_length", "past_sequence_length", "total_sequence_length"
    inputs = [helper.make_tensor_value_info("input_ids", i64, [B, S]),
              helper.make_tensor_value_info("attention_mask", i64, [B, T]),
              helper.make_tensor_value_info("position_ids", i64, [B, S])]
    outputs = [helper.make_tensor_value_info("logits", f32, [B, S, V])]
    for i in range(arch.n_layers):
        for kind in ("key", "value"):
            inputs.append(helper.make_tensor_value_info(f"past_key_values.{i}.{kind}", f32, [B, K, P, Hd]))
            outputs.append(helper.make_tensor_value_info(f"present.{i}.{kind}", f32, [B, K, T, Hd]))
    graph = helper.make_graph(g.nodes, "pocketlm_hf_decoder", inputs, outputs, g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name=PRODUCER, producer_version="1")
    model.ir_version = 8
    return model


def hf_config(manifest) -> dict:
    a, t = manifest.architecture, manifest.tokenizer
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama",
            "hidden_size": a.dim, "intermediate_size": a.hidden_dim, "num_hidden_layers": a.n_layers,
            "num_attention_heads": a.n_heads, "num_key_value_heads": a.n_kv_heads, "head_dim": a.head_dim,
            "vocab_size": a.vocab_size, "max_position_embeddings": a.max_seq_len, "rms_norm_eps": a.norm_eps,
            "rope_theta": a.rope_theta, "rope_scaling": None, "hidden_act": "silu", "tie_word_embeddings": True,
            "attention_bias": False, "mlp_bias": False, "bos_token_id": t.bos_id, "eos_token_id": t.eos_id,
            "pad_token_id": t.pad_id, "torch_dtype": "float32", "use_cache": True}


def _token_strings(tokenizer_json: dict, manifest) -> dict[str, str]:
    """bos/eos/pad token strings, looked up by the manifest's ids in tokenizer.json."""
    vocab = tokenizer_json.get("model", {}).get("vocab", {})
    by_id = {i: s for s, i in vocab.items()} if isinstance(vocab, dict) else {}
    by_id.update({t["id"]: t["content"] for t in tokenizer_json.get("added_tokens", [])})
    out = {}
    for role in ("bos", "eos", "pad"):
        tid = getattr(manifest.tokenizer, f"{role}_id")
        if tid not in by_id:
            raise HfExportError(f"tokenizer.json has no token with the manifest's {role}_id {tid}")
        out[f"{role}_token"] = by_id[tid]
    return out


def hf_stepper(path: str, arch: Architecture):
    """step(ids) -> logits [S, V]: batch 1, no padding, feeding present.* back as past_key_values.*."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads, opts.log_severity_level = 1, 1, 3
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    K, Hd = arch.n_kv_heads, arch.head_dim
    past = {f"past_key_values.{i}.{w}": np.zeros((1, K, 0, Hd), np.float32)
            for i in range(arch.n_layers) for w in ("key", "value")}
    names = ["logits"] + [n.replace("past_key_values", "present") for n in past]

    def step(ids: list[int]) -> np.ndarray:
        start = past["past_key_values.0.key"].shape[2]
        feeds = {"input_ids": np.array([ids], np.int64), "attention_mask": np.ones((1, start + len(ids)), np.int64),
                 "position_ids": np.arange(start, start + len(ids), dtype=np.int64)[None], **past}
        out = sess.run(names, feeds)
        past.update(zip(past, out[1:]))
        return out[0][0]
    return step


def trace(step, probe: list[int], n_steps: int, forced: list[int] | None = None):
    """Prefill `probe`, then n_steps single-token steps (forced tokens, else greedy).
    Returns (logits [len(probe) + n_steps, V], the n_steps + 1 greedy picks after each run)."""
    rows, picks = [step(probe)], []
    for k in range(n_steps + 1):
        picks.append(int(rows[-1][-1].argmax()))
        if k < n_steps:
            rows.append(step([forced[k] if forced else picks[-1]]))
    return np.concatenate(rows), picks


def _verify(model_dir: str, fp32_name: str, int8_name: str | None, staging: str, quantized: bool, log) -> None:
    from pocketlm.native import NativeModel

    ref = NativeModel(model_dir, variant=fp32_name, threads=1, check_files=False)
    arch = ref.arch
    rng = np.random.default_rng(0)
    n = min(PROBE_LEN, arch.max_seq_len - PROBE_STEPS - 1)
    probe = [ref.manifest.tokenizer.bos_id] + [int(t) for t in rng.integers(3, arch.vocab_size, n - 1)]

    def native(m):
        cache = m.new_cache()
        return lambda ids: m.forward_all(ids, cache)

    want, picks = trace(native(ref), probe, PROBE_STEPS)  # [n + steps, V]
    got, got_picks = trace(hf_stepper(os.path.join(staging, FP32_FILE), arch), probe, PROBE_STEPS, picks)
    err = float(np.abs(got - want).max())
    if not err <= FP32_TOLERANCE:
        raise HfExportError(f"hf fp32 logits differ from {ref.variant.file} by {err:.2e} (> {FP32_TOLERANCE:g})")
    log(f"  {FP32_FILE}: max |logit diff| vs {ref.variant.file} {err:.1e} (prefill {len(probe)} + "
        f"{PROBE_STEPS} cached steps), greedy picks {'identical' if got_picks == picks else 'DIFFER'}")
    if not quantized:
        return
    q, _ = trace(hf_stepper(os.path.join(staging, QUANTIZED_FILE), arch), probe, PROBE_STEPS, picks)
    agree = float((q.argmax(-1) == want.argmax(-1)).mean())
    line = f"  {QUANTIZED_FILE}: top-1 agreement with fp32 {agree:.3f}"
    if int8_name is not None:
        int8_model = NativeModel(model_dir, variant=int8_name, threads=1, check_files=False)
        int8, _ = trace(native(int8_model), probe, PROBE_STEPS, picks)
        line += (f"; vs {int8_model.variant.file}: top-1 {float((q.argmax(-1) == int8.argmax(-1)).mean()):.3f}, "
                 f"max |diff| {float(np.abs(q - int8).max()):.1e}")
    log(line)
    if not np.isfinite(q).all() or agree < MIN_QUANTIZED_AGREEMENT:
        raise HfExportError(f"the quantized hf graph agrees with fp32 on only {agree:.0%} of top-1 picks")


def _check_target(model_dir: str, out_dir: str) -> None:
    """Refuse a target whose replacement would delete something this export did not write."""
    real_out, real_model = os.path.realpath(out_dir), os.path.realpath(model_dir)
    if real_model == real_out or real_model.startswith(real_out.rstrip(os.sep) + os.sep):
        raise HfExportError(f"--out {out_dir!r} would replace the model folder itself; choose a new folder")
    if os.path.exists(out_dir):
        if not os.path.isdir(out_dir):
            raise HfExportError(f"{out_dir!r} exists and is not a folder")
        foreign = sorted(set(os.listdir(out_dir)) - set(FILES))
        if foreign:
            raise HfExportError(f"{out_dir!r} holds files an hf export does not write ({', '.join(foreign[:4])}); "
                                "choose an empty or new folder")


def _intact(model_dir: str, name: str, v) -> bool:
    try:
        check_file(model_dir, v.file, v.sha256, f"variant {name!r}", size=v.bytes)
        return True
    except ManifestError:
        return False


def write_hf(model_dir: str, out_dir: str | None = None, *, quantized: bool = True, log=print) -> str:
    """Write the hf/ folder for `model_dir` (module docstring); returns its path."""
    from export.quantize import quantize_int8

    manifest = load_manifest(model_dir, check_files=False)
    arch = manifest.architecture
    fp32 = [name for name, v in sorted(manifest.variants.items(), key=lambda kv: kv[0] != "fp32")
            if v.quantization == "none"]
    if not fp32:
        raise HfExportError(f"{model_dir!r} has no fp32 variant (quantization 'none') in its manifest; "
                            "the hf export needs the fp32 weights")
    fp32_variant = manifest.variants[fp32[0]]
    check_file(model_dir, manifest.tokenizer.file, manifest.tokenizer.sha256, "tokenizer")
    check_file(model_dir, fp32_variant.file, fp32_variant.sha256, f"variant {fp32[0]!r}", size=fp32_variant.bytes)
    int8 = next((name for name, v in manifest.variants.items()  # compared with when intact, never required
                 if v.quantization == "int8-dynamic" and _intact(model_dir, name, v)), None)
    out_dir = os.path.abspath(out_dir or os.path.join(model_dir, "hf"))
    _check_target(model_dir, out_dir)
    with open(os.path.join(model_dir, manifest.tokenizer.file), encoding="utf-8") as f:
        tokenizer_json = json.load(f)
    specials = _token_strings(tokenizer_json, manifest)
    try:
        source = onnx.load(os.path.join(model_dir, fp32_variant.file))
    except Exception as e:
        raise HfExportError(f"cannot read {fp32_variant.file} as ONNX ({type(e).__name__}); "
                            "re-export the model") from None
    graph = build_hf_graph(folded_weights(source, arch), arch)
    onnx.checker.check_model(graph, full_check=True)

    os.makedirs(os.path.dirname(out_dir), exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.tmp-", dir=os.path.dirname(out_dir))
    try:
        os.makedirs(os.path.join(staging, "onnx"))
        onnx.save(graph, os.path.join(staging, FP32_FILE))
        if quantized:
            quantize_int8(os.path.join(staging, FP32_FILE), os.path.join(staging, QUANTIZED_FILE))
        shutil.copyfile(os.path.join(model_dir, manifest.tokenizer.file), os.path.join(staging, "tokenizer.json"))
        t = manifest.tokenizer
        docs = {"config.json": hf_config(manifest),
                "tokenizer_config.json": {"tokenizer_class": "PreTrainedTokenizerFast", **specials,
                                          "model_max_length": arch.max_seq_len, "add_bos_token": False,
                                          "add_eos_token": False, "clean_up_tokenization_spaces": False},
                "generation_config.json": {"bos_token_id": t.bos_id, "eos_token_id": t.eos_id,
                                           "pad_token_id": t.pad_id}}
        for name, doc in docs.items():
            with open(os.path.join(staging, name), "w", encoding="utf-8") as f:
                f.write(json.dumps(doc, indent=2) + "\n")
        log(f"hf export of {manifest.name!r} ({len(graph.graph.node)} nodes, opset {OPSET}) -> {out_dir}")
        _verify(model_dir, fp32[0], int8, staging, quantized, log)
        wrote = [(os.path.relpath(os.path.join(root, name), staging), os.path.getsize(os.path.join(root, name)))
                 for root, _, files in os.walk(staging) for name in sorted(files)]
        swap_in(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    for name, size in wrote:
        log(f"  wrote {name:27s} {size / 1e6:8.3f} MB")
    return out_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.hf_export", description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir", metavar="MODEL_DIR", help="a pocketlm model folder (manifest.json, model.onnx)")
    parser.add_argument("--out", default=None, help="the hf folder to write (default: MODEL_DIR/hf)")
    parser.add_argument("--no-quantized", action="store_true", help="skip onnx/model_quantized.onnx")
    args = parser.parse_args(argv)
    try:
        write_hf(args.model_dir, args.out, quantized=not args.no_quantized)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # ManifestError, HfExportError, ModelLoadError, OSError, onnx / onnxruntime errors
        detail = (str(e).strip().splitlines() or [type(e).__name__])[0]
        print(f"error: {detail}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
