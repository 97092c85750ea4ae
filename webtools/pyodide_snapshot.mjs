// Make a Pyodide memory snapshot at build time, under Node: Pyodide booted, pocketlm's zip on
// sys.path and its modules imported. A page restores it with loadPyodide({_loadSnapshot: bytes})
// in a fraction of a plain boot (README / ../shared/notes/browser.md, "Pyodide memory snapshots").
//
//   node webtools/pyodide_snapshot.mjs --pyodide DIR --zip POCKETLM_ZIP --out SNAPSHOT
//        [--zip-path /lib/pocketlm.zip] [--import mod1,mod2,...]
//
// Prints one line of JSON about the snapshot (sizes, sha256, what was imported) on stdout.
//
// The snapshot is the wasm heap only. Emscripten's file system lives in JavaScript, so the page must
// still supply, byte for byte, the same python_stdlib.zip (stdLibURL) and write the same pocketlm zip
// to the same path (--zip-path) before Python imports anything new: the zipimport directory caches
// in the snapshot hold offsets into those files. It belongs to this exact Pyodide build (the loader
// checks its BUILD_ID). Pyodide 314's wasm memory starts at 30 MiB and the loader cannot make it
// bigger before restoring ("offset is out of bounds", pyodide #6254): when the report's heap_bytes
// exceeds that, pass loadPyodide a createPyodideModule that calls module.growMemory(heap bytes) on the
// module it creates (tests/browser/pyodide_snapshot/worker.mjs does). After restoring, reseed Python's random module (`random.seed()`): its state,
// and the str hash secret (PYTHONHASHSEED=0 here), are frozen into the snapshot.
//
// Deterministic: the same inputs give the same bytes. While the snapshot is made (only inside this
// process) Date.now reads a fixed date, performance.now a fixed 1 ms, and the entropy sources
// (node:crypto.randomFillSync, Math.random) a fixed stream, so no file timestamp, clock reading,
// hash secret or mimalloc key differs between runs. That fixes nothing a snapshot did not already
// share between every page that loads it.
import { createHash } from "node:crypto";
import nodeCrypto from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";

// Everything the worker imports from pocketlm, at start-up and when a model loads (any task).
const DEFAULT_IMPORTS = ["pocketlm.browser", "pocketlm.session", "pocketlm.completer", "pocketlm.extractor",
  "pocketlm.tasks.text", "pyodide.ffi"];
const FIXED_TIME_MS = Date.UTC(2020, 0, 1);  // the pocketlm zip's entries carry the same date
const PYTHON_IDENT = /^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$/;

function fail(message) {
  console.error(`error: ${message}`);
  process.exit(2);
}

function parseArgs(argv) {
  const opts = { zipPath: "/lib/pocketlm.zip", imports: DEFAULT_IMPORTS };
  const names = { "--pyodide": "pyodide", "--zip": "zip", "--out": "out", "--zip-path": "zipPath", "--import": "imports" };
  for (let i = 0; i < argv.length; i += 2) {
    const key = names[argv[i]];
    if (!key || i + 1 >= argv.length) fail(`usage: pyodide_snapshot.mjs --pyodide DIR --zip FILE --out FILE [--zip-path PATH] [--import a,b]; got ${JSON.stringify(argv[i])}`);
    opts[key] = key === "imports" ? argv[i + 1].split(",").filter(Boolean) : argv[i + 1];
  }
  for (const key of ["pyodide", "zip", "out"]) if (!opts[key]) fail(`--${key} is required`);
  for (const mod of opts.imports) if (!PYTHON_IDENT.test(mod)) fail(`--import: ${JSON.stringify(mod)} is not a module name`);
  if (!/^\/[\w./-]+\.zip$/.test(opts.zipPath)) fail(`--zip-path must be an absolute path ending in .zip, got ${JSON.stringify(opts.zipPath)}`);
  return opts;
}

// A fixed byte stream standing in for the OS entropy source: sha256(seed || counter) blocks.
function deterministicFill() {
  let counter = 0, pool = Buffer.alloc(0);
  return (buf, offset = 0, size) => {
    const view = new Uint8Array(buf.buffer ?? buf, buf.byteOffset ?? 0, buf.byteLength);
    size ??= view.length - offset;
    while (pool.length < size) {
      pool = Buffer.concat([pool, createHash("sha256").update(`pocketlm-snapshot:${counter++}`).digest()]);
    }
    view.set(pool.subarray(0, size), offset);
    pool = pool.subarray(size);
    return buf;
  };
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const dir = resolve(opts.pyodide) + "/";
  let zip;
  try {
    zip = readFileSync(opts.zip);
  } catch (err) {
    fail(`cannot read --zip ${opts.zip}: ${err.message}`);
  }
  let loadPyodide;
  try {
    ({ loadPyodide } = await import(pathToFileURL(join(dir, "pyodide.mjs")).href));
  } catch (err) {
    fail(`cannot load ${join(dir, "pyodide.mjs")}: ${err.message}`);
  }

  const real = { now: Date.now, perfNow: performance.now, random: Math.random, fill: nodeCrypto.randomFillSync };
  const fill = deterministicFill(), word = new Uint32Array(1);
  Date.now = () => FIXED_TIME_MS;
  performance.now = () => 1;  // ms; small, so the restored clock never runs backwards
  Math.random = () => fill(word)[0] / 2 ** 32;
  nodeCrypto.randomFillSync = fill;
  let snapshot, info;
  try {
    const out = [];
    const pyodide = await loadPyodide({
      indexURL: dir, _makeSnapshot: true, packages: [], env: { PYTHONHASHSEED: "0", LANG: "C.UTF-8" },  // LANG: not the host's navigator.language
      _sysExecutable: "./this.program", args: [], // as in a browser, not this script's path (Node's argv[1])
      stdout: (line) => out.push(line), stderr: (line) => out.push(line),
    });
    pyodide.FS.writeFile(opts.zipPath, zip);
    const imports = opts.imports.join(", ");
    let result;
    try {
      result = pyodide.runPython(`
import gc, json, os, sys
sys.path.insert(0, ${JSON.stringify(opts.zipPath)})
import ${imports}
gc.collect()
def _open_fds():
    fds = []
    for fd in range(3, 64):
        try:
            os.fstat(fd)
        except OSError:
            continue
        fds.append(fd)
    return fds
_info = json.dumps({"python": sys.version.split()[0], "modules": len(sys.modules),
                    "pocketlm_modules": sorted(m for m in sys.modules if m.split(".")[0] == "pocketlm"),
                    "open_fds": _open_fds()})
del _open_fds
_info`);
    } catch (err) {
      fail(`importing ${imports} in Pyodide failed:\n${err.message}\n${out.join("\n")}`);
    }
    info = JSON.parse(result);
    // Emscripten's stream table lives in JS and starts empty on restore: a file Python still held
    // open would be a dangling descriptor in the snapshot.
    if (info.open_fds.length) fail(`Python holds file descriptors ${info.open_fds} open; close them before the snapshot`);
    pyodide.runPython("del _info");
    info.heap_bytes = pyodide._module.HEAP8.length;
    snapshot = pyodide.makeMemorySnapshot();
  } finally {
    Object.assign(Date, { now: real.now });
    Object.assign(performance, { now: real.perfNow });
    Object.assign(Math, { random: real.random });
    nodeCrypto.randomFillSync = real.fill;
  }
  writeFileSync(opts.out, snapshot);
  const sha256 = (bytes) => createHash("sha256").update(bytes).digest("hex");
  const version = JSON.parse(readFileSync(join(dir, "package.json"), "utf8")).version;
  console.log(JSON.stringify({
    out: opts.out, bytes: snapshot.length, heap_bytes: info.heap_bytes, sha256: sha256(snapshot),
    pyodide: version, python: info.python, zip_path: opts.zipPath, zip_sha256: sha256(zip),
    stdlib_sha256: sha256(readFileSync(join(dir, "python_stdlib.zip"))), imports: opts.imports,
    modules: info.modules, pocketlm_modules: info.pocketlm_modules,
  }));
}

main().catch((err) => fail(err && err.stack ? err.stack : String(err)));
