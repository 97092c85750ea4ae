"""Keystroke latency of sql-autocomplete: the page and native onnxruntime, one query typed character by character.

What a user of the SQL editor waits for: after each keystroke, the whole request (the query so far, the
schema, up to KEY_NEW_TOKENS new tokens, the model's own stop strings and name finishing) from the call
to the finished suggestion. The page is measured warm (model loaded, its idle-time warm-up over —
`model.warmedUp` — and one suggestion made), through
window.pocketlm as web/src/app.js calls it (so the JS <-> worker <-> Python hand-offs are counted),
one request at a time (a user who pauses; overlapping requests would be cancelled by the editor).
The same requests run natively through pocketlm's loop on onnxruntime for the ratio.
"""

from __future__ import annotations

import asyncio
import os
import statistics

KEY_NEW_TOKENS = 8
KEY_SCHEMA = "singer(Singer_ID, Name, Country, Song_Name, Song_release_year, Age, Is_male)\nconcert(concert_ID, concert_Name, Theme, Stadium_ID, Year)"
KEY_QUERY = "SELECT Name, Country FROM singer WHERE Age > 30 ORDER BY Name"

KEYS_JS = """async ({model, variant, threads, schema, query, maxNew}) => {
  const m = await pocketlm.load(model, {variant, threads});
  try {
    await m.warmedUp;  // the idle-time warm-up that follows ready
    await m.generate("SELECT", {schema, max_new_tokens: maxNew});
    const latency = [], tokens = [], texts = [];
    for (let i = 1; i <= query.length; i++) {
      const t0 = performance.now();
      const out = await m.generate(query.slice(0, i), {schema, max_new_tokens: maxNew});
      latency.push(performance.now() - t0);
      tokens.push(out.token_ids.length);
      texts.push(out.text);
    }
    return {latency_ms: latency, tokens, texts};
  } finally { m.dispose(); }
}"""


def percentile(xs: list[float], q: float) -> float | None:
    """Nearest-rank percentile: the smallest value with at least q% of the values at or below it.

    >>> percentile([5, 1, 4, 2, 3], 95), percentile([5, 1, 4, 2, 3], 50), percentile([], 95)
    (5, 3, None)
    """
    if not xs:
        return None
    s = sorted(xs)
    rank = max(1, -(-len(s) * q // 100))  # ceil(n * q / 100), at least the first
    return s[int(rank) - 1]


def summary(latency_ms: list[float], tokens: list[int]) -> dict:
    return {"n": len(latency_ms), "p50_ms": percentile(latency_ms, 50), "p95_ms": percentile(latency_ms, 95),
            "max_ms": max(latency_ms) if latency_ms else None,
            "mean_tokens": statistics.mean(tokens) if tokens else None}


def page(br, base: str, variant: str, threads: int = 1) -> dict:
    """Warm keystroke latencies in the page over http (bench.pages.Browser, the bench server's base URL)."""
    res = br.measure(f"{base}/index.html?autoload=0", KEYS_JS,
                     {"model": "sql-autocomplete", "variant": variant, "threads": threads, "schema": KEY_SCHEMA,
                      "query": KEY_QUERY, "maxNew": KEY_NEW_TOKENS})["cold"]
    return {**summary(res["latency_ms"], res["tokens"]), "texts": res["texts"]}


def native(model_dir: str, variant: str, threads: int = 1) -> dict:
    """The same requests through pocketlm's loop on onnxruntime (the shipped folder, its own task)."""
    import time

    from pocketlm.manifest import load_manifest
    from pocketlm.native import NativeModel
    from pocketlm.session import ModelSession
    from pocketlm.tokenizer import Tokenizer

    manifest = load_manifest(model_dir)
    session = ModelSession(manifest, Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json")),
                           NativeModel(model_dir, variant=variant, threads=threads))
    opts = {"schema": KEY_SCHEMA, "max_new_tokens": KEY_NEW_TOKENS}

    async def go():
        await session.generate("SELECT", opts)
        latency, tokens, texts = [], [], []
        for i in range(1, len(KEY_QUERY) + 1):
            t0 = time.perf_counter()
            out = await session.generate(KEY_QUERY[:i], opts)
            latency.append(1000.0 * (time.perf_counter() - t0))
            tokens.append(len(out["token_ids"]))
            texts.append(out["text"])
        return {**summary(latency, tokens), "texts": texts}

    return asyncio.run(go())


def measure(br, base: str, model_dir: str, variants: list[str], log) -> list[dict]:
    """One row per variant: page and native summaries, and whether their suggestions are the same."""
    import concurrent.futures

    rows = []
    for variant in variants:
        log(f"keystrokes sql-autocomplete {variant}: {len(KEY_QUERY)} requests, page and native")
        row = {"model": "sql-autocomplete", "variant": variant, "threads": 1, "protocol": "http",
               "max_new_tokens": KEY_NEW_TOKENS, "query": KEY_QUERY}
        try:
            with concurrent.futures.ThreadPoolExecutor(1) as pool:  # asyncio.run beside Playwright's loop
                nat = pool.submit(native, model_dir, variant).result()
            brw = page(br, base, variant)
        except Exception as e:  # report and go on, as the other rows do
            row["error"] = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
            rows.append(row)
            continue
        row["same_suggestions"] = nat.pop("texts") == brw.pop("texts")
        row["browser"], row["native"] = brw, nat
        rows.append(row)
    return rows
