"""make bench's logic that can break without a browser: the results rows and report writer (from fake
measurements), the random-model builder (a tiny shape), exact-length prompts. No timing assertions."""

import asyncio
import json
import os

import pytest

from bench import keystrokes, report, run
from bench.rows import interleaved_summary, summarize
from bench.models import build_random_model
from pocketlm.manifest import Architecture, load_manifest
from pocketlm.native import NativeModel
from pocketlm.session import ModelSession
from pocketlm.tokenizer import Tokenizer

TINY = Architecture(vocab_size=300, dim=32, n_layers=2, n_heads=2, n_kv_heads=2, hidden_dim=64, max_seq_len=64)
TOKENS = list(range(10, 138))


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return build_random_model("tiny", str(tmp_path_factory.mktemp("models")), arch=TINY, seed=3, log=lambda m: None)


def fake_page(tokens, tok_s, first_ms):
    runs = [{"tokens": 127, "decode_ms": 127_000.0 / tok_s, "same": True,
             "timing": {"steps": 127, "run_ms": 100.0, "engine_ms": 10.0, "handoff_ms": 5.0, "python_ms": 20.0}}] * 3
    return {"cold": {"ready_ms": first_ms - 50, "first_token_ms": first_ms, "tokens": tokens, "bytes": 40e6,
                     "first_new_tokens": 127, "first_decode_ms": 127_000.0 / (0.8 * tok_s)},
            "warm": {"ready_ms": first_ms - 500, "first_token_ms": first_ms - 450, "bytes": 40e6, "runs": runs,
                     "prefill": {"16": [5.0, 6.0, 7.0], "128": [40.0, 41.0, 42.0]}, "pyodide_heap_bytes": 31e6},
            "peak_rss_bytes": 300e6}


def fake_results(tiny_model, *, tjs_tokens, started="2026-01-01T00-00-00Z"):
    manifest = load_manifest(tiny_model, check_files=False)
    model = {"params": run.param_count(manifest.architecture), "manifest": manifest}
    native = {"tokens": TOKENS, "margins": [2.0] * 40 + [0.05] + [2.0] * 87, "runs": [{"tokens": 127, "decode_ms": 127.0, "same": True}] * 3,
              "prefill": {16: [1.0, 2.0, 3.0], 128: [8.0, 9.0, 10.0]}}
    rows = [summarize("llama2c-15m", model, "fp32", 1, native, fake_page(TOKENS, 400.0, 3000.0),
                          fake_page(tjs_tokens, 250.0, 2000.0), []),
            summarize("llama2c-15m", model, "q4", 1, native, fake_page(TOKENS, 40.0, 3000.0), None,
                          ["transformers.js: something broke"])]
    by_model = {"llama2c-15m": {r["variant"]: {k: r[k] for k in ("browser_tokens_per_s", "tjs_tokens_per_s",
                                                                  "browser_cold_first_token_ms", "tjs_cold_first_token_ms")}
                                for r in rows}}
    return {"format": 1, "started_utc": started, "commit": "abc1234", "quick": False, "total_s": 600.0,
            "options": {"new_tokens": 128, "prompt_tokens": 16, "runs": 3, "prefill_lengths": [16, 128]},
            "machine": {"cpu": "test cpu", "cores": 2, "load_average_start": [0.1, 0.2, 0.3], "load_average_end": [1, 1, 1]},
            "by_model": by_model, "rows": rows, "file_loads": [{"model": "sql-autocomplete", "error": "boom"}],
            "all_correct": all(r["correct"] for r in rows)}


def test_rows_hold_the_issue_keys_and_ratios(tiny_model):
    row = fake_results(tiny_model, tjs_tokens=TOKENS)["rows"][0]
    for key in ("browser_tokens_per_s", "native_tokens_per_s", "tjs_tokens_per_s", "browser_cold_first_token_ms",
                "tjs_cold_first_token_ms", "threads", "protocol"):
        assert key in row
    assert row["browser_tokens_per_s"] == pytest.approx(400.0) and row["native_tokens_per_s"] == pytest.approx(1000.0)
    assert row["browser_native_ratio"] == pytest.approx(0.4) and row["ours_tjs_ratio"] == pytest.approx(1.6)
    assert row["correct"] and row["breakdown_ms_per_token"]["ort_run"] == pytest.approx(100.0 / 127)
    assert row["prefill_ms"]["browser"][128] == 41.0 and row["prefill_ms"]["native"][16] == 2.0
    assert row["memory"]["browser_peak_rss_bytes"] == 300e6 and row["correctness"]["browser_equals_tjs"]


def test_a_token_mismatch_is_reported_loudly(tiny_model, tmp_path):
    other = TOKENS[:40] + [7] + TOKENS[41:]
    results = fake_results(tiny_model, tjs_tokens=other)
    row = results["rows"][0]
    assert not row["correct"] and row["correctness"]["tjs_first_divergence"] == 40
    report.write_all(results, str(tmp_path))
    text = (tmp_path / "REPORT.md").read_text()
    assert "MISMATCH" in text and "first diff at token 40, native top-2 margin there 0.050" in text and "**NO**" in text


def test_report_history_and_files(tiny_model, tmp_path):
    report.write_all(fake_results(tiny_model, tjs_tokens=TOKENS, started="2026-01-01T00-00-00Z"), str(tmp_path))
    paths = report.write_all(fake_results(tiny_model, tjs_tokens=TOKENS, started="2026-01-02T00-00-00Z"), str(tmp_path))
    assert sorted(os.listdir(tmp_path / "history")) == ["2026-01-01T00-00-00Z.json", "2026-01-02T00-00-00Z.json"]
    text = (tmp_path / "REPORT.md").read_text()
    history = text[text.index("## History"):]
    assert "2026-01-01T00-00-00Z" in history and "2026-01-02T00-00-00Z" in history
    assert "– (no q4)" in text and "transformers.js: something broke" in text and "error: boom" in text
    assert "| 400 | 1000 | 250 | 0.40 | 1.60 |" in text
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["by_model"]["llama2c-15m"]["fp32"]["tjs_tokens_per_s"] == pytest.approx(250.0)
    pngs = [p for p in paths if p.endswith(".png")]
    if pngs:  # matplotlib installed (bench/requirements.txt)
        assert all(os.path.getsize(p) > 1000 for p in pngs)


def test_random_model_folder_is_valid_and_cached(tiny_model):
    m = load_manifest(tiny_model)  # checks every file's size and sha256
    assert m.task == "text" and m.architecture == TINY and sorted(m.variants) == ["fp32", "int8", "q4"]
    assert Tokenizer.from_file(os.path.join(tiny_model, "tokenizer.json")).vocab_size == TINY.vocab_size
    mtime = os.path.getmtime(os.path.join(tiny_model, "model.onnx"))
    assert build_random_model("tiny", os.path.dirname(tiny_model), arch=TINY, seed=3, log=lambda m: None) == tiny_model
    assert os.path.getmtime(os.path.join(tiny_model, "model.onnx")) == mtime
    session = ModelSession(m, Tokenizer.from_file(os.path.join(tiny_model, "tokenizer.json")), NativeModel(tiny_model))
    out = asyncio.run(session.generate("Hello there", {"max_new_tokens": 20, "ignore_eos": True, "stop": []}))
    assert len(out["token_ids"]) == 20


def test_exact_prompts_have_the_asked_length(tiny_model):
    tok = Tokenizer.from_file(os.path.join(tiny_model, "tokenizer.json"))
    src = "".join(__import__("bench.models", fromlist=["x"]).synthetic_text(7, n_lines=60, n_words=500))
    for n in (16, 48):
        text, ids = run.exact_prompt(tok, src, n)
        assert len(ids) == n and ids[0] == 1 and ids[1:] == tok.encode(text)


def keystroke_row(variant, page_ms, native_ms, same=True):
    return {"model": "sql-autocomplete", "variant": variant, "threads": 1, "protocol": "http", "max_new_tokens": 8,
            "query": "SELECT", "same_suggestions": same,
            "browser": keystrokes.summary(page_ms, [8] * len(page_ms)),
            "native": keystrokes.summary(native_ms, [8] * len(native_ms))}


def test_keystroke_and_first_generation_targets(tiny_model, tmp_path):
    res = fake_results(tiny_model, tjs_tokens=TOKENS)
    row = res["rows"][0]
    # the cold page's first generation ran at 0.8 x the timed runs' speed
    assert row["browser_first_gen_tokens_per_s"] == pytest.approx(0.8 * row["browser_tokens_per_s"])
    targets = {text: fn(res) for text, fn in report.TARGETS}
    first = next(v for t, v in targets.items() if t.startswith("first generation"))
    assert first[1] is False and "0.80" in first[0]
    keys = next(v for t, v in targets.items() if "keystroke" in t)
    assert keys == ("no data", None)
    # p95 of 20 requests is the 19th smallest: 25 ms meets the target, 40 ms does not
    res["keystrokes"] = [keystroke_row("fp32", [10.0] * 18 + [25.0, 90.0], [3.0] * 20),
                         keystroke_row("int8", [40.0] * 20, [2.0] * 20, same=False)]
    keys = next(fn(res) for t, fn in report.TARGETS if "keystroke" in t)
    assert keys == ("best p95 25.0 ms (fp32)", True)
    text = report.markdown(res, [])
    assert "| fp32 | 10.0 / 25.0 / 90.0 | 3.0 / 3.0 / 3.0 | 8.0 | yes |" in text
    assert "| int8 | 40.0 / 40.0 / 40.0 | 2.0 / 2.0 / 2.0 | 8.0 | **NO** |" in text


def test_the_first_generation_target_takes_each_models_median_over_pages_against_their_own_steady_state(tiny_model):
    """One generation swings by about ±10% here: each cold page's first generation after the warm-up is set
    against the same page's next generations, and the target is judged on each model's median over pages."""
    manifest = load_manifest(tiny_model, check_files=False)
    model = {"params": run.param_count(manifest.architecture), "manifest": manifest}

    def page(after_tok_s, steady_tok_s):
        return {"after_warm_new_tokens": 127, "after_warm_decode_ms": 127_000.0 / after_tok_s,
                "runs": [{"tokens": 127, "decode_ms": 127_000.0 / steady_tok_s}] * 2}

    ours = fake_page(TOKENS, 400.0, 3000.0)
    ours["cold"].update(page(280.0, 400.0))  # this cold page: 0.70
    extra = {"ours": [page(380.0, 400.0), page(388.0, 400.0), {"ready_ms": 1.0}], "tjs": []}  # 0.95, 0.97, none
    row = summarize("llama2c-15m", model, "fp32", 1, None, ours, None, [], extra)
    assert row["after_warm_up_ratios"] == pytest.approx([0.70, 0.95, 0.97])
    res = fake_results(tiny_model, tjs_tokens=TOKENS)
    res["rows"] = [row]
    target = next(fn for t, fn in report.TARGETS if t.startswith("first generation"))
    text, met = target(res)
    assert met is True and "worst 0.95 (llama2c-15m)" in text and "single pages 0.70–0.97" in text
    # a second model whose median page is 0.85 misses it, though its best page is within 10%
    q4 = fake_page(TOKENS, 400.0, 3000.0)
    q4["cold"].update(page(340.0, 400.0))
    other = summarize("llama-3m", model, "fp32", 1, None, q4, None, [],
                      {"ours": [page(320.0, 400.0), page(380.0, 400.0)], "tjs": []})
    res["rows"].append(other)
    text, met = target(res)
    assert met is False and "worst 0.85 (llama-3m)" in text and "(3 pages each)" in text
    assert "llama-3m 0.85 (0.85, 0.80, 0.95)" in report.markdown(res, [])


def test_the_decode_ratio_target_uses_the_interleaved_rounds_where_they_exist(tiny_model):
    """Taking turns, a slow stretch weighs on both runtimes: where a row has interleaved rounds, the ratio
    target is judged on them (per-round ratios, median), not on the two runtimes' separate runs."""
    res = fake_results(tiny_model, tjs_tokens=TOKENS)
    target = next(fn for t, fn in report.TARGETS if "x transformers.js" in t)
    assert target(res) == ("min 1.60 needed 1.5 (llama2c-15m fp32 t1)", True)  # 400 / 250, separate runs
    # three rounds in which the page ran 400, 300, 200 tok/s and transformers.js beside it 250, 250, 200
    rounds = {"ours": [{"tokens": 127, "decode_ms": 127_000.0 / x} for x in (400.0, 300.0, 200.0)],
              "tjs": [{"tokens": 127, "decode_ms": 127_000.0 / x} for x in (250.0, 250.0, 200.0)]}
    res["rows"][0]["interleaved"] = interleaved_summary(rounds)
    assert res["rows"][0]["interleaved"]["ours_tjs_ratio"] == pytest.approx(1.2)
    assert target(res) == ("min 1.20 needed 1.5 (llama2c-15m fp32 t1, interleaved)", False)
    assert "| llama2c-15m | fp32 | 3 | 300 | 250 | 1.20 |" in report.markdown(res, [])
    assert interleaved_summary({"ours": rounds["ours"], "tjs": []}) is None  # rounds that did not all run


def test_the_15m_target_takes_the_best_of_the_timed_runs_and_the_interleaved_rounds(tiny_model):
    res = fake_results(tiny_model, tjs_tokens=TOKENS)
    for r in res["rows"]:
        r["params"] = 15_200_000
    target = next(fn for t, fn in report.TARGETS if t.startswith("~15 M"))
    assert target(res)[1] is False and target(res)[0].startswith("best 400 tok/s (llama2c-15m fp32)")
    rounds = {"ours": [{"tokens": 127, "decode_ms": 127_000.0 / x} for x in (430.0, 450.0, 470.0)],
              "tjs": [{"tokens": 127, "decode_ms": 127_000.0 / 250.0}] * 3}
    res["rows"][0]["interleaved"] = interleaved_summary(rounds)
    text, met = target(res)
    assert met is True and text.startswith("best 450 tok/s (llama2c-15m fp32, interleaved rounds); timed runs best 400")


def test_the_llama2c_bench_model_is_an_import_of_llama2c_files(tmp_path):
    from bench.llama2c_model import build_llama2c_model

    arch = Architecture(vocab_size=600, dim=32, n_layers=2, n_heads=2, n_kv_heads=2, hidden_dim=64, max_seq_len=64)
    folder = build_llama2c_model("l2c", str(tmp_path), arch, seed=1, log=lambda m: None)
    manifest = load_manifest(folder)
    assert manifest.task == "text" and manifest.architecture.vocab_size == 600
    assert manifest.training["source"] == "llama2.c" and manifest.training["checkpoint"] == "model.bin"
    tok = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
    text = "Bala kitu, 1999 mora."
    assert tok.decode(tok.encode(text)) == text
    session = ModelSession(manifest, tok, NativeModel(folder, variant="fp32", threads=1))
    out = asyncio.run(session.generate(text, {"max_new_tokens": 16, "temperature": 0.0, "ignore_eos": True}))
    assert len(out["token_ids"]) == 16
    # cached: a second call does not rebuild (same files, same mtime)
    before = os.path.getmtime(os.path.join(folder, "model.onnx"))
    assert build_llama2c_model("l2c", str(tmp_path), arch, seed=1, log=lambda m: None) == folder
    assert os.path.getmtime(os.path.join(folder, "model.onnx")) == before


def test_cold_figures_are_medians_over_the_repeated_loads(tiny_model):
    manifest = load_manifest(tiny_model, check_files=False)
    model = {"params": run.param_count(manifest.architecture), "manifest": manifest}
    extra = {"ours": [{"ready_ms": 900.0, "first_token_ms": 1000.0}, {"ready_ms": 4900.0, "first_token_ms": 5000.0}],
             "tjs": [{"ready_ms": 1900.0, "first_token_ms": 2500.0}, {"ready_ms": 1000.0, "first_token_ms": 1500.0}]}
    row = summarize("llama2c-15m", model, "fp32", 1, None, fake_page(TOKENS, 400.0, 3000.0),
                        fake_page(TOKENS, 250.0, 2000.0), [], extra)
    assert row["browser_cold_first_token_ms"] == 3000.0 and row["tjs_cold_first_token_ms"] == 2000.0
    assert row["browser_cold_ready_ms"] == 2950.0 and row["tjs_cold_ready_ms"] == 1900.0
    assert row["cold_loads"]["browser_first_token_ms"] == [3000.0, 1000.0, 5000.0]


def test_memory_bound_applies_to_files_bigger_than_the_cache():
    res = {"machine": {"memory_read_gb_s": 20.0, "l3_cache_bytes": 32 * 2 ** 20}}
    assert report.memory_bound(res, {"variant_bytes": 50e6}) == pytest.approx(400.0)
    assert report.memory_bound(res, {"variant_bytes": 16e6}) is None  # fits the cache: no such bound
    assert report.memory_bound({"machine": {}}, {"variant_bytes": 50e6}) is None
