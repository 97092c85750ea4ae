"""The hf/ export (export/hf_export.py): the committed sql-autocomplete weights in the transformers.js /
Optimum layout, held to the folder's own model.onnx run through the pocketlm contract.

The committed folder is only read: every hf folder is written under pytest's tmp_path.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest

from export import hf_export
from export.hf_export import build_hf_graph, folded_weights, hf_stepper, trace, write_hf
from export.onnx_graph import build_decode_graph, empty_cache, graph_feeds
from pocketlm.manifest import Architecture, ManifestError, load_manifest
from pocketlm.native import NativeModel
from pocketlm.tasks.sql import training_ids
from pocketlm.tokenizer import Tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = os.path.join(ROOT, "web", "models", "sql-autocomplete")
ATOL = 1e-4
SCHEMA = "singer(Singer_ID, Name, Country, Age)\nconcert(concert_ID, concert_Name, Stadium_ID, Year)"
SQL = "SELECT T1.Name FROM singer AS T1 JOIN concert AS T2 ON T1.Singer_ID  =  T2.Stadium_ID WHERE T1.Age  >  30"


def env() -> dict:
    e = dict(os.environ)
    extra = [e["PYTHONPATH"]] if e.get("PYTHONPATH") else []
    e["PYTHONPATH"] = os.pathsep.join([os.path.join(ROOT, "pysrc"), ROOT] + extra)
    return e


def tree_digest(folder) -> dict[str, str]:
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                out[os.path.relpath(os.path.join(root, name), folder)] = hashlib.sha256(f.read()).hexdigest()
    return out


@pytest.fixture(scope="module")
def manifest():
    return load_manifest(MODEL, check_files=False)


@pytest.fixture(scope="module")
def ids(manifest) -> list[int]:
    """A real prompt + query (schema unseen in training), ~60 tokens."""
    tok = Tokenizer.from_file(os.path.join(MODEL, "tokenizer.json"))
    t = manifest.tokenizer
    return training_ids(tok, SCHEMA, SQL, t.bos_id, t.eos_id)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """One CLI run: python -m export.hf_export MODEL --out <tmp>/hf."""
    out = tmp_path_factory.mktemp("hf_export") / "hf"
    had_hf = os.path.exists(os.path.join(MODEL, "hf"))
    proc = subprocess.run([sys.executable, "-m", "export.hf_export", MODEL, "--out", str(out)],
                          cwd=ROOT, env=env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert os.path.exists(os.path.join(MODEL, "hf")) == had_hf, "the committed folder must not be written"
    return out, proc.stdout


def reference(manifest_dir=MODEL, variant="fp32"):
    model = NativeModel(manifest_dir, variant=variant, threads=1, check_files=False)
    cache = model.new_cache()
    return (lambda chunk: model.forward_all(chunk, cache)), model, cache


def test_files_config_and_tokenizer(exported, manifest):
    out, stdout = exported
    assert sorted(tree_digest(out)) == sorted(["config.json", "tokenizer.json", "tokenizer_config.json",
                                               "generation_config.json", "onnx/model.onnx",
                                               "onnx/model_quantized.onnx"])
    a, t = manifest.architecture, manifest.tokenizer
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "llama" and config["architectures"] == ["LlamaForCausalLM"]
    assert {k: config[k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                                   "num_key_value_heads", "head_dim", "vocab_size", "max_position_embeddings")} == {
        "hidden_size": a.dim, "intermediate_size": a.hidden_dim, "num_hidden_layers": a.n_layers,
        "num_attention_heads": a.n_heads, "num_key_value_heads": a.n_kv_heads, "head_dim": a.head_dim,
        "vocab_size": a.vocab_size, "max_position_embeddings": a.max_seq_len}
    assert (config["rms_norm_eps"], config["rope_theta"], config["tie_word_embeddings"], config["hidden_act"],
            config["torch_dtype"]) == (a.norm_eps, a.rope_theta, True, "silu", "float32")
    assert (config["bos_token_id"], config["eos_token_id"], config["pad_token_id"]) == (t.bos_id, t.eos_id, t.pad_id)
    gen = json.loads((out / "generation_config.json").read_text())
    assert gen == {"bos_token_id": t.bos_id, "eos_token_id": t.eos_id, "pad_token_id": t.pad_id}
    tc = json.loads((out / "tokenizer_config.json").read_text())
    assert (tc["tokenizer_class"], tc["bos_token"], tc["eos_token"], tc["pad_token"]) == (
        "PreTrainedTokenizerFast", "<bos>", "<eos>", "<pad>")
    assert tc["model_max_length"] == a.max_seq_len and tc["add_bos_token"] is False
    assert (out / "tokenizer.json").read_bytes() == open(os.path.join(MODEL, "tokenizer.json"), "rb").read()
    assert "max |logit diff|" in stdout and "top-1 agreement" in stdout and "wrote onnx/model_quantized.onnx" in stdout

    graph = onnx.load(str(out / "onnx" / "model.onnx"), load_external_data=False).graph
    dims = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in list(graph.input) + list(graph.output)}
    K, Hd = a.n_kv_heads, a.head_dim
    assert dims["input_ids"] == dims["position_ids"] == ["batch_size", "sequence_length"]
    assert dims["attention_mask"] == ["batch_size", "total_sequence_length"]
    assert dims["logits"] == ["batch_size", "sequence_length", a.vocab_size]
    for i in range(a.n_layers):
        for w in ("key", "value"):
            assert dims[f"past_key_values.{i}.{w}"] == ["batch_size", K, "past_sequence_length", Hd]
            assert dims[f"present.{i}.{w}"] == ["batch_size", K, "total_sequence_length", Hd]
    assert len(dims) == 3 + 1 + 4 * a.n_layers


def test_fp32_matches_pocketlm_graph_prefill_and_cached_steps(exported, manifest, ids):
    out, _ = exported
    a = manifest.architecture
    ref_step, _, cache = reference()
    hf_step = hf_stepper(str(out / "onnx" / "model.onnx"), a)
    chunks = [ids[:20]] + [[t] for t in ids[20:28]]  # prefill 20, then 8 cached single-token steps
    for chunk in chunks:
        want, got = ref_step(chunk), hf_step(chunk)
        assert got.shape == want.shape == (len(chunk), a.vocab_size)
        assert np.abs(got - want).max() <= ATOL

    # present.* (fed back as past) holds the same rows as pocketlm's cache, both head-major [1, K, T, Hd]
    import onnxruntime as ort

    sess = ort.InferenceSession(str(out / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
    empty = np.zeros((1, a.n_kv_heads, 0, a.head_dim), np.float32)
    feeds = {"input_ids": np.array([ids[:28]]), "attention_mask": np.ones((1, 28), np.int64),
             "position_ids": np.arange(28)[None], **{f"past_key_values.{i}.{w}": empty
                                                     for i in range(a.n_layers) for w in ("key", "value")}}
    present_k = sess.run(["present.3.key"], feeds)[0]
    assert present_k.shape == (1, a.n_kv_heads, 28, a.head_dim)
    assert np.abs(present_k[0] - cache.keys[3][0, :, :28]).max() <= ATOL


def test_greedy_tokens_identical_over_24_steps(exported, manifest, ids):
    out, _ = exported
    prompt = ids[:30]
    ref_step, _, _ = reference()
    _, want = trace(ref_step, prompt, 24)
    _, got = trace(hf_stepper(str(out / "onnx" / "model.onnx"), manifest.architecture), prompt, 24)
    assert got == want


def test_quantized_graph_agrees_with_fp32(exported, manifest, ids):
    out, _ = exported
    a = manifest.architecture
    fp32_logits, fp32_greedy = trace(hf_stepper(str(out / "onnx" / "model.onnx"), a), ids[:30], 16)
    q_logits, q_greedy = trace(hf_stepper(str(out / "onnx" / "model_quantized.onnx"), a), ids[:30], 16)
    assert np.isfinite(q_logits).all()
    agree = float((q_logits[:30].argmax(-1) == fp32_logits[:30].argmax(-1)).mean())
    greedy = float(np.mean(np.array(q_greedy) == np.array(fp32_greedy)))
    print(f"quantized top-1 agreement on prefill {agree:.3f}; greedy tokens equal {greedy:.3f}")
    assert agree >= 0.9
    # same quantization as the folder's int8 variant, so its greedy run is the one to match
    int8_step, _, _ = reference(variant="int8")
    _, int8_greedy = trace(int8_step, ids[:30], 16)
    assert q_greedy == int8_greedy


def test_attention_mask_hides_left_padding(exported, manifest, ids):
    """Batch 2: row 0 unpadded (20 tokens), row 1 = 5 pads + 15 tokens; then a cached step for both."""
    import onnxruntime as ort

    out, _ = exported
    a = manifest.architecture
    sess = ort.InferenceSession(str(out / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
    names = ["logits"] + [f"present.{i}.{w}" for i in range(a.n_layers) for w in ("key", "value")]
    pad = manifest.tokenizer.pad_id
    row0, row1 = ids[:20], ids[20:35]
    input_ids = np.array([row0, [pad] * 5 + row1], np.int64)
    mask = np.array([[1] * 20, [0] * 5 + [1] * 15], np.int64)
    position_ids = np.clip(np.cumsum(mask, axis=1) - 1, 0, None)  # as transformers.js: padding at 0 / 1
    empty = np.zeros((2, a.n_kv_heads, 0, a.head_dim), np.float32)
    past = {f"past_key_values.{i}.{w}": empty for i in range(a.n_layers) for w in ("key", "value")}

    def run(i_ids, m, pos, past):
        res = sess.run(names, {"input_ids": i_ids, "attention_mask": m, "position_ids": pos, **past})
        return res[0], {n.replace("present", "past_key_values"): v for n, v in zip(names[1:], res[1:])}

    logits, past2 = run(input_ids, mask, position_ids, past)
    step_ids, step_mask = np.array([[ids[40]], [ids[41]]]), np.concatenate([mask, [[1], [1]]], axis=1)
    step_logits, _ = run(step_ids, step_mask, np.array([[20], [15]]), past2)

    def alone(tokens):  # batch 1, no padding
        step = hf_stepper(str(out / "onnx" / "model.onnx"), a)
        return step(tokens[:-1]), step(tokens[-1:])

    want0, want0_step = alone(row0 + [ids[40]])
    want1, want1_step = alone(row1 + [ids[41]])
    assert np.abs(logits[0] - want0).max() <= ATOL and np.abs(step_logits[0] - want0_step).max() <= ATOL
    assert np.abs(logits[1, 5:] - want1).max() <= ATOL and np.abs(step_logits[1] - want1_step).max() <= ATOL
    # and the mask is not ignored: attending to the pads changes the padded row
    unmasked, _ = run(input_ids, np.ones_like(mask), position_ids, past)
    assert np.abs(unmasked[1, 5:] - want1).max() > 1e-2


def test_failed_export_leaves_previous_hf_folder(tmp_path, monkeypatch):
    model = tmp_path / "model"
    model.mkdir()
    for name in ("manifest.json", "tokenizer.json", "model.onnx"):  # the int8 / q4 files are not needed
        shutil.copyfile(os.path.join(MODEL, name), model / name)
    lines = []
    hf = write_hf(str(model), quantized=False, log=lines.append)
    assert hf == str(model / "hf") and any("max |logit diff|" in line for line in lines)
    before = tree_digest(hf)
    assert sorted(before) == ["config.json", "generation_config.json", "onnx/model.onnx", "tokenizer.json",
                              "tokenizer_config.json"]

    def broken(*args, **kwargs):
        raise hf_export.HfExportError("verification failed (test)")

    monkeypatch.setattr(hf_export, "_verify", broken)  # fails after the staging folder is written
    with pytest.raises(hf_export.HfExportError):
        write_hf(str(model), log=lambda _: None)
    monkeypatch.undo()
    with open(model / "model.onnx", "r+b") as f:  # corrupt the fp32 weights
        f.seek(1000)
        f.write(b"\xff" * 64)
    with pytest.raises(ManifestError, match="sha256"):
        write_hf(str(model), log=lambda _: None)
    assert tree_digest(hf) == before
    assert sorted(os.listdir(model)) == ["hf", "manifest.json", "model.onnx", "tokenizer.json"]  # no staging left


def test_refuses_targets_it_would_clobber(tmp_path):
    with pytest.raises(hf_export.HfExportError, match="model folder itself"):
        write_hf(MODEL, os.path.dirname(MODEL), log=lambda _: None)
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(hf_export.HfExportError, match="notes.txt"):
        write_hf(MODEL, str(tmp_path), log=lambda _: None)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_missing_fp32_variant_is_a_clear_error(tmp_path):
    for name in ("tokenizer.json", "model.int8.onnx"):
        shutil.copyfile(os.path.join(MODEL, name), tmp_path / name)
    data = json.loads(open(os.path.join(MODEL, "manifest.json"), encoding="utf-8").read())
    data["variants"] = {"int8": data["variants"]["int8"]}
    data["default_variant"] = "int8"
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(hf_export.HfExportError, match="no fp32 variant"):
        write_hf(str(tmp_path), log=lambda _: None)
    assert not (tmp_path / "hf").exists()


def test_cli_error_is_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "export.hf_export", str(tmp_path / "missing")],
                          cwd=ROOT, env=env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("error: no manifest.json in") and proc.stderr.count("\n") == 1


@pytest.mark.parametrize("n_kv_heads", [4, 2])  # multi-head and grouped-query attention
def test_tiny_random_model_matches_pocketlm_graph(tmp_path, n_kv_heads):
    """No folder: build_hf_graph on the folded weights of a random pocketlm graph, prefill + cached steps."""
    import onnxruntime as ort

    a = Architecture(vocab_size=97, dim=64, n_layers=2, n_heads=4, n_kv_heads=n_kv_heads, hidden_dim=160,
                     max_seq_len=64)
    rng = np.random.default_rng(n_kv_heads)
    D, H, K, Hd, F = a.dim, a.n_heads, a.n_kv_heads, a.head_dim, a.hidden_dim
    shapes = {"tok_embeddings.weight": (a.vocab_size, D), "norm.weight": (D,)}
    for i in range(a.n_layers):
        shapes.update({f"layers.{i}.attn_norm.weight": (D,), f"layers.{i}.mlp_norm.weight": (D,),
                       f"layers.{i}.attn.wq.weight": (H * Hd, D), f"layers.{i}.attn.wk.weight": (K * Hd, D),
                       f"layers.{i}.attn.wv.weight": (K * Hd, D), f"layers.{i}.attn.wo.weight": (D, H * Hd),
                       f"layers.{i}.mlp.w_gate.weight": (F, D), f"layers.{i}.mlp.w_up.weight": (F, D),
                       f"layers.{i}.mlp.w_down.weight": (D, F)})
    sd = {k: (1 + 0.2 * rng.standard_normal(s) if "norm" in k else 0.06 * rng.standard_normal(s)).astype(np.float32)
          for k, s in shapes.items()}
    pocket = build_decode_graph(sd, a)
    onnx.save(build_hf_graph(folded_weights(pocket, a), a), str(tmp_path / "hf.onnx"))
    sess = ort.InferenceSession(pocket.SerializeToString(), providers=["CPUExecutionProvider"])
    cache, length = empty_cache(a), [0]

    def pocket_step(chunk):
        feeds = graph_feeds(chunk, cache, length[0])
        res = sess.run(["logits"] + [f"present.{i // 2}.{('key', 'value')[i % 2]}" for i in range(2 * a.n_layers)], feeds)
        cache[:], length[0] = list(zip(res[1::2], res[2::2])), length[0] + len(chunk)
        return res[0][0]

    probe = [int(t) for t in rng.integers(0, a.vocab_size, 12)]
    want, want_greedy = trace(pocket_step, probe, 6)
    got, got_greedy = trace(hf_stepper(str(tmp_path / "hf.onnx"), a), probe, 6)
    assert np.abs(got - want).max() <= ATOL and got_greedy == want_greedy
