"""`make bench`'s outputs from a results dict (bench/run.py): results.json, history/<UTC>.json, REPORT.md, *.png.

Every run is kept in bench/history/ and REPORT.md's history table shows the headline figures of all of
them, so the effect of each change stays visible. Plots need matplotlib (bench/requirements.txt); without
it the Markdown is still written.

    write_all(results, "bench") -> [paths written]
"""

from __future__ import annotations

import glob
import json
import os
import statistics

HEADLINE = [("llama2c-15m", "fp32"), ("llama2c-15m", "int8"), ("sql-autocomplete", "fp32"), ("sql-autocomplete", "int8")]
PLOTS = ("decode_tokens_per_s.png", "load_times.png", "per_token_breakdown.png")


def _rows(results: dict, threads: int | None = 1) -> list[dict]:
    return [r for r in results.get("rows", []) if threads is None or r["threads"] == threads]


def _tjs_rows(rows):
    return [r for r in rows if r.get("tjs_tokens_per_s")]


# Targets as this harness states them (issue 5). Each: (text, function(results) -> (value text, met: bool | None)).
def _target_correct(res):
    rows = _rows(res, None)
    def where(r):
        c = r["correctness"]
        ms = [m for m in (c.get("native_margin_at_browser_divergence"), c.get("native_margin_at_tjs_divergence")) if m is not None]
        return f"{r['model']}/{r['variant']}/t{r['threads']}" + (f" (margin {max(ms):.3f})" if ms else "")

    bad = [where(r) for r in rows if not r["correct"]]
    return ("all equal" if not bad else "differ: " + ", ".join(bad[:6])), (not bad) if rows else None


def _target_ratio(res, key, floor, variants=("fp32", "int8")):
    rows = [r for r in _rows(res) if r["variant"] in variants and r.get(key) is not None]
    if not rows:
        return "no data", None
    worst = min(rows, key=lambda r: r[key])
    return f"min {worst[key]:.2f} ({worst['model']} {worst['variant']})", worst[key] >= floor


def _target_first_token(res):
    rows = [r for r in _rows(res) if r["variant"] == "fp32" and r.get("browser_cold_first_token_ms") and r.get("tjs_cold_first_token_ms")]
    if not rows:
        return "no data", None
    worst = max(rows, key=lambda r: r["browser_cold_first_token_ms"] / r["tjs_cold_first_token_ms"])
    ratio = worst["browser_cold_first_token_ms"] / worst["tjs_cold_first_token_ms"]
    return f"worst ours/tjs {ratio:.2f} ({worst['model']})", ratio <= 1.0


def _target_time(res):
    t = res.get("total_s")
    return (f"{t / 60:.1f} min" if t else "?"), (t <= 900 if t and not res.get("quick") else None)


def tjs_ratio(r: dict) -> float | None:
    """ours / transformers.js decode for a row: the interleaved rounds' median where the run made them (the
    two runtimes taking turns, bench/pages.py interleaved), else the two runtimes' own medians."""
    return (r.get("interleaved") or {}).get("ours_tjs_ratio") or r.get("ours_tjs_ratio")


def _target_tjs(res):
    """ours >= 1.5x transformers.js decode, >= 2x on the shipped (small) models; same threads, fp32 and int8."""
    rows = [r for r in _rows(res, None) if r["variant"] in ("fp32", "int8") and tjs_ratio(r) is not None]
    if not rows:
        return "no data", None
    need = lambda r: 2.0 if r.get("shipped") else 1.5  # noqa: E731
    worst = min(rows, key=lambda r: tjs_ratio(r) / need(r))
    how = ", interleaved" if worst.get("interleaved") else ""
    return (f"min {tjs_ratio(worst):.2f} needed {need(worst):.1f} ({worst['model']} {worst['variant']} "
            f"t{worst['threads']}{how})"), all(tjs_ratio(r) >= need(r) for r in rows)


def _target_native(res):
    """browser >= 0.6x native onnxruntime decode (0.8x at ~15 M parameters); one thread, fp32 and int8."""
    rows = [r for r in _rows(res) if r["variant"] in ("fp32", "int8") and r.get("browser_native_ratio") is not None]
    if not rows:
        return "no data", None
    need = lambda r: 0.8 if r["params"] > 10e6 else 0.6  # noqa: E731
    worst = min(rows, key=lambda r: r["browser_native_ratio"] / need(r))
    return (f"min {worst['browser_native_ratio']:.2f} needed {need(worst):.1f} ({worst['model']} {worst['variant']})"), \
        all(r["browser_native_ratio"] >= need(r) for r in rows)


def memory_bound(res, row) -> float | None:
    """Tokens/s a decode step cannot beat when it reads all of the variant's weights from memory: the
    machine's read bandwidth over the file's bytes; None when the file fits the L3 cache (no such bound)."""
    bw, l3 = res.get("machine", {}).get("memory_read_gb_s"), res.get("machine", {}).get("l3_cache_bytes")
    size = row.get("variant_bytes")
    if not bw or not size or (l3 and size <= l3):
        return None
    return bw * 1e9 / size


def _target_15m(res):
    """The best one-thread page decode of a ~15 M model: the timed runs' median or, where the run made them, the
    interleaved rounds' (the page's median over rounds taken beside transformers.js: the same measurement,
    spread over more of the run, so one slow stretch of this machine does not decide it)."""
    rows = [r for r in _rows(res) if r["params"] > 10e6 and r.get("browser_tokens_per_s")]
    if not rows:
        return "no data", None
    figures = [(r["browser_tokens_per_s"], r, "") for r in rows] + \
        [(r["interleaved"]["browser_tokens_per_s"], r, ", interleaved rounds") for r in rows if r.get("interleaved")]
    best, row, how = max(figures, key=lambda f: f[0])
    timed = max(r["browser_tokens_per_s"] for r in rows)
    bounds = [f"{r['variant']} {memory_bound(res, r):.0f}" for r in rows if memory_bound(res, r)]
    bound = f"; memory-bandwidth bound here: {', '.join(bounds)} tok/s" if bounds else ""
    also = f"; timed runs best {timed:.0f}" if how else ""
    return f"best {best:.0f} tok/s ({row['model']} {row['variant']}{how}){also}{bound}", best >= 420


def _target_file_cold(res):
    rows = [r for r in res.get("file_loads", []) if r.get("model") == "sql-autocomplete" and r.get("cold_first_token_ms")]
    if not rows:
        return "no data", None
    ms = rows[0]["cold_first_token_ms"]
    return f"{ms / 1000:.1f} s", ms <= 2500


def _target_keystroke(res):
    rows = [r for r in res.get("keystrokes", []) if (r.get("browser") or {}).get("p95_ms") is not None]
    if not rows:
        return "no data", None
    best = min(rows, key=lambda r: r["browser"]["p95_ms"])
    return f"best p95 {best['browser']['p95_ms']:.1f} ms ({best['variant']})", best["browser"]["p95_ms"] <= 30


def after_warm_up_by_model(res) -> dict[str, list[float]]:
    """model -> the after-warm-up ratios of its one-thread pages (bench/rows.py after_warm_up_ratio); models
    without any are left out."""
    by_model: dict[str, list[float]] = {}
    for r in _rows(res):
        by_model.setdefault(r["model"], []).extend(r.get("after_warm_up_ratios") or [])
    return {m: xs for m, xs in by_model.items() if xs}


def _target_first_gen(res):
    """The first generation after the load's idle-time warm-up against the same page's next generations, one
    thread. One generation swings by about ±10% here, so each page gives a ratio (bench/rows.py
    after_warm_up_ratio: this row's cold page and, for fp32, the extra cold loads) and the target is judged on
    each model's median over its pages; the single pages' range is shown beside, and so is the generation
    right after ready, which interrupts the warm-up. Runs before those ratios existed (history) are judged as
    they were then: one generation against the median of the timed runs, worst row."""
    rows = [r for r in _rows(res) if r.get("browser_tokens_per_s")]
    now = [r["browser_first_gen_tokens_per_s"] / r["browser_tokens_per_s"] for r in rows
           if r.get("browser_first_gen_tokens_per_s")]
    beside = f"; right after ready (interrupting it): worst {min(now):.2f}" if now else ""
    by_model = after_warm_up_by_model(res)
    if by_model:
        medians = {m: statistics.median(xs) for m, xs in by_model.items()}
        worst = min(medians, key=medians.get)
        pages = [x for xs in by_model.values() for x in xs]
        counts = sorted({len(xs) for xs in by_model.values()})
        pages_each = f"{counts[0]}–{counts[-1]}" if len(counts) > 1 else f"{counts[0]}"
        text = (f"after the idle-time warm-up, each page against its next generations, median per model "
                f"({pages_each} pages each): worst {medians[worst]:.2f} "
                f"({worst}); single pages {min(pages):.2f}–{max(pages):.2f}{beside}")
        return text, medians[worst] >= 0.9
    key = "browser_after_warmup_tokens_per_s" if res.get("options", {}).get("warmup", "blocking") == "idle" \
        else "browser_first_gen_tokens_per_s"
    rows = [r for r in rows if r.get(key)]
    if not rows:
        return "no data", None
    worst = min(rows, key=lambda r: r[key] / r["browser_tokens_per_s"])
    ratio = worst[key] / worst["browser_tokens_per_s"]
    text = f"worst first / steady {ratio:.2f} ({worst['model']} {worst['variant']})"
    if key == "browser_after_warmup_tokens_per_s":
        text = f"after the idle-time warm-up: {text}{beside}"
    return text, ratio >= 0.9


# Targets of issue 5. Each: (text, function(results) -> (value text, met: bool | None)); None = not measured.
TARGETS = [
    ("greedy tokens equal: native onnxruntime, the page, transformers.js", _target_correct),
    ("decode: ours >= 1.5 x transformers.js (>= 2 x on the shipped models), same threads", _target_tjs),
    ("decode: browser >= 0.6 x native onnxruntime (0.8 x at ~15 M), one thread", _target_native),
    ("~15 M model: >= 420 tok/s in the browser", _target_15m),
    ("cold navigation -> first token: ours <= transformers.js (fp32)", _target_first_token),
    ("sql-autocomplete: cold file:// open -> first suggestion <= 2.5 s", _target_file_cold),
    ("sql-autocomplete: warm keystroke -> suggestion p95 <= 30 ms", _target_keystroke),
    ("first generation after load within 10% of steady state", _target_first_gen),
    ("the full make bench takes <= 15 min", _target_time),
]


def fmt(x, spec="{:.0f}", none="–"):
    return none if x is None else spec.format(x)


def mb(x):
    return fmt(None if x is None else x / 1e6, "{:.1f}")


def ok(v):
    return {True: "yes", False: "**NO**", None: "–"}[v]


def markdown(results: dict, history: list[dict]) -> str:
    m = results["machine"]
    o = results["options"]
    L = ["# make bench: pocketlm in the browser vs native onnxruntime vs transformers.js", "",
         f"Run {results['started_utc']} (commit {results.get('commit') or '?'}){' — QUICK run (subset)' if results.get('quick') else ''}, "
         f"{results['total_s'] / 60:.1f} min. Written by `make bench` (bench/run.py, bench/report.py); every run is kept in "
         "bench/history/.", "",
         f"- machine: {m.get('cpu')}, {m.get('cores')} cores; load average at start {fmt_load(m.get('load_average_start'))}, "
         f"at end {fmt_load(m.get('load_average_end'))} (2 cores: above ~1 means other work competed)",
         f"- Chromium {m.get('chromium')} headless; Pyodide {m.get('pyodide')}, onnxruntime-web {m.get('onnxruntime_web')} (ours); "
         f"transformers.js {m.get('transformers_js')} with onnxruntime-web {m.get('transformers_js_onnxruntime_web')} (its default "
         f"asyncify build); native onnxruntime {m.get('native_onnxruntime')} (Python {m.get('python')})",
         f"- greedy, {o['new_tokens']} new tokens from a {o['prompt_tokens']}-token prompt, <eos> banned (pocketlm `ignore_eos`, "
         f"transformers.js `min_new_tokens`); decode tok/s = median over {o['runs']} runs of (tokens−1)/(first→last token time); "
         "ours and native run pocketlm's one Python generate loop (text task); pages served over http from one origin with "
         "COOP/COEP (cross-origin isolated); times from navigation start (performance.now()).", "",
         ]
    loads = [x for x in (m.get("load_average_start") or [])[:1] + (m.get("load_average_end") or [])[:1]]
    if loads and max(loads) > 0.75 * (m.get("cores") or 2):
        L += [f"**Contended run: the 1-minute load average reached {max(loads):.1f} on {m.get('cores')} cores, so other work "
              "shared the CPU and every figure here is lower (and noisier) than on an idle machine; compare runs made under "
              "similar load (History below).**", ""]
    L += ["## Targets", "", "| target | this run | met |", "|---|---|---|"]
    for text, fn in TARGETS:
        value, met = fn(results)
        L.append(f"| {text} | {value} | {ok(met)} |")
    L += ["", "## Correctness (checked before timing)", "",
          "Greedy token ids of the first generation in each runtime, compared with native onnxruntime on the same file "
          "(transformers.js: the hf/ export of the same weights; q8 = int8 of the hf graph).", "",
          "| model | variant | threads | page == native | transformers.js == native | page == transformers.js | repeat runs equal |",
          "|---|---|---|---|---|---|---|"]
    for r in _rows(results, None):
        c = r["correctness"]
        tj = ok(c["tjs_equals_native"]) + diff_note(c["tjs_first_divergence"], c.get("native_margin_at_tjs_divergence"))
        br = ok(c["browser_equals_native"]) + diff_note(c["browser_first_divergence"], c.get("native_margin_at_browser_divergence"))
        if r["variant"] not in ("fp32", "int8"):
            tj = "– (no q4 in hf/)"
        L.append(f"| {r['model']} | {r['variant']} | {r['threads']} | {br} | {tj} | {ok(c.get('browser_equals_tjs'))} | "
                 f"{ok(c['repeat_runs_equal'])} |")
    if not results.get("all_correct", True):
        L += ["", "**MISMATCH: some runtimes produced different greedy tokens (rows marked NO above); their speed figures "
              "compare different computations.** The margin is native onnxruntime's gap between the best and the second-best "
              "logit at the first differing token (logits here spread with std ≈ 17): a gap well under 1 is a near tie that "
              "the runtimes' different kernels (e.g. int8 MatMulInteger in WebAssembly vs x86) may round either way; a large "
              "gap would mean a real fault."]
    L += ["", "## Decode speed", "",
          "| model | params | variant | threads | page tok/s | native tok/s | transformers.js tok/s | page / native | ours / transformers.js "
          "| memory bound tok/s |",
          "|---|---|---|---|---|---|---|---|---|---|"]
    for r in _rows(results, None):
        L.append(f"| {r['model']} | {r['params'] / 1e6:.1f} M | {r['variant']} | {r['threads']} | {fmt(r['browser_tokens_per_s'])} | "
                 f"{fmt(r['native_tokens_per_s'])} | {fmt(r['tjs_tokens_per_s']) if r['variant'] in ('fp32', 'int8') else '– (no q4)'} | "
                 f"{fmt(r['browser_native_ratio'], '{:.2f}')} | {fmt(r['ours_tjs_ratio'], '{:.2f}')} | "
                 f"{fmt(memory_bound(results, r), none='– (fits L3)')} |")
    inter = [r for r in _rows(results, None) if r.get("interleaved")]
    if inter:
        L += ["", "Interleaved (the decode ratio's target uses these where they exist): in one browser context the page "
              "and transformers.js each keep the model loaded and take turns, one 128-token generation each per round, the "
              "order alternating, so a slow stretch of the machine weighs on both; ratio = median over rounds of the "
              "round's two speeds.", "",
              "| model | variant | rounds | page tok/s | transformers.js tok/s | ours / transformers.js |",
              "|---|---|---|---|---|---|"]
        for r in inter:
            i = r["interleaved"]
            L.append(f"| {r['model']} | {r['variant']} | {i['rounds']} | {fmt(i['browser_tokens_per_s'])} | "
                     f"{fmt(i['tjs_tokens_per_s'])} | {fmt(i['ours_tjs_ratio'], '{:.2f}')} |")
    m = results.get("machine", {})
    if m.get("memory_read_gb_s"):
        L += ["", f"Memory bound: one core reads {m['memory_read_gb_s']:.1f} GB/s from memory on this machine (bench/machine.py "
              f"memory_read_gb_s) and a decode step reads every weight once, so a variant file larger than the "
              f"{mb(m.get('l3_cache_bytes'))} MB L3 cache cannot decode faster than bandwidth / file bytes at one thread, "
              "whatever the runtime's kernels."]
    L += ["", "transformers.js has no q4 figure: the hf/ (Optimum) layout export/hf_export.py writes holds fp32 "
          "(`model.onnx`) and int8 (`model_quantized.onnx`, dtype q8) only; a 4-bit MatMulNBits file would be `model_q4.onnx`, "
          "which we do not write.", "",
          "## Load: navigation → ready → first token (ms, one thread)", "",
          f"Cold: a fresh browser context (the median of {results.get('options', {}).get('cold_runs', 1)} such loads of "
          "fp32 at one thread, the page's and transformers.js's alternating; file:// too); warm: a reload in it (each "
          "reads its files from its Cache Storage copy over http; runs before the page's file cache (web/src/filecache.js) refetched ours: the "
          "server sends no-cache). " + (
              "Ours: ready after one short task generation (a model that cannot generate fails its load); the warm-up "
              "(up to 600 decode steps / 1 s, then one task generation) runs after ready in idle time and gives way "
              "to requests, so the first generation starts at once." if results.get("options", {}).get("warmup") == "idle"
              else "Ours includes the warm-up at load (up to 600 decode steps / 1 s, then one short generation)."), "",
          "| model | variant | page cold ready / first token | page warm ready / first token | transformers.js cold ready / first token | "
          "transformers.js warm ready / first token | bytes cold: page / transformers.js |", "|---|---|---|---|---|---|---|"]
    for r in _rows(results):
        b = r["bytes_loaded"]
        L.append(f"| {r['model']} | {r['variant']} | {fmt(r['browser_cold_ready_ms'])} / {fmt(r['browser_cold_first_token_ms'])} | "
                 f"{fmt(r['browser_warm_ready_ms'])} / {fmt(r['browser_warm_first_token_ms'])} | "
                 f"{fmt(r['tjs_cold_ready_ms'])} / {fmt(r['tjs_cold_first_token_ms'])} | "
                 f"{fmt(r['tjs_warm_ready_ms'])} / {fmt(r['tjs_warm_first_token_ms'])} | {mb(b['browser_cold'])} MB / {mb(b['tjs_cold'])} MB |")
    if results.get("file_loads"):
        L += ["", "Opened as file:// (no server, one thread; the models built into the page, run with their own task: "
              "sql-autocomplete completes `SELECT name FROM `, reminder-extract extracts a reminder):", "",
              "| model | cold ready / first token | warm ready / first token | bytes cold | peak renderer RSS |", "|---|---|---|---|---|"]
        for f in results["file_loads"]:
            if f.get("error"):
                L.append(f"| {f['model']} | error: {f['error']} | | | |")
            else:
                L.append(f"| {f['model']} | {fmt(f['cold_ready_ms'])} / {fmt(f['cold_first_token_ms'])} | "
                         f"{fmt(f['warm_ready_ms'])} / {fmt(f['warm_first_token_ms'])} | {mb(f['cold_bytes'])} MB | {mb(f['peak_rss_bytes'])} MB |")
    if results.get("keystrokes"):
        k0 = results["keystrokes"][0]
        L += ["", "## sql-autocomplete keystroke → suggestion (ms, warm, one thread, http)", "",
              f"`{k0['query']}` typed one character at a time; each request asks for up to {k0['max_new_tokens']} tokens "
              "with the schema (the model's stop strings and name finishing apply, as in the editor) and is awaited before "
              "the next (bench/keystrokes.py). Page: window.pocketlm call → result; native: the same requests through "
              "pocketlm's loop on onnxruntime.", "",
              "| variant | page p50 / p95 / max | native p50 / p95 / max | mean tokens | same suggestions |", "|---|---|---|---|---|"]
        for k in results["keystrokes"]:
            if k.get("error"):
                L.append(f"| {k['variant']} | error: {k['error']} | | | |")
                continue
            b, n = k["browser"], k["native"]
            L.append(f"| {k['variant']} | {fmt(b['p50_ms'], '{:.1f}')} / {fmt(b['p95_ms'], '{:.1f}')} / {fmt(b['max_ms'], '{:.1f}')} | "
                     f"{fmt(n['p50_ms'], '{:.1f}')} / {fmt(n['p95_ms'], '{:.1f}')} / {fmt(n['max_ms'], '{:.1f}')} | "
                     f"{fmt(b['mean_tokens'], '{:.1f}')} | {ok(k['same_suggestions'])} |")
    firsts = [r for r in _rows(results) if r.get("browser_first_gen_tokens_per_s")]
    if firsts:
        L += ["", "First generation after load (the cold page's correctness run, 128 tokens, started right after ready) "
              "and, when the warm-up runs in idle time, the first generation after that warm-up, against the steady state "
              "(median of the timed runs): " + "; ".join(
                  f"{r['model']} {r['variant']} {r['browser_first_gen_tokens_per_s']:.0f}"
                  + (f" / {r['browser_after_warmup_tokens_per_s']:.0f}" if r.get("browser_after_warmup_tokens_per_s") else "")
                  + f" vs {fmt(r['browser_tokens_per_s'])} tok/s" for r in firsts) + "."]
    paired = after_warm_up_by_model(results)
    if paired:
        L += ["", "The first generation after the warm-up over the median of the same page's next generations, "
              "one ratio per cold page (every one-thread variant's page, and fp32's extra cold loads); the target "
              "takes each model's median: " + "; ".join(
                  f"{m} {statistics.median(xs):.2f} ({', '.join(f'{x:.2f}' for x in xs)})"
                  for m, xs in paired.items()) + "."]
    L += ["", "## Prefill (ms, median)", "",
          "Page and native: pocketlm's stats.prefill_ms (the prompt's forward pass). transformers.js: generate() call → "
          "first token with max_new_tokens 1 (prefill + one sampling step).", "",
          "| model | variant | threads | page 16 / 128 | native 16 / 128 | transformers.js 16 / 128 |", "|---|---|---|---|---|---|"]
    for r in _rows(results, None):
        p = r["prefill_ms"]

        def two(d):
            return "–" if not d else f"{fmt(d.get(16, d.get('16')), '{:.1f}')} / {fmt(d.get(128, d.get('128')), '{:.1f}')}"
        L.append(f"| {r['model']} | {r['variant']} | {r['threads']} | {two(p['browser'])} | {two(p['native'])} | {two(p['tjs_first_token'])} |")
    L += ["", "## Where a decoded token's time goes in the page (ms per token, median over runs)", "",
          "ORT run = onnxruntime's `OrtRun` alone; JS engine = the rest of the forward call in JS (input tensors, KV-cache append, logits copy, "
          "yielding to messages); hand-off = Python's call into JS (token ids across); Python = from the forward result back to "
          "the next call (logits into Python, sampling, the loop). Measured in the worker (web/src/worker.mjs StepTiming).", "",
          "| model | variant | threads | ORT run | JS engine | hand-off | Python | sum | measured per token |", "|---|---|---|---|---|---|---|---|---|"]
    for r in _rows(results, None):
        b = r["breakdown_ms_per_token"]
        if b:
            s = sum(b[k] for k in ("ort_run", "js_engine", "handoff", "python"))
            L.append(f"| {r['model']} | {r['variant']} | {r['threads']} | {b['ort_run']:.3f} | {b['js_engine']:.3f} | "
                     f"{b['handoff']:.3f} | {b['python']:.3f} | {s:.3f} | {b['total']:.3f} |")
    L += ["", "## Memory and bytes (one thread)", "",
          "Peak RSS = VmHWM of the page's renderer process (page + workers: JS heaps, wasm memories, everything), read from "
          "/proc; Pyodide heap = its wasm memory size at the end.", "",
          "| model | variant | model file | page: bytes loaded cold | page: peak RSS | Pyodide wasm heap | transformers.js: bytes cold | transformers.js: peak RSS |",
          "|---|---|---|---|---|---|---|---|"]
    for r in _rows(results):
        b, mem = r["bytes_loaded"], r["memory"]
        L.append(f"| {r['model']} | {r['variant']} | {mb(r['variant_bytes'])} MB | {mb(b['browser_cold'])} MB | "
                 f"{mb(mem['browser_peak_rss_bytes'])} MB | {mb(mem['browser_pyodide_heap_bytes'])} MB | {mb(b['tjs_cold'])} MB | "
                 f"{mb(mem['tjs_peak_rss_bytes'])} MB |")
    errors = [(r, e) for r in _rows(results, None) for e in r.get("errors", [])]
    if errors:
        L += ["", "## Errors", ""] + [f"- {r['model']} {r['variant']} threads {r['threads']}: {e}" for r, e in errors]
    L += ["", "## History (headline figures of every run in bench/history/, threads 1)", "",
          "| run | commit | change (--note) | quick | " + " | ".join(f"{m} {v}: page / tjs tok/s" for m, v in HEADLINE) +
          " | 15M cold first token page / tjs ms | all correct |",
          "|---|---|---|---|" + "---|" * len(HEADLINE) + "---|---|"]
    for h in history:
        cells = []
        for model, variant in HEADLINE:
            x = h.get("by_model", {}).get(model, {}).get(variant)
            cells.append("–" if not x else f"{fmt(x.get('browser_tokens_per_s'))} / {fmt(x.get('tjs_tokens_per_s'))}")
        x = h.get("by_model", {}).get("llama2c-15m", {}).get("fp32") or {}
        L.append(f"| {h.get('started_utc')} | {h.get('commit') or '?'} | {h.get('note') or ''} | {'yes' if h.get('quick') else ''} | "
                 + " | ".join(cells) +
                 f" | {fmt(x.get('browser_cold_first_token_ms'))} / {fmt(x.get('tjs_cold_first_token_ms'))} | {ok(h.get('all_correct'))} |")
    L += ["", "Plots: " + ", ".join(f"[{p}]({p})" for p in PLOTS), ""]
    return "\n".join(L)


def diff_note(index, margin) -> str:
    if index is None:
        return ""
    return f" (first diff at token {index}" + (f", native top-2 margin there {margin:.3f}" if margin is not None else "") + ")"


def fmt_load(x):
    return " / ".join(f"{v:.2f}" for v in x) if x else "?"


def plots(results: dict, out: str) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    written = []
    rows = _rows(results)
    if rows:
        labels = [f"{r['model']}\n{r['variant']}" for r in rows]
        series = [("page (ours)", "browser_tokens_per_s"), ("native onnxruntime", "native_tokens_per_s"),
                  ("transformers.js", "tjs_tokens_per_s")]
        fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(rows)), 4.5))
        w = 0.27
        for i, (name, key) in enumerate(series):
            ax.bar([j + (i - 1) * w for j in range(len(rows))], [r[key] or 0 for r in rows], w, label=name)
        ax.set_xticks(range(len(rows)), labels, fontsize=7)
        ax.set_ylabel("decode tokens/s (1 thread)")
        ax.set_title(f"Decode speed, greedy, {results['options']['new_tokens']} tokens ({results['started_utc']})")
        ax.legend(fontsize=8)
        fig.tight_layout()
        written.append(_save(fig, out, PLOTS[0]))
        plt.close(fig)

        fp32 = [r for r in rows if r["variant"] == "fp32"]
    if rows and fp32:
        fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(fp32)), 4.5))
        keys = [("page cold", "browser_cold"), ("page warm", "browser_warm"), ("tjs cold", "tjs_cold"), ("tjs warm", "tjs_warm")]
        w = 0.2
        for i, (name, k) in enumerate(keys):
            xs = [j + (i - 1.5) * w for j in range(len(fp32))]
            ready = [r.get(f"{k}_ready_ms") or 0 for r in fp32]
            first = [r.get(f"{k}_first_token_ms") or 0 for r in fp32]
            bars = ax.bar(xs, ready, w, label=f"{name}: → ready")
            ax.bar(xs, [max(f - rd, 0) for f, rd in zip(first, ready)], w, bottom=ready, color=bars.patches[0].get_facecolor(),
                   alpha=0.45, label=f"{name}: ready → first token")
        ax.set_xticks(range(len(fp32)), [r["model"] for r in fp32], fontsize=8)
        ax.set_ylabel("ms from navigation start")
        ax.set_title("Load: navigation → model ready → first token (fp32, http, 1 thread)")
        ax.legend(fontsize=6, ncol=2)
        fig.tight_layout()
        written.append(_save(fig, out, PLOTS[1]))
        plt.close(fig)

    br = [r for r in rows if r.get("breakdown_ms_per_token")]
    if br:
        fig, ax = plt.subplots(figsize=(max(6, 1.0 * len(br)), 4.5))
        bottom = [0.0] * len(br)
        for name, k in [("ORT run", "ort_run"), ("JS engine", "js_engine"), ("hand-off", "handoff"), ("Python", "python")]:
            vals = [r["breakdown_ms_per_token"][k] for r in br]
            ax.bar(range(len(br)), vals, 0.6, bottom=bottom, label=name)
            bottom = [b + v for b, v in zip(bottom, vals)]
        ax.set_xticks(range(len(br)), [f"{r['model']}\n{r['variant']}" for r in br], fontsize=7)
        ax.set_ylabel("ms per decoded token")
        ax.set_title("Where a token's time goes in the page (1 thread)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        written.append(_save(fig, out, PLOTS[2]))
        plt.close(fig)
    return written


def _save(fig, out, name):
    path = os.path.join(out, name)
    fig.savefig(path, dpi=110)
    return path


def load_history(out: str) -> list[dict]:
    runs = []
    for path in sorted(glob.glob(os.path.join(out, "history", "*.json"))):
        try:
            with open(path, encoding="utf-8") as f:
                runs.append(json.load(f))
        except (OSError, ValueError):
            continue
    return runs


def for_history(results: dict) -> dict:
    for row in results.get("rows", []):
        row.pop("raw", None)
        row.get("correctness", {}).pop("native_tokens", None)
    return results


def write_all(results: dict, out: str) -> list[str]:
    """results.json, history/<started_utc>.json, REPORT.md, plots; returns the paths written."""
    os.makedirs(os.path.join(out, "history"), exist_ok=True)
    text = json.dumps(results, indent=1, sort_keys=False, default=str) + "\n"
    paths = [os.path.join(out, "results.json"), os.path.join(out, "history", f"{results['started_utc']}.json")]
    with open(paths[0], "w", encoding="utf-8") as f:
        f.write(text)
    with open(paths[1], "w", encoding="utf-8") as f:  # history: every figure, minus raw runs and token ids
        f.write(json.dumps(for_history(json.loads(text)), indent=1) + "\n")
    report = os.path.join(out, "REPORT.md")
    with open(report, "w", encoding="utf-8") as f:
        f.write(markdown(json.loads(text), load_history(out)))
    return paths + [report] + plots(json.loads(text), out)
