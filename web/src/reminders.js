// The reminders panel: type a request, see the JSON the reminder-extract model produces (decoding is
// constrained to the schema, values copied from the text), and keep reminders in localStorage.
// Like the SQL editor, each keystroke cancels the extraction in flight; the JSON shown is always
// the one computed for the exact text in the box. The model loads the first time the panel opens.
// The chooser lists the site's reminders-task models and the ones opened from disk (disk.js).
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const SITE = window.POCKETLM_SITE;
  const STORE = "pocketlm.reminders";
  const input = $("rem-input"), select = $("rem-model-select");
  const folders = new Map();  // chooser value -> a reminders model folder opened from disk
  const state = { model: null, loading: null, controller: null, seq: 0, result: null, resultFor: null };
  const chosen = () => folders.get(select.value) || (SITE.models[select.value] ? select.value : null);
  const labelOf = (value) => (folders.has(value) ? `${folders.get(value).name} (from disk)` : value);

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
    const source = chosen(), label = labelOf(select.value);
    if (!source) throw new Error("no reminders model is built into this page: open an exported reminders model folder");
    if (!state.loading) {
      $("rem-status").textContent = `Loading ${label}…`;
      const load = pocketlm.load(source, {
        onProgress: (p) => { $("rem-status").textContent = `Loading: ${p.phase} ${p.message} (${p.overall.percent.toFixed(0)}%)`; },
      }).then((model) => {
        if (state.loading !== load) {  // another model was chosen meanwhile
          model.dispose();
          throw new Error(`${label} was replaced by another model`);
        }
        state.model = model;
        $("rem-status").textContent = `Ready: ${label} ${model.variant}, loaded in ${(model.stats.load_ms / 1000).toFixed(2)} s.`;
        return model;
      }, (err) => {
        if (state.loading === load) {
          state.loading = null;
          $("rem-status").textContent = "Loading failed.";
        }
        throw err;
      });
      state.loading = load;
    }
    return state.loading;
  }

  // Another model chosen: the old one's worker ends, the text in the box is extracted again.
  function chooseModel() {
    if (state.controller) state.controller.abort();
    state.seq++;  // an extraction waiting for the old model is stale
    if (state.model) state.model.dispose();
    state.model = state.loading = null;
    showError("");
    return ensureModel().then((model) => { extract(); return model; }, (err) => {
      showError(`Could not load ${labelOf(select.value)}: ${err.message}`);
      throw err;
    });
  }

  // A reminders model folder opened from disk: listed in the chooser (replacing an earlier copy of the
  // same name), chosen and loaded. Resolves to the model; rejects with the reason it did not load.
  function addFolder(folder) {
    pocketlm.listFolder(select, folders, folder);
    return chooseModel();
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
  select.addEventListener("change", () => { chooseModel().catch(() => {}); });  // chooseModel shows why
  const opened = () => { if (chosen()) ensureModel().catch((err) => showError(err.message)); };
  $("tab-reminders").addEventListener("click", opened);
  renderList();
  if (!chosen()) {
    $("rem-status").textContent = "No reminders model is built into this page: open an exported model folder (above).";
  } else if (!$("panel-reminders").hidden) opened();  // the page opened on this panel (?panel=reminders)
  window.pocketlmReminders = { state, extract, ensureModel, addFolder };
})();
