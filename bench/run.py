"""`make bench`: pocketlm in the browser against native onnxruntime and transformers.js, per model and variant.

    python -m bench [--quick] [--models a,b] [--variants fp32,int8,q4] [--threads 1,2] [--runs 3] [--no-file]
                    [--interleave 5]

Writes bench/results.json (this run), bench/history/<UTC>.json (every run), bench/REPORT.md and
bench/*.png (bench/report.py). Progress goes to stderr; a failure the run cannot go past is one line
`error: ...` and exit status 2. Work files (site, models, hf exports) go to runs/bench/.

What is run, per model and variant (every model through the generic "text" task: the shipped models
as text-task copies of their folders, so all three runtimes get exactly the same prompt ids):
1. correctness first: greedy, 128 new tokens from a 16-token prompt, <eos> banned (pocketlm's
   `ignore_eos`, transformers.js' `min_new_tokens`): native onnxruntime, the page, transformers.js;
   the token ids must be equal (a mismatch is flagged in results.json and REPORT.md, never hidden);
2. decode tok/s: median over --runs generations of 128 tokens, tok/s = (tokens - 1) / decode time
   (first token to last, as pocketlm's stats.decode_ms); prefill ms for 16- and 128-token prompts;
3. the page (web/, through window.pocketlm as a user calls it) over http from one origin with
   COOP/COEP: a fresh context (cold) then a reload (warm): navigation -> model ready and -> first
   token (performance.now(), the page's navigation start is 0), bytes fetched (cold), the renderer's
   peak RSS, Pyodide's wasm heap, the per-token breakdown (web/src/worker.mjs StepTiming);
4. transformers.js 4.3.1 (bench/js, npm) on the hf/ export of the same weights (export/hf_export.py),
   dtype fp32 for our fp32, q8 (model_quantized.onnx, quantize_int8 of the hf graph) for our int8;
   no q4 file exists in the hf layout, so q4 has no transformers.js figure;
5. threads: 1 everywhere; with --threads 1,2 also 2 (http pages are cross-origin isolated; native
   onnxruntime uses the same count); file:// (shipped models only, built into the page, their own
   task, one thread): navigation -> ready -> first token, cold and warm;
6. the first generation after load (the cold page's correctness run) and the first after the idle-time
   warm-up, each page against its own next generations (the steady state; repeated over the cold loads), and
   sql-autocomplete's warm keystroke -> suggestion latency, page and native (bench/keystrokes.py).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import datetime
import heapq
import os
import sys
import time

from bench import keystrokes as keys
from bench.machine import git_commit, machine_info
from bench.pages import (CHROMIUM, GEN, NEW_TOKENS, PREFILL_LENGTHS, PROMPT_TOKENS, Browser, cold_loads, interleaved, ours_file, ours_http,
                         tjs_http)
from bench.rows import TJS_DTYPE, median, summarize, tok_s

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")
WORK = os.path.join(ROOT, "runs", "bench")
SHIPPED = ["sql-autocomplete", "reminder-extract"]
RANDOM = ["llama2c-15m", "llama-3m"]
ALL_MODELS = ["llama2c-15m", "sql-autocomplete", "llama-3m", "reminder-extract"]
THREADED_VARIANTS = ("fp32", "int8")  # threads > 1 are measured for these (q4 runs fp32 MatMuls: it would repeat fp32)


class BenchError(Exception):
    """Something the run needs is missing; the message is one line for the user."""


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def prepare_models(names: list[str]) -> dict[str, dict]:
    """Model folders (runs/bench/models/<name>, task "text") and their hf/ exports (runs/bench/hf/<name>)."""
    from bench.llama2c_model import build_llama2c_model
    from bench.models import SHAPES, as_text_model, build_random_model
    from pocketlm.manifest import load_manifest

    out = {}
    for name in names:
        if name in SHIPPED:
            src = os.path.join(ROOT, "web", "models", name)
            if not os.path.isfile(os.path.join(src, "manifest.json")):
                raise BenchError(f"web/models/{name} is missing; run make export MODEL={name}")
            folder = as_text_model(src, os.path.join(WORK, "models"))
        elif name == "llama2c-15m":  # a llama2.c model.bin + tokenizer.bin through `python -m export llama2c`
            folder = build_llama2c_model(name, os.path.join(WORK, "models"), SHAPES[name], log=log)
        elif name in RANDOM:
            folder = build_random_model(name, os.path.join(WORK, "models"), log=log)
        else:
            raise BenchError(f"unknown model {name!r}; known: {', '.join(ALL_MODELS)}")
        manifest = load_manifest(folder, check_files=False)
        out[name] = {"dir": folder, "hf": hf_export(folder, name), "manifest": manifest,
                     "params": param_count(manifest.architecture), "shipped": name in SHIPPED}
    return out


def param_count(a) -> int:
    hd = a.dim // a.n_heads
    per_layer = a.dim * (a.n_heads * hd + 2 * a.n_kv_heads * hd) + a.n_heads * hd * a.dim + 3 * a.dim * a.hidden_dim + 2 * a.dim
    return a.vocab_size * a.dim + a.n_layers * per_layer + a.dim


def hf_export(model_dir: str, name: str) -> str:
    """runs/bench/hf/<name>, rebuilt when the model's fp32 file changed (key beside the folder)."""
    from pocketlm.manifest import load_manifest

    out = os.path.join(WORK, "hf", name)
    key_path = out + ".key"
    key = load_manifest(model_dir, check_files=False).variant("fp32").sha256
    if os.path.isfile(os.path.join(out, "onnx", "model_quantized.onnx")) and os.path.isfile(key_path) \
            and open(key_path).read() == key:
        return out
    from export.hf_export import write_hf

    log(f"hf/ export of {name}")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    write_hf(model_dir, out, quantized=True, log=lambda m: None)
    with open(key_path, "w") as f:
        f.write(key)
    return out


def build_site() -> str:
    """pocketlm's page built from the current sources into runs/bench/site (shipped models embedded)."""
    from webtools.build_site import BuildError, build

    out = os.path.join(WORK, "site")
    dirs = [os.path.join(ROOT, "web", "models", m) for m in SHIPPED]
    try:
        build(out, [d for d in dirs if os.path.isfile(os.path.join(d, "manifest.json"))])
    except BuildError as e:
        raise BenchError(str(e)) from None
    return out


def source_text(name: str) -> str:
    """Text the prompts are cut from: the model's own domain for shipped models, synthetic for random ones."""
    if name == "sql-autocomplete":
        with open(os.path.join(ROOT, "web", "schemas", sorted(os.listdir(os.path.join(ROOT, "web", "schemas")))[0]),
                  encoding="utf-8") as f:
            schema = f.read()
        queries = ["SELECT name, country FROM singer WHERE age > 30 ORDER BY name",
                   "SELECT count(*) FROM concert WHERE year = 2014", "SELECT T1.name FROM stadium AS T1 JOIN concert AS T2 "
                   "ON T1.stadium_id = T2.stadium_id GROUP BY T2.stadium_id ORDER BY count(*) DESC LIMIT 1"]
        return schema + "\n\n" + " ".join(queries * 8)
    if name == "reminder-extract":
        return " ".join(["remind me at 7pm to walk the dog", "remind me tomorrow morning to call the dentist about my appointment",
                         "set a reminder every monday at 9am to water the plants", "remind me in two hours to take the cake out"] * 10)
    from bench.models import synthetic_text

    return "".join(synthetic_text(7, n_lines=120, n_words=2000))


def exact_prompt(tokenizer, source: str, n_total: int) -> tuple[str, list[int]]:
    """A text whose text-task prompt (<bos> + tokens) is exactly n_total ids; returns (text, ids)."""
    from pocketlm.tasks.text import prompt_ids

    ids = tokenizer.encode(source)
    if len(ids) < n_total + 8:
        raise BenchError(f"prompt source text has only {len(ids)} tokens, need {n_total}")
    for cut in [n_total - 1] + [n_total - 1 + d for d in (1, -1, 2, -2, 3, -3, 4, -4, 5, -5)]:
        text = tokenizer.decode(ids[:cut])
        p, _ = prompt_ids(tokenizer, text, bos_id=1, max_seq_len=10**6, reserve=0)
        if len(p) == n_total:
            return text, p
    raise BenchError(f"could not cut a {n_total}-token prompt")


def prompts_for(model: dict, name: str) -> dict:
    from pocketlm.tasks.text import prompt_ids
    from pocketlm.tokenizer import Tokenizer

    tok = Tokenizer.from_file(os.path.join(model["dir"], "tokenizer.json"))
    bos = model["manifest"].tokenizer.bos_id
    src = source_text(name)
    out = {}
    for n in sorted(set(PREFILL_LENGTHS) | {PROMPT_TOKENS}):
        text, _ = exact_prompt(tok, src, n)
        ids, dropped = prompt_ids(tok, text, bos_id=bos, max_seq_len=model["manifest"].architecture.max_seq_len,
                                  reserve=1 if n != PROMPT_TOKENS else NEW_TOKENS)
        if dropped or len(ids) != n:
            raise BenchError(f"{name}: the {n}-token prompt does not fit the context")
        out[n] = {"text": text, "ids": ids}
    return out


# ---------------------------------------------------------------- native
def native_runs(model: dict, variant: str, threads: int, prompts: dict, runs: int) -> dict:
    """pocketlm's own loop (ModelSession, text task) on onnxruntime: tokens, decode and prefill runs."""
    from pocketlm.native import NativeModel
    from pocketlm.session import ModelSession
    from pocketlm.tokenizer import Tokenizer

    backend = NativeModel(model["dir"], variant=variant, threads=threads)
    session = ModelSession(model["manifest"], Tokenizer.from_file(os.path.join(model["dir"], "tokenizer.json")), backend)

    eos, margins = model["manifest"].tokenizer.eos_id, []
    forward = backend.forward

    async def recording(ids, cache):  # the first generation also records each step's top-2 logit margin
        logits = await forward(ids, cache)
        top = [v for i, v in heapq.nlargest(3, enumerate(logits), key=lambda iv: iv[1]) if i != eos]  # <eos> is banned
        margins.append(top[0] - top[1])
        return logits

    async def go():
        backend.forward = recording
        try:
            first = await session.generate(prompts[PROMPT_TOKENS]["text"], GEN)
        finally:
            del backend.forward
        res = {"tokens": first["token_ids"], "margins": margins[:len(first["token_ids"])], "runs": [], "prefill": {}}
        for _ in range(runs):
            o = await session.generate(prompts[PROMPT_TOKENS]["text"], GEN)
            res["runs"].append({"tokens": len(o["token_ids"]) - 1, "decode_ms": o["stats"]["decode_ms"],
                                "same": o["token_ids"] == first["token_ids"]})
        for n in PREFILL_LENGTHS:
            res["prefill"][n] = [(await session.generate(prompts[n]["text"], {**GEN, "max_new_tokens": 1}))["stats"]["prefill_ms"]
                                 for _ in range(runs)]
        return res

    return asyncio.run(go())


# ---------------------------------------------------------------- summary
# ---------------------------------------------------------------- main
def run(args) -> dict:
    from playwright.sync_api import sync_playwright

    t_start = time.perf_counter()
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        raise BenchError(f"{CHROMIUM} is missing; install Debian's chromium package (apt-get install chromium)")
    if not os.path.isfile(os.path.join(BENCH, "js", "node_modules", "@huggingface", "transformers", "dist", "transformers.min.js")):
        raise BenchError("bench/js/node_modules is missing; run: cd bench/js && npm ci --ignore-scripts --no-audit --no-fund")
    log(f"preparing models {', '.join(args.models)}; building the page into runs/bench/site")
    models = prepare_models(args.models)
    site = build_site()
    prompts = {name: prompts_for(m, name) for name, m in models.items()}
    configs = [(name, v, t) for name in args.models for v in args.variants for t in args.threads
               if v in models[name]["manifest"].variants and (t == 1 or v in THREADED_VARIANTS)]
    from bench.server import start

    server, base = start(site, WORK)
    rows, file_loads, keystrokes = [], [], []
    try:
        with sync_playwright() as p:
            br = Browser(p)
            info = machine_info(br.version)
            log(f"machine: {info['cpu']}, {info['cores']} cores, Chromium {info['chromium']}, load {info['load_average_start']}")
            try:
                for name, v, t in configs:
                    # every configuration, the file:// loads and the keystrokes in a browser of their own: in one
                    # browser for the whole run, the last phases came out ~25% slower than run alone (file:// sql
                    # 2.9-3.3 s vs 2.3-2.5 s, keystroke p95 36 vs 27 ms, same code)
                    br = br.fresh()
                    errors = []
                    # native right before the page and transformers.js, so the three share the machine's load
                    log(f"native {name} {v} threads={t}")
                    try:
                        with concurrent.futures.ThreadPoolExecutor(1) as pool:  # asyncio.run beside Playwright's loop
                            nat = pool.submit(native_runs, models[name], v, t, prompts[name], args.runs).result()
                    except Exception as e:  # report and go on: one broken variant must not hide the others
                        nat = None
                        errors.append(f"native: {type(e).__name__}: {one_line(e)}")
                    log(f"browser {name} {v} threads={t}")
                    try:
                        ours = ours_http(br, base, name, v, t, prompts[name], args.runs, warm=(v, t) == ("fp32", 1),
                                         warmup=args.warmup)
                    except Exception as e:
                        ours = None
                        errors.append(f"browser: {one_line(e)}")
                    tjs = None
                    if v in TJS_DTYPE and models[name]["hf"] and not args.no_tjs:
                        log(f"transformers.js {name} {TJS_DTYPE[v]} threads={t}")
                        try:
                            tjs = tjs_http(br, base, name, TJS_DTYPE[v], t, prompts[name], args.runs, warm=(v, t) == ("fp32", 1))
                        except Exception as e:
                            errors.append(f"transformers.js: {one_line(e)}")
                    extra = None
                    if (v, t) == ("fp32", 1) and args.cold_runs > 1:  # the cold-start comparison: alternate, take medians
                        log(f"cold loads {name}: {args.cold_runs - 1} more of each, alternating")
                        try:
                            # each of our cold pages also times its first generation after the warm-up against
                            # its next ones: the first-generation target's repeat samples
                            extra = cold_loads(br, base, name, TJS_DTYPE[v] if tjs else None, prompts[name],
                                               args.cold_runs - 1, warmup=args.warmup, pair_runs=args.runs)
                        except Exception as e:
                            errors.append(f"cold loads: {one_line(e)}")
                    inter = None
                    if tjs and t == 1 and args.interleave > 0:  # the ratio's fair figure: the two taking turns
                        log(f"interleaved {name} {v}: {args.interleave} rounds, page and transformers.js taking turns")
                        try:
                            inter = interleaved(br, base, name, v, TJS_DTYPE[v], prompts[name], args.interleave)
                        except Exception as e:
                            errors.append(f"interleaved: {one_line(e)}")
                    row = summarize(name, models[name], v, t, nat, ours, tjs, errors, extra, inter)
                    c = row["correctness"]
                    if c["browser_equals_native"] is False or c["tjs_equals_native"] is False:
                        log(f"MISMATCH {name} {v} threads={t}: browser==native {c['browser_equals_native']} "
                            f"(first diff at {c['browser_first_divergence']}), transformers.js==native "
                            f"{c['tjs_equals_native']} (first diff at {c['tjs_first_divergence']})")
                    for e in errors:
                        log(f"error in {name} {v} threads={t}: {e}")
                    rows.append(row)
                if not args.no_file:
                    br = br.fresh()
                    for name in [m for m in args.models if m in SHIPPED]:
                        log(f"file:// {name} (own task)")
                        try:
                            loads = [ours_file(br, site, name, warmup=args.warmup) for _ in range(args.cold_runs)]
                            r = loads[0]
                            file_loads.append({"model": name, "variant": "fp32", "threads": 1, "protocol": "file",
                                               "task": "own",
                                               "cold_ready_ms": median([x["cold"]["ready_ms"] for x in loads]),
                                               "cold_first_token_ms": median([x["cold"]["first_token_ms"] for x in loads]),
                                               "cold_first_token_ms_runs": [x["cold"]["first_token_ms"] for x in loads],
                                               "warm_ready_ms": r["warm"]["ready_ms"], "warm_first_token_ms": r["warm"]["first_token_ms"],
                                               "cold_bytes": r["cold"]["bytes"], "peak_rss_bytes": r["peak_rss_bytes"]})
                        except Exception as e:
                            file_loads.append({"model": name, "protocol": "file", "error": one_line(e)})
                if "sql-autocomplete" in args.models:
                    br = br.fresh()
                    keystrokes = keys.measure(br, base, os.path.join(ROOT, "web", "models", "sql-autocomplete"),
                                              [v for v in args.variants if v in models["sql-autocomplete"]["manifest"].variants], log)
            finally:
                br.close()
    finally:
        server.shutdown()
        server.server_close()
    info["load_average_end"] = list(os.getloadavg())
    by_model = {}
    for r in rows:
        if r["threads"] == 1:
            by_model.setdefault(r["model"], {})[r["variant"]] = {k: r[k] for k in (
                "browser_tokens_per_s", "native_tokens_per_s", "tjs_tokens_per_s", "browser_cold_first_token_ms",
                "tjs_cold_first_token_ms", "threads", "protocol", "browser_native_ratio", "ours_tjs_ratio", "correct")}
    return {"format": 1, "started_utc": args.started, "commit": git_commit(), "quick": args.quick, "note": args.note,
            "options": {"models": args.models, "variants": args.variants, "threads": args.threads, "runs": args.runs,
                        "cold_runs": args.cold_runs,
                        "warmup": args.warmup,
                        "new_tokens": NEW_TOKENS, "prompt_tokens": PROMPT_TOKENS, "prefill_lengths": list(PREFILL_LENGTHS)},
            "machine": info, "models": {n: {"params": m["params"], "vocab_size": m["manifest"].architecture.vocab_size,
                                             "random_weights": not m["shipped"], "dim": m["manifest"].architecture.dim,
                                             "n_layers": m["manifest"].architecture.n_layers} for n, m in models.items()},
            "by_model": by_model, "rows": rows, "file_loads": file_loads, "keystrokes": keystrokes,
            "all_correct": all(r["correct"] for r in rows), "total_s": time.perf_counter() - t_start}


def one_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:300]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--note", default="", help="what changed since the last run (shown in the report's history)")
    parser.add_argument("--quick", action="store_true", help="a few minutes: llama-3m and sql-autocomplete, fp32+int8, one thread, no file://")
    parser.add_argument("--models", help=f"comma-separated (default: {','.join(ALL_MODELS)})")
    parser.add_argument("--variants", help="comma-separated (default: fp32,int8,q4)")
    parser.add_argument("--threads", help="comma-separated thread counts (default: 1,2)")
    parser.add_argument("--runs", type=int, default=3, help="timed generations per figure (median; default 3)")
    parser.add_argument("--cold-runs", type=int, default=3,
                        help="cold loads per model (fp32, one thread) of the page and of transformers.js, alternating (median; default 3)")
    parser.add_argument("--interleave", type=int, default=5,
                        help="rounds of the page and transformers.js taking turns, one generation each, one thread "
                             "(the decode ratio's target uses them; 0: off; default 5)")
    parser.add_argument("--no-tjs", action="store_true", help="skip transformers.js")
    parser.add_argument("--no-file", action="store_true", help="skip the file:// loads")
    parser.add_argument("--warmup", choices=("idle", "blocking"), default="idle",
                        help="the page's warm-up: in idle time after ready (default, as the page) or before ready")
    parser.add_argument("--out", default=BENCH, help="where results.json, history/, REPORT.md and plots go (default bench/)")
    args = parser.parse_args(argv)
    args.models = (args.models or ("llama-3m,sql-autocomplete" if args.quick else ",".join(ALL_MODELS))).split(",")
    args.variants = (args.variants or ("fp32,int8" if args.quick else "fp32,int8,q4")).split(",")
    args.threads = [int(t) for t in (args.threads or ("1" if args.quick else "1,2")).split(",")]
    args.no_file = args.no_file or args.quick
    args.runs = max(3, args.runs)
    args.cold_runs = 1 if args.quick else max(1, args.cold_runs)
    args.interleave = min(args.interleave, 2) if args.quick else max(0, args.interleave)
    args.started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H-%M-%SZ")
    try:
        from playwright.sync_api import Error as PlaywrightError  # noqa: F401
    except ImportError:
        print("error: playwright is not installed in this Python (pip install -r requirements.txt)", file=sys.stderr)
        return 2
    try:
        results = run(args)
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from bench.report import write_all

    paths = write_all(results, args.out)
    log(f"done in {results['total_s']:.0f} s: " + ", ".join(os.path.relpath(p, ROOT) for p in paths))
    if not results["all_correct"]:
        log("WARNING: greedy tokens differ between runtimes for some rows; see REPORT.md 'Correctness'")
    return 0


if __name__ == "__main__":
    sys.exit(main())
