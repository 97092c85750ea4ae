"""The page's JS API (window.pocketlm) against the native CLI, opened both ways: file:// and http.

`pocketlm.load` + greedy `generate` must return exactly the token ids that `python -m pocketlm
complete` gives natively for the same model, variant, schema and prefix, for every variant.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RELEASE = os.path.join(ROOT, "web", "models", "sql-autocomplete")

VARIANTS = ["fp32", "int8", "q4"]
SCHEMA_FILE = os.path.join(ROOT, "docs", "example-schema.txt")
GOLDEN = os.path.join(ROOT, "tests", "golden", "sql-autocomplete.json")
with open(GOLDEN, encoding="utf-8") as f:
    GOLDEN_CASES = json.load(f)["cases"]
# the golden file's prefixes, plus a half-typed table name and non-ASCII text
PREFIXES = list(dict.fromkeys(c["prefix"] for c in GOLDEN_CASES)) + ["SELECT Name FROM sin", "SELECT héllo 🙂 FROM"]


def native(variant: str, prefix: str) -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "pocketlm", "complete", "--model", RELEASE, "--variant", variant,
         "--schema", SCHEMA_FILE, "--json", prefix],
        capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": os.path.join(ROOT, "pysrc")},
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def native_outputs():
    cases = [(v, p) for v in VARIANTS for p in PREFIXES]
    with ThreadPoolExecutor(4) as pool:
        return dict(zip(cases, pool.map(lambda c: native(*c), cases)))


GENERATE_ALL = """async ([variants, prefixes, schema]) => {
  const rows = [];
  for (const variant of variants) {
    const model = await pocketlm.load("sql-autocomplete", {variant});
    for (const prefix of prefixes) {
      const out = await model.generate(prefix, {schema});
      rows.push({variant: model.variant, prefix, token_ids: out.token_ids, text: out.text, stats: out.stats});
    }
    model.dispose();
  }
  return rows;
}"""


def test_greedy_tokens_equal_the_native_cli_for_every_variant(page, page_url, native_outputs):
    with open(SCHEMA_FILE, encoding="utf-8") as f:
        schema = f.read()
    page.goto(page_url + "?autoload=0")
    rows = page.evaluate(GENERATE_ALL, [VARIANTS, PREFIXES, schema])
    assert [(r["variant"], r["prefix"]) for r in rows] == list(native_outputs)
    for r in rows:
        expected = native_outputs[(r["variant"], r["prefix"])]
        assert r["token_ids"] == expected["token_ids"], (r["variant"], r["prefix"])
        assert r["text"] == expected["text"]
        assert r["stats"]["tokens_per_s"] > 0 and r["stats"]["load_ms"] > 0
    assert not page.errors


def test_the_cli_agrees_with_the_golden_file(native_outputs):
    """Ties the browser check to the golden file that the native and Node tests also use."""
    golden = {(c["variant"], c["prefix"]): c["token_ids"] for c in GOLDEN_CASES}
    shared = [k for k in native_outputs if k in golden]
    assert len(shared) == len(golden)
    assert all(native_outputs[k]["token_ids"] == golden[k] for k in shared)


LOAD_PHASES = """async () => {
  const seen = [];
  const model = await pocketlm.load("sql-autocomplete", {variant: "int8", onProgress: (p) => seen.push(p)});
  model.dispose();
  return {seen, stats: model.stats};
}"""


def test_load_reports_progress_by_phase_with_bytes(page, page_url):
    page.goto(page_url + "?autoload=0")
    r = page.evaluate(LOAD_PHASES)
    seen = r["seen"]
    # Python came from the build's memory snapshot, not a plain start (test_snapshot_fallback.py: plain)
    assert r["stats"]["python_boot"] == "snapshot" and r["stats"]["python_ms"] > 0, r["stats"]
    phases = {p["phase"] for p in seen}
    assert phases == {"python", "onnx", "model"}
    last = {p["phase"]: p for p in seen}
    for phase in phases:  # every phase reaches its total, and the totals are real byte counts
        assert last[phase]["total"] > 100_000 and last[phase]["loaded"] == last[phase]["total"], last[phase]
    assert seen[-1]["overall"]["percent"] == 100 and seen[-1]["message"] == "ready"
    percents = [p["overall"]["percent"] for p in seen]
    assert percents == sorted(percents)


ABORT = """async ([schema]) => {
  const model = await pocketlm.load("sql-autocomplete", {variant: "int8"});
  const long = {schema, max_new_tokens: 200, temperature: 1.0, top_k: 50, seed: 3, stop: []};
  // model.abort() from the first streamed token
  let t0;
  const a = await model.generate("SELECT", {...long, onToken: () => { if (!t0) { t0 = performance.now(); model.abort(); } }});
  const abortMs = performance.now() - t0;
  // an AbortSignal that fires mid-generation
  const controller = new AbortController();
  const b = model.generate("SELECT", {...long, signal: controller.signal, onToken: () => controller.abort()});
  // a signal aborted before the call: nothing runs
  const c = await model.generate("SELECT", {...long, signal: AbortSignal.abort()});
  const full = await model.generate("SELECT", {...long, seed: 4});
  const after = await model.generate("SELECT count(*) FROM sin", {schema});
  model.dispose();
  return {a, abortMs, b: await b, c, full, after};
}"""


def test_abort_and_signal_cancel_a_generation_promptly(page, server):
    page.goto(server + "index.html?autoload=0")
    with open(SCHEMA_FILE, encoding="utf-8") as f:
        r = page.evaluate(ABORT, [f.read()])
    for key in ("a", "b", "c"):
        assert r[key]["stop_reason"] == "cancelled", key
    assert len(r["a"]["token_ids"]) < 20 and len(r["b"]["token_ids"]) < 20
    assert r["abortMs"] < 100
    assert r["c"]["token_ids"] == []
    assert r["full"]["stop_reason"] != "cancelled"
    assert r["after"]["text"].startswith("ger")  # the model still works after cancellations


def test_bad_sampling_options_are_rejected_with_a_specific_message(page, server):
    page.goto(server + "index.html?autoload=0")
    messages = page.evaluate("""async () => {
      const model = await pocketlm.load("sql-autocomplete", {variant: "int8"});
      const out = [];
      for (const opts of [{temperature: -1}, {top_p: 1.5}, {top_k: 0.5}, {temprature: 1}]) {
        try { await model.generate("SELECT", opts); out.push("accepted"); } catch (e) { out.push(e.message); }
      }
      model.dispose();
      return out;
    }""")
    assert messages[0].startswith("temperature must be >= 0")
    assert messages[1].startswith("top_p must be in (0, 1]")
    assert messages[2].startswith("top_k must be an integer")
    assert messages[3].startswith("unknown options ['temprature']")


THREADS = """async ([schema, prefix]) => {
  const auto = await pocketlm.load("sql-autocomplete", {variant: "fp32"});
  // by manifest URL rather than by name, with two threads
  const two = crossOriginIsolated ? await pocketlm.load("models/sql-autocomplete/manifest.json", {variant: "fp32", threads: 2}) : null;
  const rows = {isolated: crossOriginIsolated, auto_threads: auto.threads,
                auto: (await auto.generate(prefix, {schema})).token_ids,
                two: two && (await two.generate(prefix, {schema})).token_ids};
  auto.dispose();
  if (two) two.dispose();
  return rows;
}"""


def test_served_page_is_isolated_and_runs_with_two_threads(page, page_url, native_outputs):
    """make serve's headers make the page cross-origin isolated, so onnxruntime-web may use threads;
    file:// never is. The page picks one thread by default (measured faster here); two give the
    same tokens. The two-thread model is loaded by its manifest URL instead of its name."""
    with open(SCHEMA_FILE, encoding="utf-8") as f:
        schema = f.read()
    page.goto(page_url + "?autoload=0")
    r = page.evaluate(THREADS, [schema, "SELECT name FROM"])
    expected = native_outputs[("fp32", "SELECT name FROM")]["token_ids"]
    assert r["isolated"] == page_url.startswith("http")
    assert r["auto_threads"] == 1 and r["auto"] == expected
    if r["isolated"]:
        assert r["two"] == expected
