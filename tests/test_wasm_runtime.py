"""The browser runtime minus the page, under Node: Pyodide (Python 3.14) runs pocketlm's SqlCompleter,
whose forward pass is web/src/engine.mjs on onnxruntime-web's WebAssembly module with the KV cache in
wasm memory. Its greedy tokens must equal the native golden output, token for token, for every variant;
and the engine alone neither leaks wasm memory over many runs nor hides onnxruntime's errors."""

import json
import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WEB = os.path.join(ROOT, "web")
MODEL = os.path.join(WEB, "models", "sql-autocomplete")


def test_wasm_greedy_tokens_equal_the_native_golden_output(tmp_path):
    with open(os.path.join(ROOT, "tests", "golden", "sql-autocomplete.json"), encoding="utf-8") as f:
        golden = json.load(f)["cases"]
    prefixes = list(dict.fromkeys(c["prefix"] for c in golden))
    schemas = {c["schema_file"] for c in golden}
    assert len(schemas) == 1
    with open(os.path.join(ROOT, "docs", schemas.pop()), encoding="utf-8") as f:
        schema = f.read()
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"model_dir": MODEL, "variants": ["fp32", "int8", "q4"],
                                "cases": [[schema, p] for p in prefixes]}))
    proc = subprocess.run(["node", os.path.join(ROOT, "tests", "pyodide", "complete.mjs"), WEB,
                           os.path.join(ROOT, "pysrc"), str(spec)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    wasm = out["results"]
    assert [(r["variant"], r["prefix"], r["token_ids"]) for r in wasm] == [
        (c["variant"], c["prefix"], c["token_ids"]) for c in golden
    ]
    assert [r["text"] for r in wasm] == [c["text"] for c in golden]
    # the generations ran as the worker runs them (pocketlm.browser.Stepper, driven from JS); an engine
    # error in a forward pass is raised inside the generation with the engine's message
    assert out["failure"] == "RuntimeError: the session run failed"


def test_the_engine_keeps_its_memory_and_says_what_failed():
    proc = subprocess.run(["node", os.path.join(ROOT, "tests", "pyodide", "engine_checks.mjs"), WEB, MODEL],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    heap = out["heap_bytes"]
    assert len(heap) == 4 and heap[1:] == [heap[1]] * 3, heap  # 1 600 runs, 16 caches: no growth after round 1
    with open(os.path.join(MODEL, "manifest.json"), encoding="utf-8") as f:
        arch = json.load(f)["architecture"]
    errors = out["errors"]
    assert f"exceed the context of {arch['max_seq_len']}" in errors["context"]
    assert errors["token"].startswith("the model's forward pass failed: ") and "Gather" in errors["token"]
    assert out["cache_lengths"][0] == out["cache_lengths"][1] > 0  # the failed runs appended no rows
    assert len(out["after_errors"]) == 3  # [next_token, logits_sum, runner_up]: the engine goes on
    assert errors["model"].startswith("onnxruntime could not read the model: ")
    assert errors["cache"] == "no KV cache 12345"
