"""One row of bench/results.json: a model, variant and thread count measured in the three runtimes.

bench/run.py collects the raw measurements (native runs, the page's and transformers.js's pages, the
interleaved rounds) and `summarize` turns them into the row bench/report.py reads: the issue's keys
first, then ratios, load figures, the per-token breakdown and the greedy-token correctness check.
"""

from __future__ import annotations

import statistics

from bench.pages import PREFILL_LENGTHS

TJS_DTYPE = {"fp32": "fp32", "int8": "q8"}  # our variant -> transformers.js dtype (hf/ file); q4: none


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


# ---------------------------------------------------------------- preparation


def tok_s(runs: list[dict]) -> float | None:
    """Median over runs of (tokens - 1... already counted by the caller) / decode seconds."""
    return median([1000.0 * r["tokens"] / r["decode_ms"] for r in runs if r.get("decode_ms")])


def interleaved_summary(inter: dict | None) -> dict | None:
    """Medians of the interleaved rounds: each runtime's tok/s and the ratio ours / transformers.js of each
    round (the two generations of a round ran back to back, so a slow stretch weighs on both).

    >>> interleaved_summary({"ours": [{"tokens": 100, "decode_ms": 100.0}, {"tokens": 100, "decode_ms": 200.0}],
    ...                      "tjs": [{"tokens": 100, "decode_ms": 200.0}, {"tokens": 100, "decode_ms": 500.0}]})
    {'rounds': 2, 'browser_tokens_per_s': 750.0, 'tjs_tokens_per_s': 350.0, 'ours_tjs_ratio': 2.25}
    """
    if not inter or not inter.get("ours") or len(inter["ours"]) != len(inter.get("tjs", [])):
        return None
    ratios = [tok_s([a]) / tok_s([b]) for a, b in zip(inter["ours"], inter["tjs"])]
    return {"rounds": len(ratios), "browser_tokens_per_s": tok_s(inter["ours"]), "tjs_tokens_per_s": tok_s(inter["tjs"]),
            "ours_tjs_ratio": median(ratios)}


def after_warm_up_ratio(page: dict) -> float | None:
    """A page's first generation after its idle-time warm-up over the median of the same page's next ones
    (its steady state). One generation swings by about ±10% on this machine, so the report takes the
    median of these over a model's pages.

    >>> round(after_warm_up_ratio({"after_warm_new_tokens": 100, "after_warm_decode_ms": 125.0,  # 800 tok/s
    ...                            "runs": [{"tokens": 100, "decode_ms": 100.0}, {"tokens": 100, "decode_ms": 80.0}]}), 3)
    0.711
    >>> after_warm_up_ratio({"after_warm_new_tokens": 100, "after_warm_decode_ms": 125.0, "runs": []}) is None
    True
    """
    steady = tok_s(page.get("runs") or [])
    if not page.get("after_warm_new_tokens") or not steady:
        return None
    return tok_s([{"tokens": page["after_warm_new_tokens"], "decode_ms": page["after_warm_decode_ms"]}]) / steady


def divergence(a: list[int] | None, b: list[int] | None) -> int | None:
    """Index of the first differing token (or the shorter length), None when equal or unknown."""
    if a is None or b is None or a == b:
        return None
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def summarize(name: str, model: dict, variant: str, threads: int, native: dict | None, ours: dict | None,
              tjs: dict | None, errors: list[str], cold_extra: dict | None = None, inter: dict | None = None) -> dict:
    """One results row; the keys the issue asks for first. Cold figures: the median over the first cold load
    and `cold_extra`'s (bench.pages.cold_loads); `inter`: bench.pages.interleaved's rounds."""
    # the timed runs are in the warm page when there was a reload, else in the cold one
    oc, ow_ = (ours or {}).get("cold") or {}, (ours or {}).get("warm") or {}
    tc, tw_ = (tjs or {}).get("cold") or {}, (tjs or {}).get("warm") or {}
    ow, tw = ow_ or oc, tw_ or tc
    b_tps = tok_s(ow.get("runs", [])) if ours else None
    n_tps = tok_s(native["runs"]) if native else None
    t_tps = tok_s(tw.get("runs", [])) if tjs else None
    def cold_runs(first: dict, who: str, key: str) -> list[float]:
        return [c[key] for c in [first] + (cold_extra or {}).get(who, []) if c.get(key) is not None]

    cold = {"ours": cold_runs(oc, "ours", "first_token_ms"), "tjs": cold_runs(tc, "tjs", "first_token_ms")}
    ready = {"ours": cold_runs(oc, "ours", "ready_ms"), "tjs": cold_runs(tc, "tjs", "ready_ms")}
    row = {
        "model": name, "variant": variant, "threads": threads, "protocol": "http",
        "browser_tokens_per_s": b_tps, "native_tokens_per_s": n_tps, "tjs_tokens_per_s": t_tps,
        "browser_cold_first_token_ms": median(cold["ours"]), "tjs_cold_first_token_ms": median(cold["tjs"]),
        "cold_loads": {"browser_first_token_ms": cold["ours"], "tjs_first_token_ms": cold["tjs"]},
        "browser_native_ratio": b_tps / n_tps if b_tps and n_tps else None,
        "ours_tjs_ratio": b_tps / t_tps if b_tps and t_tps else None,
        # the first generation after load (cold page) against the steady state (the timed runs)
        "browser_first_gen_tokens_per_s": tok_s([{"tokens": oc.get("first_new_tokens"), "decode_ms": oc.get("first_decode_ms")}])
        if oc.get("first_new_tokens") else None,
        # ... and the first after the warm-up (which runs in idle time after ready and gives way to requests)
        "browser_after_warmup_tokens_per_s": tok_s([{"tokens": oc.get("after_warm_new_tokens"),
                                                     "decode_ms": oc.get("after_warm_decode_ms")}])
        if oc.get("after_warm_new_tokens") else None,
        # ... each over its own page's next generations: this row's cold page and the extra cold loads
        "after_warm_up_ratios": [x for x in map(after_warm_up_ratio, [oc] + (cold_extra or {}).get("ours", []))
                                 if x is not None],
        "browser_cold_ready_ms": median(ready["ours"]), "browser_warm_ready_ms": ow_.get("ready_ms"),
        "browser_warm_first_token_ms": ow_.get("first_token_ms"),
        "tjs_cold_ready_ms": median(ready["tjs"]), "tjs_warm_ready_ms": tw_.get("ready_ms"),
        "tjs_warm_first_token_ms": tw_.get("first_token_ms"),
        "params": model["params"], "vocab_size": model["manifest"].architecture.vocab_size,
        "variant_bytes": model["manifest"].variant(variant).bytes,
        "tjs_dtype": TJS_DTYPE.get(variant), "tjs_note": None if variant in TJS_DTYPE else
        "no q4 file in the hf/ (transformers.js) layout: export/hf_export.py writes fp32 and q8 only",
        "prefill_ms": {
            "browser": {n: median(ow.get("prefill", {}).get(str(n), [])) for n in PREFILL_LENGTHS} if ours else None,
            "native": {n: median(native["prefill"][n]) for n in PREFILL_LENGTHS} if native else None,
            "tjs_first_token": {n: median(tw.get("prefill", {}).get(str(n), [])) for n in PREFILL_LENGTHS} if tjs else None,
        },
        "bytes_loaded": {"browser_cold": oc.get("bytes"), "browser_warm": ow_.get("bytes"), "tjs_cold": tc.get("bytes"),
                         "tjs_warm": tw_.get("bytes")},
        "memory": {"browser_peak_rss_bytes": (ours or {}).get("peak_rss_bytes"),
                   "browser_pyodide_heap_bytes": ow.get("pyodide_heap_bytes"),
                   "tjs_peak_rss_bytes": (tjs or {}).get("peak_rss_bytes")},
        "breakdown_ms_per_token": breakdown(ow.get("runs", [])) if ours else None,
        "interleaved": interleaved_summary(inter),
        "errors": errors,
    }
    # correctness: greedy tokens of the three runtimes (browser and transformers.js: their first generation)
    nat, brw, tj = (native or {}).get("tokens"), oc.get("tokens"), tc.get("tokens")
    row["correctness"] = {
        "native_tokens": nat, "browser_equals_native": None if nat is None or brw is None else brw == nat,
        "browser_first_divergence": divergence(nat, brw),
        "tjs_equals_native": None if nat is None or tj is None else tj == nat, "tjs_first_divergence": divergence(nat, tj),
        "browser_equals_tjs": None if brw is None or tj is None else brw == tj,
        # native's top-2 logit margin where the sequences part: a near tie (small) is a rounding flip, not a bug
        "native_margin_at_browser_divergence": margin_at((native or {}).get("margins"), divergence(nat, brw)),
        "native_margin_at_tjs_divergence": margin_at((native or {}).get("margins"), divergence(nat, tj)),
        "native_min_margin": min((native or {}).get("margins") or [None], key=lambda x: float("inf") if x is None else x),
        "repeat_runs_equal": all(r.get("same", True) for r in ow.get("runs", []) + tw.get("runs", []) + (native or {}).get("runs", [])),
    }
    row["correct"] = row["correctness"]["browser_equals_native"] is not False and row["correctness"]["tjs_equals_native"] is not False
    row["raw"] = {"native": native and {k: v for k, v in native.items() if k not in ("tokens", "margins")},
                  "browser": ours and strip_tokens(ours), "tjs": tjs and strip_tokens(tjs)}
    return row


def margin_at(margins: list | None, index: int | None) -> float | None:
    return margins[index] if margins and index is not None and index < len(margins) else None


def strip_tokens(r: dict) -> dict:
    return {k: {kk: vv for kk, vv in v.items() if kk != "tokens"} if isinstance(v, dict) else v for k, v in r.items() if v is not None}


def breakdown(runs: list[dict]) -> dict | None:
    """Per-token ms of the decode phase, medians over runs: ORT run, JS engine, hand-off, Python."""
    parts = {"ort_run": "run_ms", "js_engine": "engine_ms", "handoff": "handoff_ms", "python": "python_ms"}
    rows = [r["timing"] for r in runs if r.get("timing") and r["timing"].get("steps")]
    if not rows:
        return None
    out = {k: median([t[v] / t["steps"] for t in rows]) for k, v in parts.items()}
    out["total"] = median([r["decode_ms"] / max(r["tokens"], 1) for r in runs])
    return out
