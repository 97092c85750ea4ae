"""Quantized variants of the decode graph (export/onnx_graph.py): int8 dynamic and 4-bit blockwise.

    quantize_int8(fp32_path, out_path)        MatMul -> DynamicQuantizeLinear + MatMulInteger (plain ONNX ops;
                                              onnxruntime fuses them to DynamicQuantizeMatMul at load)
    quantize_q4(fp32_path, out_path, 32)      MatMul -> com.microsoft MatMulNBits, 4 bits, symmetric, block 32

The tied embedding. The fp32 graph stores the token embedding E [V, D] once and reads it twice:
Gather (input rows) and Gemm(transB=1) (lm head). Neither quantizer touches that Gemm, so both
functions first give the lm head a real [D, V] initializer E^T (MatMul), let the quantizer turn it
into int8 / 4-bit like every other weight, then drop the fp32 E by re-reading the input rows out of
the quantized lm-head weight with plain ops (`share_embedding=True`, the default):

  int8: Gather(E^T_q [D, V], ids, axis=1) -> Transpose -> DequantizeLinear with the token's own
        scale / zero point (per-channel weights: one per lm-head column = one per token)
  q4:   MatMulNBits keeps B as E_q [V, D/32, 16] bytes (two 4-bit values each, low nibble first) and
        scales [V, D/32]; Gather the bytes, Cast, Gather a [256, 2] table of (lo-8, hi-8) by byte value,
        Gather the row scales, Mul, Reshape — 8 small nodes, no contrib op besides MatMulNBits
        (GatherBlockQuantized exists but is not verified in onnxruntime-web).
The decoded rows equal the lm head's dequantized weight exactly (tests). Measured, 4 layers, dim 256,
vocab 2048 (3.93 M params, fp32 15.8 MB): int8 4.11 MB shared vs 6.20 MB with the fp32 E kept;
q4 2.55 MB shared vs 4.64 MB. Cost: int8 none measurable; q4 feeds 4-bit input embeddings too, which
raised the relative logit error on random weights from 0.165 to 0.191 (dim 64) and 0.217 to 0.240
(dim 256, top-1 agreement unchanged at that scale) — taken for -45 % bytes; share_embedding=False keeps E.

Both outputs are deterministic (same input bytes -> same output bytes; tests/test_onnx_graph.py).
The graph's outputs are kept as they are: logits, the greedy head (next_token = ArgMax and logits_sum,
which read the lm head's output tensor, whichever node now computes it) and the new K/V rows
(tests/test_greedy_head.py runs the head on both quantized variants).
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile

import numpy as np
import onnx
from onnx import helper, numpy_helper

from export.onnx_graph import EMBEDDING, LM_HEAD_NODE

LM_HEAD_T = "lm_head.weight_t"  # [D, V] = E^T, materialized for the quantizers


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


def quantize_q4(fp32_path: str, out_path: str, block_size: int = 32, *, share_embedding: bool = True,
                accuracy_level: int | None = None) -> None:
    """4-bit symmetric blockwise (MatMulNBits) quantization of every weight MatMul incl. the lm head.

    Symmetric: no zero points stored (implicit 8), so a byte decodes to (lo - 8, hi - 8) with one lookup.
    """
    model, ids = _untie_lm_head(_load(fp32_path))
    dim = next(t for t in model.graph.initializer if t.name == LM_HEAD_T).dims[0]
    with _quiet_logging():
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        quantizer = MatMulNBitsQuantizer(model, bits=4, block_size=block_size, is_symmetric=True,
                                         accuracy_level=accuracy_level, op_types_to_quantize=("MatMul",))
        quantizer.process()
    model = quantizer.model.model
    if share_embedding:
        inits = {t.name: t for t in model.graph.initializer}
        w_q, scales = f"{LM_HEAD_T}_Q4", f"{LM_HEAD_T}_scales"
        if w_q not in inits or scales not in inits:
            raise RuntimeError(f"MatMulNBitsQuantizer did not produce {w_q}/{scales}; cannot share E")
        _, n_blocks, blob = inits[w_q].dims  # [V, D/bs, bs/2]
        if list(inits[scales].dims)[1:] != [n_blocks]:
            raise RuntimeError(f"unexpected MatMulNBits scales shape {list(inits[scales].dims)}")
        byte = np.arange(256)
        lut = np.stack([(byte & 15) - 8, (byte >> 4) - 8], axis=1).astype(np.float32)  # [256, 2]
        lut_t = numpy_helper.from_array(lut, "embed.nibbles")
        shape = numpy_helper.from_array(np.array([-1, n_blocks, 2 * blob], np.int64), "embed.shape_blocks")
        flat = numpy_helper.from_array(np.array([-1, n_blocks * 2 * blob], np.int64), "embed.shape_rows")
        axis = numpy_helper.from_array(np.array([2], np.int64), "embed.axis2")
        padded = n_blocks * 2 * blob != dim
        out = "embed.padded" if padded else "embed"
        nodes = [
            helper.make_node("Gather", [w_q, ids], ["embed.bytes"], name="embed.bytes"),  # [S, nb, bs/2] u8
            helper.make_node("Cast", ["embed.bytes"], ["embed.idx"], name="embed.idx", to=onnx.TensorProto.INT32),
            helper.make_node("Gather", ["embed.nibbles", "embed.idx"], ["embed.q"], name="embed.q"),  # [S,nb,bs/2,2]
            helper.make_node("Reshape", ["embed.q", shape.name], ["embed.blocks"], name="embed.blocks"),  # [S,nb,bs]
            helper.make_node("Gather", [scales, ids], ["embed.scale"], name="embed.scale"),  # [S, nb]
            helper.make_node("Unsqueeze", ["embed.scale", axis.name], ["embed.scale3"], name="embed.scale3"),
            helper.make_node("Mul", ["embed.blocks", "embed.scale3"], ["embed.deq"], name="embed.deq"),  # [S,nb,bs]
            helper.make_node("Reshape", ["embed.deq", flat.name], [out], name=out),  # [S, nb*bs]
        ]
        new_inits = [lut_t, shape, flat, axis]
        if padded:  # D not a multiple of block_size: the quantizer zero-padded K
            ends = numpy_helper.from_array(np.array([dim], np.int64), "embed.dim")
            zero = numpy_helper.from_array(np.array([0], np.int64), "embed.zero")
            one = numpy_helper.from_array(np.array([1], np.int64), "embed.axis1")
            nodes.append(helper.make_node("Slice", [out, zero.name, ends.name, one.name], ["embed"], name="embed"))
            new_inits += [ends, zero, one]
        _replace_gather(model, nodes, new_inits)
    _finish(model, out_path)
