"""The reminders panel and `generate` for reminder-extract in the page: the JSON equals the native
`python -m pocketlm extract` output, token for token, the second look at the marks (copy_search)
included; "Add to my list" keeps items in localStorage."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODEL = os.path.join(ROOT, "web", "models", "reminder-extract")
DOCS = os.path.join(ROOT, "docs")
UTTERANCES = ["remind me at 7pm to walk the dog", "remind me to take my meds every morning at 8",
              "Set up a reminder to bring Dad to doctors on Wednesday", "what's the weather like", "",
              'remind me to tell Zoë "happy birthday" 🎂 tomorrow', "Remind me to let the dog in in 15 minutes"]
VARIANTS = ["fp32", "int8"]


def native(variant: str, text: str) -> dict:
    proc = subprocess.run([sys.executable, "-m", "pocketlm", "extract", "--model", MODEL, "--variant", variant,
                           "--json", text], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": os.path.join(ROOT, "pysrc")})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def native_outputs():
    cases = [(v, t) for v in VARIANTS for t in UTTERANCES]
    with ThreadPoolExecutor(4) as pool:
        return dict(zip(cases, pool.map(lambda c: native(*c), cases)))


EXTRACT_ALL = """async ([variants, texts]) => {
  const rows = [];
  for (const variant of variants) {
    const model = await pocketlm.load("reminder-extract", {variant});
    for (const text of texts) {
      const out = await model.generate(text);
      rows.push({variant: model.variant, text, token_ids: out.token_ids, json_text: out.text, json: out.json,
                 tried: out.stats.copies_tried});
    }
    model.dispose();
  }
  return rows;
}"""


def test_page_json_equals_the_native_extract(page, page_url, native_outputs):
    page.goto(page_url + "?autoload=0")
    rows = page.evaluate(EXTRACT_ALL, [VARIANTS, UTTERANCES])
    assert [(r["variant"], r["text"]) for r in rows] == list(native_outputs)
    for r in rows:
        expected = native_outputs[(r["variant"], r["text"])]
        assert r["token_ids"] == expected["token_ids"], (r["variant"], r["text"])
        assert r["json_text"] == expected["text"] and r["json"] == json.loads(expected["text"])
        assert r["tried"] == expected["stats"]["copies_tried"]
    assert max(r["tried"] for r in rows) > 1  # the search ran in the page too


def test_unconstrained_and_custom_schema_options(page, server):
    page.goto(server + "index.html?autoload=0")
    r = page.evaluate("""async () => {
      const model = await pocketlm.load("reminder-extract", {variant: "int8"});
      const schema = {type: "object", properties: {time: {type: ["string", "null"]}}, required: ["time"]};
      const custom = await model.generate("remind me at 7pm to walk the dog", {response_format: schema});
      const free = await model.generate("remind me at 7pm to walk the dog", {response_format: "none"});
      let bad;
      try { await model.generate("x", {response_format: {type: "array"}}); } catch (e) { bad = e.message; }
      model.dispose();
      return {custom: custom.text, free: free.text, bad};
    }""")
    assert list(json.loads(r["custom"])) == ["time"]
    assert r["free"].startswith("{")
    assert "type" in r["bad"] and "object" in r["bad"]


def test_panel_shows_the_json_and_keeps_the_list(page, server, native_outputs):
    page.goto(server + "index.html?autoload=0&panel=reminders")
    page.evaluate("localStorage.clear()")
    text = "remind me at 7pm to walk the dog"
    page.fill("#rem-input", text)
    page.wait_for_function("(t) => document.getElementById('rem-json').dataset.for === t", arg=text, timeout=60_000)
    shown = json.loads(page.inner_text("#rem-json"))
    variant = page.evaluate("window.pocketlmReminders.state.model.variant")
    assert shown == json.loads(native(variant, text)["text"])
    page.click("#rem-add")
    assert page.inner_text("#rem-count") == "1"
    page.fill("#rem-input", "remind me to take my meds every morning at 8")
    page.wait_for_function("() => document.getElementById('rem-json').dataset.for.includes('meds')", timeout=60_000)
    page.screenshot(path=os.path.join(DOCS, "page-reminders.png"))
    page.reload()
    assert page.inner_text("#rem-count") == "1"  # kept in localStorage
    saved = page.evaluate("JSON.parse(localStorage.getItem('pocketlm.reminders'))")
    assert saved[0]["reminder"] == "walk the dog" and saved[0]["text"] == text
