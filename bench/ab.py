"""`make bench-ab BASE=<commit>`: the page built from an earlier commit against the page built from the
working tree, alternating, in the same browser on the same machine.

This machine's speed drifts by up to 2x within an hour, so a change is only measured fairly when both
builds take turns: round r loads BASE then the working tree, round r+1 the other way round (ABBA...),
each load in a fresh browser context. Both pages are served from one origin (the working tree's page at
/, BASE's at /base/) and load the same model folders (runs/bench/models, as `make bench` prepares them),
so only the page's code differs.

Per model: cold loads (navigation -> ready -> first token of an 8-token generation, with the page's load
breakdown, `model.stats`) and, with --runs > 0, decode tokens/s of 128-token greedy generations in one
warm page per round, with the first generation after the page's idle-time warm-up as a percentage of
it. Prints a Markdown table (medians, with every run) and writes runs/bench-ab/<time>.json.

    python -m bench.ab --base COMMIT [--models llama2c-15m,sql-autocomplete] [--loads 5] [--runs 3]
                       [--variant fp32] [--reload] [--options JSON]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time

from bench.pages import GEN, OURS_JS, Browser, page_args
from bench.rows import after_warm_up_ratio, median, tok_s
from bench.run import ALL_MODELS, ROOT, WORK, BenchError, build_site, log, prepare_models, prompts_for

AB_WORK = os.path.join(ROOT, "runs", "bench-ab")
# cold-load figures: the page's timestamps, then its own load breakdown (pocketlm.js `model.stats`)
COLD_KEYS = ("ready_ms", "first_token_ms")
STAT_KEYS = ("wait_ms", "runtime_ms", "onnx_ms", "python_ms", "tokenizer_ms", "session_ms", "check_ms")


def resolve(commit: str) -> str:
    """The full hash of `commit` in this repository; a clear error if git does not know it."""
    r = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}"], cwd=ROOT,
                       capture_output=True, text=True)
    if r.returncode != 0 or not r.stdout.strip():
        raise BenchError(f"BASE={commit!r} is not a commit of this repository (git rev-parse found nothing); "
                         "give a hash or a ref, e.g. make bench-ab BASE=HEAD~1")
    return r.stdout.strip()


def build_base_site(commit: str, work: str = AB_WORK) -> str:
    """<work>/site-<commit>: the page as `make site` at `commit` built it (its web/, pysrc/ and webtools/,
    with this tree's web/node_modules and the shipped models of this tree). Kept between runs."""
    out = os.path.join(work, f"site-{commit[:12]}")
    if os.path.isfile(os.path.join(out, "index.html")):
        return out
    src = os.path.join(work, f"src-{commit[:12]}")
    shutil.rmtree(src, ignore_errors=True)
    os.makedirs(src)
    archive = subprocess.run(["git", "archive", commit, "web", "pysrc", "webtools"], cwd=ROOT, capture_output=True)
    if archive.returncode != 0:
        raise BenchError(f"git archive {commit[:12]} failed: {archive.stderr.decode(errors='replace').strip()}")
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(src, filter="data")
    os.symlink(os.path.join(ROOT, "web", "node_modules"), os.path.join(src, "web", "node_modules"))
    models = [os.path.join(ROOT, "web", "models", m) for m in ("sql-autocomplete", "reminder-extract")
              if os.path.isfile(os.path.join(ROOT, "web", "models", m, "manifest.json"))]
    cmd = [sys.executable, "-m", "webtools.build_site", "--out", out] + [a for m in models for a in ("--model", m)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.path.join(src, "pysrc")])}
    log(f"building the page of {commit[:12]} into {os.path.relpath(out, ROOT)}")
    r = subprocess.run(cmd, cwd=src, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise BenchError(f"make site at {commit[:12]} failed: {(r.stderr or r.stdout).strip().splitlines()[-1:]}")
    return out


def rounds(n: int) -> list[tuple[str, str]]:
    """The order of the two builds in each of n rounds: ABBA..., so neither always goes first.

    >>> rounds(3)
    [('base', 'now'), ('now', 'base'), ('base', 'now')]
    """
    return [("base", "now") if r % 2 == 0 else ("now", "base") for r in range(n)]


def summarize(samples: dict[str, dict[str, list[float]]]) -> list[dict]:
    """Rows {metric, base, now, ratio (now / base), base_runs, now_runs} from samples[build][metric] lists.

    >>> summarize({"base": {"ready_ms": [3, 1, 2]}, "now": {"ready_ms": [1, 1, 1]}})[0]["ratio"]
    0.5
    """
    out = []
    for metric in samples["base"]:
        b, n = median(samples["base"][metric]), median(samples["now"].get(metric, []))
        out.append({"metric": metric, "base": b, "now": n, "ratio": round(n / b, 3) if b and n is not None else None,
                    "base_runs": samples["base"][metric], "now_runs": samples["now"].get(metric, [])})
    return out


def cold_load(br: Browser, url: str, args: dict, reload: bool = False) -> dict[str, float]:
    """A cold load's figures and load breakdown; with `reload`, also the same page reloaded once it has kept
    its files (a page with web/src/filecache.js reads them back; one without downloads them again):
    reload_ready_ms, reload_first_token_ms."""
    cold_args = {**args, "coldOnly": True, "keep": reload}
    res = br.measure(url, OURS_JS, cold_args, cold_args if reload else None)
    cold, warm = res["cold"], res.get("warm")
    stats = cold.get("load_stats") or {}
    timings = {k: stats[k] for k in STAT_KEYS if isinstance(stats.get(k), (int, float))}
    again = {f"reload_{k}": warm[k] for k in COLD_KEYS} if warm else {}
    return {**{k: cold[k] for k in COLD_KEYS}, **timings, **again}


def decode(br: Browser, url: str, args: dict) -> dict[str, float]:
    """Decode tok/s of the timed runs and, as a percentage of it, the page's first generation after its
    idle-time warm-up (the same page, just before them: the bench's "first generation after load")."""
    res = br.measure(url, OURS_JS, args)["cold"]
    out = {"tokens_per_s": tok_s(res["runs"])}
    ratio = after_warm_up_ratio(res)
    if ratio is not None:
        out["after_warm_up_pct_of_steady"] = 100.0 * ratio
    return out


def run(args) -> dict:
    from playwright.sync_api import sync_playwright

    from bench.server import mounts, start

    commit = resolve(args.base)
    models = prepare_models(args.models)
    site, base_site = build_site(), build_base_site(commit)
    prompts = {name: prompts_for(m, name) for name, m in models.items()}
    server, origin = start(site, WORK, extra={"/base/": base_site})
    urls = {"base": f"{origin}/base/index.html?autoload=0", "now": f"{origin}/index.html?autoload=0"}
    results = {}
    try:
        with sync_playwright() as p:
            br = Browser(p)
            for name in args.models:
                samples = {"base": {}, "now": {}}
                short = page_args(name, args.variant, 1, prompts[name], "idle", opts={**GEN, "max_new_tokens": 8})
                opts = {**GEN, **args.options}
                timed = {**page_args(name, args.variant, 1, prompts[name], "idle", opts=opts), "runs": args.runs}
                for r, order in enumerate(rounds(args.loads)):
                    log(f"{name}: round {r + 1}/{args.loads} ({' then '.join(order)})")
                    for build in order:
                        br = br.fresh()
                        figures = cold_load(br, urls[build], short, reload=args.reload)
                        if args.runs > 0:
                            figures.update(decode(br, urls[build], timed))
                        for k, v in figures.items():
                            samples[build].setdefault(k, []).append(round(v, 2))
                results[name] = summarize(samples)
            br.close()
    finally:
        server.shutdown()
    return {"base": commit, "now": "working tree", "loads": args.loads, "runs": args.runs, "options": args.options,
            "variant": args.variant, "models": results}


def table(report: dict) -> str:
    lines = [f"A/B: base {report['base'][:12]} vs the working tree; {report['loads']} alternating rounds, "
             f"{report.get('variant', 'fp32')}, one thread, medians (every run in brackets)"
             + (f"; decode options {json.dumps(report['options'])}" if report.get("options") else ""), "",
             "| model | figure | base | now | now / base |", "|---|---|---|---|---|"]
    for name, rows in report["models"].items():
        for row in rows:
            runs = lambda xs: ", ".join(f"{x:.0f}" for x in xs)
            lines.append(f"| {name} | {row['metric']} | {row['base']:.0f} ({runs(row['base_runs'])}) | "
                         f"{row['now']:.0f} ({runs(row['now_runs'])}) | {row['ratio']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__.split("\n")[0])
    parser.add_argument("--base", required=True, help="the commit to compare against (hash or ref)")
    parser.add_argument("--models", default="llama2c-15m,sql-autocomplete",
                        help=f"comma-separated, of {','.join(ALL_MODELS)} (default: llama2c-15m,sql-autocomplete)")
    parser.add_argument("--loads", type=int, default=5, help="alternating rounds per model (default 5)")
    parser.add_argument("--runs", type=int, default=0,
                        help="timed 128-token generations per round for decode tok/s (default 0: cold loads only)")
    parser.add_argument("--variant", default="fp32", help="the model variant both pages load (default fp32)")
    parser.add_argument("--reload", action="store_true",
                        help="after each cold load, let the page keep its files and reload it (warm load figures)")
    parser.add_argument("--options", default="{}",
                        help='generation options over the bench\'s greedy ones for the decode runs, as JSON, e.g. '
                             '\'{"temperature": 1.0, "top_p": 0.9, "seed": 1}\' (sampled decoding)')
    args = parser.parse_args(argv)
    try:
        args.options = json.loads(args.options)
        if not isinstance(args.options, dict):
            raise ValueError("not a JSON object")
    except ValueError as e:
        print(f"error: --options must be a JSON object of generation options ({e})", file=sys.stderr)
        return 2
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in args.models if m not in ALL_MODELS]
    if unknown or args.loads < 1 or args.runs < 0:
        print(f"error: unknown model(s) {unknown}; known: {', '.join(ALL_MODELS)}" if unknown else
              "error: --loads must be >= 1 and --runs >= 0", file=sys.stderr)
        return 2
    try:
        report = run(args)
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    os.makedirs(AB_WORK, exist_ok=True)
    out = os.path.join(AB_WORK, time.strftime("%Y-%m-%dT%H-%M-%SZ", time.gmtime()) + ".json")
    with open(out, "w") as f:
        json.dump(report, f, indent=1)
    print(table(report))
    print(f"\n(written {os.path.relpath(out, ROOT)})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
