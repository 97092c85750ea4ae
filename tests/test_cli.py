"""`python -m pocketlm complete` and `python -m pocketlm eval sql` on the `--quick` model of the
synthetic corpus: every variant completes; greedy output of the native onnxruntime run equals
greedy decoding with the torch model of the same weights (golden output); each kind of bad input
is one clear line on stderr and exit status 2; empty and over-long prompts follow the documented
behaviour; eval prints its JSON report as the last line."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, subprocess_env
from pocketlm.constraints import TokenBytesIndex
from pocketlm.manifest import load_manifest, sha256_file
from pocketlm.tasks.sql import SqlNameConstraint, build_prompt
from pocketlm.tokenizer import Tokenizer


def cli(*args, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pocketlm", *map(str, args)], cwd=ROOT, env=subprocess_env(),
                          capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(proc: subprocess.CompletedProcess, pattern: str):
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert re.search(pattern, lines[0]), lines[0]
    assert proc.stdout == ""


def read_jsonl(path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.fixture(scope="module")
def model(quick_export) -> Path:
    return quick_export.model_dir


@pytest.fixture(scope="module")
def schema_file(quick_export, tmp_path_factory) -> Path:
    """The schema of a held-out (validation) database."""
    path = tmp_path_factory.mktemp("schema") / "schema.txt"
    path.write_text(read_jsonl(quick_export.run_dir / "val.jsonl")[0]["schema"], encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tokenizer(model) -> Tokenizer:
    return Tokenizer.from_file(model / "tokenizer.json")


# -------------------------------------------------------------------------------------- complete


@pytest.mark.parametrize("variant", ["fp32", "int8", "q4"])
def test_complete_each_variant(model, schema_file, variant):
    plain = cli("complete", "--model", model, "--schema", schema_file, "--variant", variant, "SELECT")
    assert plain.returncode == 0, plain.stderr
    assert "Traceback" not in plain.stderr and plain.stdout.endswith("\n")
    as_json = cli("complete", "--model", model, "--schema", schema_file, "--variant", variant, "--json", "SELECT")
    assert as_json.returncode == 0, as_json.stderr
    out = json.loads(as_json.stdout)
    assert out["text"] == plain.stdout[:-1]  # greedy by default: the same completion both times
    assert out["token_ids"] and all(isinstance(t, int) and 0 <= t < 320 for t in out["token_ids"])
    assert out["stop_reason"] in {"eos", "stop_string", "max_new_tokens", "context_full"}
    assert len(out["token_ids"]) <= 16  # the manifest's max_new_tokens
    assert out["stats"]["truncated_tokens"] == 0 and out["stats"]["reused_tokens"] == 0


def check_against_torch(torch_model, native, tokenizer, manifest, schema, prefix, onnx_ids) -> list[tuple]:
    """The tokens of the native greedy run, checked against the torch model of the same weights.

    Logits: the torch model and a fresh native prefill of prompt + generated tokens agree to 1e-4 at
    every generated position (this holds for any weights, however little trained). Tokens: each one is
    torch's greedy choice under the same prompt and healing constraint, the run ends exactly where
    the stop rule says; returns (step, margin) for near ties (within 1e-4, which rounding may break
    either way)."""
    import numpy as np
    import torch

    tok, arch = manifest.tokenizer, manifest.architecture
    stops = [s.encode() for s in manifest.sampling["stop"]]
    prompt = build_prompt(tokenizer, schema, prefix, bos_id=tok.bos_id, max_seq_len=arch.max_seq_len,
                          reserve=min(manifest.sampling["max_new_tokens"], arch.max_seq_len // 2))
    seq = prompt.ids + onnx_ids[:-1]
    with torch.no_grad():
        torch_logits = torch_model(torch.tensor([seq]))[0][0, len(prompt.ids) - 1 :]  # row k predicts onnx_ids[k]
    native_logits = native.forward_all(seq, native.new_cache())[len(prompt.ids) - 1 :]
    np.testing.assert_allclose(native_logits, torch_logits.numpy(), atol=1e-4, rtol=0, err_msg=repr(prefix))

    index = TokenBytesIndex.from_tokenizer(tokenizer)
    constraint = SqlNameConstraint(index, schema, prefix, prompt.heal, bool(manifest.prompt.get("finish_names")))
    raw, ties = b"", []
    for step, (chosen, logits) in enumerate(zip(onnx_ids, torch_logits)):
        allowed = constraint.allowed()
        candidates = torch.arange(len(logits)) if allowed is None else torch.tensor(allowed)
        best = int(candidates[int(torch.argmax(logits[candidates]))])  # first maximum: lowest id, as pocketlm
        assert chosen in candidates.tolist(), (prefix, step, "the native run broke the healing constraint")
        if best != chosen:
            margin = float(logits[best] - logits[chosen])
            assert margin < 1e-4, (prefix, step, best, chosen, margin)
            ties.append((step, margin))
        constraint.advance(chosen)
        if chosen == tok.eos_id:
            assert step == len(onnx_ids) - 1
            break
        raw += tokenizer.token_bytes(chosen)
        visible = raw[len(prompt.heal):] if raw.startswith(prompt.heal) else b""
        if any(s in visible for s in stops):  # the stop rule ended the native run here, and only here
            assert step == len(onnx_ids) - 1, (prefix, step)
            break
    else:
        assert len(onnx_ids) == manifest.sampling["max_new_tokens"]
    return ties


GOLDEN_PREFIXES = [
    "",
    "SELECT",
    "SELECT count(*) FROM ",
    "SELECT name FROM student WHERE Age  >  ",
    "SELECT T1.Age FROM student AS T1 JOIN course AS T2 ON T1.StuID  =  T2.",
    "SELECT avg(cre",
]


def test_golden_greedy_output_native_equals_torch(quick_export, model, schema_file, tokenizer):
    """Greedy token ids of the native fp32 run (one SqlCompleter, so its KV cache is reused from
    prompt to prompt) equal greedy decoding with the torch model loaded from the training checkpoint.

    The quick model is barely trained (30 steps: its greedy output is mostly whitespace), so equal
    tokens alone would prove little; the logits are compared too (see check_against_torch)."""
    import torch

    from export.model import Transformer
    from pocketlm.completer import SqlCompleter
    from pocketlm.native import NativeModel

    manifest = load_manifest(str(model))
    torch_model = Transformer(manifest.architecture).eval()
    state = torch.load(quick_export.run_dir / "ckpt.pt", map_location="cpu", weights_only=True)
    torch_model.load_state_dict(state["model"])
    native = NativeModel(str(model), variant="fp32")
    completer = SqlCompleter(manifest, tokenizer, native)
    schema = schema_file.read_text(encoding="utf-8")
    ties, outputs = [], {}
    for prefix in GOLDEN_PREFIXES:
        result = asyncio.run(completer.complete(schema, prefix))
        outputs[prefix] = result.token_ids
        ties += check_against_torch(torch_model, native, tokenizer, manifest, schema, prefix, result.token_ids)
    assert len(ties) <= 1, ties  # exact ties are rare; many would mean the graphs disagree
    # and the CLI prints exactly what the completer computed
    proc = cli("complete", "--model", model, "--schema", schema_file, "--json", GOLDEN_PREFIXES[3])
    assert json.loads(proc.stdout)["token_ids"] == outputs[GOLDEN_PREFIXES[3]]


def test_empty_prefix_suggests_a_query_start(model, schema_file):
    proc = cli("complete", "--model", model, "--schema", schema_file, "--json", "")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    out = json.loads(proc.stdout)
    assert out["token_ids"] and out["stats"]["truncated_tokens"] == 0
    plain = cli("complete", "--model", model, "")  # no schema either
    assert plain.returncode == 0, plain.stderr


def test_prompt_longer_than_the_context_keeps_the_most_recent_tokens(model, tokenizer, tmp_path):
    manifest = load_manifest(str(model))
    max_seq_len = manifest.architecture.max_seq_len
    schema = "\n".join(f"table_{i}(id_{i}, name_{i}, born_state, age, budget_in_billions_{i})" for i in range(250))
    assert len(tokenizer.encode(schema)) >= 5000
    schema_path = tmp_path / "big_schema.txt"
    schema_path.write_text(schema, encoding="utf-8")
    short = "SELECT name_7 FROM table_7 WHERE age  >  "
    long = "SELECT " + " ,  ".join(f"name_{i}" for i in range(120)) + " FROM table_7 WHERE ag"
    assert len(tokenizer.encode(long)) > max_seq_len
    for prefix in (short, long):
        proc = cli("complete", "--model", model, "--schema", schema_path, "--json", prefix)
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
        out = json.loads(proc.stdout)
        expected = build_prompt(tokenizer, schema, prefix, bos_id=1, max_seq_len=max_seq_len, reserve=16)
        assert out["stats"]["truncated_tokens"] == expected.truncated > 0
        assert out["token_ids"] and out["stop_reason"] != "context_full"
    plain = cli("complete", "--model", model, "--schema", schema_path, long)
    assert plain.returncode == 0, plain.stderr


# ------------------------------------------------------------------------------------ bad input


def other_tokenizer(tmp: Path, vocab_size: int) -> bytes:
    from export.tokenizer_train import save_tokenizer, train_tokenizer

    texts = [f"SELECT col_{i} FROM other_table_{i % 7} WHERE x_{i}  >  {i}" for i in range(300)]
    save_tokenizer(train_tokenizer(texts, vocab_size), tmp / "other.json")
    return (tmp / "other.json").read_bytes()


def edit_manifest(folder: Path, change):
    data = json.loads((folder / "manifest.json").read_text())
    change(data)
    (folder / "manifest.json").write_text(json.dumps(data, indent=2))


def rehash(folder: Path, data: dict):
    """Record the current size and sha256 of every file (a 'consistent' manifest for altered files)."""
    data["tokenizer"]["sha256"] = sha256_file(folder / data["tokenizer"]["file"])
    for v in data["variants"].values():
        v["sha256"], v["bytes"] = sha256_file(folder / v["file"]), os.path.getsize(folder / v["file"])


def truncate_onnx(f: Path):
    data = (f / "model.onnx").read_bytes()
    (f / "model.onnx").write_bytes(data[: len(data) // 2])


def flip_onnx_bytes(f: Path):
    data = bytearray((f / "model.onnx").read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)
    (f / "model.onnx").write_bytes(bytes(data))


def truncate_onnx_and_rehash(f: Path):
    truncate_onnx(f)
    edit_manifest(f, lambda d: rehash(f, d))


def replace_tokenizer(f: Path):
    (f / "tokenizer.json").write_bytes(other_tokenizer(f.parent, 320))


def replace_tokenizer_smaller_and_rehash(f: Path):
    (f / "tokenizer.json").write_bytes(other_tokenizer(f.parent, 300))
    edit_manifest(f, lambda d: rehash(f, d))


def vocab_everywhere(d: dict):
    d["tokenizer"]["vocab_size"] = 321
    d["architecture"]["vocab_size"] = 321


BAD_FOLDERS = {
    "truncated-onnx": (truncate_onnx, r"variant 'fp32' file 'model\.onnx' is \d+ bytes, the manifest says \d+"),
    "corrupt-onnx": (flip_onnx_bytes, r"variant 'fp32' file 'model\.onnx' has sha256 \w+…, the manifest says"),
    "corrupt-onnx-rehashed": (truncate_onnx_and_rehash,
                              r"onnxruntime cannot load variant 'fp32' file '.*model\.onnx'.*re-export"),
    "missing-onnx": (lambda f: os.remove(f / "model.onnx"), r"'model\.onnx' is missing"),
    "wrong-sha256": (lambda f: edit_manifest(f, lambda d: d["variants"]["int8"].update(sha256="0" * 64)),
                     r"variant 'int8' file 'model\.int8\.onnx' has sha256 \w+…, the manifest says 000000"),
    "wrong-vocab-size": (lambda f: edit_manifest(f, lambda d: d["tokenizer"].update(vocab_size=321)),
                         r"tokenizer\.vocab_size \(321\) != architecture\.vocab_size \(320\)"),
    "wrong-vocab-size-everywhere": (lambda f: edit_manifest(f, vocab_everywhere),
                                    r"tokenizer\.json has 320 tokens, the manifest says 321"),
    "missing-tokenizer": (lambda f: os.remove(f / "tokenizer.json"), r"tokenizer file 'tokenizer\.json' is missing"),
    "replaced-tokenizer": (replace_tokenizer, r"tokenizer file 'tokenizer\.json' has sha256"),
    "replaced-tokenizer-rehashed": (replace_tokenizer_smaller_and_rehash,
                                    r"tokenizer\.json has 300 tokens, the manifest says 320"),
    "garbage-manifest": (lambda f: (f / "manifest.json").write_text('{"format_version": 1, "name": '),
                         r"manifest\.json is not valid JSON"),
    "not-a-model-folder": (lambda f: os.remove(f / "manifest.json"), r"no manifest\.json in"),
}


@pytest.mark.parametrize("case", sorted(BAD_FOLDERS))
def test_bad_model_folder_is_a_one_line_error(model, schema_file, tmp_path, case):
    corrupt, message = BAD_FOLDERS[case]
    folder = tmp_path / "model"
    shutil.copytree(model, folder)
    corrupt(folder)
    proc = cli("complete", "--model", folder, "--schema", schema_file, "SELECT")
    assert_one_line_error(proc, message)


def test_missing_schema_file_is_a_one_line_error(model, tmp_path):
    assert_one_line_error(cli("complete", "--model", model, "--schema", tmp_path / "nope.txt", "SELECT"),
                          r"cannot read schema file .*nope\.txt")


# ------------------------------------------------------------------------------------------ eval


KEYS = ("n", "next_token_acc", "ksr", "ngram_next_token_acc", "ngram_ksr")


def eval_report(proc) -> dict:
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert isinstance(report, dict) and all(k in report for k in KEYS), report
    return report


def test_eval_prints_a_json_report_last(quick_export, model):
    run = quick_export.run_dir
    report = eval_report(cli("eval", "sql", "--model", model, "--data", run / "val.jsonl", "--train",
                             run / "train.jsonl", "--limit", 5))
    assert report["n"] == 5
    for k in KEYS[1:]:
        assert 0.0 <= report[k] <= 1.0, (k, report)
    # the n-gram baseline never sees the held-out databases, even when given the whole data file
    whole = eval_report(cli("eval", "sql", "--model", model, "--data", run / "val.jsonl", "--train",
                            quick_export.data_dir / "sql" / "train.jsonl", "--limit", 5, "--quiet"))
    assert whole == report


def test_eval_scores_every_query_token_of_a_row_with_an_over_long_schema(model, tokenizer, tmp_path):
    """A schema longer than the context is truncated as in a prompt (oldest tokens first), so the
    row's query tokens are still scored, not skipped."""
    schema = "\n".join(f"table_{i}(id_{i}, name_{i}, born_state, age)" for i in range(120))
    query = "SELECT name_3 FROM table_3 WHERE age  >  30"
    assert len(tokenizer.encode(schema)) > load_manifest(str(model)).architecture.max_seq_len
    data = tmp_path / "long.jsonl"
    data.write_text(json.dumps({"schema": schema, "sql": query}) + "\n", encoding="utf-8")
    train = tmp_path / "train.jsonl"
    train.write_text(json.dumps({"schema": "t(a)", "sql": "SELECT a FROM t", "db_id": "t"}) + "\n", encoding="utf-8")
    report = eval_report(cli("eval", "sql", "--model", model, "--data", data, "--train", train, "--quiet"))
    assert report["n"] == 1 and report["tokens"] == len(tokenizer.encode(query)) + 1  # + <eos>
    assert report["characters"] == len(query)


def test_eval_malformed_rows_name_file_and_line(quick_export, model, tmp_path):
    lines = (quick_export.run_dir / "val.jsonl").read_text(encoding="utf-8").splitlines()
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(lines[:2] + ["{not json"] + lines[2:]) + "\n", encoding="utf-8")
    train = quick_export.run_dir / "train.jsonl"
    assert_one_line_error(cli("eval", "sql", "--model", model, "--data", bad, "--train", train),
                          rf"{re.escape(str(bad))}:3: not valid JSON")
    bad.write_text("\n".join(lines[:1] + ['{"schema": "t(a)"}'] + lines[1:]) + "\n", encoding="utf-8")
    assert_one_line_error(cli("eval", "sql", "--model", model, "--data", bad, "--train", train),
                          rf"{re.escape(str(bad))}:2: each row needs string fields")
    assert_one_line_error(cli("eval", "sql", "--model", model, "--data", tmp_path / "none.jsonl", "--train", train),
                          r"cannot read .*none\.jsonl")
    assert_one_line_error(cli("eval", "sql", "--model", model, "--data", quick_export.run_dir / "val.jsonl"),
                          r"the n-gram baseline needs the training data: pass --train")
    assert_one_line_error(cli("eval", "sql", "--model", model, "--data", quick_export.run_dir / "val.jsonl",
                              "--train", train, "--limit", 0), r"--limit must be a positive number of rows")


@pytest.fixture(scope="module")
def text_model(tmp_path_factory):
    from bench.models import build_random_model
    from pocketlm.manifest import Architecture

    arch = Architecture(vocab_size=300, dim=32, n_layers=2, n_heads=2, n_kv_heads=2, hidden_dim=64, max_seq_len=64)
    return build_random_model("text-tiny", str(tmp_path_factory.mktemp("text")), arch=arch, seed=2, log=lambda m: None)


def test_generate_streams_a_text_models_greedy_continuation(text_model, model):
    from pocketlm.native import NativeModel
    from pocketlm.session import ModelSession

    proc = cli("generate", "--model", text_model, "--temperature", "0", "--max-new-tokens", "12", "--json", "Bala kitu")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    session = ModelSession(load_manifest(text_model), Tokenizer.from_file(os.path.join(text_model, "tokenizer.json")),
                           NativeModel(text_model))
    expected = asyncio.run(session.generate("Bala kitu", {"temperature": 0, "max_new_tokens": 12}))
    assert out["token_ids"] == expected["token_ids"] and out["text"] == expected["text"]
    plain = cli("generate", "--model", text_model, "--temperature", "0", "--max-new-tokens", "12", "Bala kitu")
    assert plain.returncode == 0 and plain.stdout == "Bala kitu" + expected["text"] + "\n"
    # a model of another task, and a bad sampling value: one line each
    assert_one_line_error(cli("generate", "--model", model, "x"), r"not 'text-v1': it is not a text model")
    assert_one_line_error(cli("generate", "--model", text_model, "--temperature", "-1", "x"), r"temperature must be >= 0")
