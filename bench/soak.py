"""`make soak`: a long headless session on the built page, watching its memory (issue 7 item 4). A benchmark,
not a test: it takes minutes and prints figures.

    python -m bench.soak [--site site] [--requests 1000] [--extractions 500] [--json runs/soak.json]

Over http (webtools.serve), both shipped models loaded as the page loads them (window.pocketlm):
- sql-autocomplete: --requests keystroke-like requests (a random prefix of a random query, up to 8 tokens),
  a quarter of them cancelled after 0-15 ms with an AbortController, as the editor cancels on typing;
- reminder-extract: --extractions requests (schema-constrained JSON, ~20 tokens each);
- one over-long SQL prefix (20 000 characters): the context policy truncates it (stats.truncated_tokens).
Memory is read after the warm-up (the first tenth of the work), in the middle and at the end: the page's
JS heap (performance.memory, with --enable-precise-memory-info), each worker's Pyodide wasm heap
(stats.pyodide_heap_bytes), the renderer processes' resident memory (VmRSS from /proc: the page, both
workers, their wasm memories — onnxruntime's included) and Chromium's per-realm accounting after a GC
(performance.measureUserAgentSpecificMemory: JS heap + wasm memory of each worker). Growth from warm-up
to end must stay under 10%.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GROWTH_LIMIT = 0.10
QUERIES = ["SELECT name, country FROM singer WHERE age > 30 ORDER BY name",
           "SELECT count(*) FROM concert WHERE year = 2014 GROUP BY stadium_id",
           "SELECT T1.name FROM stadium AS T1 JOIN concert AS T2 ON T1.stadium_id = T2.stadium_id",
           "SELECT avg(capacity), max(capacity) FROM stadium WHERE location = 'Glasgow'"]
SCHEMA = "singer(singer_id, name, country, age)\nconcert(concert_id, name, stadium_id, year)\nstadium(stadium_id, location, name, capacity)"
REQUESTS = ["remind me at 7pm to walk the dog", "remind me tomorrow morning to call the dentist",
            "set a reminder every monday at 9am to water the plants", "remind me in two hours to take the cake out",
            "don't let me forget to pay rent on the 1st", "hello there"]

SETUP_JS = """async () => {
  window.soak = {sql: await pocketlm.load("sql-autocomplete"), rem: await pocketlm.load("reminder-extract"),
                 tokens: 0, requests: 0, extractions: 0, cancelled: 0, heaps: {}, seed: 12345};
  return true;
}"""
# n sql requests and m extractions, interleaved; a seeded generator picks prefixes and cancellations.
PHASE_JS = """async ({n, m, queries, schema, requests}) => {
  const s = window.soak;
  const rand = () => { s.seed = (s.seed * 1103515245 + 12345) % 2147483648; return s.seed / 2147483648; };
  for (let i = 0; i < Math.max(n, m); i++) {
    if (i < n) {
      const q = queries[Math.floor(rand() * queries.length)];
      const prefix = q.slice(0, 1 + Math.floor(rand() * q.length));
      const ctl = new AbortController();
      if (rand() < 0.25) setTimeout(() => ctl.abort(), Math.floor(rand() * 15));
      const out = await s.sql.generate(prefix, {schema, max_new_tokens: 8, signal: ctl.signal});
      s.tokens += out.token_ids.length; s.requests++;
      if (out.stop_reason === "cancelled") s.cancelled++;
      if (out.stats.pyodide_heap_bytes) s.heaps.sql = out.stats.pyodide_heap_bytes;
    }
    if (i < m) {
      const out = await s.rem.generate(requests[Math.floor(rand() * requests.length)]);
      s.tokens += out.token_ids.length; s.extractions++;
      s.heaps.rem = out.stats.pyodide_heap_bytes;
    }
  }
  return {tokens: s.tokens, requests: s.requests, extractions: s.extractions, cancelled: s.cancelled,
          js_heap: performance.memory.usedJSHeapSize, pyodide_heap_sql: s.heaps.sql ?? null,
          pyodide_heap_rem: s.heaps.rem ?? null};
}"""
# Chromium's own accounting after a garbage collection (the page is cross-origin isolated over http): JS heaps
# and wasm memories per realm, so a worker that keeps growing is named (the largest realms, bytes).
MEMORY_JS = """async () => { const r = await performance.measureUserAgentSpecificMemory();
  return r.breakdown.filter((b) => b.bytes > 1e6).map((b) => [b.bytes,
    b.attribution.map((a) => a.scope).join(",") || "shared"]).sort((x, y) => y[0] - x[0]).slice(0, 4); }"""
LONG_JS = """async ({schema, prefix}) => {
  const out = await window.soak.sql.generate(prefix, {schema, max_new_tokens: 8});
  return {stop_reason: out.stop_reason, truncated_tokens: out.stats.truncated_tokens, tokens: out.token_ids.length};
}"""


def renderer_rss(pids: set[int]) -> int:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                total += next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))
        except (OSError, StopIteration):
            pass
    return total


def run(site: str, n_requests: int, n_extractions: int) -> dict:
    from playwright.sync_api import sync_playwright

    import threading

    from bench.pages import Browser
    from webtools.serve import make_server

    server = make_server(site, 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/index.html?autoload=0"
    samples, t0 = [], time.perf_counter()
    try:
        with sync_playwright() as p:
            br = Browser(p, ("--enable-precise-memory-info",))
            page = br.browser.new_page()
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url)
            page.evaluate(SETUP_JS)
            warm_n, warm_m = n_requests // 10, n_extractions // 10
            phases = [("warm-up", warm_n, warm_m),
                      ("middle", n_requests // 2 - warm_n, n_extractions // 2 - warm_m),
                      ("end", n_requests - n_requests // 2, n_extractions - n_extractions // 2)]
            for label, n, m in phases:
                r = page.evaluate(PHASE_JS, {"n": n, "m": m, "queries": QUERIES, "schema": SCHEMA, "requests": REQUESTS})
                r.update(label=label, renderer_rss=renderer_rss(br.renderers()), seconds=time.perf_counter() - t0,
                         realms=page.evaluate(MEMORY_JS))
                samples.append(r)
                print(f"soak: {label}: {r['requests']} sql requests ({r['cancelled']} cancelled), {r['extractions']} "
                      f"extractions, {r['tokens']} tokens; JS heap {r['js_heap'] / 1e6:.1f} MB, renderer RSS "
                      f"{r['renderer_rss'] / 1e6:.0f} MB; largest realms (MB) "
                      + ", ".join(f"{scope} {b / 1e6:.0f}" for b, scope in r["realms"]), file=sys.stderr)
            long = page.evaluate(LONG_JS, {"schema": SCHEMA, "prefix": "SELECT " + "name, " * 3300 + "age FROM"})
            br.close()
    finally:
        server.shutdown()
        server.server_close()
    first, last = samples[0], samples[-1]
    for sample in samples:  # the largest realm: in practice the sql-autocomplete worker (most requests)
        sample["largest_realm"] = sample["realms"][0][0] if sample["realms"] else None
    growth = {k: (last[k] - first[k]) / first[k] for k in ("js_heap", "pyodide_heap_sql", "pyodide_heap_rem", "renderer_rss",
                                                           "largest_realm") if first.get(k) and last.get(k)}
    return {"samples": samples, "growth_after_warm_up": growth, "limit": GROWTH_LIMIT,
            "within_limit": all(g < GROWTH_LIMIT for g in growth.values()), "over_long_prompt": long,
            "page_errors": errors[:5]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n")[0])
    parser.add_argument("--site", default=os.path.join(ROOT, "site"))
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--extractions", type=int, default=500)
    parser.add_argument("--json", default=os.path.join(ROOT, "runs", "soak.json"))
    args = parser.parse_args(argv)
    if not os.path.isfile(os.path.join(args.site, "index.html")):
        print(f"error: no built page in {args.site}; run make site first", file=sys.stderr)
        return 2
    res = run(args.site, args.requests, args.extractions)
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(res, f, indent=1)
    print("| sample | sql requests (cancelled) | extractions | tokens | JS heap MB | Pyodide heap sql / rem MB | renderer RSS MB |")
    print("|---|---|---|---|---|---|---|")
    for s in res["samples"]:
        heap = " / ".join("–" if s[k] is None else f"{s[k] / 1e6:.1f}" for k in ("pyodide_heap_sql", "pyodide_heap_rem"))
        print(f"| {s['label']} | {s['requests']} ({s['cancelled']}) | {s['extractions']} | {s['tokens']} | "
              f"{s['js_heap'] / 1e6:.1f} | {heap} | {s['renderer_rss'] / 1e6:.0f} |")
    print("growth after warm-up: " + ", ".join(f"{k} {v * 100:+.1f}%" for k, v in res["growth_after_warm_up"].items())
          + f" -> {'within' if res['within_limit'] else 'OVER'} the {GROWTH_LIMIT:.0%} limit")
    print(f"over-long prompt (20 000 characters): {json.dumps(res['over_long_prompt'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
