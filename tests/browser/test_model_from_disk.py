"""A model folder opened from disk (web/src/folder.js, disk.js): picked with the folder input or dropped
on the page, read in the page and handed to the worker as bytes, then listed and loaded in the panel of
its task. It must work on file:// (where the page can fetch nothing) as over http, give the native
greedy tokens, and say what is wrong with a bad folder instead of hanging.

The test site (conftest.site_dir) carries no text model: the story panel's only model is the one opened.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from tests.browser.conftest import RELEASE, REMINDERS, TEXT_MODEL, native_generate

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROMPT = "The lighthouse keeper"
GREEDY = {"temperature": 0, "top_p": 1, "max_new_tokens": 120}


def model_copy(src: str, dst, *, keep=None, edit=None, corrupt: str | None = None) -> str:
    """A copy of a model folder: only the files in `keep` (default all), `corrupt` truncated with the
    manifest updated to match it (a self-consistent but broken export), `edit(manifest)` applied."""
    dst = str(dst)
    os.makedirs(dst)
    for name in os.listdir(src):
        if keep is None or name in keep or name == "manifest.json":
            shutil.copy(os.path.join(src, name), dst)
    path = os.path.join(dst, "manifest.json")
    with open(path, encoding="utf-8") as f:
        manifest = json.load(f)
    if corrupt:
        with open(os.path.join(dst, corrupt), "rb") as f:
            data = f.read()[: os.path.getsize(os.path.join(dst, corrupt)) // 2]
        with open(os.path.join(dst, corrupt), "wb") as f:
            f.write(data)
        for v in manifest["variants"].values():
            if v["file"] == corrupt:
                v.update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
    if edit:
        edit(manifest)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2)
    return dst


def open_folder(page, folder, timeout=60_000):
    """Pick `folder` with the page's folder input; resolves when the page says it loaded or failed."""
    page.set_input_files("#folder-input", folder)
    page.wait_for_selector("#folder-status[data-state=loaded], #folder-status[data-state=failed]", state="attached",
                           timeout=timeout)
    return page.get_attribute("#folder-status", "data-state")


def story_greedy(page, prompt=PROMPT):
    page.fill("#story-prompt", prompt)
    page.fill("#story-temperature", str(GREEDY["temperature"]))
    page.fill("#story-top-p", str(GREEDY["top_p"]))
    page.fill("#story-max-new-tokens", str(GREEDY["max_new_tokens"]))
    page.click("#story-generate")
    page.evaluate("() => window.pocketlmStory.state.queue.then(() => null)")
    assert page.get_attribute("#story-status", "data-state") == "done", page.inner_text("#story-error")
    return page.evaluate("window.pocketlmStory.state.last")


def option_labels(page, selector):
    return page.eval_on_selector_all(f"{selector} option", "els => els.map((e) => e.textContent)")


def test_a_text_model_folder_opens_in_the_story_panel_and_matches_native(page, page_url, text_model, tmp_path):
    folder = model_copy(text_model, tmp_path / "my stories")  # the folder's name is not the model's
    page.goto(page_url + "?autoload=0")
    assert option_labels(page, "#story-model-select") == []
    assert page.get_attribute("#story-model-status", "data-state") == "none"
    assert open_folder(page, folder) == "loaded", page.inner_text("#folder-error")
    assert page.inner_text("#folder-status") == f"Loaded {TEXT_MODEL} (text, fp32) from disk into the Story panel."
    assert page.get_attribute("#tab-story", "aria-selected") == "true" and page.is_visible("#panel-story")
    assert option_labels(page, "#story-model-select") == [f"{TEXT_MODEL} (from disk)"]
    out = story_greedy(page)
    expected = native_generate(text_model, "fp32", PROMPT, GREEDY)
    assert out["token_ids"] == expected["token_ids"] and out["text"] == expected["text"]
    # opened again (say, after re-exporting it): one entry, not two
    assert open_folder(page, folder) == "loaded"
    assert option_labels(page, "#story-model-select") == [f"{TEXT_MODEL} (from disk)"]
    assert not page.errors


# The API under the panel: pocketlm.openFolder on an input's files, pocketlm.load(folder, {variant}).
API = """async (variant) => {
  const folder = await pocketlm.openFolder(document.getElementById('test-input').files);
  const summary = {name: folder.name, task: folder.task, variants: Object.keys(folder.variants),
                   default_variant: folder.default_variant, missing: folder.missing};
  let refused = null;
  try { await pocketlm.load(folder, {variant: "q4"}); } catch (e) { refused = e.message; }
  const model = await pocketlm.load(folder, {variant});
  const out = await model.generate(%s, %s);
  model.dispose();
  return {summary, refused, variant: model.variant, token_ids: out.token_ids, load_ms: model.stats.load_ms};
}""" % (json.dumps(PROMPT), json.dumps(GREEDY))

ADD_INPUT = """() => { const input = Object.assign(document.createElement('input'), {type: 'file', id: 'test-input'});
  input.webkitdirectory = true; document.body.appendChild(input); }"""


def test_the_api_loads_a_chosen_variant_and_names_a_missing_file(page, server, text_model, tmp_path):
    folder = model_copy(text_model, tmp_path / "no-q4", keep={"tokenizer.json", "model.onnx", "model.int8.onnx"})
    page.goto(server + "index.html?autoload=0")
    page.evaluate(ADD_INPUT)
    page.set_input_files("#test-input", folder)
    r = page.evaluate(API, "int8")
    assert r["summary"] == {"name": TEXT_MODEL, "task": "text", "variants": ["fp32", "int8"],
                            "default_variant": "fp32", "missing": [{"variant": "q4", "file": "model.q4.onnx"}]}
    assert r["refused"] == ("model.q4.onnx (variant q4) is not in the folder no-q4, although its manifest.json "
                            "names it; open the complete model folder")
    assert r["variant"] == "int8"
    assert r["token_ids"] == native_generate(text_model, "int8", PROMPT, GREEDY)["token_ids"]


def test_a_dropped_folder_opens_like_a_picked_one(page, page_url, text_model, tmp_path):
    """A script cannot make a real drag of a folder: the drop carries the folder's files (as a drop of
    selected files does) and goes through the page's drop handler."""
    folder = model_copy(text_model, tmp_path / "dropped")
    page.goto(page_url + "?autoload=0")
    page.evaluate(ADD_INPUT)
    page.set_input_files("#test-input", folder)
    prevented = page.evaluate("""() => {
      const dt = new DataTransfer();
      for (const f of document.getElementById('test-input').files) dt.items.add(f);
      const drop = new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true});
      document.getElementById('story-prompt').dispatchEvent(drop);
      return drop.defaultPrevented;
    }""")
    assert prevented  # the browser does not navigate to the dropped file
    page.wait_for_selector("#folder-status[data-state=loaded], #folder-status[data-state=failed]", state="attached",
                           timeout=60_000)
    assert page.get_attribute("#folder-status", "data-state") == "loaded", page.inner_text("#folder-error")
    out = story_greedy(page)
    assert out["token_ids"] == native_generate(text_model, "fp32", PROMPT, GREEDY)["token_ids"]


def native_extract(model_dir, variant, text):
    proc = subprocess.run([sys.executable, "-m", "pocketlm", "extract", "--model", model_dir, "--variant", variant,
                           "--json", text], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": os.path.join(ROOT, "pysrc")})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_sql_and_reminders_folders_go_to_their_own_panels(page, server, tmp_path):
    keep = {"tokenizer.json", "model.int8.onnx"}
    page.goto(server + "index.html?autoload=0")
    sql = model_copy(RELEASE, tmp_path / "sql", keep=keep, edit=lambda m: m.update(name="my-sql"))
    assert open_folder(page, sql) == "loaded", page.inner_text("#folder-error")
    status = page.inner_text("#folder-status")
    assert status == ("Loaded my-sql (sql, int8) from disk into the SQL autocomplete panel. "
                      "Not in the folder, so not offered: model.onnx (fp32), model.q4.onnx (q4)."), status
    assert page.get_attribute("#tab-sql", "aria-selected") == "true"
    assert option_labels(page, "#model-select")[-1] == "my-sql (from disk)"
    assert [o.split(",")[0] for o in option_labels(page, "#variant-select")] == ["int8"]
    page.click("#editor")
    page.keyboard.type("SELECT count(*) FROM sin")
    page.wait_for_function("(t) => { const g = document.getElementById('ghost'); return g.dataset.final === '1' && "
                           "g.dataset.for === t; }", arg="SELECT count(*) FROM sin", timeout=20_000)
    assert page.inner_text("#ghost-suggestion").startswith("ger")

    rem = model_copy(REMINDERS, tmp_path / "rem", keep=keep)
    assert open_folder(page, rem) == "loaded", page.inner_text("#folder-error")
    assert page.get_attribute("#tab-reminders", "aria-selected") == "true"
    assert page.input_value("#rem-model-select").startswith("disk:")
    text = "remind me at 7pm to walk the dog"
    page.fill("#rem-input", text)
    page.wait_for_function("(t) => document.getElementById('rem-json').dataset.for === t", arg=text, timeout=60_000)
    expected = native_extract(REMINDERS, "int8", text)  # the same int8 file as the copy's
    assert json.loads(page.inner_text("#rem-json")) == json.loads(expected["text"])
    assert not page.errors


def remove(folder, *names):
    for name in names:
        os.remove(os.path.join(folder, name))
    return folder


def not_json(folder, tmp_path):
    with open(os.path.join(folder, "manifest.json"), "w", encoding="utf-8") as f:
        f.write("{")
    return folder


def two_models(folder, tmp_path):
    parent = tmp_path / "two"
    model_copy(folder, parent / "a")
    model_copy(folder, parent / "b")
    return str(parent)


ONNX = ["model.onnx", "model.int8.onnx", "model.q4.onnx"]
# A bad folder (made from a good copy named "case"), and the start of what the page must say. Found before
# any runtime starts, so at once.
OPEN_ERRORS = {
    "no-manifest": (lambda m, t: remove(m, "manifest.json"),
                    "Could not open the model folder: no manifest.json in what you opened (4 files: "),
    "not-json": (not_json, "Could not open the model folder: case/manifest.json is not valid JSON ("),
    "no-tokenizer": (lambda m, t: remove(m, "tokenizer.json"),
                     "Could not open the model folder: tokenizer.json (the tokenizer) is not in the folder case, "
                     "although its manifest.json names it; open the complete model folder"),
    "no-onnx": (lambda m, t: remove(m, *ONNX),
                "Could not open the model folder: none of the model files its manifest.json names is in the folder "
                "case (model.onnx, model.int8.onnx, model.q4.onnx); open the complete model folder"),
    "two-models": (two_models, "Could not open the model folder: what you opened holds 2 model folders "
                               "(two/a/manifest.json, two/b/manifest.json): open one of them"),
}


@pytest.mark.parametrize("case", sorted(OPEN_ERRORS))
def test_a_bad_folder_says_what_is_wrong_at_once(page, site_dir, text_model, tmp_path, case):
    make, message = OPEN_ERRORS[case]
    folder = make(model_copy(text_model, tmp_path / "case"), tmp_path)
    page.goto("file://" + os.path.join(site_dir, "index.html") + "?autoload=0")
    t0 = time.monotonic()
    assert open_folder(page, folder, timeout=10_000) == "failed"
    assert time.monotonic() - t0 < 5
    assert page.inner_text("#folder-error").startswith(message), page.inner_text("#folder-error")
    assert option_labels(page, "#story-model-select") == []


# Found when the model loads (the worker: onnxruntime, or the manifest's hashes checked by pocketlm's Python).
LOAD_ERRORS = {
    "corrupt-onnx": (dict(corrupt="model.onnx"),
                     f"Could not load {TEXT_MODEL} from disk: model.onnx could not be loaded by onnxruntime ("),
    "wrong-hash": (dict(edit=lambda m: m["variants"]["fp32"].update(sha256="0123456789abcdef" * 4)),
                   f"Could not load {TEXT_MODEL} from disk: variant 'fp32' file 'model.onnx' has sha256 "),
}


@pytest.mark.parametrize("case", sorted(LOAD_ERRORS))
def test_a_broken_model_file_is_an_error_not_a_hang(page, page_url, text_model, tmp_path, case):
    kwargs, message = LOAD_ERRORS[case]
    folder = model_copy(text_model, tmp_path / case, **kwargs)
    page.goto(page_url + "?autoload=0")
    t0 = time.monotonic()
    assert open_folder(page, folder, timeout=30_000) == "failed"
    assert time.monotonic() - t0 < 20  # loading the healthy runtime takes a few seconds here
    assert page.inner_text("#folder-error").startswith(message), page.inner_text("#folder-error")
    assert page.inner_text("#story-error").startswith(f"Could not load {TEXT_MODEL} (fp32, from disk): ")
    assert page.get_attribute("#story-model-status", "data-state") == "failed"
    assert not page.errors
