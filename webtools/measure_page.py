"""Measure the built page (site/) in headless Chromium, over http and as file://, and print Markdown tables.

What is measured, per mode (file:// and http served by webtools.serve.make_server, cross-origin isolated):
1. navigation -> first suggestion on screen (`pocketlmApp.state.firstSuggestionMs`, which is
   performance.now() at the first drawn suggestion), for the manifest's default variant: cold (a fresh
   browser context per run) and warm (a reload in the same context); medians of --runs, with the
   load breakdown the page records in `state.model.stats` (medians too);
2. decode tokens/s for each variant, browser against native onnxruntime on the same ONNX file with one
   thread, both through pocketlm's one Python generate loop (ModelSession): greedy (the page's default),
   `stop: []`, max_new_tokens 128, a fixed schema+prefix list cycled until >= 256 decoded tokens; tok/s =
   sum(len(token_ids) - 1) / sum(stats.decode_ms); one discarded generation first on both sides;
3. bytes and requests the page loads (cold and warm): Playwright's finished requests; response body sizes
   over http, the file sizes of file:// URLs on file:// (data:/blob: URLs are not counted). "Warm" uses
   the context's in-memory cache only (Playwright contexts are incognito), not a user's disk cache;
4. over http, decode tok/s with threads: 2 as well.

    python -m webtools.measure_page [--site DIR] [--variants fp32,int8,q4] [--runs N] [--json OUT]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import threading
import time
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
MODEL = "sql-autocomplete"
GEN_OPTIONS = {"max_new_tokens": 128, "temperature": 0.0, "stop": []}  # greedy: the page's default
CASES = [("concerts", "SELECT "), ("flights", "SELECT name FROM "),
         ("shop", "SELECT count(*) FROM orders WHERE "), ("university", "SELECT s.name, c.title FROM student AS s JOIN ")]
SEED, MIN_TOKENS = 1234, 256
STAT_KEYS = ["load_ms", "runtime_ms", "model_ms", "wait_ms", "warmup_ms", "warmup_steps"]

# Runs in the page: load one variant into its own worker, one discarded generation, then generate over the
# cases (seed SEED + i) until minTokens decoded tokens; the same loop as native_decode below.
BENCH_JS = """async ({variant, threads, cases, opts, seed, minTokens}) => {
  const m = await pocketlm.load(%s, {variant, threads});
  try {
    await m.generate(cases[0][1], {schema: cases[0][0], ...opts, seed});
    let tokens = 0, decode = 0, prefill = 0, calls = 0;
    for (let i = 0; tokens < minTokens; i++) {
      const [schema, prefix] = cases[i %% cases.length];
      const out = await m.generate(prefix, {schema, ...opts, seed: seed + i});
      tokens += out.token_ids.length - 1; decode += out.stats.decode_ms; prefill += out.stats.prefill_ms; calls++;
    }
    return {tokens, decode_ms: decode, prefill_ms: prefill / calls, calls, threads: m.threads};
  } finally { m.dispose(); }
}""" % json.dumps(MODEL)
# Resolves (truthy) once the first suggestion is drawn or the page shows an error.
READY_JS = """() => { const s = window.pocketlmApp && window.pocketlmApp.state, e = document.getElementById("error");
  const error = e && !e.hidden && e.textContent ? e.textContent : null;
  return (s && s.firstSuggestionMs !== undefined || error) && {ms: s ? s.firstSuggestionMs ?? null : null,
    error, stats: s && s.model ? s.model.stats : null}; }"""


class MeasureError(Exception):
    """Something the measurement needs is missing or failed; the message is one line for the user."""


def site_config(site: str) -> dict:
    """POCKETLM_SITE from site/site-config.js (a JSON object after `window.POCKETLM_SITE = `)."""
    path = os.path.join(site, "site-config.js")
    if not os.path.isfile(os.path.join(site, "index.html")) or not os.path.isfile(path):
        raise MeasureError(f"{site} is not a built site; build it with: .venv/bin/python -m webtools.build_site")
    text = open(path, encoding="utf-8").read()
    return json.loads(text[text.index("{"): text.rindex("}") + 1])


def native_decode(model_dir: str, variant: str, cases: list, threads: int = 1) -> dict:
    """Decode tok/s natively: NativeModel + ModelSession, the same loop and options as BENCH_JS."""
    sys.path.insert(0, os.path.join(ROOT, "pysrc"))
    from pocketlm.native import NativeModel
    from pocketlm.session import ModelSession
    from pocketlm.tokenizer import Tokenizer

    try:
        model = NativeModel(model_dir, variant=variant, threads=threads)
        session = ModelSession(model.manifest, Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json")), model)
    except (ValueError, RuntimeError, OSError) as e:  # ManifestError, ModelLoadError, a missing file
        raise MeasureError(f"native {variant}: {e}") from None

    async def run() -> dict:
        await session.generate(cases[0][1], {"schema": cases[0][0], **GEN_OPTIONS, "seed": SEED})
        tokens = decode = prefill = calls = 0
        while tokens < MIN_TOKENS:
            schema, prefix = cases[calls % len(cases)]
            out = await session.generate(prefix, {"schema": schema, **GEN_OPTIONS, "seed": SEED + calls})
            tokens += len(out["token_ids"]) - 1
            decode += out["stats"]["decode_ms"]
            prefill += out["stats"]["prefill_ms"]
            calls += 1
        return {"tokens": tokens, "decode_ms": decode, "prefill_ms": prefill / calls, "calls": calls, "threads": threads}

    return asyncio.run(run())


def track_requests(context, mode: str) -> list:
    """Start collecting [url, status, bytes] for every finished request of the context (pages and workers).

    http: CDP's response body size; a worker's own script reports 0 there, so a 200 with 0 falls back to
    Content-Length. file://: the size of the file on disk.
    """
    seen: list = []

    def on_finished(request):
        url = request.url
        if mode == "file" and url.startswith("file:"):
            path = urllib.request.url2pathname(urllib.parse.urlparse(url).path)
            seen.append([url, 0, os.path.getsize(path) if os.path.isfile(path) else 0])
        elif mode == "http" and url.startswith("http"):
            response = request.response()
            n = request.sizes()["responseBodySize"]
            if response is not None and response.status == 200 and n == 0:
                n = int(response.headers.get("content-length", 0))
            seen.append([url, response.status if response else 0, n])

    context.on("requestfinished", on_finished)
    return seen


def wait_first_suggestion(page, timeout_ms: float) -> dict:
    """Wait for the first drawn suggestion (or the page's error box); return {ms, stats, error}."""
    result = page.wait_for_function(READY_JS, timeout=timeout_ms).json_value()
    if result["error"]:
        raise MeasureError(f"the page shows an error: {result['error']}")
    return result


def page_loads(browser, url: str, mode: str, runs: int) -> dict:
    """Cold (fresh context) and warm (reload) navigation -> first suggestion, `runs` times each."""
    out = {"cold": [], "warm": []}
    for _ in range(runs):
        context = browser.new_context()
        try:
            seen = track_requests(context, mode)
            page = context.new_page()
            for kind in ("cold", "warm"):
                seen.clear()
                page.goto(url) if kind == "cold" else page.reload()
                result = wait_first_suggestion(page, 120_000)
                page.wait_for_timeout(200)  # let the last requestfinished events arrive
                result.update(requests=len(seen), bytes=sum(n for _, _, n in seen), urls=[list(x) for x in seen])
                out[kind].append(result)
        finally:
            context.close()
    return out


def summarize_loads(loads: dict) -> dict:
    """Medians of first-suggestion ms and of each model.stats field, per cold/warm."""
    summary = {}
    for kind, results in loads.items():
        summary[kind] = {"first_suggestion_ms": statistics.median(r["ms"] for r in results), "runs": [r["ms"] for r in results],
                         "stats": {k: statistics.median(r["stats"][k] for r in results) for k in STAT_KEYS},
                         "bytes": results[0]["bytes"], "requests": results[0]["requests"], "urls": results[0]["urls"]}
    return summary


def browser_decode(browser, url: str, variant: str, threads: int, cases: list) -> dict:
    """Decode tok/s in a fresh page (autoload=0) for one variant and thread count."""
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(url + "?autoload=0")
        if threads > 1 and not page.evaluate("crossOriginIsolated"):
            raise MeasureError(f"{url} is not cross-origin isolated: threads={threads} is not possible")
        return page.evaluate(BENCH_JS, {"variant": variant, "threads": threads, "cases": cases, "opts": GEN_OPTIONS,
                                        "seed": SEED, "minTokens": MIN_TOKENS})
    finally:
        context.close()


def loadavg() -> str:
    """The system load average, to tell a quiet machine from a busy one (2 cores: above ~2 is contended)."""
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def tok_s(r: dict) -> float:
    """Decoded tokens per second of a decode result."""
    return 1000.0 * r["tokens"] / r["decode_ms"]


def markdown(info: dict, loads: dict, decode: list) -> str:
    """The report: machine info, a page-load table and a decode table."""
    lines = [f"- {k}: {v}" for k, v in info.items()]
    lines += ["", "| mode | load | first suggestion ms (median) | runs ms | load_ms | runtime_ms | model_ms | wait_ms | "
              "warmup_ms (steps) | bytes loaded | requests |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for mode, summary in loads.items():
        for kind, s in summary.items():
            st = s["stats"]
            lines.append(f"| {mode} | {kind} | {s['first_suggestion_ms']:.0f} | {', '.join(f'{x:.0f}' for x in s['runs'])} | "
                         f"{st['load_ms']:.0f} | {st['runtime_ms']:.0f} | {st['model_ms']:.0f} | {st['wait_ms']:.0f} | "
                         f"{st['warmup_ms']:.0f} ({st['warmup_steps']:.0f}) | {s['bytes']:,} | {s['requests']} |")
    lines += ["", "| mode | variant | threads | browser tok/s | native tok/s (1 thread) | browser/native | "
              "vs browser 1 thread | prefill ms browser / native | decoded tokens (calls) browser / native |",
              "|---|---|---|---|---|---|---|---|---|"]
    one = {(d["mode"], d["variant"]): d for d in decode if d["threads"] == 1}
    for d in decode:
        b, n = d["browser"], d["native"]
        ratio = f"{tok_s(b) / tok_s(n):.2f}" if d["threads"] == 1 else "–"
        vs1 = f"{tok_s(b) / tok_s(one[(d['mode'], d['variant'])]['browser']):.2f}×" if d["threads"] > 1 else "–"
        lines.append(f"| {d['mode']} | {d['variant']} | {d['threads']} | {tok_s(b):.0f} | {tok_s(n):.0f} | {ratio} | {vs1} | "
                     f"{b['prefill_ms']:.1f} / {n['prefill_ms']:.1f} | {b['tokens']} ({b['calls']}) / {n['tokens']} ({n['calls']}) |")
    return "\n".join(lines)


def machine_info(browser, config: dict, load_start: str) -> dict:
    """What the figures depend on: cores, browser, Python, native onnxruntime, the variant the page loads."""
    import onnxruntime

    return {"cpu count": os.cpu_count(), "chromium": browser.version, "python": platform.python_version(),
            "native onnxruntime": onnxruntime.__version__, "default variant": config["models"][MODEL]["default_variant"],
            "load average 1/5/15 min at start": load_start}


def measure(site: str, variants: list[str], runs: int) -> dict:
    """Everything: native decode first (no browser running), then file:// and http in one Chromium."""
    from playwright.sync_api import sync_playwright

    from .serve import make_server

    config, load_start = site_config(site), loadavg()
    if not os.path.isfile(CHROMIUM) or not os.access(CHROMIUM, os.X_OK):
        raise MeasureError(f"{CHROMIUM} is missing; install Debian's chromium package (apt-get install chromium)")
    unknown = sorted(set(variants) - set(config["models"][MODEL]["variants"]))
    if unknown:
        raise MeasureError(f"unknown variants {unknown}; {MODEL} has {sorted(config['models'][MODEL]['variants'])}")
    cases = [[config["schemas"][name], prefix] for name, prefix in CASES]  # schema texts as the page has them
    native = {v: native_decode(os.path.join(site, "models", MODEL), v, cases) for v in variants}
    server = make_server(site, 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    urls = {"file": "file://" + urllib.request.pathname2url(os.path.abspath(os.path.join(site, "index.html"))),
            "http": f"http://127.0.0.1:{server.server_address[1]}/index.html"}
    loads, decode = {}, []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                info = machine_info(browser, config, load_start)
                for mode, url in urls.items():
                    loads[mode] = summarize_loads(page_loads(browser, url, mode, runs))
                    for v, threads in [(v, t) for v in variants for t in ([1, 2] if mode == "http" else [1])]:
                        decode.append({"mode": mode, "variant": v, "threads": threads, "native": native[v],
                                       "browser": browser_decode(browser, url, v, threads, cases)})
            finally:
                browser.close()
    finally:
        server.shutdown()
        server.server_close()
    info["load average 1/5/15 min at end"] = loadavg()  # other work on the machine skews every figure
    return {"machine": info, "page_load": loads, "decode": decode}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m webtools.measure_page", description=__doc__.split("\n")[0])
    parser.add_argument("--site", default=os.path.join(ROOT, "site"), help="built site folder (default: site/)")
    parser.add_argument("--variants", default="fp32,int8,q4", help="comma-separated variants for the decode table")
    parser.add_argument("--runs", type=int, default=3, help="cold and warm page loads per mode (median reported)")
    parser.add_argument("--json", metavar="OUT", help="also write the results as JSON to OUT")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    try:
        from playwright.sync_api import Error as PlaywrightError
    except ImportError:
        print("error: playwright is not installed in this Python (pip install playwright)", file=sys.stderr)
        return 2
    try:
        results = measure(args.site, [v for v in args.variants.split(",") if v], max(1, args.runs))
    except (MeasureError, PlaywrightError) as e:
        print(f"error: {str(e).strip().splitlines()[0]}", file=sys.stderr)
        return 2
    results["total_s"] = time.perf_counter() - t0
    print(markdown(results["machine"], results["page_load"], results["decode"]))
    print(f"\ntotal run time {results['total_s']:.0f} s")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
