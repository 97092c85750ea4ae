// The browser runtime minus the page: Pyodide runs pocketlm's SqlCompleter, whose forward pass is
// web/src/engine.mjs on onnxruntime-web's WebAssembly backend (one thread), under Node.
// Usage: node complete.mjs <web dir> <pysrc dir> <spec.json>
//   spec: {"model_dir", "variants": [...], "cases": [[schema, prefix], ...]}
// Prints one JSON line: [{"variant", "prefix", "token_ids", "text", "stop_reason"}, ...]
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { startPyodide } from "./pyodide_env.mjs";

const [web, pysrc, specPath] = process.argv.slice(2);
const spec = JSON.parse(readFileSync(specPath, "utf8"));
const ort = await import(pathToFileURL(join(web, "node_modules/onnxruntime-web/dist/ort.node.min.mjs")).href);
const { Engine } = await import(pathToFileURL(join(web, "src/engine.mjs")).href);
ort.env.wasm.numThreads = 1;
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
const results = [];
try {
  for (const variant of spec.variants) {
    const file = manifest.variants[variant].file;
    const engine = await Engine.create(ort, readFileSync(join(spec.model_dir, file)), manifest);
    pyodide.globals.set("engine", engine);
    pyodide.globals.set("cases_json", JSON.stringify(spec.cases));
    const out = await pyodide.runPythonAsync(`
from pocketlm.browser import JsBackend
from pocketlm.completer import SqlCompleter
completer = SqlCompleter(manifest, tokenizer, JsBackend(engine))
rows = []
for schema, prefix in json.loads(cases_json):
    r = await completer.complete(schema, prefix)
    rows.append({"prefix": prefix, "token_ids": r.token_ids, "text": r.text, "stop_reason": r.stop_reason})
json.dumps(rows)
`);
    for (const row of JSON.parse(out)) results.push({ variant, ...row });
  }
} catch (err) {
  console.error(String(err));
  process.exit(1);
}
console.log(JSON.stringify(results));
