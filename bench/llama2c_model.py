"""The bench's stories15M-shaped model as a llama2.c user has it: a `model.bin` + `tokenizer.bin` pair
imported with `python -m export llama2c` (export/llama2c.py), so `make bench` times exactly what that
command produces, next to transformers.js on the same weights (issue 6's acceptance).

Both files are written here, seeded, in llama2.c's own formats (nothing is downloaded):
- model.bin: version 1 (magic "ak42", fp32, shared classifier), the layout of llama2.c's export.py
  `version1_export`: the norms first, then the token embedding and the matrices layer by layer;
  random weights with bench/models.py's "wide" init (clear greedy margins, no endless repetition);
- tokenizer.bin: <unk>, <s>, </s>, the 256 byte pieces <0x00>..<0xFF>, then the pieces of a
  SentencePiece-style BPE (spaces as "▁" inside, stored as " " as llama2.c's exporter does) trained
  with `tokenizers` on bench/models.py's synthetic text; score = minus the merge rank, as
  SentencePiece orders merges.

    build_llama2c_model("llama2c-15m", "runs/bench/models") -> folder
"""

from __future__ import annotations

import hashlib
import json
import os
import struct

import numpy as np

from pocketlm.manifest import Architecture

VERSION = 4  # of this builder: a new value rebuilds cached folders (2: the graph's head answers the runner-up; 3: q4 as
# int4 + DequantizeLinear; 4: GroupQueryAttention over the caller's cache, manifest format 2)
MAGIC = 0x616B3432  # "ak42"


def write_checkpoint_v1(path: str, arch: Architecture, seed: int) -> None:
    """A random llama2.c version-1 checkpoint of `arch` (shared classifier)."""
    rng = np.random.default_rng(seed)
    L, D, F, V = arch.n_layers, arch.dim, arch.hidden_dim, arch.vocab_size
    kv = arch.n_kv_heads * arch.head_dim

    def linear(*shape):  # [L, out, in], N(0, 1/fan_in)
        return rng.normal(0.0, shape[-1] ** -0.5, shape).astype("<f4")

    tensors = [np.ones((L, D), "<f4"), np.ones((L, D), "<f4"),  # attention and ffn norm gains
               rng.normal(0.0, 1.0, D).astype("<f4"),  # final norm gain: random (bench/models.py docstring)
               rng.normal(0.0, 1.0, (V, D)).astype("<f4"),  # token embedding = classifier
               linear(L, D, D), linear(L, kv, D), linear(L, kv, D), linear(L, D, D),  # wq wk wv wo
               linear(L, F, D), linear(L, D, F), linear(L, F, D)]  # w1 w2 w3
    head = struct.pack("<Ii7iB", MAGIC, 1, D, F, L, arch.n_heads, arch.n_kv_heads, V, arch.max_seq_len, 1)
    with open(path + ".tmp", "wb") as f:
        f.write(head + b"\0" * (256 - len(head)))
        for t in tensors:
            f.write(np.ascontiguousarray(t).tobytes())
    os.replace(path + ".tmp", path)


def write_tokenizer_bin(path: str, vocab_size: int, seed: int) -> None:
    """A llama2.c tokenizer.bin of exactly vocab_size pieces (module docstring)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    from bench.models import synthetic_text

    pieces = [b"<unk>", b"\n<s>\n", b"\n</s>\n"] + [b"<0x%02X>" % b for b in range(256)]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - len(pieces), show_progress=False)
    bpe.train_from_iterator(synthetic_text(seed), trainer=trainer)
    trained = [p for p, _ in sorted(bpe.get_vocab().items(), key=lambda kv: kv[1])]
    if len(trained) != vocab_size - len(pieces):
        raise RuntimeError(f"the synthetic corpus gave {len(trained)} pieces, need {vocab_size - len(pieces)}")
    pieces += [p.replace("▁", " ").encode() for p in trained]
    # scores: byte pieces 0; trained pieces in training order (single characters first, then the merges)
    scores = [0.0] * 259 + [-float(i) for i in range(len(trained))]
    with open(path + ".tmp", "wb") as f:
        f.write(struct.pack("<i", max(len(p) for p in pieces)))
        for piece, score in zip(pieces, scores):
            f.write(struct.pack("<fi", score, len(piece)) + piece)
    os.replace(path + ".tmp", path)


def build_llama2c_model(name: str, out_root: str, arch: Architecture, seed: int = 0, log=print) -> str:
    """runs/bench/models/<name>/ imported from freshly written llama2.c files (cached by a key file)."""
    from export.llama2c import import_checkpoint

    folder = os.path.abspath(os.path.join(out_root, name))
    key = hashlib.sha256(json.dumps({"arch": arch.__dict__, "seed": seed, "v": VERSION}, sort_keys=True,
                                    default=str).encode()).hexdigest()[:16]
    key_path = folder + ".llama2c-key"
    if os.path.isfile(os.path.join(folder, "manifest.json")) and os.path.isfile(key_path) \
            and open(key_path).read() == key:
        return folder
    src = os.path.join(os.path.abspath(out_root), ".llama2c", name)
    os.makedirs(src, exist_ok=True)
    log(f"writing llama2.c files for {name} (dim {arch.dim}, {arch.n_layers} layers, vocab {arch.vocab_size}) "
        f"and importing them with export.llama2c")
    write_checkpoint_v1(os.path.join(src, "model.bin"), arch, seed)
    write_tokenizer_bin(os.path.join(src, "tokenizer.bin"), arch.vocab_size, seed)
    import_checkpoint(os.path.join(src, "model.bin"), os.path.join(src, "tokenizer.bin"), out_root=out_root,
                      name=name, log=lambda m: None)
    with open(key_path, "w") as f:
        f.write(key)
    return folder
