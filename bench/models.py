"""The models `make bench` runs: random-weight Llama models of published sizes, built into runs/bench/.

Random weights are fine for speed (the work per token does not depend on the values), and give
comparable figures: `llama2c-15m` has the shape of llama2.c's stories15M (dim 288, 6 layers, 6 heads,
hidden 768, vocabulary 32 000), `llama-3m` the small anchor of the issue (dim 256, 4 layers, vocab 1024).

`llama2c-15m` is built as a llama2.c user would have it: a model.bin + tokenizer.bin pair in llama2.c's
formats, imported by export/llama2c.py (bench/llama2c_model.py). The others are built here:
each is a real pocketlm model folder (manifest.json task "text", tokenizer.json, model.onnx +
model.int8.onnx + model.q4.onnx built by export.onnx_graph / export.quantize, as `make export` does), so
the page, the native backend and the hf/ export all read it like a shipped model. The tokenizer is a
byte-level BPE of the requested size trained (export.tokenizer_train) on seeded synthetic text, so the
folder needs nothing outside this repository. Weights use a "wide" init (embedding N(0, 1), each
Linear N(0, 1/fan_in), the final norm's gain N(0, 1)) rather than training's 0.02: logits then spread by
~sqrt(dim) (std ~17), so greedy tokens have clear margins (median ~3, rarely below 0.05) and the
browser/native/transformers.js comparison is not decided by float rounding; and with the tied head a
random final gain keeps greedy decoding from repeating the current token forever (measured: 70-110
distinct tokens in 128 steps).

Folders are cached by a key (shape, seed, builder version) kept in manifest.training["bench_key"].

    build_random_model("llama2c-15m", out_root="runs/bench/models") -> folder path
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import shutil
import tempfile

from pocketlm.manifest import Architecture, Manifest, TokenizerInfo, Variant, load_manifest, sha256_file
from pocketlm.tasks import text as text_task

BUILDER_VERSION = 6  # 3: decode graphs carry the greedy head (next_token, logits_sum); 4: and its runner_up;
# 5: q4 is int4 + DequantizeLinear, folded at session start (export/quantize.py); 6: attention is
# GroupQueryAttention over the caller's cache, written in place (manifest format 2)
TOKENIZER_VERSION = 3  # of the bench tokenizers (unchanged since builder version 3: not retrained)
SPECIALS = {"pad_id": 0, "bos_id": 1, "eos_id": 2}

SHAPES = {
    # llama2.c stories15M: dim 288, 6 layers, 6 heads, hidden 768, vocab 32000 (its context is 256)
    "llama2c-15m": Architecture(vocab_size=32000, dim=288, n_layers=6, n_heads=6, n_kv_heads=6, hidden_dim=768,
                                max_seq_len=256),
    # the small anchor: dim 256, 4 layers, vocab 1024 (heads as the shipped models)
    "llama-3m": Architecture(vocab_size=1024, dim=256, n_layers=4, n_heads=8, n_kv_heads=8, hidden_dim=768,
                             max_seq_len=256),
}

_CONSONANTS = "bcdfghjklmnprstvwz"
_VOWELS = "aeiouy"


def synthetic_text(seed: int, n_lines: int = 40000, n_words: int = 60000) -> list[str]:
    """Seeded pseudo-English: Zipf-distributed made-up words, punctuation, numbers (for tokenizer training
    and prompts). Deterministic for a seed."""
    rng = random.Random(seed)
    words = set()
    while len(words) < n_words:
        n = rng.choice((1, 2, 2, 3, 3, 4, 5))
        words.add("".join(rng.choice(_CONSONANTS) + rng.choice(_VOWELS) + (rng.choice(_CONSONANTS) if rng.random() < 0.3 else "")
                          for _ in range(n)))
    words = sorted(words)
    rng.shuffle(words)
    cum, total = [], 0.0
    for rank in range(len(words)):
        total += 1.0 / (rank + 1)
        cum.append(total)
    lines = []
    for _ in range(n_lines):
        k = rng.randint(4, 16)
        ws = rng.choices(words, cum_weights=cum, k=k)
        if rng.random() < 0.2:
            ws.insert(rng.randrange(len(ws)), str(rng.randint(0, 2100)))
        s = " ".join(ws)
        lines.append(s[0].upper() + s[1:] + rng.choice(".,.!?;:") + ("\n" if rng.random() < 0.3 else " "))
    return lines


def bench_key(name: str, arch: Architecture, seed: int) -> str:
    doc = json.dumps({"name": name, "arch": dataclasses.asdict(arch), "seed": seed, "v": BUILDER_VERSION}, sort_keys=True)
    return hashlib.sha256(doc.encode()).hexdigest()[:16]


def cached(folder: str, key: str) -> bool:
    from export.quantize import VARIANTS

    try:
        return load_manifest(folder, check_files=False).training.get("bench_key") == key and all(
            os.path.isfile(os.path.join(folder, f)) for f, _ in VARIANTS.values())
    except (ValueError, OSError):
        return False


def train_bench_tokenizer(vocab_size: int, seed: int, path: str, log=print) -> str:
    """A byte-level BPE of exactly vocab_size tokens on synthetic_text(seed), cached at `path`."""
    from export.tokenizer_train import save_tokenizer, train_tokenizer

    key_path = path + ".key"
    key = f"{vocab_size}-{seed}-{TOKENIZER_VERSION}"
    if os.path.isfile(path) and os.path.isfile(key_path) and open(key_path).read() == key:
        return path
    lines = synthetic_text(seed)
    log(f"training a {vocab_size}-token BPE on {len(lines)} synthetic lines")
    tok = train_tokenizer(lines, vocab_size)
    if tok.get_vocab_size() != vocab_size:
        raise RuntimeError(f"the synthetic corpus gave {tok.get_vocab_size()} tokens, not {vocab_size}")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    save_tokenizer(tok, path + ".tmp")
    os.replace(path + ".tmp", path)
    with open(key_path, "w") as f:
        f.write(key)
    return path


def random_state_dict(arch: Architecture, seed: int) -> dict:
    """export/model.py Transformer weights with the wide init (module docstring)."""
    import torch

    from export.model import Transformer

    torch.manual_seed(seed)
    model = Transformer(arch)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name == "norm.weight":  # the final norm's gain: random, see the module docstring
                p.normal_(0.0, 1.0)
            elif name.endswith("norm.weight"):
                p.fill_(1.0)
            elif name == "tok_embeddings.weight":
                p.normal_(0.0, 1.0)
            else:  # Linear [out, in]
                p.normal_(0.0, p.shape[1] ** -0.5)
    return {k: v.detach() for k, v in model.state_dict().items()}


def build_random_model(name: str, out_root: str, *, arch: Architecture | None = None, seed: int = 0,
                       log=print) -> str:
    """Build (or reuse) runs/bench/models/<name>/; returns the folder. `arch` defaults to SHAPES[name]."""
    import onnx

    from export import onnx_graph, quantize
    from export.quantize import SESSION_CONFIG, VARIANTS

    arch = arch or SHAPES[name]
    folder = os.path.abspath(os.path.join(out_root, name))
    key = bench_key(name, arch, seed)
    if cached(folder, key):
        return folder
    log(f"building random-weight model {name} (dim {arch.dim}, {arch.n_layers} layers, vocab {arch.vocab_size})")
    tok_path = train_bench_tokenizer(arch.vocab_size, seed, os.path.join(os.path.dirname(folder), ".tokenizers",
                                                                         f"bpe-{arch.vocab_size}-{seed}.json"), log)
    os.makedirs(out_root, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{name}.partial-", dir=os.path.dirname(folder))
    try:
        state = random_state_dict(arch, seed)
        n_params = sum(v.numel() for k, v in state.items() if not k.startswith("rope_"))
        fp32 = os.path.join(staging, VARIANTS["fp32"][0])
        onnx.save(onnx_graph.build_decode_graph(state, arch), fp32)
        quantize.quantize_int8(fp32, os.path.join(staging, VARIANTS["int8"][0]))
        quantize.quantize_q4(fp32, os.path.join(staging, VARIANTS["q4"][0]))
        shutil.copyfile(tok_path, os.path.join(staging, "tokenizer.json"))
        variants = {v: Variant(file=f, sha256=sha256_file(os.path.join(staging, f)),
                               bytes=os.path.getsize(os.path.join(staging, f)), quantization=q,
                               session_config=dict(SESSION_CONFIG.get(v, {})))
                    for v, (f, q) in VARIANTS.items()}
        manifest = Manifest(
            name=name, task="text", architecture=arch,
            tokenizer=TokenizerInfo(file="tokenizer.json", sha256=sha256_file(os.path.join(staging, "tokenizer.json")),
                                    vocab_size=arch.vocab_size, **SPECIALS),
            variants=variants, default_variant="fp32",
            prompt={"format": text_task.FORMAT}, sampling={"max_new_tokens": 128, "temperature": 0.0},
            training={"random_weights": True, "seed": seed, "parameters": n_params, "bench_key": key},
        )
        with open(os.path.join(staging, "manifest.json"), "w", encoding="utf-8") as f:
            f.write(manifest.to_json())
        load_manifest(staging)
        if os.path.exists(folder):
            shutil.rmtree(folder)
        os.replace(staging, folder)
        os.chmod(folder, 0o755)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return folder


def as_text_model(model_dir: str, out_root: str) -> str:
    """A copy of a shipped model folder whose manifest runs the generic "text" task (same files, same
    hashes), so every model is benchmarked with the same prompt and loop. Returns the copy's folder."""
    with open(os.path.join(model_dir, "manifest.json"), encoding="utf-8") as f:
        data = json.load(f)
    name = data["name"]
    data.update(task="text", prompt={"format": text_task.FORMAT})
    data["sampling"] = {"max_new_tokens": 128, "temperature": 0.0}
    folder = os.path.abspath(os.path.join(out_root, name))
    os.makedirs(folder, exist_ok=True)
    files = ["tokenizer.json"] + [v["file"] for v in data["variants"].values()]
    for f in files:
        src, dst = os.path.join(model_dir, f), os.path.join(folder, f)
        if not (os.path.isfile(dst) and os.path.getsize(dst) == os.path.getsize(src) and sha256_file(dst) == sha256_file(src)):
            shutil.copyfile(src, dst)
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    path = os.path.join(folder, "manifest.json")
    if not os.path.isfile(path) or open(path, encoding="utf-8").read() != text:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    load_manifest(folder)
    return folder
