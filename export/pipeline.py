"""The export pipeline: data -> tokenizer -> training -> ONNX variants -> model folder.

Stages keep their work in a run folder (runs/<name>/ by default), so an interrupted export
resumes: the tokenizer is reused when the data and size are the same, training resumes from its
last checkpoint. The model folder is assembled in a temporary folder beside the target and
swapped in only when every file is written and verified, so a failed or interrupted export
leaves the previous model intact.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile

import numpy as np
import onnx
import onnxruntime as ort
import torch

from export import onnx_graph, quantize
from export.data import SqlTrainingData, group_by_database, read_sql_rows, split_by_database
from export.data_reminders import ReminderTrainingData, read_reminder_rows, split_rows
from export.recipes import Recipe
from export.swap import swap_in
from export.tokenizer_train import check_parity, save_tokenizer, train_tokenizer
from export.train import fingerprint, train
from pocketlm.manifest import GraphContract, Manifest, TokenizerInfo, Variant, load_manifest, sha256_file
from pocketlm.tasks import reminders
from pocketlm.tokenizer import Tokenizer

VARIANTS = {  # name -> (file, quantization)
    "fp32": ("model.onnx", "none"),
    "int8": ("model.int8.onnx", "int8-dynamic"),
    "q4": ("model.q4.onnx", "q4-matmulnbits-block32"),
}
SPECIALS = {"pad_id": 0, "bos_id": 1, "eos_id": 2}


class ExportError(RuntimeError):
    pass


def write_split(recipe: Recipe, data_dir: str, run_root: str):
    """Split the data (sql: by database; reminders: seeded rows) and write runs/<name>/{train,val}.jsonl.

    Returns (message, train rows, validation rows, training info for the manifest).
    """
    run_dir = os.path.join(run_root, recipe.name)
    os.makedirs(run_dir, exist_ok=True)
    data_path = os.path.join(data_dir, recipe.data_file)
    if recipe.task == "reminders":
        rows = read_reminder_rows(data_path)
        train_rows, val_rows = split_rows(rows, recipe.val_fraction, recipe.split_seed)
        message = f"data: {len(rows)} unique requests; validation: {len(val_rows)} of them -> {run_dir}/val.jsonl"
        info = {"val_rows": len(val_rows)}
    else:
        rows = read_sql_rows(data_path)
        train_rows, val_rows, val_dbs = split_by_database(rows, recipe.val_fraction, recipe.split_seed)
        message = (f"data: {len(rows)} unique queries over {len({r['db_id'] for r in rows})} databases; "
                   f"validation: {len(val_rows)} queries from {len(val_dbs)} held-out databases -> {run_dir}/val.jsonl")
        info = {"val_dbs": val_dbs}
    _write_jsonl(os.path.join(run_dir, "val.jsonl"), val_rows)
    _write_jsonl(os.path.join(run_dir, "train.jsonl"), train_rows)
    return message, train_rows, val_rows, info


def _texts(recipe: Recipe, rows: list[dict]) -> list[str]:
    """The texts the tokenizer is trained on (and checked against the tokenizers library with)."""
    if recipe.task == "reminders":
        return [r["text"] for r in rows] + [" " + reminders.target_text(r) for r in rows]
    return [r["schema"] for r in rows] + [r["sql"] for r in rows]


def _training_data(recipe: Recipe, tokenizer, train_rows, val_rows):
    args = dict(bos_id=SPECIALS["bos_id"], eos_id=SPECIALS["eos_id"], max_seq_len=recipe.arch.max_seq_len,
                cfg=recipe.train)
    if recipe.task == "reminders":
        return ReminderTrainingData(tokenizer, train_rows, val_rows, **args)
    return SqlTrainingData(tokenizer, group_by_database(train_rows), group_by_database(val_rows), **args)


def export_model(recipe: Recipe, data_dir: str, out_root: str, run_root: str, log=print) -> str:
    """Run every stage for `recipe`; returns the model folder path."""
    run_dir = os.path.join(run_root, recipe.name)
    data_path = os.path.join(data_dir, recipe.data_file)
    message, train_rows, val_rows, split_info = write_split(recipe, data_dir, run_root)
    log(message)

    log("stage 1/4: tokenizer")
    texts = _texts(recipe, train_rows)
    tok_path = _tokenizer_stage(recipe, texts, run_dir)
    tokenizer = Tokenizer.from_file(tok_path)
    mismatch = check_parity(tok_path, texts + _texts(recipe, val_rows))
    if mismatch is not None:
        raise ExportError(f"pure-Python tokenizer differs from the tokenizers library on {mismatch!r}")
    if tokenizer.vocab_size != recipe.arch.vocab_size:
        raise ExportError(f"tokenizer has {tokenizer.vocab_size} tokens, the architecture expects "
                          f"{recipe.arch.vocab_size}: the corpus is too small for this vocabulary size")

    log("stage 2/4: training")
    data = _training_data(recipe, tokenizer, train_rows, val_rows)
    model, summary = train(recipe.arch, recipe.train, data, run_dir=run_dir, log=log)

    log("stage 3/4: ONNX variants")
    out_dir = os.path.abspath(os.path.join(out_root, recipe.name))
    os.makedirs(os.path.dirname(out_dir), exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{recipe.name}.partial-", dir=os.path.dirname(out_dir))
    try:
        variants = _build_variants(model, recipe, staging, log)
        log("stage 4/4: packaging")
        shutil.copyfile(tok_path, os.path.join(staging, "tokenizer.json"))
        manifest = Manifest(
            name=recipe.name,
            task=recipe.task,
            architecture=recipe.arch,
            tokenizer=TokenizerInfo(file="tokenizer.json", sha256=sha256_file(os.path.join(staging, "tokenizer.json")),
                                    vocab_size=tokenizer.vocab_size, **SPECIALS),
            variants=variants,
            default_variant="fp32",
            prompt=recipe.prompt,
            sampling=recipe.sampling,
            training={**summary, "data": recipe.data_file, "data_sha256": sha256_file(data_path),
                      "val_fraction": recipe.val_fraction, "split_seed": recipe.split_seed, **split_info},
        )
        with open(os.path.join(staging, "manifest.json"), "w", encoding="utf-8") as f:
            f.write(manifest.to_json())
        load_manifest(staging)  # everything we wrote must read back and verify
        swap_in(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log(f"wrote {out_dir}")
    return out_dir


def _tokenizer_stage(recipe: Recipe, texts: list[str], run_dir: str) -> str:
    path = os.path.join(run_dir, "tokenizer.json")
    key_path = path + ".key"
    key = fingerprint(recipe.vocab_size, texts)
    if os.path.exists(path) and os.path.exists(key_path) and open(key_path).read() == key:
        return path
    tok = train_tokenizer(texts, recipe.vocab_size)
    tmp = path + ".tmp"
    save_tokenizer(tok, tmp)
    os.replace(tmp, path)
    with open(key_path, "w") as f:
        f.write(key)
    return path


def _build_variants(model, recipe: Recipe, staging: str, log) -> dict[str, Variant]:
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    fp32_path = os.path.join(staging, VARIANTS["fp32"][0])
    onnx.save(onnx_graph.build_decode_graph(state, recipe.arch), fp32_path)
    quantize.quantize_int8(fp32_path, os.path.join(staging, VARIANTS["int8"][0]))
    quantize.quantize_q4(fp32_path, os.path.join(staging, VARIANTS["q4"][0]))
    probe = _probe_ids(recipe.arch)
    with torch.no_grad():
        expected = model(torch.tensor([probe]))[0][0].numpy()  # [S, vocab]
    variants = {}
    for name, (file, quant) in VARIANTS.items():
        path = os.path.join(staging, file)
        onnx.checker.check_model(path, full_check=True)
        logits = _run_prefill(path, recipe.arch, probe)
        agree = float((logits.argmax(-1) == expected.argmax(-1)).mean())
        err = float(np.abs(logits - expected).max())
        log(f"  {name:5s} {os.path.getsize(path) / 1e6:6.2f} MB  top-1 agreement with torch {agree:.3f}  "
            f"max |diff| {err:.2e}")
        if name == "fp32" and err > 1e-3:
            raise ExportError(f"fp32 ONNX logits differ from torch by {err:.2e}: the graph builder is wrong")
        variants[name] = Variant(file=file, sha256=sha256_file(path), bytes=os.path.getsize(path), quantization=quant)
    return variants


def _probe_ids(arch) -> list[int]:
    rng = random.Random(0)
    return [1] + [rng.randrange(3, arch.vocab_size) for _ in range(min(63, arch.max_seq_len - 1))]


def _run_prefill(path: str, arch, ids: list[int]):
    """Logits [S, vocab] of a prefill from an empty cache, through onnxruntime."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    graph = GraphContract()  # the names the manifest records
    empty = np.zeros((0, arch.n_kv_heads, arch.head_dim), dtype=np.float32)
    feeds = {graph.input_ids: np.array([ids], dtype=np.int64),
             graph.position_ids: np.arange(len(ids), dtype=np.int64)[None]}
    for i in range(arch.n_layers):
        feeds[graph.past_key.format(i=i)] = empty
        feeds[graph.past_value.format(i=i)] = empty
    return session.run([graph.logits], feeds)[0][0]


def _write_jsonl(path: str, rows: list[dict]) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
