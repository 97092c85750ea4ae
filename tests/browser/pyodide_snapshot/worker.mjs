// Test worker for tests/browser/test_pyodide_snapshot.py: boots Pyodide from bytes the page posts,
// either plainly (then imports pocketlm) or from a build-time memory snapshot, the way
// web/src/worker.mjs would. It fetches nothing, so it runs as a data: URL worker on file:// too.
//
// page -> worker {mode: "plain" | "snapshot", files, lock, indexURL, imports, check, checkInput, grow}
// worker -> page {ok, mode, boot_ms, import_ms, heap_bytes, preloaded, result} or {ok: false, error}
const importBytes = (bytes) => import(URL.createObjectURL(new Blob([bytes], { type: "text/javascript" })));

// The wasm heap the snapshot needs: everything after its header (pyodide.asm.mjs, makeSnapshot).
function snapshotHeapBytes(snapshot) {
  const header = new Uint32Array(snapshot.buffer, snapshot.byteOffset, 4);
  return snapshot.byteLength - header[1];
}

async function boot(msg) {
  const { files, lock, indexURL } = msg;
  const t0 = performance.now();
  const { loadPyodide } = await importBytes(files.pyodide);
  const asm = await importBytes(files.pyodideAsm);
  let createPyodideModule = asm.default;
  const options = { indexURL, lockFileContents: lock, packages: [], stdLibURL: URL.createObjectURL(new Blob([files.stdlib])) };
  if (msg.mode === "snapshot") {
    const snapshot = new Uint8Array(files.snapshot);
    options._loadSnapshot = snapshot;
    // Pyodide 314's wasm exports its memory at a fixed initial 30 MiB and ignores INITIAL_MEMORY, so
    // restoring a larger heap fails with "offset is out of bounds" (pyodide #6254): grow it first.
    const need = snapshotHeapBytes(snapshot);
    if (msg.grow !== false) createPyodideModule = async (settings) => {
      const module = await asm.default(settings);
      if (module.HEAP8.length < need) module.growMemory(need);
      return module;
    };
  }
  const wasmURL = indexURL + "pyodide.asm.wasm";
  const realFetch = self.fetch;
  self.fetch = (input, init) => String(input) === wasmURL
    ? Promise.resolve(new Response(files.pyodideWasm, { headers: { "Content-Type": "application/wasm" } }))
    : realFetch(input, init);
  let pyodide;
  try {
    pyodide = await loadPyodide({ ...options, createPyodideModule });
  } finally {
    self.fetch = realFetch;
  }
  const t1 = performance.now();
  const preloaded = pyodide.runPython("import sys; 'pocketlm.session' in sys.modules");
  // The zip must be the snapshot's bytes at the snapshot's path: zipimport's cached directory
  // (offsets into the file) is part of the restored heap.
  pyodide.FS.writeFile("/lib/pocketlm.zip", new Uint8Array(files.pocketlm));
  if (msg.mode === "snapshot") {
    pyodide.runPython("import random; random.seed()");  // its state was frozen into the snapshot
  } else {
    pyodide.runPython(`import sys; sys.path.insert(0, '/lib/pocketlm.zip'); import ${msg.imports.join(", ")}`);
  }
  const t2 = performance.now();
  pyodide.globals.set("CHECK_INPUT", msg.checkInput);
  const result = pyodide.runPython(msg.check);
  // The worker's own JS <-> Python path (pocketlm.browser.JsBackend): an async Python function awaits a
  // JS object's async method and reads the Float32Array it returns.
  await pyodide.runPythonAsync(`
from pyodide.ffi import to_js
async def roundtrip(engine):
    logits = await engine.forward(to_js([5, 6, 7]))
    return list(logits.to_py())
`);
  const engine = { forward: async (ids) => new Float32Array([ids.length, 0.5]) };
  const roundtrip = await pyodide.globals.get("roundtrip")(engine);
  return { ok: true, mode: msg.mode, boot_ms: t1 - t0, import_ms: t2 - t1, heap_bytes: pyodide._module.HEAP8.length,
    preloaded, result, roundtrip: roundtrip.toJs() };
}

self.onmessage = async (event) => {
  try {
    postMessage(await boot(event.data));
  } catch (err) {
    postMessage({ ok: false, error: String(err && err.stack ? err.stack : err) });
  }
};
