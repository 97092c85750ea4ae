"""Quantized variants of the decode graph (export/onnx_graph.py): int8 dynamic and 4-bit blockwise.

    quantize_int8(fp32_path, out_path)        MatMul -> DynamicQuantizeLinear + MatMulInteger (plain ONNX ops;
                                              onnxruntime fuses them to DynamicQuantizeMatMul at load)
    quantize_q4(fp32_path, out_path, 32)      MatMul -> int4 weight + DequantizeLinear + MatMul, symmetric,
                                              block 32 (standard ONNX, opset 21)

q4 is a download format: 4 bits per weight on the wire, fp32 in memory. Its file is run with
Q4_SESSION_CONFIG (written into the manifest as the variant's session_config, applied by
pocketlm.native and web/src/engine.mjs alike): `session.disable_quant_qdq` turns off onnxruntime's
QDQ fusions, so constant folding dequantizes every weight once at session start and each step is the
fp32 graph's MatMuls. Why: onnxruntime-web's 4-bit kernel (MatMulNBits) is >10x slower in WebAssembly
than fp32 (measured, sql-autocomplete, Node, one thread, warm, one process: MatMulNBits 71 tok/s, fp32
1 123-1 257, this file 1 177). Natively that kernel is fast, but the same options on
both sides keep the browser and native on the same computation (the greedy-token anchor); without
them onnxruntime would fuse some DequantizeLinear+MatMul pairs into MatMulNBits (int8 activations)
and dequantize the shared embedding at every step (365 tok/s natively).

The tied embedding. The fp32 graph stores the token embedding E [V, D] once and reads it twice:
Gather (input rows) and Gemm(transB=1) (lm head). Neither quantizer touches that Gemm, so both
functions first give the lm head a real [D, V] initializer E^T (MatMul), let the quantizer turn it
into int8 / 4-bit like every other weight, then drop the fp32 E by re-reading the input rows out of
the quantized lm-head weight with plain ops (`share_embedding=True`, the default):

  int8: Gather(E^T_q [D, V], ids, axis=1) -> Transpose -> DequantizeLinear with the token's own
        scale / zero point (per-channel weights: one per lm-head column = one per token)
  q4:   Gather(DequantizeLinear(E^T_q4) [D, V], ids, axis=1) -> Transpose: the dequantized lm-head
        weight is a constant that onnxruntime folds at session start, so the rows come from it.
The decoded rows equal the lm head's dequantized weight exactly (tests). Measured, 4 layers, dim 256,
vocab 2048 (3.93 M params, fp32 15.8 MB): int8 4.11 MB shared vs 6.20 MB with the fp32 E kept;
q4 2.55 MB shared. q4 feeds 4-bit input embeddings too, which raised the relative logit error on
random weights from 0.165 to 0.191 (dim 64) and 0.217 to 0.240 (dim 256, top-1 agreement unchanged at
that scale) — taken for -45 % bytes; share_embedding=False keeps E.

Both outputs are deterministic (same input bytes -> same output bytes; tests/test_onnx_graph.py).
The graph's outputs are kept as they are: logits, the greedy head (next_token = ArgMax and logits_sum,
which read the lm head's output tensor, whichever node now computes it) and the present K/V buffers
(tests/test_greedy_head.py runs the head on both quantized variants).
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile

import numpy as np
import onnx
from onnx import helper, numpy_helper, version_converter

from export.onnx_graph import EMBEDDING, LM_HEAD_NODE

LM_HEAD_T = "lm_head.weight_t"  # [D, V] = E^T, materialized for the quantizers
Q4_OPSET = 21  # the first opset whose DequantizeLinear takes int4 and block_size
# the session options a q4 file is run with (module docstring): fold the dequantization at session start
Q4_SESSION_CONFIG = {"session.disable_quant_qdq": "1"}
VARIANTS = {  # name -> (file, quantization), as the manifest records them
    "fp32": ("model.onnx", "none"),
    "int8": ("model.int8.onnx", "int8-dynamic"),
    "q4": ("model.q4.onnx", "q4-qdq-block32"),
}
SESSION_CONFIG = {"q4": Q4_SESSION_CONFIG}  # name -> the onnxruntime session config its file is run with


@contextlib.contextmanager
def _quiet_logging():
    """onnxruntime.quantization logs per tensor at INFO on the root logger, and importing
    matmul_nbits_quantizer runs logging.basicConfig(level=INFO): undo both when done."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    try:
        import onnxruntime.quantization.matmul_nbits_quantizer  # noqa: F401  (runs basicConfig at import)

        root.setLevel(logging.ERROR)
        yield
    finally:
        for handler in [h for h in root.handlers if h not in handlers]:
            root.removeHandler(handler)
        root.setLevel(level)


def _load(path: str) -> onnx.ModelProto:
    return onnx.load(path)


def _untie_lm_head(model: onnx.ModelProto) -> tuple[onnx.ModelProto, str]:
    """Replace Gemm(h, E, transB=1) by MatMul(h, E^T) with E^T [D, V] a real initializer. Returns the Gather's ids."""
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    if EMBEDDING not in inits:
        raise ValueError(f"no {EMBEDDING!r} initializer: not a pocketlm decode graph (export/onnx_graph.py)")
    emb = numpy_helper.to_array(inits[EMBEDDING])  # [V, D]
    gemm = next((n for n in g.node if n.name == LM_HEAD_NODE and n.op_type == "Gemm"), None)
    gather = [n for n in g.node if n.op_type == "Gather" and n.input[0] == EMBEDDING]
    if gemm is None or len(gather) != 1:
        raise ValueError("expected one embedding Gather and the Gemm lm head of export/onnx_graph.py")
    matmul = helper.make_node("MatMul", [gemm.input[0], LM_HEAD_T], list(gemm.output), name=LM_HEAD_NODE)
    g.node.insert(list(g.node).index(gemm), matmul)
    g.node.remove(gemm)
    g.initializer.append(numpy_helper.from_array(np.ascontiguousarray(emb.T), LM_HEAD_T))
    return model, gather[0].input[1]


def _replace_gather(model: onnx.ModelProto, new_nodes: list[onnx.NodeProto], new_inits: list[onnx.TensorProto]):
    """Swap the embedding Gather for `new_nodes` (same output name) and drop the fp32 embedding."""
    g = model.graph
    gather = next(n for n in g.node if n.op_type == "Gather" and n.input[0] == EMBEDDING)
    at = list(g.node).index(gather)
    g.node.remove(gather)
    for k, node in enumerate(new_nodes):
        g.node.insert(at + k, node)
    g.initializer.extend(new_inits)
    if not any(EMBEDDING in n.input for n in g.node):
        g.initializer.remove(next(t for t in g.initializer if t.name == EMBEDDING))


def _finish(model: onnx.ModelProto, out_path: str) -> None:
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, out_path)


def quantize_int8(fp32_path: str, out_path: str, *, weight_type: str = "uint8", per_channel: bool = True,
                  share_embedding: bool = True) -> None:
    """int8 dynamic quantization of every weight MatMul (incl. the lm head); see the module docstring.

    weight_type "uint8" (default): MatMulInteger u8 x u8. u8 x s8 is what x86 AVX2 (no VNNI) computes
    with a saturating 16-bit pairwise add; u8 x u8 has no such trap and runs in onnxruntime-web's WASM.
    per_channel: one scale (and zero point) per output column, so each lm-head column = each token's
    embedding row has its own scale — which the shared embedding Gather reuses.
    """
    model, ids = _untie_lm_head(_load(fp32_path))
    with _quiet_logging(), tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(out_path))) as tmp:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        qtype = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}[weight_type]
        tmp_path = os.path.join(tmp, "int8.onnx")
        quantize_dynamic(model, tmp_path, op_types_to_quantize=["MatMul"], weight_type=qtype,
                         per_channel=per_channel, extra_options={"MatMulConstBOnly": True})
        model = onnx.load(tmp_path)
    if share_embedding:
        inits = {t.name: t for t in model.graph.initializer}
        w_q, scale, zp = (f"{LM_HEAD_T}_quantized", f"{LM_HEAD_T}_scale", f"{LM_HEAD_T}_zero_point")
        if not all(n in inits for n in (w_q, scale, zp)):
            raise RuntimeError(f"quantize_dynamic did not produce {w_q}/_scale/_zero_point; cannot share E")
        out = "embed"  # the fp32 graph's Gather output
        nodes = [helper.make_node("Gather", [w_q, ids], ["embed.q_t"], name="embed.q_t", axis=1),  # [D, S]
                 helper.make_node("Transpose", ["embed.q_t"], ["embed.q"], name="embed.q", perm=[1, 0])]  # [S, D]
        if numpy_helper.to_array(inits[scale]).size == 1:  # per-tensor: scalar scale and zero point
            nodes.append(helper.make_node("DequantizeLinear", ["embed.q", scale, zp], [out], name=out))
        else:  # per-column of E^T = per token row: gather the row's scale and zero point
            nodes += [helper.make_node("Gather", [scale, ids], ["embed.scale"], name="embed.scale"),  # [S]
                      helper.make_node("Gather", [zp, ids], ["embed.zp"], name="embed.zp"),  # [S]
                      helper.make_node("DequantizeLinear", ["embed.q", "embed.scale", "embed.zp"], [out],
                                       name=out, axis=0)]  # [S, D]
        _replace_gather(model, nodes, [])
    _finish(model, out_path)


def quantize_untied(name: str, fp32_path: str, out_path: str) -> None:
    """int8 / q4 of an untied decode graph (a llama2.c checkpoint with its own classifier): every weight MatMul,
    incl. the lm head, quantized as quantize_int8 / quantize_q4 do; the input embedding stays fp32."""
    model = _load(fp32_path)
    if name == "int8":
        with _quiet_logging(), tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(out_path))) as tmp:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            tmp_path = os.path.join(tmp, "int8.onnx")
            quantize_dynamic(model, tmp_path, op_types_to_quantize=["MatMul"], weight_type=QuantType.QUInt8,
                             per_channel=True, extra_options={"MatMulConstBOnly": True})
            model = onnx.load(tmp_path)
    elif name == "q4":
        model = _q4_qdq(version_converter.convert_version(model, Q4_OPSET), 32)
    else:
        raise ValueError(f"unknown quantized variant {name!r}: int8 or q4")
    _finish(model, out_path)


def quantize_q4(fp32_path: str, out_path: str, block_size: int = 32, *, share_embedding: bool = True) -> None:
    """4-bit symmetric blockwise quantization of every weight MatMul incl. the lm head, stored as standard
    ONNX: an int4 initializer [K, N] -> DequantizeLinear(axis=0, block_size) -> MatMul (opset 21).

    Run with Q4_SESSION_CONFIG (the manifest's variant.session_config): see the module docstring.
    """
    model = version_converter.convert_version(_load(fp32_path), Q4_OPSET)  # blocked int4 DequantizeLinear: opset 21
    model, ids = _untie_lm_head(model)
    model = _q4_qdq(model, block_size)
    if share_embedding:
        g = model.graph
        head = next(n for n in g.node if n.name == LM_HEAD_NODE)
        dq = next((n for n in g.node if n.op_type == "DequantizeLinear" and n.output[0] == head.input[1]), None)
        if dq is None:
            raise RuntimeError("the 4-bit quantizer left the lm head without a DequantizeLinear; cannot share E")
        g.node.remove(dq)
        g.node.insert(0, dq)  # its inputs are initializers; the embedding Gather below reads its output
        nodes = [helper.make_node("Gather", [dq.output[0], ids], ["embed.t"], name="embed.t", axis=1),  # [D, S]
                 helper.make_node("Transpose", ["embed.t"], ["embed"], name="embed", perm=[1, 0])]  # [S, D]
        _replace_gather(model, nodes, [])
    _finish(model, out_path)


def _q4_qdq(model: onnx.ModelProto, block_size: int) -> onnx.ModelProto:
    """Every MatMul with a constant B -> int4 B + DequantizeLinear + MatMul (onnxruntime's weight-only quantizer).

    The MatMuls keep their names (the quantizer renames them; LM_HEAD_NODE must stay findable).
    """
    names = {n.output[0]: n.name for n in model.graph.node if n.op_type == "MatMul"}
    with _quiet_logging():
        from onnxruntime.quantization import QuantFormat
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        quantizer = MatMulNBitsQuantizer(model, bits=4, block_size=block_size, is_symmetric=True,
                                         quant_format=QuantFormat.QDQ, op_types_to_quantize=("MatMul",))
        quantizer.process()
    model = quantizer.model.model
    for node in model.graph.node:
        if node.op_type == "MatMul" and node.output[0] in names:
            node.name = names[node.output[0]]
    return model
