// The browser runtime minus the page: Pyodide runs pocketlm's SqlCompleter, whose forward pass is
// web/src/engine.mjs on onnxruntime-web's WebAssembly module (one thread), under Node.
// Usage: node complete.mjs <web dir> <pysrc dir> <spec.json>
//   spec: {"model_dir", "variants": [...], "cases": [[schema, prefix], ...]}
// Prints one JSON line: [{"variant", "prefix", "token_ids", "text", "stop_reason"}, ...]
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { startPyodide } from "./pyodide_env.mjs";

const [web, pysrc, specPath] = process.argv.slice(2);
const spec = JSON.parse(readFileSync(specPath, "utf8"));
const ortDist = join(web, "node_modules/onnxruntime-web/dist");
const { default: ortFactory } = await import(pathToFileURL(join(ortDist, "ort-wasm-simd-threaded.mjs")).href);
const { Engine, Runtime } = await import(pathToFileURL(join(web, "src/engine.mjs")).href);
const runtime = await Runtime.boot(ortFactory, readFileSync(join(ortDist, "ort-wasm-simd-threaded.wasm")), 1);
const pyodide = await startPyodide(web, pysrc);
const manifestText = readFileSync(join(spec.model_dir, "manifest.json"), "utf8");
const manifest = JSON.parse(manifestText);
pyodide.globals.set("manifest_text", manifestText);
pyodide.globals.set("tokenizer_text", readFileSync(join(spec.model_dir, manifest.tokenizer.file), "utf8"));
await pyodide.runPythonAsync(`
import json
from pocketlm.manifest import manifest_from_dict
from pocketlm.tokenizer import Tokenizer
manifest = manifest_from_dict(json.loads(manifest_text))
tokenizer = Tokenizer.from_str(tokenizer_text)
`);
// As web/src/worker.mjs drives a generation: run each forward request the Stepper returns on the
// engine and hand the result (or the error) straight back to Python.
async function drive(stepper, engine) {
  try {
    let req = stepper.step();
    while (req !== undefined) {
      const [id, ids, want] = req;
      let out;
      try {
        out = await engine.forward(id, ids, want);
      } catch (err) {
        req = stepper.fail(String(err.message ?? err));
        continue;
      }
      req = stepper.step(out);
    }
    return stepper.result;
  } finally {
    stepper.destroy();
  }
}

const results = [];
try {
  for (const variant of spec.variants) {
    const file = manifest.variants[variant].file;
    const engine = await Engine.create(runtime, readFileSync(join(spec.model_dir, file)), manifest, variant);
    pyodide.globals.set("engine", engine);
    pyodide.globals.set("cases_json", JSON.stringify(spec.cases));
    const stepper = pyodide.runPython(`
from pocketlm.browser import JsBackend, Stepper
from pocketlm.completer import SqlCompleter
completer = SqlCompleter(manifest, tokenizer, JsBackend(engine))
async def run_cases():
    rows = []
    for schema, prefix in json.loads(cases_json):
        r = await completer.complete(schema, prefix)
        rows.append({"prefix": prefix, "token_ids": r.token_ids, "text": r.text, "stop_reason": r.stop_reason})
    return json.dumps(rows)
Stepper(run_cases())
`);
    const out = await drive(stepper, engine);
    for (const row of JSON.parse(out)) results.push({ variant, ...row });
  }
} catch (err) {
  console.error(String(err));
  process.exit(1);
}
// A forward pass that fails in JS raises inside the generation, with the engine's message.
let failure = null;
try {
  const engine = await Engine.create(runtime, readFileSync(join(spec.model_dir, manifest.variants.fp32.file)), manifest, "fp32");
  const failing = { newCache: () => engine.newCache(), length: (id) => engine.length(id),
                    truncate: (id, n) => engine.truncate(id, n), hasHead: engine.hasHead,
                    forward: async () => { throw new Error("the session run failed"); } };
  pyodide.globals.set("engine", failing);
  await drive(pyodide.runPython(`
from pocketlm.browser import JsBackend, Stepper
from pocketlm.completer import SqlCompleter
Stepper(SqlCompleter(manifest, tokenizer, JsBackend(engine)).complete("t(a)", "SELECT"))
`), failing);
} catch (err) {
  failure = String(err.message ?? err).trim().split("\n").pop();
}
console.log(JSON.stringify({ results, failure }));
