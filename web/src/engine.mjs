// The only module that touches onnxruntime. It owns the inference session and the KV caches:
// per layer one preallocated Float32Array for keys and one for values, [max_seq_len, n_kv_heads,
// head_dim] position-major, so the decode graph's new rows (`new.{i}.*`, [S, K, Hd]) are appended
// with one copy and the first P rows are passed back as `past.{i}.*` without copying. Python never
// sees the cache: it holds a cache id and gets the last position's logits back — or, asked for
// "argmax" on a graph with the greedy head (manifest graph.next_token / graph.logits_sum), only
// [token, logits_sum]: the logits are then not fetched, so ORT-web does not copy [1, S, V] out of wasm.
// Runs are queued, never overlapped: a session does one run at a time.

export class Engine {
  constructor(ort, session, manifest) {
    this.ort = ort;
    this.session = session;
    this.arch = manifest.architecture;
    this.graph = manifest.graph;
    this.rowSize = this.arch.n_kv_heads * (this.arch.dim / this.arch.n_heads);
    this.caches = new Map();
    this.nextId = 1;
    this.queue = Promise.resolve();
    this.lastRunMs = 0;  // the last session.run alone (make bench's per-token breakdown)
    const g = this.graph, layers = Array.from({ length: this.arch.n_layers }, (_, i) => i);
    const newRows = layers.flatMap((i) => [g.new_key.replace("{i}", i), g.new_value.replace("{i}", i)]);
    // a manifest written before the head has no next_token/logits_sum keys: logits path only
    this.hasHead = Boolean(g.next_token && g.logits_sum);
    this.fetches = {  // what session.run copies out of wasm: never the logits on a greedy-head step
      logits: [g.logits, ...newRows],
      argmax: this.hasHead ? [g.next_token, g.logits_sum, ...newRows] : null,
    };
    const wanted = [...this.fetches.logits, ...(this.fetches.argmax ?? [])];
    const missing = wanted.filter((n) => !session.outputNames.includes(n));
    if (missing.length) throw new Error(`the graph lacks outputs its manifest names: ${missing.join(", ")}`);
  }

  static async create(ort, modelBytes, manifest, options = {}) {
    const session = await ort.InferenceSession.create(modelBytes, options);
    return new Engine(ort, session, manifest);
  }

  newCache() {
    const { n_layers, max_seq_len } = this.arch;
    const size = max_seq_len * this.rowSize;
    const cache = { length: 0, keys: [], values: [] };
    for (let i = 0; i < n_layers; i++) {
      cache.keys.push(new Float32Array(size));
      cache.values.push(new Float32Array(size));
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
    this.caches.delete(id);
  }

  // ids: array of token ids (numbers). Appends their K/V rows; resolves to the last row's logits
  // (Float32Array [V]), or with want "argmax" and the head to [token, logits_sum] (numbers).
  forward(id, ids, want = "logits") {
    if (want !== "logits" && want !== "argmax") throw new Error(`want must be "logits" or "argmax", got ${want}`);
    const head = want === "argmax" && this.hasHead;
    const run = this.queue.then(() => this.#run(id, Array.from(ids), head));
    this.queue = run.catch(() => {});
    return run;
  }

  async #run(id, ids, head) {
    const cache = this.#cache(id);
    const { ort, arch, graph, rowSize } = this;
    const S = ids.length, P = cache.length, V = arch.vocab_size;
    if (S < 1) throw new Error("forward needs at least one token");
    if (P + S > arch.max_seq_len) throw new Error(`${P + S} positions exceed the context of ${arch.max_seq_len}`);
    const dims = [arch.n_kv_heads, arch.dim / arch.n_heads];
    const feeds = {
      [graph.input_ids]: new ort.Tensor("int64", BigInt64Array.from(ids, BigInt), [1, S]),
      [graph.position_ids]: new ort.Tensor("int64", BigInt64Array.from(ids, (_, k) => BigInt(P + k)), [1, S]),
    };
    for (let i = 0; i < arch.n_layers; i++) {
      feeds[graph.past_key.replace("{i}", i)] = new ort.Tensor("float32", cache.keys[i].subarray(0, P * rowSize), [P, ...dims]);
      feeds[graph.past_value.replace("{i}", i)] = new ort.Tensor("float32", cache.values[i].subarray(0, P * rowSize), [P, ...dims]);
    }
    const t0 = performance.now();
    const out = await this.session.run(feeds, head ? this.fetches.argmax : this.fetches.logits);
    this.lastRunMs = performance.now() - t0;
    for (let i = 0; i < arch.n_layers; i++) {
      cache.keys[i].set(out[graph.new_key.replace("{i}", i)].data, P * rowSize);
      cache.values[i].set(out[graph.new_value.replace("{i}", i)].data, P * rowSize);
    }
    cache.length = P + S;
    if (head) return [Number(out[graph.next_token].data[0]), out[graph.logits_sum].data[0]];  // int64 [1], float32 [1]
    const logits = out[graph.logits].data;  // [1, S, V]: the last row is what decoding needs
    return logits.slice((S - 1) * V, S * V);
  }

  #cache(id) {
    const cache = this.caches.get(id);
    if (!cache) throw new Error(`no KV cache ${id}`);
    return cache;
  }
}
