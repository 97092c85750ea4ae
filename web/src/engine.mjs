// The only module that touches onnxruntime. It drives onnxruntime-web's WebAssembly module
// (ort-wasm-simd-threaded.mjs + .wasm, from npm) through the C functions that module exports
// (onnxruntime's wasm/api.h: OrtCreateSession, OrtCreateTensor, OrtRun, ...), not through ort's JS
// `InferenceSession`, because that API copies every input into wasm memory at every run and allocates
// every output anew. Here the KV caches live in wasm memory: per layer one buffer for keys and one for
// values, [1, n_kv_heads, max_seq_len, head_dim], each wrapped once in a tensor that is handed to the
// decode graph both as its `cache.{i}.*` input and as the preallocated `present.{i}.*` output, so the
// graph's GroupQueryAttention writes the new rows in place and nothing of the past is copied
// (pocketlm/manifest.py GraphContract; measured in README, "The model folder and the decode graph").
//
// Python never sees the cache: it holds a cache id and gets the last position's logits back — or,
// asked for "argmax" on a graph with the greedy head (manifest graph.next_token / graph.logits_sum),
// only [token, logits_sum] (and runner_up, when the graph has it): the logits are then not fetched.
// Runs are queued, never overlapped: a session does one run at a time.

const FLOAT = 1, INT32 = 6, INT64 = 7;  // ONNX TensorProto element types
const CPU = 1;  // tensor data location "cpu" (onnxruntime-web's DataLocation enum)
const LOG_WARNING = 2;  // onnxruntime's logging severity: warnings and errors reach the console
const OPTIMIZE_ALL = 99;  // GraphOptimizationLevel ORT_ENABLE_ALL, as onnxruntime-web's default

// The booted wasm module. factory: the default export of ort-wasm-simd-threaded.mjs; wasmBinary: the
// bytes of ort-wasm-simd-threaded.wasm (the module fetches nothing itself).
export class Runtime {
  static async boot(factory, wasmBinary, threads = 1) {
    const M = await factory({ numThreads: threads, wasmBinary, locateFile: (name) => name });
    const runtime = new Runtime(M, threads);
    if (M._OrtInit(threads, LOG_WARNING) !== 0) runtime.fail("onnxruntime could not start");
    return runtime;
  }

  constructor(M, threads) {
    this.M = M;
    this.threads = threads;
  }

  // The heap as bytes. getValue makes emscripten renew its views when the memory has grown (which
  // a malloc inside a run may do): a stale view would silently miss the new pages.
  heap() {
    this.M.getValue(0, "i8");
    return this.M.HEAPU8;
  }

  // Throws onnxruntime's last error with `what` in front of it.
  fail(what) {
    const M = this.M, stack = M.stackSave();
    try {
      const at = M.stackAlloc(8);
      M._OrtGetLastError(at, at + 4);
      const code = M.getValue(at, "i32"), text = M.getValue(at + 4, "*");
      throw new Error(`${what}: ${text ? M.UTF8ToString(text) : `onnxruntime error ${code}`}`);
    } finally {
      M.stackRestore(stack);
    }
  }

  // A NUL-terminated UTF-8 copy of s in wasm memory (the caller frees it).
  string(s) {
    const n = this.M.lengthBytesUTF8(s) + 1, at = this.M._malloc(n);
    this.M.stringToUTF8(s, at, n);
    return at;
  }

  // Session from ONNX bytes; resolves to the session handle. The model's bytes are copied into wasm
  // memory for onnxruntime to parse and freed after. config: onnxruntime session config entries
  // (string -> string) the file was made to run with (the manifest's variant.session_config).
  async createSession(modelBytes, config = {}) {
    const M = this.M;
    const options = M._OrtCreateSessionOptions(OPTIMIZE_ALL, true, true, 0, false, 0, 0, LOG_WARNING, 0, 0);
    if (!options) this.fail("onnxruntime could not make session options");
    const at = M._malloc(modelBytes.byteLength);
    try {
      for (const [key, value] of Object.entries(config)) {
        const [k, v] = [this.string(key), this.string(String(value))];
        const rc = M._OrtAddSessionConfigEntry(options, k, v);
        M._free(k);
        M._free(v);
        if (rc !== 0) this.fail(`onnxruntime rejected the session option ${key}=${value}`);
      }
      this.heap().set(modelBytes, at);
      const session = await M._OrtCreateSession(at, modelBytes.byteLength, options);
      if (!session) this.fail("onnxruntime could not read the model");
      return session;
    } finally {
      M._free(at);
      M._OrtReleaseSessionOptions(options);
    }
  }

  releaseSession(session) {
    if (this.M._OrtReleaseSession(session) !== 0) this.fail("onnxruntime could not release a session");
  }

  // [inputNames, outputNames] of a session.
  names(session) {
    const M = this.M, stack = M.stackSave();
    try {
      const at = M.stackAlloc(8);
      if (M._OrtGetInputOutputCount(session, at, at + 4) !== 0) this.fail("onnxruntime could not list the graph's inputs");
      const [nIn, nOut] = [M.getValue(at, "i32"), M.getValue(at + 4, "i32")];
      const name = (index) => {
        if (M._OrtGetInputOutputMetadata(session, index, at, at + 4) !== 0) this.fail("onnxruntime could not name an input");
        const [text, meta] = [M.getValue(at, "*"), M.getValue(at + 4, "*")];
        const out = M.UTF8ToString(text);
        M._OrtFree(text);
        if (meta) M._OrtFree(meta);
        return out;
      };
      // indices: inputs first, then outputs (onnxruntime-web's own numbering)
      return [Array.from({ length: nIn }, (_, i) => name(i)), Array.from({ length: nOut }, (_, i) => name(nIn + i))];
    } finally {
      M.stackRestore(stack);
    }
  }
}

export class Engine {
  constructor(runtime, session, manifest, names) {
    this.runtime = runtime;
    this.session = session;
    this.arch = manifest.architecture;
    this.graph = manifest.graph;
    this.rowSize = this.arch.n_kv_heads * (this.arch.dim / this.arch.n_heads);
    this.caches = new Map();
    this.nextId = 1;
    this.queue = Promise.resolve();
    this.lastRunMs = 0;  // the last OrtRun alone (make bench's per-token breakdown)
    const g = this.graph, layers = Array.from({ length: this.arch.n_layers }, (_, i) => i);
    const caches = layers.flatMap((i) => [g.cache_key.replace("{i}", i), g.cache_value.replace("{i}", i)]);
    const presents = layers.flatMap((i) => [g.present_key.replace("{i}", i), g.present_value.replace("{i}", i)]);
    // a manifest without next_token/logits_sum keys has no greedy head: logits path only
    this.hasHead = Boolean(g.next_token && g.logits_sum);
    this.headSize = this.hasHead && g.runner_up ? 3 : 2;  // [next_token, logits_sum, runner_up?]
    const inputs = [g.input_ids, g.seqlens_k, g.total_length, ...caches];
    const fetches = {  // what a run computes and hands back (never the logits on a greedy-head step); the
      // presents come last, bound to the cache tensors
      logits: [g.logits, ...presents],
      argmax: this.hasHead ? [g.next_token, g.logits_sum, ...(this.headSize > 2 ? [g.runner_up] : []), ...presents] : null,
    };
    const [inputNames, outputNames] = names;
    const missing = [...inputs.filter((n) => !inputNames.includes(n)),
      ...[...fetches.logits, ...(fetches.argmax ?? [])].filter((n) => !outputNames.includes(n))];
    if (missing.length) throw new Error(`the graph lacks inputs or outputs its manifest names: ${[...new Set(missing)].join(", ")}`);
    // Names as C string arrays, made once; per run only the tensor handles change.
    const M = runtime.M;
    const cArray = (strings) => {
      const at = M._malloc(4 * strings.length);
      strings.forEach((s, k) => M.setValue(at + 4 * k, runtime.string(s), "*"));
      return at;
    };
    this.inputs = { count: inputs.length, names: cArray(inputs), handles: M._malloc(4 * inputs.length) };
    this.outputs = {};
    for (const [want, list] of Object.entries(fetches)) {
      if (list) this.outputs[want] = { count: list.length, names: cArray(list), handles: M._malloc(4 * list.length) };
    }
    this.idsAt = M._malloc(8 * this.arch.max_seq_len);  // int64 [S] token ids
    this.lengthsAt = M._malloc(8);  // int32 seqlens_k [1] = P+S-1, int32 total_sequence_length [] = P+S
    this.dimsAt = M._malloc(4 * 4);  // a tensor's dims, written before each OrtCreateTensor
    this.scratch = M._malloc(16);  // OrtGetTensorData's answers: type, data, dims, dims count
  }

  // runtime: a booted Runtime; modelBytes: the .onnx file (Uint8Array) of the manifest's `variant`,
  // whose session_config (pocketlm/manifest.py Variant) the session is made with.
  static async create(runtime, modelBytes, manifest, variant = manifest.default_variant) {
    const entry = manifest.variants[variant];
    if (!entry) throw new Error(`the manifest has no variant ${JSON.stringify(variant)}`);
    const session = await runtime.createSession(modelBytes, entry.session_config ?? {});
    try {
      return new Engine(runtime, session, manifest, runtime.names(session));
    } catch (err) {
      runtime.releaseSession(session);
      throw err;
    }
  }

  newCache() {
    const { n_layers, n_kv_heads, max_seq_len } = this.arch, M = this.runtime.M;
    const bytes = 4 * max_seq_len * this.rowSize, dims = [1, n_kv_heads, max_seq_len, this.arch.dim / this.arch.n_heads];
    // per layer: wasm addresses of the key and value buffers and the tensors over them (made once)
    const cache = { length: 0, buffers: [], tensors: [] };
    try {
      for (let i = 0; i < 2 * n_layers; i++) {
        const at = M._malloc(bytes);
        if (!at) throw new Error(`no memory left for a KV cache of ${(2 * n_layers * bytes / 1e6).toFixed(1)} MB`);
        cache.buffers.push(at);
        cache.tensors.push(this.#tensor(FLOAT, at, bytes, dims));
      }
    } catch (err) {
      this.#free(cache);
      throw err;
    }
    const id = this.nextId++;
    this.caches.set(id, cache);
    return id;
  }

  length(id) {
    return this.#cache(id).length;
  }

  truncate(id, n) {
    const cache = this.#cache(id);
    if (!(n >= 0 && n <= cache.length)) throw new Error(`cannot truncate a cache of ${cache.length} positions to ${n}`);
    cache.length = n;
  }

  dropCache(id) {
    const cache = this.caches.get(id);
    if (!cache) return;
    this.caches.delete(id);
    // a run of this cache may still be queued: free its memory after it
    this.queue = this.queue.then(() => this.#free(cache));
  }

  #free(cache) {
    cache.tensors.forEach((t) => this.runtime.M._OrtReleaseTensor(t));
    cache.buffers.forEach((at) => this.runtime.M._free(at));
  }

  // ids: array of token ids (numbers). Appends their K/V rows; resolves to the last row's logits
  // (Float32Array [V]), or with want "argmax" and the head to [token, logits_sum(, runner_up)] (numbers).
  forward(id, ids, want = "logits") {
    if (want !== "logits" && want !== "argmax") throw new Error(`want must be "logits" or "argmax", got ${want}`);
    const head = want === "argmax" && this.hasHead;
    const run = this.queue.then(() => this.#run(id, Array.from(ids), head));
    this.queue = run.catch(() => {});
    return run;
  }

  async #run(id, ids, head) {
    const cache = this.#cache(id);
    const { runtime, arch } = this, M = runtime.M;
    const S = ids.length, P = cache.length, V = arch.vocab_size;
    if (S < 1) throw new Error("forward needs at least one token");
    if (P + S > arch.max_seq_len) throw new Error(`${P + S} positions exceed the context of ${arch.max_seq_len}`);
    let heap = runtime.heap();
    const i64 = new BigInt64Array(heap.buffer);
    ids.forEach((t, k) => { i64[this.idsAt / 8 + k] = BigInt(t); });
    new Int32Array(heap.buffer).set([P + S - 1, P + S], this.lengthsAt / 4);
    const out = head ? this.outputs.argmax : this.outputs.logits;
    const first = head ? this.headSize : 1;  // outputs before the presents: the head's or [logits]
    const tensors = [this.#tensor(INT64, this.idsAt, 8 * S, [1, S]), this.#tensor(INT32, this.lengthsAt, 4, [1]),
      this.#tensor(INT32, this.lengthsAt + 4, 4, [])];
    const produced = [];
    try {
      let u32 = new Uint32Array(runtime.heap().buffer);
      [...tensors, ...cache.tensors].forEach((t, k) => { u32[this.inputs.handles / 4 + k] = t; });
      u32.fill(0, out.handles / 4, out.handles / 4 + first);  // onnxruntime allocates these
      cache.tensors.forEach((t, k) => { u32[out.handles / 4 + first + k] = t; });  // present.* = cache.* (in place)
      const t0 = performance.now();
      const rc = await M._OrtRun(this.session, this.inputs.names, this.inputs.handles, this.inputs.count,
        out.names, out.count, out.handles, 0);
      this.lastRunMs = performance.now() - t0;
      heap = runtime.heap();
      u32 = new Uint32Array(heap.buffer);
      for (let k = 0; k < first; k++) if (u32[out.handles / 4 + k]) produced.push(u32[out.handles / 4 + k]);
      if (rc !== 0) runtime.fail("the model's forward pass failed");
      cache.length = P + S;
      const data = (k, count) => this.#data(u32[out.handles / 4 + k], count);
      const f32 = new Float32Array(heap.buffer);
      if (head) {  // int64 [1], float32 [1] (, int64 [1])
        const id = (k) => Number(new BigInt64Array(heap.buffer, data(k, 1), 1)[0]);
        return this.headSize > 2 ? [id(0), f32[data(1, 1) / 4], id(2)] : [id(0), f32[data(1, 1) / 4]];
      }
      const logits = data(0, S * V);  // [1, S, V]: the last row is what decoding needs
      return f32.slice(logits / 4 + (S - 1) * V, logits / 4 + S * V);
    } finally {
      for (const t of [...tensors, ...produced]) M._OrtReleaseTensor(t);
    }
  }

  // A tensor over `bytes` of wasm memory at `at` (onnxruntime reads it in place).
  #tensor(type, at, bytes, dims) {
    const M = this.runtime.M;
    dims.forEach((d, k) => M.setValue(this.dimsAt + 4 * k, d, "i32"));
    const t = M._OrtCreateTensor(type, at, bytes, this.dimsAt, dims.length, CPU);
    if (!t) this.runtime.fail("onnxruntime could not make an input tensor");
    return t;
  }

  // The data address of an output tensor, checked to hold `count` elements.
  #data(tensor, count) {
    const M = this.runtime.M, s = this.scratch;
    if (M._OrtGetTensorData(tensor, s, s + 4, s + 8, s + 12) !== 0) this.runtime.fail("onnxruntime could not read an output");
    const [at, dims, rank] = [M.getValue(s + 4, "*"), M.getValue(s + 8, "*"), M.getValue(s + 12, "i32")];
    let n = 1;
    for (let k = 0; k < rank; k++) n *= M.getValue(dims + 4 * k, "i32");
    M._OrtFree(dims);
    if (n !== count) throw new Error(`the graph returned ${n} values where ${count} were expected; re-export the model`);
    return at;
  }

  #cache(id) {
    const cache = this.caches.get(id);
    if (!cache) throw new Error(`no KV cache ${id}`);
    return cache;
  }
}
