"""The export pipeline end to end on the synthetic corpus (`--quick`): the model folder it writes,
the database-disjoint validation split, the CLI's error for an unknown recipe, atomic replacement
of the model folder, resuming an interrupted training run, and seeded determinism."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import RECIPE, ROOT, quick_recipe, subprocess_env
from pocketlm.manifest import load_manifest, sha256_file
from pocketlm.tokenizer import Tokenizer

FILES = {"manifest.json", "tokenizer.json", "model.onnx", "model.int8.onnx", "model.q4.onnx"}


def read_jsonl(path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def snapshot(folder: Path) -> dict[str, str]:
    """relative path -> sha256 of every file under folder (and '<dir>' for folders)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), folder)] = "<dir>"
        for f in filenames:
            p = os.path.join(dirpath, f)
            out[os.path.relpath(p, folder)] = hashlib.sha256(Path(p).read_bytes()).hexdigest()
    return out


def run_export(out: Path, runs: Path, data: Path, logs: list[str] | None = None) -> str:
    from export.pipeline import export_model

    return export_model(quick_recipe(), str(data), str(out), str(runs),
                        log=(logs.append if logs is not None else lambda *_: None))


# ---------------------------------------------------------------------------------- the folder


def test_quick_export_writes_a_valid_model_folder(quick_export):
    folder = quick_export.model_dir
    assert set(os.listdir(folder)) == FILES
    assert sorted(os.listdir(quick_export.out_dir)) == [RECIPE]  # no staging or old folder left over
    m = load_manifest(str(folder))  # validates every hash, size, id and the vocab sizes
    recipe = quick_recipe()
    assert m.name == RECIPE and m.task == "sql" and m.architecture == recipe.arch
    assert {v: m.variant(v).file for v in m.variants} == {
        "fp32": "model.onnx", "int8": "model.int8.onnx", "q4": "model.q4.onnx"}
    assert m.variant("q4").bytes < m.variant("int8").bytes < m.variant("fp32").bytes
    tok = Tokenizer.from_file(folder / "tokenizer.json")
    assert tok.vocab_size == m.tokenizer.vocab_size == m.architecture.vocab_size == 320
    assert [tok.id_to_token(i) for i in (m.tokenizer.pad_id, m.tokenizer.bos_id, m.tokenizer.eos_id)] == [
        "<pad>", "<bos>", "<eos>"]
    assert m.prompt["format"] == "sql-v2" and m.sampling["temperature"] == 0.0
    assert m.training["steps"] == recipe.train.steps and m.training["data"] == "sql/train.jsonl"
    assert m.training["data_sha256"] == sha256_file(quick_export.data_dir / "sql" / "train.jsonl")


def test_validation_split_holds_out_whole_databases(quick_export, sql_rows):
    train = read_jsonl(quick_export.run_dir / "train.jsonl")
    val = read_jsonl(quick_export.run_dir / "val.jsonl")
    train_dbs, val_dbs = {r["db_id"] for r in train}, {r["db_id"] for r in val}
    assert train and val and not train_dbs & val_dbs
    assert train_dbs | val_dbs == {r["db_id"] for r in sql_rows}
    assert len(train) + len(val) == len(sql_rows)
    assert load_manifest(str(quick_export.model_dir)).training["val_dbs"] == sorted(val_dbs)


def test_unknown_recipe_lists_the_known_ones(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "export", "no-such-model", "--quick", "--data", str(tmp_path), "--out",
         str(tmp_path / "out"), "--runs", str(tmp_path / "runs")],
        cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "no-such-model" in lines[0] and "known recipes" in lines[0] and "sql-autocomplete" in lines[0]
    assert not (tmp_path / "out").exists() and not (tmp_path / "runs").exists()


def test_an_architecture_the_graph_cannot_run_is_refused_before_training(tmp_path):
    """onnxruntime's GroupQueryAttention takes head sizes in multiples of 16 only: a recipe with 8 per head
    is refused at once, not after its training run (nothing is written)."""
    import dataclasses

    from export.onnx_graph import UnsupportedArchitecture
    from export.pipeline import export_model

    recipe = quick_recipe()
    recipe = dataclasses.replace(recipe, arch=dataclasses.replace(recipe.arch, n_heads=8, n_kv_heads=4))  # 64 / 8
    with pytest.raises(UnsupportedArchitecture, match=r"head_dim 8 \(dim 64 / 8 heads\) is not a multiple of 16"):
        export_model(recipe, str(tmp_path / "data"), str(tmp_path / "out"), str(tmp_path / "runs"))
    assert not (tmp_path / "runs").exists() and not (tmp_path / "out").exists()


def test_missing_data_is_a_one_line_error(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "export", RECIPE, "--quick", "--data", str(tmp_path / "nowhere"), "--out",
         str(tmp_path / "out"), "--runs", str(tmp_path / "runs")],
        cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "cannot read training data" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_interrupted_export_exits_130_with_a_hint(monkeypatch, capsys):
    import export.__main__ as cli
    import export.pipeline

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(export.pipeline, "export_model", interrupted)
    assert cli.main([RECIPE, "--quick", "--data", "nowhere", "--out", "nowhere", "--runs", "nowhere"]) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "run again to resume" in err and len(err.strip().splitlines()) == 1


# ---------------------------------------------------------------------------------- atomicity


@pytest.mark.parametrize("failure", [RuntimeError("q4 quantizer crashed"), KeyboardInterrupt()],
                         ids=["error", "interrupt"])
def test_failed_export_leaves_the_previous_folder_intact(quick_export, tmp_path, monkeypatch, failure):
    """A late stage (the q4 quantizer, after fp32 and int8 are written) fails: the previous model
    folder is byte-identical and no staging folder is left behind."""
    out, runs = tmp_path / "models", tmp_path / "runs"
    shutil.copytree(quick_export.out_dir, out)
    shutil.copytree(quick_export.runs_dir, runs)  # the finished checkpoint: training is not redone
    before = snapshot(out)
    import export.quantize

    calls = []

    def broken_q4(src, dst, *a, **k):
        calls.append(dst)
        Path(dst).write_bytes(b"half a file")
        raise failure

    monkeypatch.setattr(export.quantize, "quantize_q4", broken_q4)
    with pytest.raises(type(failure)):
        run_export(out, runs, quick_export.data_dir)
    assert calls and ".partial-" in calls[0]  # it did fail inside the staging folder
    assert snapshot(out) == before
    assert sorted(os.listdir(out)) == [RECIPE]


# ------------------------------------------------------------------------ resume, determinism


def final_state(run_dir: Path) -> dict:
    return torch.load(run_dir / "ckpt.pt", map_location="cpu", weights_only=True)


def assert_same_weights(a: dict, b: dict):
    assert a["step"] == b["step"]
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k


def test_interrupted_training_resumes_to_the_same_weights(quick_export, tmp_path, monkeypatch):
    """Interrupt training right after the checkpoint of step 10 (as Ctrl-C would), run again: it
    resumes from step 10 and ends with the weights of the uninterrupted run (the fixture's)."""
    import export.train

    out, runs = tmp_path / "models", tmp_path / "runs"
    save = export.train._save_atomic
    stop_at = quick_recipe().train.ckpt_every

    def save_then_interrupt(obj, path):
        save(obj, path)
        if obj["step"] == stop_at:
            raise KeyboardInterrupt

    monkeypatch.setattr(export.train, "_save_atomic", save_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        run_export(out, runs, quick_export.data_dir)
    assert final_state(runs / RECIPE)["step"] == stop_at
    assert not out.exists() or not os.listdir(out)  # no model folder, no staging folder

    monkeypatch.setattr(export.train, "_save_atomic", save)
    logs: list[str] = []
    folder = run_export(out, runs, quick_export.data_dir, logs)
    assert any(f"resuming training from step {stop_at}" in line for line in logs), logs
    assert_same_weights(final_state(runs / RECIPE), final_state(quick_export.run_dir))
    assert sha256_file(os.path.join(folder, "model.onnx")) == sha256_file(quick_export.model_dir / "model.onnx")


def test_same_seed_same_bytes_and_existing_folder_is_replaced(quick_export, tmp_path):
    """A fresh export (new run folder: tokenizer and training from scratch) into an --out that
    already holds a model folder: the folder is replaced, and with the same seed every file
    (tokenizer.json, model*.onnx, manifest.json) is byte-identical to the fixture's export."""
    out, runs = tmp_path / "models", tmp_path / "runs"
    shutil.copytree(quick_export.out_dir, out)
    (out / RECIPE / "stale.txt").write_text("from an older export")
    logs: list[str] = []
    run_export(out, runs, quick_export.data_dir, logs)
    assert not any("resuming" in line for line in logs)
    assert sorted(os.listdir(out)) == [RECIPE] and set(os.listdir(out / RECIPE)) == FILES
    for name in sorted(FILES):  # manifest, tokenizer and all three graphs
        assert sha256_file(out / RECIPE / name) == sha256_file(quick_export.model_dir / name), name
    assert_same_weights(final_state(runs / RECIPE), final_state(quick_export.run_dir))
    load_manifest(str(out / RECIPE))


# ------------------------------------------------------------------- a failure at every stage

def _fail(what):
    def broken(*a, **k):
        raise what
    return broken


STAGES = {  # stage -> (module attribute the pipeline calls, as "module:name")
    "tokenizer": "export.pipeline:train_tokenizer",
    "training": "export.pipeline:train",
    "onnx build": "export.onnx_graph:build_decode_graph",
    "quantization": "export.quantize:quantize_int8",
    "packaging": "export.pipeline:swap_in",
}


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_an_export_killed_at_any_stage_keeps_the_old_folder_and_resumes(quick_export, tmp_path, monkeypatch, stage):
    """Interrupted (Ctrl-C) in each stage of a fresh export: the previous model folder stays byte-identical
    with no staging folder left; run again, the export finishes and gives the same bytes as an
    uninterrupted one (seeded)."""
    import importlib

    out, runs = tmp_path / "models", tmp_path / "runs"
    shutil.copytree(quick_export.out_dir, out)
    (out / RECIPE / "marker.txt").write_text("the previous export")
    before = snapshot(out)
    module, name = STAGES[stage].split(":")
    with monkeypatch.context() as patch:
        patch.setattr(importlib.import_module(module), name, _fail(KeyboardInterrupt()))
        with pytest.raises(KeyboardInterrupt):
            run_export(out, runs, quick_export.data_dir)
    assert snapshot(out) == before and sorted(os.listdir(out)) == [RECIPE]
    run_export(out, runs, quick_export.data_dir)  # resumed: whatever the run folder holds is reused
    for f in sorted(FILES):
        assert sha256_file(out / RECIPE / f) == sha256_file(quick_export.model_dir / f), (stage, f)


def test_a_full_disk_is_a_one_line_error_and_loses_nothing(quick_export, tmp_path, monkeypatch, capsys):
    import errno

    import export.__main__ as cli
    import onnx

    out, runs = tmp_path / "models", tmp_path / "runs"
    shutil.copytree(quick_export.out_dir, out)
    shutil.copytree(quick_export.runs_dir, runs)
    before = snapshot(out)
    monkeypatch.setattr(onnx, "save", _fail(OSError(errno.ENOSPC, "No space left on device")))
    code = cli.main([RECIPE, "--quick", "--data", str(quick_export.data_dir), "--out", str(out), "--runs", str(runs)])
    err = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("training:")]
    assert code == 2 and len(err) == 1 and err[0].startswith("error: could not write the model folder "), err
    assert "No space left on device" in err[0] and "previous folder, if any, is unchanged" in err[0]
    assert snapshot(out) == before and sorted(os.listdir(out)) == [RECIPE]


def test_an_output_path_that_is_not_a_folder_is_a_one_line_error(quick_export, tmp_path, capsys):
    import export.__main__ as cli

    blocked = tmp_path / "models"
    blocked.write_text("a file where the models folder should be")
    code = cli.main([RECIPE, "--quick", "--data", str(quick_export.data_dir), "--out", str(blocked),
                     "--runs", str(quick_export.runs_dir)])
    err = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("training:")]
    assert code == 2 and err == [f"error: {blocked} is a file, not a folder: choose another --out"], err


# ------------------------------------------------------------------------ weight average (ema)

class _TinyData:
    """Random packed groups: enough for train() (key, val_groups, train_groups)."""
    key = "tiny-random"

    def __init__(self, arch):
        import random

        from export.data import Group
        rng = random.Random(0)

        def group():
            ids = [1] + [rng.randrange(3, arch.vocab_size) for _ in range(31)]
            return Group(ids=ids, positions=list(range(32)), segment=[0] * 32, targets=ids[1:] + [-100])

        self.train, self.val = [group() for _ in range(24)], [group() for _ in range(4)]

    def val_groups(self):
        return self.val

    def train_groups(self, rng):
        return list(self.train)


def _params(model) -> dict:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


@pytest.mark.parametrize("ema", [0.0, 0.8])
def test_weight_average_is_the_trained_model_and_resumes(tmp_path, monkeypatch, ema):
    """With ema the returned (exported) weights are the checkpoint's average, not its last weights; an
    interrupted run resumes to the same average. Without, they are the last weights."""
    import dataclasses

    import export.train as T

    arch = dataclasses.replace(quick_recipe().arch, vocab_size=64)
    cfg = T.TrainConfig(steps=20, batch_tokens=256, lr=3e-3, warmup=2, ckpt_every=5, eval_every=20, threads=1,
                        ema=ema)
    data = _TinyData(arch)
    whole, _ = T.train(arch, cfg, data, run_dir=str(tmp_path / "whole"), log=lambda *_: None)
    state = torch.load(tmp_path / "whole" / "ckpt.pt", map_location="cpu", weights_only=True)
    got = _params(whole)
    if ema:
        assert all(torch.equal(got[k], state["ema"][k]) for k in got)
        assert not all(torch.equal(got[k], state["model"][k]) for k in got), "the average differs from the last"
    else:
        assert "ema" not in state and all(torch.equal(got[k], state["model"][k]) for k in got)

    save = T._save_atomic

    def save_then_interrupt(obj, path):
        save(obj, path)
        if obj["step"] == 10:
            raise KeyboardInterrupt

    monkeypatch.setattr(T, "_save_atomic", save_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        T.train(arch, cfg, data, run_dir=str(tmp_path / "resumed"), log=lambda *_: None)
    monkeypatch.setattr(T, "_save_atomic", save)
    resumed, _ = T.train(arch, cfg, data, run_dir=str(tmp_path / "resumed"), log=lambda *_: None)
    assert all(torch.equal(got[k], v) for k, v in _params(resumed).items())


def test_a_config_field_added_later_keeps_old_checkpoints_resumable():
    """ema at 0 (off) is left out of the fingerprint and the manifest's config, as before it existed."""
    import dataclasses

    from export.train import TrainConfig, config_dict, fingerprint
    cfg = TrainConfig()
    assert "ema" not in config_dict(cfg)
    assert config_dict(dataclasses.replace(cfg, ema=0.99))["ema"] == 0.99
    assert fingerprint(cfg) != fingerprint(dataclasses.replace(cfg, ema=0.99))
