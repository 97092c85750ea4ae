// make bench only: the same model's hf/ export (transformers.js / Optimum layout) run by transformers.js,
// served from the bench's own origin. Nothing is fetched from the internet: remote models are off,
// models come from /hf/<name>/, onnxruntime-web's wasm from /tjs-ort/ (bench/js/node_modules, the
// version transformers.js pins). The build is transformers.js' default one (asyncify), as its users get.
//
//   await tjsBench.run({name, dtype: "fp32" | "q8", threads, ids, newTokens, timedRuns, prefill: [[n, ids], ...]})
//   -> {ready_ms, first_token_ms, tokens, runs: [{tokens, decode_ms}], prefill: {n: [ms...]}, versions}
//   await tjsBench.load({name, dtype, threads, ids, newTokens}) (one discarded generation), then
//   await tjsBench.once({ids, newTokens}) -> {tokens, decode_ms}: one timed generation at a time, for
//   make bench's interleaved rounds (bench/pages.py interleaved).
// ready_ms / first_token_ms are performance.now() values, i.e. ms since this page's navigation started.
import { env, AutoModelForCausalLM, Tensor, BaseStreamer } from "/tjs/transformers.min.js";

env.allowRemoteModels = false;
env.allowLocalModels = true;
env.localModelPath = "/hf/";
env.backends.onnx.wasm.wasmPaths = {
  mjs: "/tjs-ort/ort-wasm-simd-threaded.asyncify.mjs",
  wasm: "/tjs-ort/ort-wasm-simd-threaded.asyncify.wasm",
};

class Timestamps extends BaseStreamer {
  constructor() { super(); this.times = []; this.prompt = true; }
  put(value) {
    if (this.prompt) { this.prompt = false; return; }  // the first put is the prompt itself
    this.times.push(performance.now());
  }
  end() {}
}

async function generate(model, ids, newTokens) {
  const streamer = new Timestamps();
  const input_ids = new Tensor("int64", BigInt64Array.from(ids, BigInt), [1, ids.length]);
  const attention_mask = new Tensor("int64", new BigInt64Array(ids.length).fill(1n), [1, ids.length]);
  const t0 = performance.now();
  const out = await model.generate({
    input_ids, attention_mask, max_new_tokens: newTokens, min_new_tokens: newTokens, do_sample: false, streamer,
  });
  const all = Array.from(out.data, Number);
  const t = streamer.times;
  return { tokens: all.slice(ids.length), start: t0, first: t[0], decode_ms: t[t.length - 1] - t[0], n: t.length };
}

async function run({ name, dtype, threads, ids, newTokens, timedRuns, warmRuns, prefill }) {
  env.backends.onnx.wasm.numThreads = threads;
  const model = await AutoModelForCausalLM.from_pretrained(name, { dtype, device: "wasm" });
  const ready_ms = performance.now();
  const first = await generate(model, ids, newTokens);  // the correctness check's tokens
  const result = { ready_ms, first_token_ms: first.first, tokens: first.tokens, first_decode_ms: first.decode_ms,
    runs: [], prefill: {}, threads: env.backends.onnx.wasm.numThreads, crossOriginIsolated };
  for (let i = 0; i < (warmRuns ?? 0); i++) await generate(model, ids, newTokens);
  for (let i = 0; i < (timedRuns ?? 0); i++) {
    const r = await generate(model, ids, newTokens);
    result.runs.push({ tokens: r.n - 1, decode_ms: r.decode_ms, same: r.tokens.join() === first.tokens.join() });
  }
  for (const [n, p] of prefill ?? []) {
    result.prefill[n] = [];
    for (let i = 0; i < (timedRuns ?? 0); i++) {
      const r = await generate(model, p, 1);
      result.prefill[n].push(r.first - r.start);  // generate() call -> first token: prefill + one sample
    }
  }
  await model.dispose();
  return result;
}

let held = null;  // the model of load(), for once()

async function load({ name, dtype, threads, ids, newTokens }) {
  env.backends.onnx.wasm.numThreads = threads;
  held = await AutoModelForCausalLM.from_pretrained(name, { dtype, device: "wasm" });
  await generate(held, ids, newTokens);
  return true;
}

async function once({ ids, newTokens }) {
  const r = await generate(held, ids, newTokens);
  return { tokens: r.n - 1, decode_ms: r.decode_ms };
}

window.tjsBench = { run, load, once };
document.getElementById("status").textContent = "transformers.js ready";
