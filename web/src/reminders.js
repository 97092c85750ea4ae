// The reminders panel: type a request, see the JSON the reminder-extract model produces (decoding is
// constrained to the schema, values copied from the text), and keep reminders in localStorage.
// Like the SQL editor, each keystroke cancels the extraction in flight; the JSON shown is always
// the one computed for the exact text in the box. The model loads the first time the panel opens.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const SITE = window.POCKETLM_SITE;
  const NAME = "reminder-extract";
  const STORE = "pocketlm.reminders";
  if (!SITE.models[NAME]) return;  // the site was built without this model
  const input = $("rem-input");
  const state = { model: null, loading: null, controller: null, seq: 0, result: null, resultFor: null };

  function showError(message) {
    $("rem-error").textContent = message;
    $("rem-error").hidden = !message;
  }

  // ---- the list, in localStorage (the page still works if storage is unavailable) ----
  function readList() {
    try {
      return JSON.parse(localStorage.getItem(STORE) || "[]");
    } catch (err) {
      return [];
    }
  }
  function writeList(list) {
    try {
      localStorage.setItem(STORE, JSON.stringify(list));
      return true;
    } catch (err) {
      showError(`Could not save the list in this browser's storage (${err.message}); it will last until you reload.`);
      return false;
    }
  }
  let memoryList = readList();
  function renderList() {
    const ul = $("rem-list");
    ul.innerHTML = "";
    memoryList.forEach((item, i) => {
      const li = document.createElement("li");
      const what = document.createElement("span");
      what.className = "what";
      what.textContent = item.reminder ?? "(no reminder text)";
      const when = document.createElement("span");
      when.className = "when";
      when.textContent = [item.time, item.recurrence].filter(Boolean).join(", ") || "no time given";
      const del = document.createElement("button");
      del.textContent = "✕";
      del.title = "remove";
      del.addEventListener("click", () => { memoryList.splice(i, 1); writeList(memoryList); renderList(); });
      li.append(what, when, del);
      ul.appendChild(li);
    });
    $("rem-count").textContent = String(memoryList.length);
  }

  function render() {
    const fresh = state.resultFor === input.value && state.result;
    $("rem-json").textContent = fresh ? JSON.stringify(state.result.json, null, 2) : "";
    $("rem-json").dataset.for = fresh ? state.resultFor : "";
    $("rem-add").disabled = !(fresh && state.result.json && state.result.json.reminder);
  }

  async function ensureModel() {
    if (state.model) return state.model;
    if (!state.loading) {
      $("rem-status").textContent = "Loading the reminder model…";
      state.loading = pocketlm.load(NAME, {
        onProgress: (p) => { $("rem-status").textContent = `Loading: ${p.phase} ${p.message} (${p.overall.percent.toFixed(0)}%)`; },
      }).then((model) => {
        state.model = model;
        $("rem-status").textContent = `Ready: ${NAME} ${model.variant}, loaded in ${(model.stats.load_ms / 1000).toFixed(2)} s.`;
        return model;
      }, (err) => {
        state.loading = null;
        $("rem-status").textContent = "Loading failed.";
        throw err;
      });
    }
    return state.loading;
  }

  async function extract() {
    if (state.controller) state.controller.abort();
    state.result = null;
    render();
    const text = input.value, seq = ++state.seq;
    if (!text.trim()) return;
    const controller = new AbortController();
    state.controller = controller;
    try {
      const model = await ensureModel();
      if (seq !== state.seq) return;
      const out = await model.generate(text, { signal: controller.signal });
      if (seq !== state.seq || out.stop_reason === "cancelled") return;
      state.result = out;
      state.resultFor = text;
      showError("");
      $("rem-latency").textContent = `${out.stats.latency_ms.toFixed(0)} ms`;
      render();
    } catch (err) {
      if (seq === state.seq) showError(err.message);
    }
  }

  input.addEventListener("input", extract);
  $("rem-add").addEventListener("click", () => {
    if (!state.result || state.resultFor !== input.value || !state.result.json) return;
    memoryList.push({ ...state.result.json, text: input.value, added: new Date().toISOString() });
    writeList(memoryList);
    renderList();
    input.value = "";
    extract();
  });
  $("tab-reminders").addEventListener("click", () => { ensureModel().catch((err) => showError(err.message)); });
  renderList();
  window.pocketlmReminders = { state, extract, ensureModel };
})();
