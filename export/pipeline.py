"""The export pipeline: data -> tokenizer -> training -> ONNX variants -> model folder.

Stages keep their work in a run folder (runs/<name>/ by default), so an interrupted export
resumes: the tokenizer is reused when the data and size are the same, training resumes from its
last checkpoint. The model folder is assembled in a temporary folder beside the target and
swapped in only when every file is written and verified, so a failed or interrupted export
leaves the previous model intact. That last part (`write_model_folder`: variants, checks, manifest,
swap) is shared with the llama2.c import (export/llama2c.py).
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
from export.quantize import SESSION_CONFIG, VARIANTS  # the variant files and how each is run
from export.recipes import Recipe
from export.swap import swap_in
from export.tokenizer_train import check_parity, save_tokenizer, train_tokenizer
from export.train import fingerprint, train
from pocketlm.manifest import GraphContract, Manifest, TokenizerInfo, Variant, load_manifest, sha256_file
from pocketlm.tasks import reminders
from pocketlm.tokenizer import Tokenizer

SPECIALS = {"pad_id": 0, "bos_id": 1, "eos_id": 2}
FP32_TOLERANCE = 1e-3  # max |logit diff| of the fp32 graph against the reference (torch) on the probe


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
        keys = recipe.prompt.get("keys", reminders.KEYS)
        view = reminders.model_view
        return [view(r["text"]) for r in rows] + [" " + view(reminders.target_text(r, keys)) for r in rows]
    return [r["schema"] for r in rows] + [r["sql"] for r in rows]


def _training_data(recipe: Recipe, tokenizer, train_rows, val_rows):
    args = dict(bos_id=SPECIALS["bos_id"], eos_id=SPECIALS["eos_id"], max_seq_len=recipe.arch.max_seq_len,
                cfg=recipe.train)
    if recipe.task == "reminders":
        return ReminderTrainingData(tokenizer, train_rows, val_rows, keys=recipe.prompt.get("keys", reminders.KEYS), **args)
    return SqlTrainingData(tokenizer, group_by_database(train_rows), group_by_database(val_rows), **args)


def export_model(recipe: Recipe, data_dir: str, out_root: str, run_root: str, log=print) -> str:
    """Run every stage for `recipe`; returns the model folder path."""
    onnx_graph.check_supported(recipe.arch)  # before a training run that could not be exported
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

    with torch.no_grad():
        probe = probe_ids(recipe.arch)
        expected = model(torch.tensor([probe]))[0][0].numpy()  # [S, vocab]
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    training = {**summary, "data": recipe.data_file, "data_sha256": sha256_file(data_path),
                "val_fraction": recipe.val_fraction, "split_seed": recipe.split_seed, **split_info}
    return write_model_folder(
        os.path.join(out_root, recipe.name), state, recipe.arch, tok_path, (probe, expected),
        name=recipe.name, task=recipe.task, prompt=recipe.prompt, sampling=recipe.sampling, training=training,
        stages=("stage 3/4: ONNX variants", "stage 4/4: packaging"), log=log)


def write_model_folder(out_dir: str, state: dict, arch, tokenizer_path: str, expected: tuple[list[int], np.ndarray], *,
                       name: str, task: str, prompt: dict, sampling: dict, training: dict,
                       variants: tuple[str, ...] = tuple(VARIANTS), fp32_tolerance: float = FP32_TOLERANCE,
                       stages: tuple[str, str] = ("ONNX variants", "packaging"), log=print) -> str:
    """Build the ONNX variants of `state` (export/model.py names) and swap a verified model folder in at out_dir.

    expected: (probe ids, the reference logits [S, vocab] for them) that the fp32 graph must reproduce within
    fp32_tolerance (max |diff|). The folder is assembled in a staging folder beside out_dir and swapped in
    only when every file is written and the manifest reads back and verifies: a failure (or Ctrl-C) leaves
    the previous folder as it was. Returns the folder path.
    """
    log(stages[0])
    out_dir = os.path.abspath(out_dir)
    parent = os.path.dirname(out_dir)
    if os.path.exists(parent) and not os.path.isdir(parent):
        raise ExportError(f"{parent} is a file, not a folder: choose another --out")
    try:
        os.makedirs(parent, exist_ok=True)
        staging = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.partial-", dir=parent)
    except OSError as e:  # a file where the folder should be, no permission, no space
        raise ExportError(f"cannot create a model folder in {parent}: {e.strerror or e}; choose another --out") from None
    try:
        built = build_variants(state, arch, staging, expected, variants, fp32_tolerance, log)
        log(stages[1])
        shutil.copyfile(tokenizer_path, os.path.join(staging, "tokenizer.json"))
        manifest = Manifest(
            name=name,
            task=task,
            architecture=arch,
            tokenizer=TokenizerInfo(file="tokenizer.json", sha256=sha256_file(os.path.join(staging, "tokenizer.json")),
                                    vocab_size=arch.vocab_size, **SPECIALS),
            variants=built,
            default_variant="fp32" if "fp32" in built else next(iter(built)),
            prompt=prompt,
            sampling=sampling,
            training=training,
        )
        with open(os.path.join(staging, "manifest.json"), "w", encoding="utf-8") as f:
            f.write(manifest.to_json())
        load_manifest(staging)  # everything we wrote must read back and verify
        swap_in(staging, out_dir)
    except OSError as e:  # a full disk or an unwritable folder while writing: say where, keep the old folder
        shutil.rmtree(staging, ignore_errors=True)
        raise ExportError(f"could not write the model folder {out_dir} ({e.strerror or e}); the previous folder, "
                          "if any, is unchanged: free some space or choose another --out, then run again") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log(f"wrote {out_dir}")
    return out_dir


def _tokenizer_stage(recipe: Recipe, texts: list[str], run_dir: str) -> str:
    path = os.path.join(run_dir, "tokenizer.json")
    key_path = path + ".key"
    key = fingerprint(recipe.vocab_size, texts, *([list(recipe.special_tokens)] if recipe.special_tokens else []))
    if os.path.exists(path) and os.path.exists(key_path) and open(key_path).read() == key:
        return path
    tok = train_tokenizer(texts, recipe.vocab_size, recipe.special_tokens)
    tmp = path + ".tmp"
    save_tokenizer(tok, tmp)
    os.replace(tmp, path)
    with open(key_path, "w") as f:
        f.write(key)
    return path


def build_variants(state: dict, arch, staging: str, expected: tuple[list[int], np.ndarray],
                   names=tuple(VARIANTS), fp32_tolerance: float = FP32_TOLERANCE, log=print) -> dict[str, Variant]:
    """Write the requested variants into staging and check each against `expected` (probe ids, logits [S, V]).

    The fp32 graph is always built (the quantizers read it); it is removed again when not requested.
    """
    unknown = [n for n in names if n not in VARIANTS]
    if unknown or not names:
        raise ExportError(f"unknown variants {unknown or list(names)}; choose from {', '.join(VARIANTS)}")
    fp32_path = os.path.join(staging, VARIANTS["fp32"][0])
    onnx.save(onnx_graph.build_decode_graph(state, arch), fp32_path)
    for name in names:
        if name != "fp32":
            log(f"  quantizing {name}")  # seconds to minutes for bigger models: say what is running
            _quantizer(name, arch)(fp32_path, os.path.join(staging, VARIANTS[name][0]))
    probe, reference = expected
    variants = {}
    for name in ["fp32"] + [n for n in names if n != "fp32"]:
        file, quant = VARIANTS[name]
        path = os.path.join(staging, file)
        onnx.checker.check_model(path, full_check=True)
        logits = _run_prefill(path, arch, probe, SESSION_CONFIG.get(name, {}))
        agree = float((logits.argmax(-1) == reference.argmax(-1)).mean())
        err = float(np.abs(logits - reference).max())
        log(f"  {name:5s} {os.path.getsize(path) / 1e6:6.2f} MB  top-1 agreement with the reference {agree:.3f}  "
            f"max |diff| {err:.2e}")
        if name == "fp32" and err > fp32_tolerance:
            raise ExportError(f"fp32 ONNX logits differ from the reference by {err:.2e} (> {fp32_tolerance:.0e}): "
                              "the graph builder or the weight conversion is wrong")
        if name in names:
            variants[name] = Variant(file=file, sha256=sha256_file(path), bytes=os.path.getsize(path),
                                     quantization=quant, session_config=dict(SESSION_CONFIG.get(name, {})))
    if "fp32" not in names:
        os.remove(fp32_path)
    return variants


def _quantizer(name: str, arch):
    """The function that writes variant `name` from the fp32 file (looked up at call time, so tests can patch it).

    export/quantize.py shares the tied embedding with the lm head and refuses an untied graph; an untied
    one (a llama2.c checkpoint with its own classifier) gets the same quantization without the sharing.
    """
    if not arch.tie_embeddings:
        return lambda src, dst: quantize.quantize_untied(name, src, dst)
    return {"int8": quantize.quantize_int8, "q4": quantize.quantize_q4}[name]


def probe_ids(arch) -> list[int]:
    """The token ids every variant is checked on: <bos> and up to 63 seeded ids (never 0..2)."""
    rng = random.Random(0)
    return [1] + [rng.randrange(3, arch.vocab_size) for _ in range(min(63, arch.max_seq_len - 1))]


def _run_prefill(path: str, arch, ids: list[int], config: dict | None = None):
    """Logits [S, vocab] of a prefill from an empty cache, through onnxruntime with session `config` entries."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    for key, value in (config or {}).items():
        opts.add_session_config_entry(key, value)
    session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    # the presents unbound: onnxruntime writes copies (fine for a check)
    feeds = onnx_graph.graph_feeds(ids, onnx_graph.empty_cache(arch))
    return session.run([GraphContract().logits], feeds)[0][0]


def _write_jsonl(path: str, rows: list[dict]) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
