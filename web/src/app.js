// The SQL autocomplete page: a query editor with ghost-text suggestions from window.pocketlm.
// Every keystroke cancels the request in flight (AbortController) and starts a new one; a
// suggestion is drawn only for the exact text it was computed for, so a stale one never shows.
// URL parameters: ?model=NAME&variant=V&autoload=0 (tests and benchmarks use them).
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const SITE = window.POCKETLM_SITE;
  const params = new URLSearchParams(location.search);
  const editor = $("editor"), schemaBox = $("schema");
  const state = { model: null, loading: null, controller: null, seq: 0, suggestion: "", suggestionFor: null, final: false };
  const folders = new Map();  // model chooser value -> an sql model folder opened from disk (disk.js)

  const mb = (n) => (n / 1e6).toFixed(1);
  const PHASES = { python: "Python runtime", onnx: "ONNX runtime", model: "Model" };

  function showError(message) {
    const box = $("error");
    box.textContent = message;
    box.hidden = !message;
  }

  function onProgress(p) {
    $("progress-bar").style.width = `${p.overall.percent.toFixed(1)}%`;
    const bytes = p.total ? ` — ${mb(p.loaded)} / ${mb(p.total)} MB (${p.percent.toFixed(0)}%)` : "";
    $("progress-text").textContent = `${PHASES[p.phase] || p.phase}: ${p.message}${bytes}`;
  }

  function settings() {
    const num = (id) => Number($(id).value);
    return { max_new_tokens: num("max_new_tokens"), temperature: num("temperature"), top_k: num("top_k"), top_p: num("top_p") };
  }

  // The ghost layer repeats the typed text invisibly, then the suggestion in grey.
  function render() {
    const text = editor.value;
    const show = state.suggestionFor === text && editor.selectionStart === text.length && editor.selectionEnd === text.length;
    $("ghost-typed").textContent = text;
    $("ghost-suggestion").textContent = show ? state.suggestion : "";
    const ghost = $("ghost");
    ghost.dataset.for = show ? state.suggestionFor : "";
    ghost.dataset.final = show && state.final ? "1" : "";
    ghost.scrollTop = editor.scrollTop;
  }

  function clearSuggestion() {
    if (state.controller) state.controller.abort();
    state.controller = null;
    state.suggestion = "";
    state.suggestionFor = null;
    state.final = false;
    render();
  }

  async function suggest() {
    clearSuggestion();
    const model = state.model, text = editor.value;
    if (!model || editor.selectionStart !== text.length) return;
    const controller = new AbortController();
    const seq = ++state.seq;
    const current = () => seq === state.seq && editor.value === text;
    state.controller = controller;
    let partial = "";
    try {
      const out = await model.generate(text, {
        schema: schemaBox.value, ...settings(), signal: controller.signal,
        onToken: (id, delta) => {
          if (!current()) return;
          partial += delta;
          state.suggestion = partial;
          state.suggestionFor = text;
          render();
        },
      });
      if (!current() || out.stop_reason === "cancelled") return;
      state.suggestion = out.text;
      state.suggestionFor = text;
      state.final = true;
      render();
      // navigation -> first suggestion on screen (performance.now() counts from navigation start)
      if (state.firstSuggestionMs === undefined) state.firstSuggestionMs = performance.now();
      showError("");
      $("latency").textContent = `${out.stats.latency_ms.toFixed(1)} ms`;
      $("tps").textContent = out.token_ids.length > 1 ? `${out.stats.tokens_per_s.toFixed(0)} tok/s` : "–";
      $("ntokens").textContent = String(out.token_ids.length);
    } catch (err) {
      if (seq === state.seq) showError(err.message);
    }
  }

  function accept() {
    if (!state.suggestion || state.suggestionFor !== editor.value) return false;
    editor.value += state.suggestion;
    editor.selectionStart = editor.selectionEnd = editor.value.length;
    suggest();
    return true;
  }

  editor.addEventListener("input", suggest);
  editor.addEventListener("keydown", (e) => {
    if (e.key === "Tab" && accept()) e.preventDefault();
    else if (e.key === "Escape") clearSuggestion();
  });
  editor.addEventListener("keyup", (e) => { if (e.key.startsWith("Arrow") || e.key === "Home" || e.key === "End") render(); });
  editor.addEventListener("click", render);
  editor.addEventListener("scroll", render);
  schemaBox.addEventListener("input", suggest);

  // ---- schema picker ----
  $("schema-select").addEventListener("change", () => {
    const name = $("schema-select").value;
    if (name === "custom") {
      schemaBox.value = "";
      schemaBox.placeholder = "Paste your schema here, one table per line: table(column, column, ...)";
      schemaBox.focus();
    } else {
      schemaBox.value = SITE.schemas[name];
    }
    suggest();
  });

  // ---- model and variant ----
  function fillVariants() {
    const m = folders.get($("model-select").value) || SITE.models[$("model-select").value];
    const select = $("variant-select");
    select.innerHTML = "";
    if (!m) return false;  // no SQL model in the site (the list holds sql-task models only) nor from disk
    for (const [name, bytes] of Object.entries(m.variants)) {
      const opt = document.createElement("option");
      opt.value = name;
      opt.textContent = `${name}, ${mb(bytes)} MB${name === m.default_variant ? " (default)" : ""}`;
      select.appendChild(opt);
    }
    select.value = params.get("variant") && m.variants[params.get("variant")] ? params.get("variant") : m.default_variant;
    return true;
  }

  // Resolves to the loaded model, or to the Error that kept it from loading (shown in the page).
  async function loadModel() {
    clearSuggestion();
    if (state.model) state.model.dispose();
    state.model = null;
    editor.disabled = true;
    editor.placeholder = "Loading the model…";
    $("loader").classList.remove("done");
    showError("");
    const value = $("model-select").value, variant = $("variant-select").value;
    const name = folders.has(value) ? folders.get(value).name : value;
    const where = folders.has(value) ? ", from disk" : "";
    const timeoutMs = params.get("timeout_ms") ? Number(params.get("timeout_ms")) : undefined;
    const load = pocketlm.load(folders.get(value) || value, { variant, onProgress, timeoutMs });
    state.loading = load;
    try {
      const model = await load;
      if (state.loading !== load) return model.dispose();
      state.model = model;
      model.onStatus = (st, message) => {  // the worker died and is being restarted (pocketlm.js Model)
        if (st !== "restarted") return showError(message);
        showError("");
        $("progress-text").textContent = message;
        suggest();
      };
    } catch (err) {
      if (state.loading === load) {
        showError(`Could not load ${name} (${variant}${where}): ${err.message}`);
        $("progress-text").textContent = "Loading failed.";
      }
      return err;
    }
    $("loader").classList.add("done");
    $("progress-text").textContent = `Ready: ${name} ${state.model.variant}${where && " (from disk)"}, loaded in ${(state.model.stats.load_ms / 1000).toFixed(2)} s.`;
    $("loadtime").textContent = `${(state.model.stats.load_ms / 1000).toFixed(2)} s`;
    $("mode").textContent = `${pocketlm.fileMode ? "file://" : "http"} · ${state.model.threads} thread${state.model.threads > 1 ? "s" : ""}`;
    editor.disabled = false;
    editor.placeholder = "Type SQL, e.g. SELECT name FROM";
    editor.focus();
    editor.selectionStart = editor.selectionEnd = editor.value.length;
    suggest();
    return state.model;
  }

  // An sql model folder opened from disk: listed in the model chooser (replacing an earlier copy of the
  // same name), chosen and loaded. Resolves to the model; rejects with the reason it did not load.
  async function addFolder(folder) {
    const select = $("model-select");
    pocketlm.listFolder(select, folders, folder);
    fillVariants();
    const result = await loadModel();
    if (result instanceof Error) throw result;
    return result;
  }

  $("model-select").addEventListener("change", () => { fillVariants(); loadModel(); });
  $("variant-select").addEventListener("change", loadModel);
  for (const id of ["max_new_tokens", "temperature", "top_k", "top_p"]) $(id).addEventListener("change", suggest);

  $("protocol").textContent = pocketlm.fileMode ? "file:// (single thread, assets built into the page)"
    : `http (${window.crossOriginIsolated ? "cross-origin isolated" : "not isolated: one thread"})`;
  if (params.get("model") && SITE.models[params.get("model")]) $("model-select").value = params.get("model");
  const firstSchema = Object.keys(SITE.schemas)[0];
  $("schema-select").value = firstSchema;
  schemaBox.value = SITE.schemas[firstSchema];
  const haveSqlModel = fillVariants();
  // ---- panels ----
  function showPanel(tab) {
    for (const t of document.querySelectorAll(".tabs [role=tab]")) {
      const on = t === tab;
      t.setAttribute("aria-selected", String(on));
      $(t.dataset.panel).hidden = !on;
    }
  }
  for (const t of document.querySelectorAll(".tabs [role=tab]")) t.addEventListener("click", () => showPanel(t));
  if (params.get("panel") && $(`tab-${params.get("panel")}`)) $(`tab-${params.get("panel")}`).click();

  window.pocketlmApp = { state, loadModel, suggest, addFolder };
  if (!haveSqlModel) {
    editor.disabled = true;
    $("progress-text").textContent = "No SQL model is built into this page (make site includes every folder of web/models/); " +
      "open an exported model folder to use one.";
  } else if (params.get("autoload") !== "0") loadModel();
  else $("progress-text").textContent = "Not loaded (autoload=0).";
})();
