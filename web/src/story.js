// The story panel: continue a prompt with any model whose task is "text" (prompt format text-v1),
// tokens streamed into the output as they come. Its chooser lists the site's text models and the
// ones opened from disk (disk.js calls addFolder). Runs are queued, never overlapped: Generate while
// a run is going queues the next one (the output shows one run at a time); Stop cancels the running
// run and every queued one. The sampling fields go to the runtime as typed, so an out-of-range value
// is refused with the runtime's own message (shown here), never clamped; an empty field means the
// model's default.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const SITE = window.POCKETLM_SITE;
  const select = $("story-model-select"), variantSelect = $("story-variant-select");
  const outPrompt = $("story-output-prompt"), outText = $("story-output-text");
  const folders = new Map();  // chooser value -> model folder opened from disk (pocketlm.openFolder)
  const state = { model: null, loading: null, loadingKey: null, queue: Promise.resolve(), jobs: new Set(), runs: [],
    last: null };
  const FIELDS = { temperature: "story-temperature", top_p: "story-top-p", max_new_tokens: "story-max-new-tokens" };
  const WHY = { eos: "the model ended the text", max_new_tokens: "max new tokens reached",
    context_full: "the model's context is full", stop_string: "a stop string", cancelled: "stopped" };
  const mb = (n) => (n / 1e6).toFixed(1);

  const info = (value) => folders.get(value) || SITE.models[value] || null;
  const labelOf = (value) => (folders.has(value) ? `${folders.get(value).name} (from disk)` : value);

  function showError(message) {
    $("story-error").textContent = message;
    $("story-error").hidden = !message;
  }
  function setStatus(phase, text) {
    $("story-status").dataset.state = phase;
    $("story-status").textContent = text;
  }
  function setModelStatus(phase, text) {
    $("story-model-status").dataset.state = phase;
    $("story-model-status").textContent = text;
  }
  function updateButtons() {
    $("story-generate").disabled = !info(select.value);
    $("story-stop").disabled = state.jobs.size === 0;
  }

  function fillVariants() {
    const m = info(select.value);
    variantSelect.innerHTML = "";
    if (!m) return;
    for (const [name, bytes] of Object.entries(m.variants)) {
      const default_ = name === m.default_variant ? " (default)" : "";
      variantSelect.appendChild(new Option(`${name}, ${mb(bytes)} MB${default_}`, name));
    }
    variantSelect.value = m.default_variant;
  }

  // The model for the chooser's current choice: the one loaded, the one loading, or a new load
  // (which ends the previous model's worker). Rejects when it cannot load; the panel shows why.
  function ensureModel() {
    const value = select.value, variant = variantSelect.value, key = `${value}\n${variant}`;
    if (!info(value)) return Promise.reject(new Error("no text model is chosen: open a model folder from disk"));
    if (state.loading && state.loadingKey === key) return state.loading;
    if (state.model) state.model.dispose();
    state.model = null;
    const label = labelOf(value);
    setModelStatus("loading", `Loading ${label}…`);
    const load = pocketlm.load(folders.get(value) || value, {
      variant,
      onProgress: (p) => setModelStatus("loading", `Loading ${label}: ${p.phase} ${p.message} (${p.overall.percent.toFixed(0)}%)`),
    });
    state.loading = load;
    state.loadingKey = key;
    load.then((model) => {
      if (state.loading !== load) return model.dispose();  // another model was chosen meanwhile
      state.model = model;
      setModelStatus("ready", `Ready: ${label} ${model.variant}, loaded in ${(model.stats.load_ms / 1000).toFixed(2)} s.`);
    }, (err) => {
      if (state.loading !== load) return;
      state.loading = state.loadingKey = null;
      setModelStatus("failed", "Loading failed.");
      const name = folders.has(value) ? `${folders.get(value).name} (${variant}, from disk)` : `${value} (${variant})`;
      showError(`Could not load ${name}: ${err.message}`);
    });
    return load;
  }

  // A field as typed: empty -> the model's default; a number -> that number; anything else is passed
  // as text so that the runtime names the option in its error.
  function settings() {
    const options = {};
    for (const [option, id] of Object.entries(FIELDS)) {
      const raw = $(id).value.trim();
      if (raw !== "") options[option] = Number.isFinite(Number(raw)) ? Number(raw) : raw;
    }
    return options;
  }

  function generate() {
    const job = { prompt: $("story-prompt").value, options: settings(), controller: new AbortController() };
    const ahead = state.jobs.size;
    state.jobs.add(job);
    updateButtons();
    if (ahead) setStatus("queued", `Queued: starts when the ${ahead === 1 ? "current run ends" : `${ahead} runs before it end`}.`);
    const run = state.queue.then(() => runJob(job));
    state.queue = run;
    return run;
  }

  function stop() {
    for (const job of state.jobs) job.controller.abort();
  }

  async function runJob(job) {
    const signal = job.controller.signal;
    try {
      if (signal.aborted) return skipped();
      showError("");
      if (!state.model) setStatus("running", "Waiting for the model to load…");
      let model;
      try {
        model = await ensureModel();
      } catch (err) {  // ensureModel's own handler has shown why, unless nothing could be loaded at all
        if ($("story-error").hidden) showError(err.message);
        return setStatus("error", "Not generated: the model did not load.");
      }
      if (signal.aborted) return skipped();
      const record = { prompt: job.prompt, options: job.options, started: performance.now(), tokens: 0 };
      state.runs.push(record);
      // the previous output stays until this run produces something (a refused option keeps it)
      const streamed = document.createTextNode("");
      const begin = () => {
        if (streamed.parentNode) return;
        outPrompt.textContent = job.prompt;
        outText.textContent = "";
        outText.appendChild(streamed);
      };
      setStatus("running", `Generating…${queuedNote()}`);
      let firstAt = null, shownAt = 0;
      const out = await model.generate(job.prompt, {
        ...job.options, signal,
        onToken: (id, delta) => {
          begin();
          record.tokens++;
          const now = performance.now();
          if (firstAt === null) firstAt = now;
          if (delta) streamed.appendData(delta);
          if (now - shownAt > 100 && record.tokens > 1) {  // the status line at most ten times a second
            shownAt = now;
            const rate = ((record.tokens - 1) / ((now - firstAt) / 1000)).toFixed(0);
            setStatus("running", `Generating… ${record.tokens} tokens, ${rate} tok/s${queuedNote()}`);
          }
        },
      });
      record.ended = performance.now();
      record.out = out;
      begin();
      outText.textContent = out.text;  // the final text (equal to the streamed deltas, joined)
      state.last = out;
      setStatus(out.stop_reason === "cancelled" ? "cancelled" : "done", summary(out));
    } catch (err) {
      // stopped by choosing another model: its worker ended under the run ("the model was disposed")
      if (signal.aborted) return setStatus("cancelled", "Stopped.");
      setStatus("error", "Not generated: see the message above.");
      showError(err.message);
    } finally {
      state.jobs.delete(job);
      updateButtons();
    }
  }

  const queuedNote = () => (state.jobs.size > 1 ? ` (${state.jobs.size - 1} more queued)` : "");

  // A queued run stopped before it started: the status keeps the stopped run's summary, if there was one.
  function skipped() {
    const phase = $("story-status").dataset.state;
    if (phase === "queued" || phase === "running") setStatus("cancelled", "Stopped before it started.");
  }

  function summary(out) {
    const n = out.token_ids.length, s = out.stats;
    const rate = n > 1 && s.tokens_per_s ? `, ${s.tokens_per_s.toFixed(0)} tok/s` : "";
    const time = s.latency_ms !== undefined ? ` in ${(s.latency_ms / 1000).toFixed(2)} s` : "";
    const cut = s.truncated_tokens ? ` The prompt's first ${s.truncated_tokens} tokens were left out (context).` : "";
    return `${n} token${n === 1 ? "" : "s"}${time}${rate}. Why it stopped: ${WHY[out.stop_reason] || out.stop_reason}.${cut}`;
  }

  function chooseModel() {
    stop();
    fillVariants();
    updateButtons();
    ensureModel().catch(() => {});  // the panel shows why
  }

  // A model folder opened from disk (disk.js): listed in the chooser (replacing an earlier copy of the
  // same name), chosen and loaded. Resolves to the model; rejects with the reason it cannot load.
  function addFolder(folder) {
    pocketlm.listFolder(select, folders, folder);
    stop();
    fillVariants();
    updateButtons();
    return ensureModel();
  }

  select.addEventListener("change", chooseModel);
  variantSelect.addEventListener("change", () => { stop(); ensureModel().catch(() => {}); });
  $("story-generate").addEventListener("click", () => { generate(); });
  $("story-stop").addEventListener("click", stop);
  $("story-prompt").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
      e.preventDefault();
      if (info(select.value)) generate();
    }
  });
  // The model loads when the panel is first shown (or at once if the page opens on it: ?panel=story).
  const opened = () => { if (info(select.value) && !state.loading) ensureModel().catch(() => {}); };
  $("tab-story").addEventListener("click", opened);

  fillVariants();
  updateButtons();
  if (!info(select.value)) {
    setModelStatus("none", "No text model is built into this page: open an exported model folder (above), or drop one on the page.");
  } else if (!$("panel-story").hidden) opened();
  window.pocketlmStory = { state, generate, stop, ensureModel, addFolder, settings };
})();
