// window.pocketlm: load a model into an inference worker and generate from the page.
// A classic script (file:// pages cannot load ES modules). It does no tokenization or sampling:
// the worker (worker.mjs) runs pocketlm's Python in Pyodide and the graph in onnxruntime-web.
//
//   const model = await pocketlm.load("sql-autocomplete", {variant, onProgress, threads, timeoutMs, warmup});
//   // warmup: "idle" (default: ready sooner, then warms up in idle time, giving way to requests),
//   // "blocking" (warm before ready) or false; model.warmedUp resolves when the warm-up is over
//   const out = await model.generate("SELECT name FROM", {schema, max_new_tokens, temperature, top_k,
//       top_p, min_p, repetition_penalty, stop, seed, onToken, signal});
//   // out = {text, token_ids, stop_reason, stats: {load_ms, prefill_ms, decode_ms, tokens_per_s, ...}}
//   model.abort();  // cancels every pending generation; each resolves with stop_reason "cancelled"
//   // a model folder from disk (folder.js): pocketlm.load(await pocketlm.openFolder(input.files), {variant})
//
// Assets (assets.js): over http they are fetched from the site; on file:// (where fetch is refused) every
// asset was built into a classic script embed/<path>.js that calls pocketlmEmbedded(path, base64-of-gzip).
"use strict";
(function () {
  const SITE = window.POCKETLM_SITE;
  const FILE_MODE = window.pocketlmAssets.FILE_MODE;
  // Measured (README, "Threads"): decode of these small models is fastest on one thread.
  const THREADS_WHEN_ISOLATED = SITE.threads_when_isolated;
  // Pyodide's memory snapshot (Python booted, pocketlm imported; made by make site): the worker
  // restores it instead of starting Python. The site ships it without its all-zero pages (15 MB, not 31;
  // `unsparse` puts them back for each worker it starts). On file:// the page keeps the embedded gzip
  // bytes (6 MB) and unzips a copy first; over http it is fetched as it is (measured faster on localhost
  // than a .gz plus gunzip; README). Optional: without it the worker starts Python plainly.
  const SNAPSHOT = "vendor/pyodide/pyodide.snapshot.sparse";
  const OPTIONAL = new Set([SNAPSHOT]);
  const RUNTIME = {
    python: ["vendor/pyodide/pyodide.mjs", "vendor/pyodide/pyodide.asm.mjs", "vendor/pyodide/pyodide.asm.wasm",
      "vendor/pyodide/python_stdlib.zip", "vendor/pyodide/pyodide-lock.json", "py/pocketlm.zip",
      ...(SNAPSHOT in SITE.assets ? [SNAPSHOT] : [])],
    onnx: ["vendor/ort/ort-wasm-simd-threaded.mjs", "vendor/ort/ort-wasm-simd-threaded.wasm", "engine.mjs"],
  };
  const WORKER_KEYS = {
    "vendor/pyodide/pyodide.mjs": "pyodide", "vendor/pyodide/pyodide.asm.mjs": "pyodideAsm",
    "vendor/pyodide/pyodide.asm.wasm": "pyodideWasm", "vendor/pyodide/python_stdlib.zip": "stdlib",
    "py/pocketlm.zip": "pocketlm", "vendor/ort/ort-wasm-simd-threaded.mjs": "ort",
    "vendor/ort/ort-wasm-simd-threaded.wasm": "ortWasm", "engine.mjs": "engine", [SNAPSHOT]: "snapshot",
  };

  const { getAsset, LoadError, gunzip, unsparse, sha256 } = window.pocketlmAssets;  // assets.js

  // ---- progress: bytes per phase (python runtime, onnx runtime, model) ----
  class Progress {
    constructor(onProgress) {
      this.onProgress = onProgress || (() => {});
      this.phases = {};
    }
    expect(phase, bytes) {
      const p = (this.phases[phase] ??= { loaded: 0, total: 0 });
      p.total += bytes;
      this.report(phase, "downloading");
    }
    add(phase, bytes, message = "downloading") {
      this.phases[phase].loaded += bytes;
      this.report(phase, message);
    }
    report(phase, message) {
      const p = this.phases[phase] || { loaded: 0, total: 0 };
      const all = Object.values(this.phases);
      const loaded = all.reduce((s, x) => s + x.loaded, 0), total = all.reduce((s, x) => s + x.total, 0);
      this.onProgress({ phase, message, loaded: p.loaded, total: p.total,
        percent: p.total ? Math.min(100, (100 * p.loaded) / p.total) : 0,
        overall: { loaded, total, percent: total ? Math.min(100, (100 * loaded) / total) : 0 } });
    }
  }

  // Runtime bytes are fetched once per page and copied to each new worker, per part (python, onnx): a
  // worker starts one runtime while the other, or the model, is still downloading.
  let runtimeParts = null;  // phase -> Promise of {path: bytes}
  const skipped = {};  // optional runtime asset (the snapshot) -> why it could not be fetched or read
  function fetchRuntime(progress) {
    const sizes = SITE.assets;
    for (const [phase, paths] of Object.entries(RUNTIME)) progress.expect(phase, paths.reduce((s, p) => s + sizes[p], 0));
    if (!runtimeParts) {
      runtimeParts = Object.fromEntries(Object.entries(RUNTIME).map(([phase, paths]) => [phase, fetchPart(phase, paths, progress)]));
      const parts = runtimeParts;
      for (const part of Object.values(parts)) part.catch(() => { if (runtimeParts === parts) runtimeParts = null; });
      return parts;
    }
    return Object.fromEntries(Object.entries(runtimeParts).map(([phase, part]) => [phase, part.then((files) => {
      progress.add(phase, RUNTIME[phase].reduce((s, p) => s + sizes[p], 0), "cached");
      return files;
    })]));
  }

  async function fetchPart(phase, paths, progress) {
    const files = {};
    await Promise.all(paths.map(async (path) => {
      let got = 0;
      try {
        files[path] = await getAsset(path, (n) => { got += n; progress.add(phase, n); }, path === SNAPSHOT);
      } catch (err) {
        if (!OPTIONAL.has(path)) throw err;
        console.warn(`pocketlm: ${err.message}; starting Python without the snapshot`);
        files[path] = null;
        skipped[path] = `the snapshot could not be fetched (${err.message})`;  // the worker reports it (python_note)
        progress.add(phase, Math.max(0, SITE.assets[path] - got));
      }
    }));
    return files;
  }

  function workerURL() {
    if (!FILE_MODE) return "worker.mjs";
    // file://: only a module worker whose script is a data: URL can start (../shared/notes/browser.md)
    return getAsset("worker.mjs", () => {}).then((bytes) => "data:text/javascript;base64," + bytes.toBase64());
  }

  function withTimeout(promise, ms, what) {
    let timer;
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new LoadError(`${what} did not finish within ${Math.round(ms / 1000)} s; ` +
        "the runtime may have failed to start (see the browser console), reload the page to retry")), ms);
    });
    return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
  }

  // ---- one model = one worker ----
  // If the worker dies (out of memory, a crash inside Pyodide or onnxruntime, terminated), the requests in
  // flight reject with a message saying so, a new worker is started with the same model (restartWith,
  // set by load) and the next request waits for it; stats.restarts counts them, and model.onStatus(state,
  // message), if the page set it, hears "restarting", then "restarted" or "failed".
  class Model {
    constructor(name) {
      this.name = name;
      this.pending = new Map();  // request id -> {resolve, reject, onToken}
      this.nextId = 1;
      this.dead = null;
      this.restarting = null;
      this.restarts = 0;
      this.disposed = false;
      this.busyAt = performance.now();  // the last request sent or ended (idleMs)
    }

    attach(worker) {
      this.worker = worker;
      this.dead = null;
      this.warmedUp = new Promise((resolve) => { this.resolveWarm = resolve; });
      worker.onmessage = (event) => { if (this.worker === worker) this.#onMessage(event.data); };
      worker.onerror = (event) => { if (this.worker === worker) this.#crashed(event.message || "script error"); };
    }

    #onMessage(msg) {
      if (msg.type === "progress") return this.onPhase && this.onPhase(msg);
      if (msg.type === "warm") return this.#warmed(msg.value);
      const req = this.pending.get(msg.id);
      if (!req) return;
      if (msg.type === "token") return req.onToken && req.onToken(msg.token_id, msg.text);
      this.pending.delete(msg.id);
      this.busyAt = performance.now();
      if (msg.type === "error") req.reject(new Error(msg.message));
      else req.resolve(msg.value);
    }

    // the worker's warm-up is over: {steps, ms, runs, mode, elapsed_ms} or {error} (worker.mjs "warm-up")
    #warmed(value) {
      if (this.stats && !value.error) Object.assign(this.stats, { warmup_steps: value.steps, warmup_ms: value.ms, warmup_runs: value.runs });
      if (value.error) console.warn(`pocketlm: the warm-up stopped: ${value.error}`);
      this.busyAt = performance.now();  // the worker was busy until now
      this.resolveWarm(value);
    }

    #fail(message) {
      this.dead = message;
      for (const r of this.pending.values()) r.reject(new Error(message));
      this.pending.clear();
    }

    #crashed(reason) {
      if (this.disposed || this.restarting) return;
      this.worker.terminate();
      if (!this.restartWith) return this.#fail(`the inference worker failed: ${reason}`);  // still loading
      const message = `the inference worker stopped (${reason}); it is being restarted with model ${this.name}, try again`;
      this.#fail(message);
      this.restarts++;
      if (this.stats) this.stats.restarts = this.restarts;
      console.warn(`pocketlm: ${message}`);
      const status = (state, text) => { if (this.onStatus) this.onStatus(state, text); };
      status("restarting", message);
      this.restarting = this.restartWith(this).then(() => {
        this.restarting = null;
        status("restarted", `The inference worker stopped (${reason}) and was restarted; ${this.name} is loaded again.`);
      }, (err) => {
        this.restarting = null;
        this.dead = `the inference worker stopped and could not be restarted: ${err.message}; reload the page`;
        status("failed", this.dead);
      });
    }

    // ms since the last request ended (0 while one is in flight)
    idleMs() {
      return this.pending.size ? 0 : performance.now() - this.busyAt;
    }

    // Sends at once (load and restarts use it); request() first waits for a restart in progress.
    send(type, body, transfer = [], id = this.nextId++) {
      if (this.dead) return Promise.reject(new Error(this.dead));
      this.busyAt = performance.now();
      return new Promise((resolve, reject) => {
        const { onToken, ...message } = body;
        this.pending.set(id, { resolve, reject, onToken, type });
        this.worker.postMessage({ type, id, ...message }, transfer);
      });
    }

    async request(type, body, transfer = [], id = this.nextId++) {
      if (this.restarting) await this.restarting;
      return this.send(type, body, transfer, id);
    }

    async generate(prompt, options = {}) {
      const { onToken, signal, ...rest } = options;
      const id = this.nextId++;
      const t0 = performance.now();
      if (signal && signal.aborted) return cancelledResult(this);
      const onAbort = () => this.worker.postMessage({ type: "abort", id });
      if (signal) signal.addEventListener("abort", onAbort, { once: true });
      try {
        // stream: whether the worker posts each token (a page that did not ask for them saves a message a token)
        const result = await this.request("generate", { prompt, options: rest, stream: Boolean(onToken), onToken }, [], id);
        result.stats.load_ms = this.stats.load_ms;
        result.stats.latency_ms = performance.now() - t0;
        return result;
      } finally {
        if (signal) signal.removeEventListener("abort", onAbort);
      }
    }

    abort() {
      for (const [id, req] of this.pending) if (req.type === "generate") this.worker.postMessage({ type: "abort", id });
    }

    dispose() {
      this.disposed = true;
      this.worker.terminate();
      this.#fail("the model was disposed");
    }
  }

  function cancelledResult(model) {
    return { text: "", token_ids: [], stop_reason: "cancelled", stats: { load_ms: model.stats.load_ms } };
  }

  function modelBase(name) {
    if (/\.json$/.test(name)) return [name.replace(/[^/]*$/, ""), name];
    if (!/^[\w.-]+$/.test(name)) throw new LoadError(`model name ${JSON.stringify(name)} must be a folder under models/ or a manifest URL ending in .json`);
    return [`models/${name}/`, `models/${name}/manifest.json`];
  }

  // Where a model's files come from. A model source is {name, where (the manifest, for messages), place
  // (the folder, for messages), defaultVariant?, manifestText(), has(file), size(file), read(file, onBytes,
  // sha256?) -> Uint8Array}: this one reads the site (fetch, or the scripts built into the page);
  // pocketlm.openFolder (folder.js) makes one from files the user picked or dropped.
  function siteSource(name) {
    const [base, manifestURL] = modelBase(name);
    return {
      name, where: manifestURL, place: base,
      manifestText: async () => new TextDecoder().decode(await getAsset(manifestURL, () => {})),
      has: () => true,  // a missing file is reported by the fetch itself
      size: (file) => SITE.assets[base + file] || 0,
      read: (file, onBytes, sha256) => getAsset(base + file, onBytes, false, sha256),
    };
  }

  // source: a folder name under models/, a manifest URL, or a model source (pocketlm.openFolder's result).
  async function load(source, options = {}) {
    const t0 = performance.now();
    const progress = new Progress(options.onProgress);
    const threads = options.threads ?? (window.crossOriginIsolated ? THREADS_WHEN_ISOLATED : 1);
    const timeoutMs = options.timeoutMs ?? 30000;
    if (![undefined, true, false, "idle", "blocking"].includes(options.warmup)) {
      throw new LoadError(`warmup must be "idle" (or true), "blocking" or false, got ${JSON.stringify(options.warmup)}`);
    }
    const src = typeof source === "string" ? siteSource(source) : source;
    const name = src.name;
    progress.expect("model", 0);
    const manifestText = await src.manifestText();
    let manifest;
    try {
      manifest = JSON.parse(manifestText);
    } catch (err) {
      throw new LoadError(`${src.where} is not valid JSON (${err.message}); re-export the model`);
    }
    const variant = options.variant || src.defaultVariant || manifest.default_variant;
    const v = manifest.variants && manifest.variants[variant];
    if (!v) throw new LoadError(`model ${name} has no variant ${JSON.stringify(variant)}; it has: ${Object.keys(manifest.variants || {}).join(", ")}`);
    const tokFile = manifest.tokenizer.file;
    for (const [role, file] of [["its tokenizer", tokFile], [`variant ${variant}`, v.file]]) {
      if (!src.has(file)) throw new LoadError(`${file} (${role}) is not in ${src.place}, although its manifest.json names it; ` +
        "open the complete model folder");
    }
    const model = new Model(name);
    const started = await startWorker(model, src, manifestText, variant, threads, timeoutMs, progress, options.warmup);
    model.variant = started.loaded.variant;
    model.manifest = manifest;
    model.threads = threads;
    // stats, ms: runtime_ms = onnx_ms + python_ms (the worker booting each runtime, each as soon as its files
    // were in); wait_ms = load() -> both booted (downloads included); model_ms = both booted -> ready: what is
    // left of the model's download and hashing + tokenizer_ms + session_ms + check_ms (the worker's load:
    // tokenizer, onnxruntime session, check generation)
    model.stats = { load_ms: performance.now() - t0, runtime_ms: started.rt.ms, model_ms: started.modelMs,
      wait_ms: started.t1 - t0, tokenizer_ms: started.loaded.ms.tokenizer, session_ms: started.loaded.ms.session,
      onnx_ms: started.rt.onnx_ms, check_ms: started.loaded.ms.check, warmup_ms: started.loaded.warm.ms ?? 0,
      warmup_steps: started.loaded.warm.steps, warmup_mode: started.loaded.warm.mode,
      python_boot: started.rt.python_boot, python_ms: started.rt.python_ms, python_note: started.rt.python_note,
      restarts: 0 };
    // a worker that dies is replaced by one started the same way (the files are read again from the source)
    model.restartWith = (m) => startWorker(m, src, manifestText, variant, threads, timeoutMs, new Progress(null), options.warmup);
    progress.report("model", "ready");
    // keep the downloaded files for the next load, once the model is warm and has had nothing to do for a second
    model.warmedUp.then(() => window.pocketlmFileCache?.flush(() => model.disposed || model.idleMs() >= 1000));
    return model;
  }

  // A new worker for `model` (Model.attach) with the runtime started and the model loaded; the worker is
  // terminated if any step fails. Resolves to {rt, loaded, t1, modelMs}.
  async function startWorker(model, src, manifestText, variant, threads, timeoutMs, progress, warmup) {
    const manifest = JSON.parse(manifestText);
    const v = manifest.variants[variant], tokFile = manifest.tokenizer.file;
    const url = workerURL();  // first: on file:// it is one more script to decode, and the worker starts when it is in
    progress.expect("model", v.bytes + src.size(tokFile));
    const modelFiles = Promise.all([[tokFile, manifest.tokenizer.sha256], [v.file, v.sha256]]
      .map(([f, sha256]) => src.read(f, (n) => progress.add("model", n), sha256)));
    // hashed as soon as they are in, while the worker boots the runtimes (after both booted, this took
    // ~75 ms of a 61 MB model's load)
    const hashed = modelFiles.then(async ([tokBytes, onnxBytes]) => ({ tokBytes, onnxBytes, digests: {
      [tokFile]: [await sha256(tokBytes), tokBytes.length], [v.file]: [await sha256(onnxBytes), onnxBytes.length] } }));
    hashed.catch(() => {});
    const parts = fetchRuntime(progress);
    const worker = new Worker(await url, { type: "module", name: "pocketlm" });
    model.attach(worker);
    model.onPhase = (msg) => progress.report(msg.phase, msg.message);
    try {
      // each runtime boots as soon as its own files are in; the timeout counts the worker's time, not the download's
      const boot = (type, part, extra) => part.then(async (runtime) => {
        const files = {};
        for (const [path, key] of Object.entries(WORKER_KEYS)) {
          const bytes = runtime[path];
          if (!bytes) continue;
          // the snapshot is kept gzipped (file://) and unzipped here, on the page's thread, while the worker
          // boots onnxruntime on another core (unzipped in the worker it came after that: ~0.3 s later;
          // README), then its zero pages are put back (a copy either way: the worker takes it). A snapshot
          // that does not decode is not sent: the worker starts Python the plain way and says why (python_note).
          if (path !== SNAPSHOT) {
            files[key] = bytes.slice().buffer;
            continue;
          }
          try {
            files[key] = unsparse(bytes[0] === 0x1f && bytes[1] === 0x8b ? await gunzip(bytes) : bytes).buffer;
          } catch (err) {
            skipped[SNAPSHOT] = `the snapshot could not be read (${SNAPSHOT}: ${err.message})`;
          }
        }
        const what = type === "boot-onnx" ? "Starting the ONNX runtime" : "Starting the Python runtime";
        return withTimeout(model.send(type, { files, ...extra(runtime) }, Object.values(files)), timeoutMs, what);
      });
      const indexURL = new URL("vendor/pyodide/", location.href).href;
      const [onnx, python] = await Promise.all([
        boot("boot-onnx", parts.onnx, () => ({ threads })),
        boot("boot-python", parts.python, (runtime) => ({
          lock: new TextDecoder().decode(runtime["vendor/pyodide/pyodide-lock.json"]), indexURL,
          snapshotNote: skipped[SNAPSHOT],
        })),
      ]);
      const rt = { ...python, ms: onnx.ms + python.python_ms, onnx_ms: onnx.ms };
      const t1 = performance.now();
      const { tokBytes, onnxBytes, digests } = await hashed;
      const loaded = await withTimeout(model.send("load", {
        manifestText, tokenizerText: new TextDecoder().decode(tokBytes), variant, digests, onnx: onnxBytes.buffer, warmup,
      }, [onnxBytes.buffer]), timeoutMs, `Loading model ${model.name}`);
      if (loaded.warm.mode !== "idle") model.resolveWarm(loaded.warm);  // none to come: over already
      return { rt, loaded, t1, modelMs: performance.now() - t1 };
    } catch (err) {
      worker.terminate();
      throw err;
    }
  }

  // The page's Content Security Policy (webtools/csp.py) blocks every script and connection that is not
  // the page's own; what it blocks is reported here and kept in pocketlm.securityViolations.
  const securityViolations = [];
  document.addEventListener("securitypolicyviolation", (e) => {
    const v = { directive: e.effectiveDirective, blocked: e.blockedURI, source: e.sourceFile, line: e.lineNumber };
    securityViolations.push(v);
    console.warn(`pocketlm: blocked by the page's Content Security Policy (${v.directive}): ${v.blocked || "inline code"}`);
  });

  window.pocketlm = { load, fileMode: FILE_MODE, site: SITE, LoadError, securityViolations };
})();
