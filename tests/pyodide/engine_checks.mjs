// web/src/engine.mjs alone, under Node, on onnxruntime-web's WebAssembly module (one thread): its
// memory over many runs and its errors. Usage: node engine_checks.mjs <web dir> <model dir>
// Prints one JSON line: {"heap_bytes": [...after each round], "cache_lengths": [...], "errors": {...}}
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const [web, modelDir] = process.argv.slice(2);
const dist = join(web, "node_modules/onnxruntime-web/dist");
const { default: factory } = await import(pathToFileURL(join(dist, "ort-wasm-simd-threaded.mjs")).href);
const { Engine, Runtime } = await import(pathToFileURL(join(web, "src/engine.mjs")).href);
const manifest = JSON.parse(readFileSync(join(modelDir, "manifest.json"), "utf8"));
const runtime = await Runtime.boot(factory, readFileSync(join(dist, "ort-wasm-simd-threaded.wasm")), 1);
const engine = await Engine.create(runtime, readFileSync(join(modelDir, manifest.variants.fp32.file)), manifest, "fp32");

const message = async (promise) => { try { await promise; return null; } catch (err) { return err.message; } };
const out = { heap_bytes: [], cache_lengths: [], errors: {} };
// Rounds of single-token runs, both kinds of answer, caches dropped and made anew as they fill: every
// round allocates and frees the same, so wasm memory must stop growing after the first.
let id = engine.newCache();
for (let round = 0; round < 4; round++) {
  for (let i = 0; i < 400; i++) {
    if (engine.length(id) >= 100) {
      engine.dropCache(id);
      id = engine.newCache();
    }
    await engine.forward(id, [5 + (i % 7)], i % 3 ? "argmax" : "logits");
  }
  out.heap_bytes.push(runtime.heap().length);
}
const before = engine.length(id);
out.errors.context = await message(engine.forward(id, Array(manifest.architecture.max_seq_len + 1).fill(5)));
out.errors.token = await message(engine.forward(id, [manifest.architecture.vocab_size + 7]));
out.cache_lengths = [before, engine.length(id)];  // a failed run appends nothing
out.after_errors = await engine.forward(id, [5], "argmax");  // and the engine goes on
out.errors.model = await message(Engine.create(runtime, new Uint8Array([1, 2, 3, 4]), manifest));
out.errors.cache = await message(engine.forward(12345, [5]));
console.log(JSON.stringify(out));
process.exit(0);
