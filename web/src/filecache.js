// Over http, a copy of every runtime and model file the page fetched, kept in the browser's Cache API so
// that a reload or a later visit reads them from there instead of downloading them again (a warm load
// refetched ~58 MB before: the server says no-cache and the browser's HTTP cache keeps no file that big in
// a private window; README, "Benchmark"). assets.js asks it before fetching; file:// pages have no use
// for it (their files are built into the page).
//
// Each copy is keyed by the file's URL and its sha256 (the site's integrity hash for a runtime file, the
// manifest's for a model file), so a rebuilt site or a re-exported model is never served stale: it has
// another key. A copy is used only if its bytes still have that hash (else it is dropped and the file is
// fetched); storing one drops the copies of the same URL under other hashes. Without the Cache API
// (storage denied, full, an opaque origin) every call says "no copy" and files are fetched as before.
//
//   const cache = window.pocketlmFileCache;
//   await cache.get(url, hash)        // -> Uint8Array, or null (no copy, or one that did not match)
//   cache.put(url, hash, bytes[, verified])  // queued: kept when flush() is called (bytes must stay unchanged)
//   cache.flush(idle?)                // keep what was queued, in the background, a file at a time when idle()
//   await cache.settled()             // flush, and every copy so far is kept (tests, before a reload)
//   await cache.clear()               // forget every copy
//   cache.hits                        // URLs read from the cache since the page opened
"use strict";
(function () {
  const NAME = "pocketlm-files-v1";
  const PARAM = "pocketlm-sha256";
  const usable = location.protocol !== "file:" && typeof caches !== "undefined";
  let opened = null;
  const queued = [];  // {url, hash, bytes, verified}: put, not yet flushed
  const pending = new Set();  // flushes under way
  let forced = false;  // settled() is waiting: no flush waits for an idle page
  const hits = [];

  function open() {
    if (!usable) return Promise.resolve(null);
    return (opened ??= caches.open(NAME).catch((err) => {
      console.warn(`pocketlm: no file cache (${err.message}); files are fetched on every load`);
      return null;
    }));
  }

  // hash: "sha256-<base64>" (a site integrity hash) or 64 hex digits (a manifest's sha256)
  function keyOf(url, hash) {
    const u = new URL(url, location.href);
    u.searchParams.set(PARAM, hash);
    return u.href;
  }

  const hashMatches = (bytes, hash) => window.pocketlmAssets.hashMatches(bytes, hash);  // assets.js

  async function get(url, hash) {
    const cache = hash ? await open() : null;
    if (!cache) return null;
    const key = keyOf(url, hash);
    try {
      const response = await cache.match(key);
      if (!response) return null;
      const bytes = new Uint8Array(await response.arrayBuffer());
      if (await hashMatches(bytes, hash)) {
        hits.push(url);
        return bytes;
      }
      await cache.delete(key);  // damaged: fetch the file again
    } catch (err) {
      console.warn(`pocketlm: the cached copy of ${url} could not be read (${err.message}); fetching it`);
    }
    return null;
  }

  // Keeping a copy costs work (hashing, writing ~60 MB) that would slow a first load on 2 cores (measured:
  // first token +0.35 s) or a generation beside it (the 15 M model's first one after its warm-up: 0.8x its
  // speed), so put() only queues it and flush() (pocketlm.js: the model warmed up, then idle) does the work.
  // Only bytes that have `hash` are kept: `verified` says the caller checked them; else they are hashed
  // first (a model file that does not match its manifest is refused by the worker, with the reason).
  // `bytes` must stay as they are until then (the caller passes a copy of what it transfers elsewhere).
  function put(url, hash, bytes, verified = false) {
    if (hash && usable) queued.push({ url, hash, bytes, verified });
  }

  async function store({ url, hash, bytes, verified }) {
    const cache = await open();
    if (!cache || (!verified && !(await hashMatches(bytes, hash)))) return;
    const key = keyOf(url, hash);
    await cache.put(key, new Response(bytes));
    const base = new URL(key);
    base.searchParams.delete(PARAM);
    for (const request of await cache.keys()) {  // older versions of the same file
      const other = new URL(request.url);
      if (other.searchParams.get(PARAM) === hash) continue;
      other.searchParams.delete(PARAM);
      if (other.href === base.href) await cache.delete(request);
    }
  }

  // Starts keeping what put() queued, one file after the other, each only when idle() says the page is idle
  // (pocketlm.js: no request for a second), so the work never competes with a generation.
  function flush(idle = () => true) {
    const jobs = queued.splice(0);
    if (!jobs.length) return;
    const job = (async () => {
      for (const j of jobs) {
        while (!forced && !idle()) await new Promise((resolve) => setTimeout(resolve, 250));
        await store(j).catch((err) => console.warn(`pocketlm: ${j.url} could not be kept in the file cache (${err.message})`));
      }
    })();
    pending.add(job);
    job.finally(() => pending.delete(job));
  }

  async function settled() {
    forced = true;  // flushes waiting for an idle page go on now
    try {
      flush();
      while (pending.size) await Promise.all([...pending]);
    } finally {
      forced = false;
    }
  }

  async function clear() {
    await settled();
    opened = null;
    if (usable) await caches.delete(NAME).catch(() => false);
  }

  window.pocketlmFileCache = { get, put, flush, settled, clear, hits, usable };
})();
