"""The input catalogue (issue 7 item 5), in the page and natively: each hostile or odd input gives the same
tokens and text in the page as in CPython, and the behaviour README "Limits and failure behaviour" states.

The inputs travel to the page as JSON text with \\u escapes, so a lone surrogate arrives as the lone UTF-16
code unit a JS string can hold (pocketlm replaces it by U+FFFD, as the browser's TextEncoder does).
"""

from __future__ import annotations

import json
import os

from tests.browser.conftest import REMINDERS, RELEASE, native_generate

SCHEMA = "singer(singer_id, name, country, age)\nconcert(concert_id, concert_name, stadium_id, year)"
BIG_SCHEMA = "\n".join(f"table_{i}(id, name_{i}, value_{i}, created_at)" for i in range(500))
TEXTS = {
    "empty": "",
    "100k characters": "SELECT name FROM singer WHERE " + "age > 1 AND " * 8400,
    "emoji ZWJ, RTL, combining": "SELECT '👩‍👩‍👧‍👦 שָׁלוֹם مرحبا é' FROM singer WHERE name = ",
    "NUL and controls": "SELECT \x00name\x07\x1b[0m FROM\tsinger\r\nWHERE ",
    "lone surrogates": "SELECT \ud800name FROM singer WHERE name = '\udfff",
    "comments and quotes": "-- the singers\nSELECT name /* not 'age' */ FROM singer WHERE name = 'O''Brien' AND country = \"",
}
SQL_CASES = [(SCHEMA, text, name) for name, text in TEXTS.items()] + [(BIG_SCHEMA, "SELECT name_42 FROM ", "500 tables")]
SQL_OPTIONS = {"max_new_tokens": 8, "temperature": 0}

RUN = """async ([model, cases]) => {
  const m = await pocketlm.load(model);
  const out = [];
  for (const [prompt, options] of JSON.parse(cases)) {
    try {
      const r = await m.generate(prompt, options);
      out.push({token_ids: r.token_ids, text: r.text, stop_reason: r.stop_reason,
                truncated: r.stats.truncated_tokens ?? null, json: r.json ?? null});
    } catch (e) { out.push({error: e.message}); }
  }
  m.dispose();
  return out;
}"""


def page_run(page, model_dir, cases):
    return page.evaluate(RUN, [os.path.basename(model_dir), json.dumps(cases)])


def test_sql_inputs_in_the_page_equal_native(page, server):
    page.goto(server + "index.html?autoload=0")
    cases = [(prefix, {"schema": schema, **SQL_OPTIONS}) for schema, prefix, _ in SQL_CASES]
    got = page_run(page, RELEASE, cases)
    for (schema, prefix, name), g, (_, options) in zip(SQL_CASES, got, cases):
        expected = native_generate(RELEASE, "fp32", prefix, options)
        assert "error" not in g, (name, g)
        assert g["token_ids"] == expected["token_ids"] and g["text"] == expected["text"], name
        if name in ("100k characters", "500 tables"):  # longer than the context: the oldest tokens go
            assert g["truncated"] > 0, name
        if name == "lone surrogates":
            assert "\ufffd" not in g["text"] or g["text"].count("\ufffd") == expected["text"].count("\ufffd")


def test_reminder_inputs_in_the_page_equal_native(page, server):
    page.goto(server + "index.html?autoload=0")
    cases = [(text, {}) for text in TEXTS.values()]
    got = page_run(page, REMINDERS, cases)
    for name, g, (text, options) in zip(TEXTS, got, cases):
        expected = native_generate(REMINDERS, "fp32", text, options)
        assert "error" not in g, (name, g)
        assert g["token_ids"] == expected["token_ids"] and g["json"] == expected["json"], name
        assert set(g["json"]) == {"reminder", "time", "recurrence"}  # always the schema, even for noise
    assert got[0]["json"] == {"reminder": None, "time": None, "recurrence": None}  # empty text: nulls


def test_out_of_range_sampling_options_are_refused_by_name(page, server):
    page.goto(server + "index.html?autoload=0")
    bad = [{"temperature": -1}, {"top_p": 1.5}, {"top_k": -1}, {"temperature": "NaN"}, {"max_new_tokens": 0},
           {"min_p": 2}, {"repetition_penalty": 0}, {"temprature": 1}]
    got = page_run(page, RELEASE, [("SELECT ", {"schema": SCHEMA, **o}) for o in bad])
    messages = [g.get("error", "") for g in got]
    expected = ["temperature must be >= 0", "top_p must be in (0, 1]", "top_k must be an integer >= 0",
                "temperature must be a number", "max_new_tokens must be an integer >= 1", "min_p must be in [0, 1]",
                "repetition_penalty must be > 0", "unknown options ['temprature']"]
    for message, want in zip(messages, expected):
        assert want in message, (message, want)


NAN_RUN = """async (prompt) => {
  const folder = await pocketlm.openFolder(document.getElementById('test-input').files);
  const out = {};
  try { (await pocketlm.load(folder)).dispose(); out.load = "loaded"; } catch (e) { out.load = e.message; }
  const m = await pocketlm.load(folder, {warmup: false});
  for (const [name, opts] of [["greedy", {temperature: 0}], ["sampled", {temperature: 0.8, seed: 1}]]) {
    try { await m.generate(prompt, {...opts, max_new_tokens: 4}); out[name] = "no error"; }
    catch (e) { out[name] = e.message; }
  }
  m.dispose();
  return out;
}"""


def test_nan_logits_from_a_broken_model_are_an_error_in_the_page_as_natively(page, server, text_model, tmp_path):
    """A model whose final norm gain is NaN (every logit NaN): loading it fails (the load generates once to check), and
    without the warm-up greedy (the in-graph head, whose sum is not finite, re-runs the step for the logits)
    and sampled decoding both fail with the sampler's message, the same in the page as natively, instead
    of returning a token."""
    import hashlib
    import shutil

    import numpy as np
    import onnx
    from onnx import numpy_helper

    folder = tmp_path / "broken"
    shutil.copytree(text_model, folder)
    model = onnx.load(str(folder / "model.onnx"))
    for i, t in enumerate(model.graph.initializer):
        if t.name == "norm.gain":
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(np.full_like(numpy_helper.to_array(t), np.nan), t.name))
    onnx.save(model, str(folder / "model.onnx"))
    manifest = json.loads((folder / "manifest.json").read_text())
    data = (folder / "model.onnx").read_bytes()
    manifest["variants"]["fp32"].update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
    (folder / "manifest.json").write_text(json.dumps(manifest))
    page.goto(server + "index.html?autoload=0")
    page.evaluate("""() => { const input = Object.assign(document.createElement('input'), {type: 'file', id: 'test-input'});
                             input.webkitdirectory = true; document.body.appendChild(input); }""")
    page.set_input_files("#test-input", str(folder))
    got = page.evaluate(NAN_RUN, "Once upon a time")
    for name, opts in [("greedy", {"temperature": 0}), ("sampled", {"temperature": 0.8, "seed": 1})]:
        try:
            native_generate(str(folder), "fp32", "Once upon a time", {**opts, "max_new_tokens": 4})
            native = "no error"
        except ValueError as e:
            native = str(e)
        assert "invalid logit (nan)" in native and got[name] == native, (name, got[name], native)
    assert "invalid logit (nan)" in got["load"] and "re-export it" in got["load"]
