// The inference worker (a module worker; Pyodide 314 refuses classic workers). It fetches nothing:
// the page hands it every asset as bytes (fetched over http, or decoded from scripts built into the
// page on file://), so the same code runs in both modes. Code assets are imported from blob: URLs this
// worker makes itself (on file:// the worker is a data: URL and cannot load URLs the page made).
//
// Page -> worker messages                       worker -> page
//   {type: "boot-onnx", id, files, threads}     {type: "done", id, value: {ms, threads}}
//   {type: "boot-python", id, files, lock,      {type: "done", id, value: {python_boot, python_ms, python_note}}
//           indexURL, snapshotNote}
//   {type: "load", id, manifestText, tokenizerText,    {type: "done", id, value: {variant, ms, warm}}
//           variant, digests, onnx, warmup}             then, once the idle-time warm-up is over:
//                                                      {type: "warm", value: {steps, ms, runs, mode, elapsed_ms}}
//   {type: "generate", id, prompt, options, stream}    {type: "token", id, token_id, text} (unless stream is false),
//                                                      {type: "done", id, value: result}
//   {type: "abort", id}                                (while loading) {type: "progress", phase, message}
// A failure answers {type: "error", id, message}: one line, for the page to show.
// The page sends each boot as soon as that runtime's files have arrived (the other may still be
// downloading, and so may the model), then "load" once both answered.
// Requests are handled one at a time, in order; an abort marks a request so it stops at its next step.
//
// Warm-up (browser.py PageModel._warm_up says why): `warmup` "idle" (the default) answers the load once
// one short task generation ran (a model that cannot generate fails its load), then warms up in idle
// time: it lets messages in before every step, so a request that arrives waits one step at most, and it
// goes on once the worker has been idle for WARM_RESUME_MS, until its steps are done. "blocking" warms up
// fully before answering the load; false skips it (and the check). Measured (make bench): idle-time
// warm-up answers the load ~1 s sooner.

let pyodide = null, runtime = null, Engine = null, engine = null, session = null;
let stepEngine = null;  // the engine as generations call it (engineForPython), set by load
const aborted = new Set();
let queue = Promise.resolve();
let waiting = 0;  // requests received and not yet started: an idle-time warm-up gives way to them
let warming = null;  // the idle-time warm-up while it has work left: {steps, ms, runs, t0}
let warmingNow = false;  // a warm-up stretch is running: it lets messages in before every step
let warmTimer = null;
const WARM_STEPS = 600, WARM_MS = 1000;
// After a request the warm-up goes on only once the worker was idle this long: a burst of requests (typing)
// runs back to back, not interleaved with warm-up steps (make bench's keystroke p95: 31 -> 55 ms when it was).
const WARM_RESUME_MS = 300;

const importBytes = (bytes) => import(URL.createObjectURL(new Blob([bytes], { type: "text/javascript" })));

// A Python exception arrives with its traceback; the page shows the last line without the class path.
function messageOf(err) {
  const text = String(err && err.message !== undefined ? err.message : err).trim();
  if (err && err.type) return text.split("\n").pop().replace(/^[\w.]+: /, "");
  return text;
}

// Pyodide's memory snapshot as bytes: the page hands over the whole image (it unzips and unsparses
// what the site ships, and sends nothing when that fails).
function snapshotBytes(buffer) {
  const bytes = new Uint8Array(buffer);
  if (bytes.byteLength < 16 || bytes.byteLength % 4) throw new Error(`${bytes.byteLength} bytes is not a snapshot`);
  return bytes;
}

async function startPyodide(loadPyodide, asm, files, lock, indexURL, snapshot) {
  const options = { indexURL, createPyodideModule: asm.default, lockFileContents: lock, packages: [],
    stdLibURL: URL.createObjectURL(new Blob([files.stdlib])) };
  if (snapshot) {
    options._loadSnapshot = snapshot;
    // Pyodide 314's wasm memory starts at 30 MiB and its loader cannot grow it before restoring a
    // bigger heap ("offset is out of bounds", pyodide #6254): grow it here. Heap = all after the header.
    const need = snapshot.byteLength - new Uint32Array(snapshot.buffer, snapshot.byteOffset, 4)[1];
    options.createPyodideModule = async (settings) => {
      const module = await asm.default(settings);
      if (module.HEAP8.length < need) module.growMemory(need);
      return module;
    };
  }
  // Pyodide always fetches <indexURL>pyodide.asm.wasm and takes no bytes: answer that one request.
  const wasmURL = indexURL + "pyodide.asm.wasm";
  const realFetch = self.fetch;
  self.fetch = (input, init) => String(input) === wasmURL
    ? Promise.resolve(new Response(files.pyodideWasm, { headers: { "Content-Type": "application/wasm" } }))
    : realFetch(input, init);
  try {
    return await loadPyodide(options);
  } finally {
    self.fetch = realFetch;
  }
}

// Resolves to {python_boot: "snapshot" | "plain", python_ms, python_note?}. From the snapshot made by
// make site (webtools/pyodide_snapshot.py) when the page sent one, else (or if it fails) the plain way.
async function bootPython(files, lock, indexURL, snapshotNote) {
  const t0 = performance.now();
  postMessage({ type: "progress", phase: "python", message: "starting Python" });
  const { loadPyodide } = await importBytes(files.pyodide);
  const asm = await importBytes(files.pyodideAsm);
  let note = snapshotNote || "the page sent no snapshot";
  if (files.snapshot) {
    try {
      pyodide = await startPyodide(loadPyodide, asm, files, lock, indexURL, snapshotBytes(files.snapshot));
      // The snapshot's zipimport caches point into these exact bytes at this exact path (the build
      // made it from the same pocketlm.zip); pocketlm.browser is already imported.
      pyodide.FS.writeFile("/lib/pocketlm.zip", new Uint8Array(files.pocketlm));
      pyodide.runPython("import random; random.seed()");  // its state was frozen into the snapshot
      pyodide.runPython("import pocketlm.browser");  // from sys.modules: no import runs
      return { python_boot: "snapshot", python_ms: performance.now() - t0 };
    } catch (err) {
      pyodide = null;
      note = `restoring the Python snapshot failed (${messageOf(err)})`;
      console.warn(`pocketlm worker: ${note}; starting Python the plain way`);
    }
  }
  pyodide = await startPyodide(loadPyodide, asm, files, lock, indexURL, null);
  // pocketlm ships as a zip of its pure-Python sources, imported with the standard zipimport.
  pyodide.FS.writeFile("/lib/pocketlm.zip", new Uint8Array(files.pocketlm));
  await pyodide.runPythonAsync("import sys; sys.path.insert(0, '/lib/pocketlm.zip'); import pocketlm.browser");
  return { python_boot: "plain", python_ms: performance.now() - t0, python_note: note };
}

// A one-node ONNX model (Identity, float [1]). Making a session from it at boot runs onnxruntime's
// session-making code once (V8 compiles wasm functions when first called), while the model may still be
// downloading, not when the model's session is made (measured in the page: ~0.1 s moved off the load's
// critical path by this, and ~0.3 s more by instantiating the module at boot; README).
const ONE_NODE_ONNX = new Uint8Array([8, 8, 18, 0, 58, 55, 10, 16, 10, 1, 120, 18, 1, 121, 34, 8, 73, 100, 101, 110,
  116, 105, 116, 121, 18, 1, 103, 90, 15, 10, 1, 120, 18, 10, 10, 8, 8, 1, 18, 4, 10, 2, 8, 1, 98, 15, 10, 1, 121, 18,
  10, 10, 8, 8, 1, 18, 4, 10, 2, 8, 1, 66, 4, 10, 0, 16, 13]);

// Boots onnxruntime's wasm module (engine.mjs drives it).
async function bootOnnx(msg) {
  const t0 = performance.now();
  postMessage({ type: "progress", phase: "onnx", message: "starting onnxruntime" });
  const [{ default: factory }, engineModule] = await Promise.all([importBytes(msg.files.ort), importBytes(msg.files.engine)]);
  ({ Engine } = engineModule);
  runtime = await engineModule.Runtime.boot(factory, msg.files.ortWasm, msg.threads);
  runtime.releaseSession(await runtime.createSession(ONE_NODE_ONNX));
  return { ms: performance.now() - t0, threads: msg.threads };
}

// Let queued messages (an abort) in between forward passes: a forward pass resolves as a microtask,
// so without a macrotask turn an abort would wait for the whole generation.
let lastYield = 0;
const channel = new MessageChannel();
function yieldToMessages() {
  return new Promise((resolve) => { channel.port1.onmessage = resolve; channel.port2.postMessage(0); });
}
function engineForPython(engine) {
  return {
    newCache: () => engine.newCache(),
    dropCache: (id) => engine.dropCache(id),
    length: (id) => engine.length(id),
    truncate: (id, n) => engine.truncate(id, n),
    hasHead: engine.hasHead,
    forward: async (id, ids, want, steps = 1, ban = null) => {
      // A greedy chunk (pocketlm.generate "Greedy chunks"): up to `steps` steps run here, each feeding
      // its token to the next, without going back to Python; a banned best token takes the runner-up.
      // Without the head (or a ban without the runner-up) one step answers, as for want "argmax".
      if (!(steps > 1 && want === "argmax" && engine.hasHead && (ban == null || engine.headSize > 2))) {
        return step(id, ids, want);
      }
      const outs = [];
      for (let k = 0; k < steps; k++) {
        if (k > 0 && timing) timing.chained();
        const out = await step(id, ids, want);
        if (ban != null && out[0] === ban) out[0] = out[2];
        outs.push(out);
        if (!Number.isFinite(out[1])) break;  // Python re-runs this step for the row, the sampler says why
        ids = [out[0]];
      }
      return outs;
    },
  };
  async function step(id, ids, want) {
    const t0 = performance.now();
    if (performance.now() - lastYield > (warmingNow ? 0 : 5)) {  // a warm-up step gives way at once
      await yieldToMessages();
      lastYield = performance.now();
    }
    const result = await engine.forward(id, ids, want);
    if (timing) timing.forwarded(t0, engine.lastRunMs, ids.length);
    return result;
  }
}

// Drives a pocketlm.browser.Stepper (one generation): each forward request it returns runs on the
// engine (with the same message yielding and timing as before), and the result goes straight back
// into Python with a plain call, not through Pyodide's event loop (browser.py says why).
async function drive(stepper, engineJs) {
  try {
    let req = stepper.step();
    while (req !== undefined) {
      const [id, ids, want, steps, ban] = req;
      let out;
      try {
        out = await engineJs.forward(id, ids, want, steps, ban);
      } catch (err) {
        req = stepper.fail(messageOf(err));  // raised inside the generation, which may handle it
        continue;
      }
      req = stepper.step(out);
    }
    return stepper.result;
  } finally {
    stepper.destroy();
  }
}

async function load(msg) {
  const t0 = performance.now();
  postMessage({ type: "progress", phase: "model", message: "checking the model files" });
  const browser = pyodide.pyimport("pocketlm.browser");
  const model = browser.PageModel(msg.manifestText, msg.tokenizerText, msg.variant ?? null, JSON.stringify(msg.digests));
  const tModel = performance.now();
  postMessage({ type: "progress", phase: "model", message: `creating the ${model.variant} session` });
  let created;
  try {
    created = await Engine.create(runtime, new Uint8Array(msg.onnx), JSON.parse(msg.manifestText), model.variant);
  } catch (err) {
    throw new Error(`${model.file} could not be loaded by onnxruntime (${messageOf(err)}); re-export the model`);
  }
  engine = created;  // one model per worker: the page starts a new worker for another model
  const t1 = performance.now();
  stepEngine = engineForPython(engine);
  model.attach(stepEngine);
  const mode = msg.warmup === undefined || msg.warmup === true ? "idle" : msg.warmup;
  let warm = { steps: 0, mode: String(mode) };
  if (mode !== false) {
    postMessage({ type: "progress", phase: "model", message: "checking that the model generates" });
    await drive(model.start_check(), stepEngine);
  }
  session = model;
  if (mode === "blocking") {
    postMessage({ type: "progress", phase: "model", message: "warming up" });
    warm = { ...JSON.parse(await drive(model.start_warm_up(WARM_STEPS, WARM_MS), stepEngine)), mode };
  } else if (mode === "idle") {
    warming = { steps: 0, ms: 0, runs: 0, t0: performance.now() };
  }
  // ms.check: the load's check generation (with "blocking", the warm-up too)
  return { variant: model.variant, ms: { tokenizer: tModel - t0, session: t1 - tModel, check: performance.now() - t1 }, warm };
}

// One stretch of the idle-time warm-up: runs until a request arrives or the warm-up is done.
async function warmUpWhileIdle() {
  const w = warming;
  if (!w || waiting > 0) return;
  warmingNow = true;
  let out;
  try {
    out = JSON.parse(await drive(session.start_warm_up(Math.max(WARM_STEPS - w.steps, 0), Math.max(WARM_MS - w.ms, 0),
      () => waiting > 0), stepEngine));
  } finally {
    warmingNow = false;
  }
  w.steps += out.steps;
  w.ms += out.ms;
  w.runs++;
  if (out.done) {
    warming = null;
    postMessage({ type: "warm", value: { steps: w.steps, ms: w.ms, runs: w.runs, mode: "idle", elapsed_ms: performance.now() - w.t0 } });
  }
}

async function generate(msg) {
  if (!session) throw new Error("no model is loaded");
  const onToken = msg.stream === false ? undefined : (tokenId, text) => postMessage({ type: "token", id: msg.id, token_id: tokenId, text });
  timing = new StepTiming();
  const cancelled = () => { timing.checked(); return aborted.has(msg.id); };
  try {
    const run = session.start(msg.prompt, JSON.stringify(msg.options ?? {}), onToken, cancelled);
    const out = JSON.parse(await drive(run, stepEngine));
    out.stats.timing = timing.done();
    out.stats.pyodide_heap_bytes = pyodide._module.HEAP8.length;
    return out;
  } finally {
    timing = null;
  }
}

// Where a decode step's time goes (make bench), summed over the steps after the first forward pass
// (the prefill). The generate loop calls cancelled() right before each forward pass (a greedy chunk's
// later steps start from chained() instead), so per step:
// python = forward k-1 returned -> cancelled() (resuming Python, logits to Python, sampling, the loop),
// handoff = cancelled() -> forward k called (token ids to JS, the call), run = OrtRun alone,
// engine = the rest of forward k in JS (feeds, KV-cache append, logits copy, the message yield).
let timing = null;
class StepTiming {
  constructor() {
    Object.assign(this, { steps: 0, run_ms: 0, engine_ms: 0, handoff_ms: 0, python_ms: 0, calls: 0, checkedAt: 0, returnedAt: 0 });
  }
  checked() {
    this.checkedAt = performance.now();
    if (this.calls >= 1) this.python_ms += this.checkedAt - this.returnedAt;
  }
  chained() {  // the next step of a greedy chunk: no Python in between, its hand-off is the JS loop's
    this.checkedAt = performance.now();
  }
  forwarded(t0, runMs, n) {
    this.returnedAt = performance.now();
    if (this.calls++ >= 1 && n === 1) {
      this.steps++;
      this.handoff_ms += t0 - this.checkedAt;
      this.run_ms += runMs;
      this.engine_ms += this.returnedAt - t0 - runMs;
    }
  }
  done() {
    if (this.calls >= 1) this.python_ms += performance.now() - this.returnedAt;  // the last token's sampling
    const { steps, run_ms, engine_ms, handoff_ms, python_ms } = this;
    return { steps, run_ms, engine_ms, handoff_ms, python_ms };
  }
}

const handlers = { "boot-onnx": bootOnnx, "boot-python": (msg) => bootPython(msg.files, msg.lock, msg.indexURL, msg.snapshotNote), load, generate };

self.onmessage = (event) => {
  const msg = event.data;
  if (msg.type === "abort") {
    aborted.add(msg.id);
    return;
  }
  const handler = handlers[msg.type];
  clearTimeout(warmTimer);
  waiting++;
  queue = queue.then(async () => {
    waiting--;
    try {
      if (!handler) throw new Error(`unknown request ${JSON.stringify(msg.type)}`);
      postMessage({ type: "done", id: msg.id, value: await handler(msg) });
    } catch (err) {
      postMessage({ type: "error", id: msg.id, message: messageOf(err) });
    } finally {
      aborted.delete(msg.id);
    }
    if (warming && waiting === 0) warmLater(msg.type === "load" ? 0 : WARM_RESUME_MS);
  });
};

function warmLater(delayMs) {
  clearTimeout(warmTimer);
  warmTimer = setTimeout(() => {
    queue = queue.then(() => warmUpWhileIdle().catch((err) => {
      warming = null;  // the check at load generated once already: report, do not retry
      postMessage({ type: "warm", value: { error: messageOf(err) } });
    }));
  }, delayMs);
}
