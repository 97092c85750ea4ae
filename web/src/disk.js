// Opening a model folder from disk: the "Open a model folder…" picker (<input type=file webkitdirectory>)
// or a folder dropped anywhere on the page. The folder becomes a model source (pocketlm.openFolder,
// folder.js) and goes to the panel of its task, which lists it in its model chooser and loads it:
// text -> Story, sql -> SQL autocomplete, reminders -> Reminders. On file://, where the page can fetch
// nothing, this is the way to run a model that was not built into the page.
// What happened is said in #folder-status (data-state: reading, loading, loaded, failed) and #folder-error.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const PANELS = {  // task -> [tab, title, the panel's API (it has addFolder)]
    text: ["story", "Story", () => window.pocketlmStory],
    sql: ["sql", "SQL autocomplete", () => window.pocketlmApp],
    reminders: ["reminders", "Reminders", () => window.pocketlmReminders],
  };
  let seq = 0;  // the latest folder opened wins: an earlier one still loading reports nothing

  function setStatus(phase, text) {
    $("folder-status").dataset.state = phase;
    $("folder-status").textContent = text;
  }
  function showError(message) {
    $("folder-error").textContent = message;
    $("folder-error").hidden = !message;
  }

  async function open(entries) {
    const mine = ++seq;
    const current = () => mine === seq;
    showError("");
    setStatus("reading", "Reading the folder…");
    let folder;
    try {
      folder = await pocketlm.openFolder(await entries);
    } catch (err) {
      if (current()) fail(`Could not open the model folder: ${err.message}`);
      return;
    }
    if (!current()) return;
    const panel = PANELS[folder.task];
    const api = panel && panel[2]();
    if (!api || !api.addFolder) {
      return fail(`Could not open ${folder.name}: its manifest.json says task ${JSON.stringify(folder.task)}, and this page ` +
        `has panels for ${Object.keys(PANELS).join(", ")} models only`);
    }
    const [tab, title] = panel;
    const missing = folder.missing.length
      ? ` Not in the folder, so not offered: ${folder.missing.map((m) => `${m.file} (${m.variant})`).join(", ")}.` : "";
    setStatus("loading", `Loading ${folder.name} (a ${folder.task} model) from disk into the ${title} panel…`);
    $(`tab-${tab}`).click();
    try {
      const model = await api.addFolder(folder);
      if (current() && model) {
        setStatus("loaded", `Loaded ${folder.name} (${folder.task}, ${model.variant}) from disk into the ${title} panel.${missing}`);
      }
    } catch (err) {
      if (current()) fail(`Could not load ${folder.name} from disk: ${err.message}`);
    }
  }

  function fail(message) {
    setStatus("failed", "");
    showError(message);
  }

  const input = $("folder-input");
  input.addEventListener("change", () => {
    const files = Array.from(input.files);
    input.value = "";  // so that picking the same folder again (after re-exporting it) fires again
    if (files.length) open(files);
  });

  // Dropping: only drags that carry files are ours (text dragged within the page is left alone); the
  // page's default for a dropped file would be to navigate to it, so it is always prevented.
  const carriesFiles = (e) => e.dataTransfer && Array.from(e.dataTransfer.types || []).includes("Files");
  let over = 0;  // dragenter/dragleave fire for every child element crossed: count them
  const showDrop = (on) => document.body.classList.toggle("dropping", on);
  window.addEventListener("dragenter", (e) => {
    if (!carriesFiles(e)) return;
    e.preventDefault();
    over++;
    showDrop(true);
  });
  window.addEventListener("dragleave", (e) => {
    if (!carriesFiles(e)) return;
    if (--over <= 0) {
      over = 0;
      showDrop(false);
    }
  });
  window.addEventListener("dragover", (e) => {
    if (!carriesFiles(e)) return;
    e.preventDefault();
    e.dataTransfer.dropEffect = "copy";
  });
  window.addEventListener("drop", (e) => {
    if (!carriesFiles(e)) return;
    e.preventDefault();
    over = 0;
    showDrop(false);
    open(pocketlm.filesFromDrop(e.dataTransfer));  // synchronously: the drop's items live only during the event
  });

  window.pocketlmDisk = { open };
})();
