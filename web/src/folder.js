// A model folder from the user's disk as a model source for pocketlm.load: what lets a page opened
// from file:// (which can fetch nothing) run a model that was not built into it. The files come from
// a folder picker (<input type=file webkitdirectory>: File objects with webkitRelativePath) or from a
// folder dropped onto the page (pocketlm.filesFromDrop). Nothing is read until a model loads; then each
// file is read once (File.arrayBuffer, a fresh buffer) and pocketlm.load transfers it to the worker.
//
//   const folder = await pocketlm.openFolder(input.files);      // or await pocketlm.filesFromDrop(dataTransfer)
//   folder.name, folder.task, folder.variants   // {variant: bytes} of the variants whose file is present
//   folder.default_variant, folder.missing      // [{variant, file}]: named by the manifest, not in the folder
//   const model = await pocketlm.load(folder, {variant});
//
// What is checked here is only what the page needs to list the model (manifest.json found and JSON,
// its tokenizer and at least one variant file present); the worker validates the rest with the same
// Python as the native runtime (hashes, sizes, vocabulary), as for a model served by the site.
"use strict";
(function () {
  const { LoadError } = window.pocketlm;
  // A dropped folder is walked this deep (a model folder's own hf/onnx/ is 2 levels down) and no further,
  // so dropping a big folder by mistake does not enumerate a whole disk.
  const MAX_DEPTH = 3, MAX_FILES = 5000;
  const HOW = "open an exported model folder (manifest.json, tokenizer.json, model*.onnx)";

  const basename = (path) => path.slice(path.lastIndexOf("/") + 1);
  const depthOf = (path) => path.split("/").length;

  // [{path, file}] from a FileList / File[] (path: webkitRelativePath, else the name) or from pairs.
  function pathsOf(files) {
    return Array.from(files || [], (f) => (f instanceof File ? { path: f.webkitRelativePath || f.name, file: f } : f));
  }

  function describe(entries) {
    const names = entries.slice(0, 4).map((e) => e.path).join(", ");
    return `${entries.length} file${entries.length === 1 ? "" : "s"}: ${names}${entries.length > 4 ? ", …" : ""}`;
  }

  // Why `manifest` cannot be listed (a string), or null. The worker's Python validates everything else.
  function shapeProblem(m) {
    if (!m || typeof m !== "object" || Array.isArray(m)) return "it is not a JSON object";
    if (typeof m.task !== "string") return "no task";
    if (!m.tokenizer || typeof m.tokenizer.file !== "string") return "no tokenizer.file";
    if (!m.variants || typeof m.variants !== "object" || !Object.keys(m.variants).length) return "no variants";
    const bad = Object.entries(m.variants).find(([, v]) => !v || typeof v.file !== "string");
    return bad ? `variant ${JSON.stringify(bad[0])} names no file` : null;
  }

  class ModelFolder {
    constructor({ name, place, where, text, manifest, files, variants, missing }) {
      Object.assign(this, { name, place, where, text, manifest, files, variants, missing });
      this.task = manifest.task;
      this.fromDisk = true;
      // the manifest's default if its file is here, else the first variant that is
      this.default_variant = manifest.default_variant in variants ? manifest.default_variant : Object.keys(variants)[0];
      this.defaultVariant = this.default_variant;
    }

    async manifestText() {
      return this.text;
    }

    has(file) {
      return this.files.has(file);
    }

    size(file) {
      const f = this.files.get(file);
      return f ? f.size : 0;
    }

    async read(file, onBytes) {
      const f = this.files.get(file);
      if (!f) throw new LoadError(`${file} is not in ${this.place}`);
      let buffer;
      try {
        buffer = await f.arrayBuffer();
      } catch (err) {
        throw new LoadError(`could not read ${file} from ${this.place} (${err.name}: ${err.message}); ` +
          "it may have been moved or changed since you opened it: open the folder again");
      }
      onBytes(buffer.byteLength);
      return new Uint8Array(buffer);
    }
  }

  async function openFolder(files) {
    const entries = pathsOf(files);
    if (!entries.length) throw new LoadError(`the folder you opened is empty: ${HOW}`);
    const manifests = entries.filter((e) => basename(e.path) === "manifest.json");
    if (!manifests.length) throw new LoadError(`no manifest.json in what you opened (${describe(entries)}): ${HOW}`);
    const top = Math.min(...manifests.map((e) => depthOf(e.path)));
    const tops = manifests.filter((e) => depthOf(e.path) === top);
    if (tops.length > 1) {
      throw new LoadError(`what you opened holds ${tops.length} model folders (${tops.map((e) => e.path).join(", ")}): open one of them`);
    }
    const where = tops[0].path;
    const dir = where.slice(0, where.length - "manifest.json".length);  // "" or "a/b/"
    const place = dir ? `the folder ${dir.slice(0, -1)}` : "the files you opened";
    const byName = new Map();
    for (const e of entries) if (e.path.startsWith(dir)) byName.set(e.path.slice(dir.length), e.file);
    let text;
    try {
      text = await tops[0].file.text();
    } catch (err) {
      throw new LoadError(`could not read ${where} (${err.name}: ${err.message})`);
    }
    let manifest;
    try {
      manifest = JSON.parse(text);
    } catch (err) {
      throw new LoadError(`${where} is not valid JSON (${err.message}); re-export the model`);
    }
    const problem = shapeProblem(manifest);
    if (problem) throw new LoadError(`${where} is not a pocketlm model manifest (${problem}); re-export the model`);
    const tokFile = manifest.tokenizer.file;
    if (!byName.has(tokFile)) {
      throw new LoadError(`${tokFile} (the tokenizer) is not in ${place}, although its manifest.json names it; open the complete model folder`);
    }
    const variants = {}, missing = [];
    for (const [variant, v] of Object.entries(manifest.variants)) {
      if (byName.has(v.file)) variants[variant] = byName.get(v.file).size;
      else missing.push({ variant, file: v.file });
    }
    if (!Object.keys(variants).length) {
      throw new LoadError(`none of the model files its manifest.json names is in ${place} ` +
        `(${missing.map((m) => m.file).join(", ")}); open the complete model folder`);
    }
    const name = typeof manifest.name === "string" && manifest.name ? manifest.name : basename(dir.slice(0, -1)) || "model";
    return new ModelFolder({ name, place, where, text, manifest, files: byName, variants, missing });
  }

  // [{path, file}] of what was dropped: folders are walked (DataTransferItem.webkitGetAsEntry). The
  // entries must be taken during the drop event itself (the items are emptied after it), so call this
  // synchronously from the handler; a DataTransfer without entries (made by a script) gives its files.
  function filesFromDrop(dataTransfer) {
    const roots = Array.from(dataTransfer.items || [],
      (item) => (item.kind === "file" && item.webkitGetAsEntry ? item.webkitGetAsEntry() : null)).filter(Boolean);
    const plain = pathsOf(dataTransfer.files);
    return roots.length ? walk(roots) : Promise.resolve(plain);
  }

  async function walk(roots) {
    const out = [];
    const call = (fn) => new Promise((resolve, reject) => fn(resolve, reject));
    async function visit(entry, prefix, depth) {
      if (out.length >= MAX_FILES) return;
      if (entry.isFile) {
        out.push({ path: prefix + entry.name, file: await call((ok, fail) => entry.file(ok, fail)) });
      } else if (entry.isDirectory && depth < MAX_DEPTH) {
        const reader = entry.createReader();  // readEntries answers in batches until an empty one
        for (let batch; (batch = await call((ok, fail) => reader.readEntries(ok, fail))).length;) {
          for (const child of batch) await visit(child, `${prefix}${entry.name}/`, depth + 1);
        }
      }
    }
    for (const root of roots) await visit(root, "", 0);
    return out;
  }

  // A panel's model chooser (a <select>) gains an opened folder: an option "<name> (from disk)" whose value
  // ("disk:N") keys it in the panel's `folders` map, replacing an earlier folder of the same model name
  // (re-opened after a re-export), and selected. Returns the option's value.
  let nextDisk = 1;
  function listFolder(select, folders, folder) {
    for (const [value, f] of folders) {
      if (f.name !== folder.name) continue;
      folders.delete(value);
      for (const opt of select.options) if (opt.value === value) opt.remove();
    }
    const value = `disk:${nextDisk++}`;
    folders.set(value, folder);
    select.appendChild(new Option(`${folder.name} (from disk)`, value));
    select.value = value;
    return value;
  }

  Object.assign(window.pocketlm, { openFolder, filesFromDrop, listFolder });
})();
