// The page's assets: bytes by site-relative path, fetched from the server (over http; checked against the
// integrity hash make site recorded, kept for the next load by filecache.js) or read from the scripts built
// into the page (file://, where fetch is refused: embed/<path>.js calls pocketlmEmbedded(path, base64 of
// gzip)); plus the decoders of what make site packs (gzip, the sparse Pyodide snapshot) and sha256.
// pocketlm.js loads models with them.
//
//   const { getAsset, LoadError, FILE_MODE, gunzip, unsparse, sha256, hashMatches } = window.pocketlmAssets;
//   const bytes = await getAsset("vendor/ort/ort-wasm-simd-threaded.wasm", (n) => {}, keepGzip?, sha256?);
"use strict";
(function () {
  const SITE = window.POCKETLM_SITE;
  const FILE_MODE = location.protocol === "file:";

  class LoadError extends Error {}

  const embedded = new Map();  // path -> base64 of gzip, filled by embed/<path>.js
  window.pocketlmEmbedded = (path, b64) => embedded.set(path, b64);

  async function gunzip(bytes) {
    const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
    return new Uint8Array(await new Response(stream).arrayBuffer());
  }

  // The snapshot as make site ships it, without its all-zero pages (webtools/pyodide_snapshot.py
  // `sparse`, which defines the layout): the whole image back, or an Error saying what is wrong.
  function unsparse(bytes) {
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const u32 = (i) => view.getUint32(i, true);
    if (bytes.length < 20 || String.fromCharCode(...bytes.subarray(0, 4)) !== "PLSS" || u32(4) !== 1) {
      throw new Error("it is not a sparse snapshot of version 1 (rebuild the site with make site)");
    }
    const total = u32(8), page = u32(12), runs = u32(16);
    const out = new Uint8Array(total);
    let at = 20 + 8 * runs;
    for (let r = 0; r < runs; r++) {
      const start = u32(20 + 8 * r) * page, length = Math.min(u32(24 + 8 * r) * page, total - start);
      if (!(length > 0) || at + length > bytes.length) throw new Error("its page table does not match its size");
      out.set(bytes.subarray(at, at + length), start);
      at += length;
    }
    if (at !== bytes.length) throw new Error(`it has ${bytes.length - at} bytes after its last page`);
    return out;
  }

  function loadScript(src) {
    return new Promise((resolve, reject) => {
      const el = document.createElement("script");
      el.src = src;
      el.onload = () => { el.remove(); resolve(); };
      el.onerror = () => { el.remove(); reject(new LoadError(`${src} is missing`)); };
      document.head.appendChild(el);
    });
  }

  // Resolves to a Uint8Array; onBytes(n) reports progress as bytes arrive. keepGzip (file://): return
  // the embedded gzip bytes undecoded (the caller decompresses them; progress counts the file's size).
  // hash (http): the file's sha256 (a runtime file's is the site's integrity hash): a copy kept in the
  // Cache API under it is used instead of a download, and what is downloaded is kept (filecache.js).
  async function getAsset(url, onBytes, keepGzip = false, hash = SITE.integrity?.[url]) {
    if (FILE_MODE) {
      const path = url;
      if (!embedded.has(path)) {
        try {
          await loadScript(`embed/${path}.js`);
        } catch (err) {
          throw new LoadError(`${path} is not built into this page: a page opened from file:// can only use the ` +
            "models built into it (make site); serve it with make serve to open other models");
        }
      }
      const gz = Uint8Array.fromBase64(embedded.get(path));
      const bytes = keepGzip ? gz : await gunzip(gz);
      embedded.delete(path);  // the decoded bytes are the copy we keep
      onBytes(keepGzip ? SITE.assets[path] ?? bytes.length : bytes.length);
      return bytes;
    }
    const fileCache = hash && window.pocketlmFileCache?.usable ? window.pocketlmFileCache : null;
    const copy = fileCache && await fileCache.get(url, hash);
    if (copy) {
      onBytes(copy.length);
      return copy;
    }
    let response;
    try {
      response = await fetch(url);
    } catch (err) {
      throw new LoadError(`could not fetch ${url}: ${err.message}`);
    }
    if (!response.ok) throw new LoadError(`could not fetch ${url}: HTTP ${response.status} ${response.statusText}`);
    const chunks = [];
    let n = 0;
    for (const reader = response.body.getReader(); ;) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
      n += value.length;
      onBytes(value.length);
    }
    const bytes = new Uint8Array(n);
    for (let i = 0, o = 0; i < chunks.length; o += chunks[i].length, i++) bytes.set(chunks[i], o);
    // A runtime asset of this site is checked against the hash make site recorded (webtools/build_site.py)
    // before anything uses it. Checked here rather than by fetch's `integrity` option: that one hashed
    // on the page's thread and made the runtime's download ~0.2-0.3 s longer (measured; README).
    const integrity = SITE.integrity?.[url];
    if (integrity && !(await hashMatches(bytes, integrity))) {
      throw new LoadError(`could not fetch ${url}: it differs from the integrity hash make site recorded for it ` +
        "(the site changed after it was built: rebuild it with make site)");
    }
    // kept once the model is warm (pocketlm.js load); a runtime file's bytes stay in this page (pocketlm.js
    // runtimeParts), a model's go to the worker, so the cache gets a copy of those
    fileCache?.put(url, hash, hash === integrity ? bytes : bytes.slice(), hash === integrity);
    return bytes;
  }

  async function sha256Bytes(bytes) {
    return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  }

  async function sha256(bytes) {
    return Array.from(await sha256Bytes(bytes), (b) => b.toString(16).padStart(2, "0")).join("");
  }

  // hash: "sha256-<base64>" (a site integrity hash) or 64 hex digits (a manifest's sha256). The digest copies
  // `bytes` when called, so they may be transferred right after.
  async function hashMatches(bytes, hash) {
    if (hash.startsWith("sha256-")) return hash === "sha256-" + (await sha256Bytes(bytes)).toBase64();
    return hash === await sha256(bytes);
  }

  window.pocketlmAssets = { getAsset, LoadError, FILE_MODE, gunzip, unsparse, sha256, hashMatches };
})();
