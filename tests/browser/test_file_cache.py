"""The page's copy of its files in the Cache API (web/src/filecache.js), over http.

A reload reads the runtimes and the model from the cache instead of downloading them again and generates
the same tokens; a copy whose bytes no longer have its hash is dropped and the file fetched; storing a
file drops the copies of the same URL under other hashes; with the cache denied or full the page still
runs, fetching its files as before (issue 7 item 7)."""

from __future__ import annotations

import hashlib
import json
import os

LOAD = """async () => { const m = await pocketlm.load("sql-autocomplete", {variant: "fp32"});
  const out = await m.generate("SELECT name FROM", {schema: "singer(name, age)", max_new_tokens: 8});
  m.dispose(); await pocketlmFileCache.settled();
  return {tokens: out.token_ids, hits: pocketlmFileCache.hits.slice()}; }"""
MODEL_URL = "models/sql-autocomplete/model.onnx"
KEYS = """async () => (await (await caches.open("pocketlm-files-v1")).keys()).map((r) => r.url)"""


def model_sha256(site_dir: str) -> str:
    with open(os.path.join(site_dir, "models", "sql-autocomplete", "manifest.json"), encoding="utf-8") as f:
        return json.load(f)["variants"]["fp32"]["sha256"]


def open_page(browser, server, init_script: str | None = None):
    context = browser.new_context()
    if init_script:
        context.add_init_script(init_script)
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.errors = []
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.goto(server + "index.html?autoload=0")
    return context, page


def test_a_reload_reads_the_files_from_the_cache_and_generates_the_same(browser, server, site_dir):
    context, page = open_page(browser, server)
    try:
        first = page.evaluate(LOAD)
        assert first["hits"] == []  # a fresh browser context: everything downloaded, then kept
        keys = page.evaluate(KEYS)
        assert any(MODEL_URL in k and model_sha256(site_dir) in k for k in keys), keys
        assert any("ort-wasm-simd-threaded.wasm" in k for k in keys) and any("pyodide.asm.wasm" in k for k in keys)
        page.reload()
        again = page.evaluate(LOAD)
        assert again["tokens"] == first["tokens"] and len(first["tokens"]) > 0
        assert MODEL_URL in again["hits"] and "models/sql-autocomplete/tokenizer.json" in again["hits"]
        assert "vendor/ort/ort-wasm-simd-threaded.wasm" in again["hits"]
        assert page.errors == []
    finally:
        context.close()


def test_files_are_kept_only_once_the_model_has_been_idle(browser, server):
    """Keeping ~60 MB costs hashing and writing: it waits for the warm-up and then for a second without requests,
    so it never competes with a generation (or with the load)."""
    context, page = open_page(browser, server)
    try:
        busy = page.evaluate("""async () => {
          const m = await pocketlm.load("sql-autocomplete", {variant: "fp32"});
          window.kept = m;
          await m.warmedUp;
          const until = performance.now() + 1500;
          while (performance.now() < until) await m.generate("SELECT", {max_new_tokens: 4});
          const cache = await caches.open("pocketlm-files-v1");
          return (await cache.keys()).length; }""")
        assert busy == 0  # warmed up, but never a second without a request
        page.wait_for_function("""async () => (await (await caches.open("pocketlm-files-v1")).keys())
                                  .some((r) => r.url.includes("models/sql-autocomplete/model.onnx"))""",
                               timeout=20_000, polling=250)
        assert page.errors == []
    finally:
        context.close()


def test_a_damaged_copy_is_dropped_and_the_file_fetched(browser, server, site_dir):
    context, page = open_page(browser, server)
    try:
        first = page.evaluate(LOAD)
        # the cached model's bytes replaced (its key, with the right hash, kept): as a damaged disk would
        page.evaluate("""async ([url, hash]) => {
          const cache = await caches.open("pocketlm-files-v1");
          const key = (await cache.keys()).find((r) => r.url.includes(url) && r.url.includes(hash));
          await cache.put(key, new Response(new Uint8Array(1000).fill(7)));
        }""", [MODEL_URL, model_sha256(site_dir)])
        page.reload()
        again = page.evaluate(LOAD)
        assert again["tokens"] == first["tokens"]
        assert MODEL_URL not in again["hits"] and "models/sql-autocomplete/tokenizer.json" in again["hits"]
        size = page.evaluate("""async (url) => {
          const cache = await caches.open("pocketlm-files-v1");
          const key = (await cache.keys()).find((r) => r.url.includes(url));
          return (await (await cache.match(key)).arrayBuffer()).byteLength; }""", MODEL_URL)
        assert size == os.path.getsize(os.path.join(site_dir, MODEL_URL))  # fetched and kept again, whole
        assert page.errors == []
    finally:
        context.close()


def test_keeping_a_file_drops_its_copies_under_other_hashes(browser, server, site_dir):
    """A re-exported model has another sha256: its old copy must not pile up beside the new one."""
    old = hashlib.sha256(b"an earlier export").hexdigest()
    context, page = open_page(browser, server)
    try:
        page.evaluate("""async ([url, old]) => {
          const cache = await caches.open("pocketlm-files-v1");
          await cache.put(new URL(url + "?pocketlm-sha256=" + old, location.href).href, new Response("old bytes"));
        }""", [MODEL_URL, old])
        page.evaluate(LOAD)
        keys = [k for k in page.evaluate(KEYS) if MODEL_URL in k]
        assert len(keys) == 1 and model_sha256(site_dir) in keys[0] and old not in keys[0]
    finally:
        context.close()


DENY_CACHE = """CacheStorage.prototype.open = function () {
  return Promise.reject(new DOMException("The operation is insecure.", "SecurityError")); };"""
FULL_CACHE = """Cache.prototype.put = function () {
  return Promise.reject(new DOMException("Quota exceeded.", "QuotaExceededError")); };"""


def test_the_page_runs_with_the_cache_denied_or_full(browser, server):
    for script in (DENY_CACHE, FULL_CACHE):
        context, page = open_page(browser, server, script)
        try:
            first = page.evaluate(LOAD)
            page.reload()
            again = page.evaluate(LOAD)
            assert again["tokens"] == first["tokens"] and len(first["tokens"]) > 0
            assert again["hits"] == []  # nothing could be kept: every file fetched again
            assert page.errors == []
        finally:
            context.close()
