"""Importing llama2.c checkpoints (export/llama2c.py, `python -m export llama2c`, `make export MODEL=x.bin`).

The test writes random-weight checkpoints in each of llama2.c's formats itself, with struct and numpy in
the order of llama2.c's export.py (v0 legacy tied and untied = negative vocab, v1, v2 Q8_0), plus a
matching tokenizer.bin; imports them; and holds the fp32 ONNX graph (onnxruntime: a prefill, then cached
decode steps) to `runc_forward`, run.c's forward written out here in numpy: interleaved rotary pairs,
token by token with a KV cache, on the very weights written (Q8_0: the dequantized values).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from conftest import ROOT, subprocess_env
from export.onnx_graph import empty_cache, graph_feeds
from pocketlm.manifest import load_manifest

MAGIC = 0x616B3432


@dataclass(frozen=True)
class Config:
    dim: int = 64
    hidden_dim: int = 96
    n_layers: int = 2
    n_heads: int = 4
    n_kv_heads: int = 2
    vocab_size: int = 300
    seq_len: int = 32

    @property
    def head_size(self) -> int:
        return self.dim // self.n_heads

    @property
    def kv_dim(self) -> int:
        return self.n_kv_heads * self.head_size


SMALL = Config()
MHA = Config(n_kv_heads=4)
STORIES15M = Config(dim=288, hidden_dim=768, n_layers=6, n_heads=6, n_kv_heads=6, vocab_size=32000, seq_len=256)


# ------------------------------------------------------------------------- writing checkpoints


def random_weights(cfg: Config, seed: int, shared: bool) -> dict[str, np.ndarray]:
    """run.c's TransformerWeights, per-layer tensors stacked: wq [L, dim, dim] is (layer, out, in)."""
    rng = np.random.default_rng(seed)
    L, D, F, V = cfg.n_layers, cfg.dim, cfg.hidden_dim, cfg.vocab_size

    def linear(*shape):  # N(0, 1/fan_in): activations keep their scale, logits spread by ~sqrt(D)
        return rng.normal(0, shape[-1] ** -0.5, shape).astype(np.float32)

    w = {"emb": rng.normal(0, 1, (V, D)).astype(np.float32),
         "att_norm": (1 + 0.2 * rng.normal(size=(L, D))).astype(np.float32),
         "wq": linear(L, D, D), "wk": linear(L, cfg.kv_dim, D), "wv": linear(L, cfg.kv_dim, D), "wo": linear(L, D, D),
         "ffn_norm": (1 + 0.2 * rng.normal(size=(L, D))).astype(np.float32),
         "w1": linear(L, F, D), "w2": linear(L, D, F), "w3": linear(L, F, D),
         "norm": (1 + 0.2 * rng.normal(size=D)).astype(np.float32)}
    w["cls"] = w["emb"] if shared else rng.normal(0, 1, (V, D)).astype(np.float32)
    return w


def params(cfg: Config, vocab_sign: int = 1) -> bytes:
    return struct.pack("<7i", cfg.dim, cfg.hidden_dim, cfg.n_layers, cfg.n_heads, cfg.n_kv_heads,
                       vocab_sign * cfg.vocab_size, cfg.seq_len)


def f32(*arrays) -> bytes:
    return b"".join(np.ascontiguousarray(a, dtype="<f4").tobytes() for a in arrays)


def write_v0(path, cfg: Config, w: dict, shared: bool) -> dict:
    """export.py legacy_export: negative vocab = untied; the rotary tables before the classifier."""
    half = cfg.head_size // 2
    freqs = 1.0 / 10000.0 ** (np.arange(0, cfg.head_size, 2)[:half] / cfg.head_size)
    angles = np.outer(np.arange(cfg.seq_len), freqs)
    body = f32(w["emb"], w["att_norm"], w["wq"], w["wk"], w["wv"], w["wo"], w["ffn_norm"], w["w1"], w["w2"], w["w3"],
               w["norm"], np.cos(angles), np.sin(angles))
    Path(path).write_bytes(params(cfg, 1 if shared else -1) + body + (b"" if shared else f32(w["cls"])))
    return w


def versioned_header(version: int, cfg: Config, shared: bool, group_size: int | None = None) -> bytes:
    head = struct.pack("<Ii", MAGIC, version) + params(cfg) + struct.pack("<B", int(shared))
    if group_size is not None:
        head += struct.pack("<i", group_size)
    return head + b"\0" * (256 - len(head))


def write_v1(path, cfg: Config, w: dict, shared: bool) -> dict:
    """export.py version1_export: the norms first, then the matrices."""
    body = f32(w["att_norm"], w["ffn_norm"], w["norm"], w["emb"], w["wq"], w["wk"], w["wv"], w["wo"],
               w["w1"], w["w2"], w["w3"]) + (b"" if shared else f32(w["cls"]))
    Path(path).write_bytes(versioned_header(1, cfg, shared) + body)
    return w


def q80(tensor: np.ndarray, group_size: int) -> tuple[bytes, np.ndarray]:
    """export.py quantize_q80: int8 bytes + fp32 scale bytes, and the dequantized tensor."""
    groups = tensor.astype(np.float32).reshape(-1, group_size)
    scale = (np.abs(groups).max(axis=1) / 127.0).astype(np.float32)
    q = np.round(groups / scale[:, None]).astype(np.int8)
    return q.tobytes() + f32(scale), (q.astype(np.float32) * scale[:, None]).reshape(tensor.shape)


def write_v2(path, cfg: Config, w: dict, shared: bool, group_size: int = 32) -> dict:
    """export.py version2_export: fp32 norms, then each matrix (each layer) as int8 + scales. Returns the
    weights as runq.c sees them (dequantized)."""
    seen = dict(w)
    body = f32(w["att_norm"], w["ffn_norm"], w["norm"])
    blob, seen["emb"] = q80(w["emb"], group_size)
    body += blob
    for name in ("wq", "wk", "wv", "wo", "w1", "w2", "w3"):
        layers = []
        for layer in w[name]:
            blob, deq = q80(layer, group_size)
            body += blob
            layers.append(deq)
        seen[name] = np.stack(layers)
    if shared:
        seen["cls"] = seen["emb"]
    else:
        blob, seen["cls"] = q80(w["cls"], group_size)
        body += blob
    Path(path).write_bytes(versioned_header(2, cfg, shared, group_size) + body)
    return seen


WRITERS = {"v0": write_v0, "v1": write_v1, "v2": write_v2}


def write_tokenizer_bin(path, vocab_size: int) -> None:
    """<unk>, <s>, </s> as llama2.c stores them, the 256 byte pieces, " ", then distinct made-up pieces."""
    pieces = [b"<unk>", b"\n<s>\n", b"\n</s>\n"] + [b"<0x%02X>" % b for b in range(256)] + [b" "]
    letters = "abcdefghijklmnopqrstuvwxyz"
    k = 0
    while len(pieces) < vocab_size:
        n, piece = k, ""
        while True:  # bijective base 26: a, b, ..., z, aa, ab, ...
            piece = letters[n % 26] + piece
            n = n // 26 - 1
            if n < 0:
                break
        pieces.append((" " if k % 3 == 0 else "").encode() + piece.encode())
        k += 1
    with open(path, "wb") as f:
        f.write(struct.pack("<i", max(len(p) for p in pieces)))
        for i, piece in enumerate(pieces[:vocab_size]):
            f.write(struct.pack("<fi", 0.0 if i < 259 else -float(i), len(piece)) + piece)


# ------------------------------------------------------------------------------ run.c in numpy


def runc_forward(w: dict, cfg: Config, tokens: list[int]) -> np.ndarray:
    """run.c forward() for each token in turn (float64); returns the logits [T, V]."""
    w = {k: v.astype(np.float64) for k, v in w.items()}
    Hd, kv_mul = cfg.head_size, cfg.n_heads // cfg.n_kv_heads
    key_cache = np.zeros((cfg.n_layers, len(tokens), cfg.kv_dim))
    value_cache = np.zeros_like(key_cache)

    def rmsnorm(x, weight):
        return weight * (x / np.sqrt(np.mean(x * x) + 1e-5))

    i = np.arange(0, cfg.dim, 2)
    freq = 1.0 / 10000.0 ** ((i % Hd) / Hd)  # per pair (i, i+1)
    out = []
    for pos, token in enumerate(tokens):
        x = w["emb"][token].copy()
        fcr, fci = np.cos(pos * freq), np.sin(pos * freq)
        for l in range(cfg.n_layers):
            xb = rmsnorm(x, w["att_norm"][l])
            q, k, v = w["wq"][l] @ xb, w["wk"][l] @ xb, w["wv"][l] @ xb
            q0, q1 = q[0::2].copy(), q[1::2].copy()
            q[0::2], q[1::2] = q0 * fcr - q1 * fci, q0 * fci + q1 * fcr
            k0, k1, n = k[0::2].copy(), k[1::2].copy(), cfg.kv_dim // 2
            k[0::2], k[1::2] = k0 * fcr[:n] - k1 * fci[:n], k0 * fci[:n] + k1 * fcr[:n]
            key_cache[l, pos], value_cache[l, pos] = k, v
            xb = np.zeros(cfg.dim)
            for h in range(cfg.n_heads):
                kv = slice((h // kv_mul) * Hd, (h // kv_mul + 1) * Hd)
                att = key_cache[l, :pos + 1, kv] @ q[h * Hd:(h + 1) * Hd] / np.sqrt(Hd)
                att = np.exp(att - att.max())
                att /= att.sum()
                xb[h * Hd:(h + 1) * Hd] = att @ value_cache[l, :pos + 1, kv]
            x += w["wo"][l] @ xb
            xb = rmsnorm(x, w["ffn_norm"][l])
            hb, hb2 = w["w1"][l] @ xb, w["w3"][l] @ xb
            x += w["w2"][l] @ (hb / (1 + np.exp(-hb)) * hb2)
        out.append(w["cls"] @ rmsnorm(x, w["norm"]))
    return np.array(out)


def onnx_logits(model_path, cfg: Config, tokens: list[int], prefill: int) -> np.ndarray:
    """Logits [T, V] from pocketlm's decode graph: `prefill` tokens at once, then one token per cached step."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(model_path), opts, providers=["CPUExecutionProvider"])
    cache = empty_cache(load_manifest(os.path.dirname(model_path), check_files=False).architecture)
    presents = [f"present.{i}.{w}" for i in range(cfg.n_layers) for w in ("key", "value")]
    chunks = [tokens[:prefill]] + [[t] for t in tokens[prefill:]]
    out, start = [], 0
    for chunk in chunks:
        logits, *kv = sess.run(["logits"] + presents, graph_feeds(chunk, cache, start))
        cache, start = list(zip(kv[0::2], kv[1::2])), start + len(chunk)
        out.append(logits[0])
    return np.concatenate(out)


def tokens_for(cfg: Config, n: int, seed: int = 5) -> list[int]:
    return [1] + np.random.default_rng(seed).integers(3, cfg.vocab_size, n - 1).tolist()


def make_checkpoint(folder: Path, fmt: str, cfg: Config, shared: bool, seed: int = 0, stem: str = "model", **kw):
    """model.bin in `fmt` and tokenizer.bin beside it; returns (path, the weights as llama2.c sees them)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stem}.bin"
    seen = WRITERS[fmt](path, cfg, random_weights(cfg, seed, shared), shared, **kw)
    write_tokenizer_bin(folder / "tokenizer.bin", cfg.vocab_size)
    return path, seen


def import_quietly(path: Path, out: Path, **kw) -> str:
    from export.llama2c import import_checkpoint

    return import_checkpoint(str(path), out_root=str(out), log=lambda *_: None, **kw)


def assert_matches_runc(folder, cfg: Config, seen: dict, n_tokens: int, prefill: int):
    tokens = tokens_for(cfg, n_tokens)
    expected = runc_forward(seen, cfg, tokens)
    got = onnx_logits(Path(folder) / "model.onnx", cfg, tokens, prefill)
    scale = np.abs(expected).max()
    assert np.abs(got - expected).max() <= 2e-5 * scale + 1e-4, (np.abs(got - expected).max(), scale)
    assert (got.argmax(-1) == expected.argmax(-1)).all()


# ------------------------------------------------------------------------------------- formats


@pytest.mark.parametrize("fmt, shared, cfg", [
    ("v0", True, MHA), ("v0", False, SMALL), ("v1", True, SMALL), ("v1", False, MHA), ("v2", True, SMALL),
    ("v2", False, SMALL)], ids=["v0-tied-mha", "v0-untied-gqa", "v1-tied-gqa", "v1-untied-mha", "v2-tied-gqa",
                                "v2-untied-gqa"])
def test_every_format_imports_to_run_c_logits(tmp_path, fmt, shared, cfg):
    path, seen = make_checkpoint(tmp_path / "in", fmt, cfg, shared)
    folder = import_quietly(path, tmp_path / "models", variants=("fp32",))
    m = load_manifest(folder)
    assert m.architecture.tie_embeddings is shared and m.architecture.n_kv_heads == cfg.n_kv_heads
    assert m.architecture.max_seq_len == cfg.seq_len and m.training["checkpoint_format"].startswith(fmt)
    assert_matches_runc(folder, cfg, seen, n_tokens=20, prefill=7)


def test_cli_imports_every_variant_into_a_text_model_folder(tmp_path):
    """`python -m export llama2c model.bin --out DIR` (tokenizer.bin beside it, name from the file): the folder
    holds the three variants with the KV-cache contract and the greedy head; quantized ones stay close."""
    path, seen = make_checkpoint(tmp_path / "in", "v1", SMALL, shared=True, stem="tiny-stories")
    proc = subprocess.run([sys.executable, "-m", "export", "llama2c", str(path), "--out", str(tmp_path / "models")],
                          cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "step 2/4: weights" in proc.stdout and "checked against run.c" in proc.stdout
    folder = tmp_path / "models" / "tiny-stories"
    assert set(os.listdir(tmp_path / "models")) == {"tiny-stories"}
    assert set(os.listdir(folder)) == {"manifest.json", "tokenizer.json", "model.onnx", "model.int8.onnx",
                                       "model.q4.onnx"}
    m = load_manifest(str(folder))
    assert (m.name, m.task, m.prompt, m.default_variant) == ("tiny-stories", "text", {"format": "text-v1"}, "fp32")
    assert (m.tokenizer.bos_id, m.tokenizer.eos_id, m.tokenizer.vocab_size) == (1, 2, SMALL.vocab_size)
    assert m.sampling == {"temperature": 1.0, "top_p": 0.9, "max_new_tokens": SMALL.seq_len}
    assert m.graph.has_head and m.training["source"] == "llama2.c"
    assert m.training["checkpoint_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    vocab = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))["model"]["vocab"]
    assert vocab["<s>"] == 1 and vocab["</s>"] == 2 and vocab["▁"] == 259
    assert_matches_runc(folder, SMALL, seen, n_tokens=12, prefill=12)
    check_quantized_variants(folder, SMALL, seen)


def check_quantized_variants(folder, cfg: Config, seen: dict):
    """int8 / q4 logits (prefill + cached steps) correlate with run.c's, and not with a tied stand-in when the
    classifier is untied (a quantizer that shared the embedding would give that instead). Measured on these
    random weights: int8 0.9998, q4 0.98 (tied) / 0.986 (untied), the tied stand-in 0.04."""
    tokens = tokens_for(cfg, 16)
    expected = runc_forward(seen, cfg, tokens).ravel()
    tied_stand_in = runc_forward({**seen, "cls": seen["emb"]}, cfg, tokens).ravel()
    for file, floor in (("model.int8.onnx", 0.99), ("model.q4.onnx", 0.95)):
        got = onnx_logits(Path(folder) / file, cfg, tokens, prefill=8).ravel()
        assert np.corrcoef(got, expected)[0, 1] >= floor, file
        if seen["cls"] is not seen["emb"]:
            assert np.corrcoef(got, tied_stand_in)[0, 1] < 0.5, file


def test_an_untied_classifier_is_quantized_as_itself(tmp_path):
    """The untied graph's int8 / q4 variants quantize the classifier (not the embedding) and keep the greedy
    head: next_token is the argmax of the last row of the variant's own logits."""
    path, seen = make_checkpoint(tmp_path / "in", "v0", SMALL, shared=False)
    folder = import_quietly(path, tmp_path / "models")
    check_quantized_variants(folder, SMALL, seen)
    sess = ort.InferenceSession(os.path.join(folder, "model.q4.onnx"), providers=["CPUExecutionProvider"])
    tokens = tokens_for(SMALL, 6)
    feeds = graph_feeds(tokens, empty_cache(load_manifest(folder, check_files=False).architecture))
    logits, next_token = sess.run(["logits", "next_token"], feeds)
    assert next_token[0] == logits[0, -1].argmax()


def test_stories15m_shape(tmp_path):
    """dim 288, 6 layers, 6 heads, vocab 32000, seq_len 256 (stories15M's header): size rule, import, logits."""
    path, seen = make_checkpoint(tmp_path / "in", "v0", STORIES15M, shared=True)
    assert path.stat().st_size == 60_816_028  # the worked example in export/llama2c.py's docstring
    folder = import_quietly(path, tmp_path / "models", variants=("fp32",))
    assert load_manifest(folder).architecture.vocab_size == 32000
    assert_matches_runc(folder, STORIES15M, seen, n_tokens=10, prefill=6)


def test_the_torch_model_with_converted_weights_is_run_c(tmp_path):
    """export/model.py's Transformer (tied and untied) loads the converted state strictly and gives run.c's logits."""
    import torch

    from export.llama2c import read_header, read_weights, to_pocketlm
    from export.model import Transformer

    for shared in (True, False):
        path, seen = make_checkpoint(tmp_path / str(shared), "v1", SMALL, shared=shared)
        header = read_header(str(path))
        state = to_pocketlm(read_weights(str(path), header, log=lambda *_: None), header)
        model = Transformer(header.architecture()).eval()
        model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in state.items()}, strict=True)
        tokens = tokens_for(SMALL, 12)
        with torch.no_grad():
            got = model(torch.tensor([tokens]))[0][0].numpy()
        np.testing.assert_allclose(got, runc_forward(seen, SMALL, tokens), atol=2e-4, rtol=1e-4)


# -------------------------------------------------------------------------------------- errors


def cli_error(argv: list[str], capsys) -> str:
    import export.__main__ as cli

    assert cli.main(["llama2c", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.fixture
def good_v1(tmp_path):
    path, _ = make_checkpoint(tmp_path / "in", "v1", SMALL, shared=True)
    return path


def test_a_checkpoint_with_8_dimensions_per_head_is_refused_at_once(tmp_path, capsys):
    """stories260K's shape (dim 64, 8 heads): the decode graph's GroupQueryAttention cannot run it, so the
    import says so before converting anything, and writes nothing."""
    path, _ = make_checkpoint(tmp_path / "in", "v1", Config(dim=64, n_heads=8, n_kv_heads=4), shared=True)
    err = cli_error([str(path), "--out", str(tmp_path / "o")], capsys)
    assert "head_dim 8 (dim 64 / 8 heads) is not a multiple of 16" in err and "stories260K" in err
    assert not (tmp_path / "o").exists()


def test_truncated_checkpoints_are_refused(good_v1, tmp_path, capsys):
    data = good_v1.read_bytes()
    good_v1.write_bytes(data[:-100])
    assert "is truncated: its header (v1 (fp32): dim 64" in cli_error([str(good_v1), "--out", str(tmp_path / "o")], capsys)
    good_v1.write_bytes(data[:100])
    assert "inside its 256-byte header" in cli_error([str(good_v1)], capsys)
    good_v1.write_bytes(data[:2])
    assert "not even a llama2.c header" in cli_error([str(good_v1)], capsys)
    assert not (tmp_path / "o").exists()


def test_a_file_longer_than_its_header_implies_is_refused(good_v1, capsys):
    good_v1.write_bytes(good_v1.read_bytes() + b"\0" * 64)
    err = cli_error([str(good_v1)], capsys)
    assert "does not match its header" in err and "the file has" in err and "(64 more)" in err


def test_unknown_version_and_unknown_magic_are_refused(good_v1, capsys):
    data = bytearray(good_v1.read_bytes())
    data[4:8] = struct.pack("<i", 7)
    good_v1.write_bytes(bytes(data))
    assert "version 7: this importer reads versions 0 (legacy), 1 (fp32) and 2 (Q8_0)" in cli_error([str(good_v1)], capsys)
    good_v1.write_bytes(b"GGUF" + b"\xff" * 400)
    assert "not a llama2.c checkpoint: unknown magic 0x46554747" in cli_error([str(good_v1)], capsys)


def test_headers_that_cannot_fit_their_file_are_refused_without_reading_it(good_v1, capsys):
    """A billion layers (a stray file read as a legacy header) or a Q8_0 group that splits a tensor."""
    good_v1.write_bytes(struct.pack("<7i", 64, 96, 10**9, 4, 4, 300, 32) + b"\0" * 1000)
    assert "is truncated" in cli_error([str(good_v1)], capsys)  # at once: the size is arithmetic
    cfg = Config(dim=40, hidden_dim=40, n_heads=2, n_kv_heads=2)  # 300 * 40 values: not groups of 64
    path, _ = make_checkpoint(good_v1.parent / "q", "v2", cfg, shared=True, group_size=16)
    data = bytearray(path.read_bytes())
    data[37:41] = struct.pack("<i", 64)
    path.write_bytes(bytes(data))
    assert "group_size 64 does not divide the size of tok_embeddings.weight" in cli_error([str(path)], capsys)


def test_a_tokenizer_of_another_vocabulary_or_none_is_refused(good_v1, tmp_path, capsys):
    write_tokenizer_bin(good_v1.parent / "small.bin", SMALL.vocab_size - 10)
    write_tokenizer_bin(good_v1.parent / "big.bin", SMALL.vocab_size + 3)
    err = cli_error([str(good_v1), "--tokenizer", str(good_v1.parent / "small.bin")], capsys)
    assert f"ends after {SMALL.vocab_size - 10} tokens, the model's vocabulary has {SMALL.vocab_size}" in err
    err = cli_error([str(good_v1), "--tokenizer", str(good_v1.parent / "big.bin")], capsys)
    assert f"holds 3 more tokens after the model's {SMALL.vocab_size} tokens" in err
    (good_v1.parent / "tokenizer.bin").unlink()
    err = cli_error([str(good_v1), "--out", str(tmp_path / "o")], capsys)
    assert "tokenizer file" in err and "tokenizer.bin' not found" in err and "TOKENIZER=" in err
    assert "unknown variants ['fp16']" in cli_error([str(good_v1), "--variants", "fp32,fp16"], capsys)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("failure", [RuntimeError("q4 quantizer crashed"), KeyboardInterrupt()], ids=["error", "ctrl-c"])
def test_a_failed_import_leaves_the_existing_folder_untouched(good_v1, tmp_path, monkeypatch, capsys, failure):
    """The last variant fails after the others were written: the previous folder is byte-identical, no staging
    folder is left, and the CLI says so in one line (exit 2, or 130 for Ctrl-C)."""
    import export.__main__ as cli
    import export.quantize

    folder = Path(import_quietly(good_v1, tmp_path / "models", variants=("fp32",)))
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    other, _ = make_checkpoint(tmp_path / "other", "v1", SMALL, shared=True, seed=9)

    def broken(src, dst, *a, **k):
        Path(dst).write_bytes(b"half a file")
        raise failure

    monkeypatch.setattr(export.quantize, "quantize_q4", broken)
    code = cli.main(["llama2c", str(other), "--name", "model", "--out", str(tmp_path / "models")])
    err = capsys.readouterr().err.strip()
    if isinstance(failure, KeyboardInterrupt):
        assert code == 130 and err == "import interrupted: the previous model folder is untouched"
    else:
        assert code == 2 and err.startswith("error: ") and "q4 quantizer crashed" in err and len(err.splitlines()) == 1
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert os.listdir(tmp_path / "models") == ["model"]  # no staging folder left behind


def test_make_export_with_a_bin_file_runs_the_import(tmp_path):
    """`make -n` prints the commands: MODEL=*.bin -> the llama2c import (TOKENIZER / NAME passed on)."""
    def dry_run(*args):
        proc = subprocess.run(["make", "-n", "export", *args], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    out = dry_run("MODEL=ckpt/stories15M.bin")
    assert "-m export llama2c ckpt/stories15M.bin" in out and "--tokenizer" not in out
    out = dry_run("MODEL=a.bin", "TOKENIZER=b/tok.bin", "NAME=story")
    assert "-m export llama2c a.bin --tokenizer b/tok.bin --name story" in out
    assert "-m export sql-autocomplete --data" in dry_run("MODEL=sql-autocomplete")
