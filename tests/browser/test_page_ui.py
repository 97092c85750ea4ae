"""The SQL page as a user meets it: suggestions while typing, Tab, stale requests, no network
beyond the page's own origin, and clear errors for broken models or a runtime that fails to start.
Screenshots of the page go to docs/ (the README shows them)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from urllib.parse import urlparse

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RELEASE = os.path.join(ROOT, "web", "models", "sql-autocomplete")
DOCS = os.path.join(ROOT, "docs")


def native_text(prefix: str, schema_file: str, variant: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "pocketlm", "complete", "--model", RELEASE, "--variant", variant,
         "--schema", schema_file, "--json", prefix],
        capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": os.path.join(ROOT, "pysrc")},
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["text"]


def open_ready(page, url):
    page.goto(url)
    page.wait_for_selector("#editor:not([disabled])", timeout=60_000)
    return page.evaluate("window.pocketlmApp.state.model.variant")


def suggestion_for(page, text):
    """Wait for the final suggestion drawn for exactly `text`; return it."""
    page.wait_for_function("(t) => { const g = document.getElementById('ghost');"
                           " return g.dataset.final === '1' && g.dataset.for === t; }", arg=text, timeout=20_000)
    return page.inner_text("#ghost-suggestion")


# Records every state the ghost layer is drawn in, with the editor's text at that moment.
WATCH = """() => {
  window.ghostLog = [];
  const g = document.getElementById('ghost'), ed = document.getElementById('editor');
  new MutationObserver(() => window.ghostLog.push({for: g.dataset.for, text: ed.value,
      shown: document.getElementById('ghost-suggestion').textContent}))
    .observe(g, {subtree: true, childList: true, characterData: true, attributes: true});
}"""


def test_typing_shows_a_suggestion_and_tab_accepts_it(page, page_url, tmp_path):
    variant = open_ready(page, page_url)
    page.select_option("#schema-select", "concerts")
    schema_file = tmp_path / "schema.txt"
    schema_file.write_text(page.input_value("#schema"))
    page.click("#editor")
    page.keyboard.type("SELECT count(*) FROM sin")
    shown = suggestion_for(page, "SELECT count(*) FROM sin")
    assert shown == native_text("SELECT count(*) FROM sin", str(schema_file), variant)
    assert shown.startswith("ger")
    mode = "file" if page_url.startswith("file:") else "http"
    page.screenshot(path=os.path.join(DOCS, f"page-{mode}.png"))
    page.keyboard.press("Tab")
    assert page.input_value("#editor") == "SELECT count(*) FROM sin" + shown
    assert page.evaluate("document.activeElement.id") == "editor"  # Tab did not move the focus
    assert "tok/s" in page.inner_text("#tps") and "ms" in page.inner_text("#latency")
    assert not page.errors


def test_a_burst_of_keystrokes_never_shows_a_stale_suggestion(page, server, tmp_path):
    variant = open_ready(page, server + "index.html")
    schema_file = tmp_path / "schema.txt"
    schema_file.write_text(page.input_value("#schema"))
    page.click("#editor")
    page.evaluate(WATCH)
    typed = "SELECT name ,  country FROM singer WHERE age  >  20 ORDER BY"
    page.keyboard.type(typed, delay=0)
    final = suggestion_for(page, typed)
    log = page.evaluate("window.ghostLog")
    drawn = [e for e in log if e["shown"]]
    assert drawn, "no suggestion was drawn"
    assert all(e["for"] == e["text"] for e in drawn), [e for e in drawn if e["for"] != e["text"]][:3]
    assert final == native_text(typed, str(schema_file), variant)


def test_schema_choice_and_pasted_schema_drive_the_suggestion(page, server):
    open_ready(page, server + "index.html")
    page.select_option("#schema-select", "custom")
    page.fill("#schema", "zebra_sighting(sighting_id, zebra_name, seen_on)")
    page.click("#editor")
    page.keyboard.type("SELECT count(*) FROM ze")
    assert suggestion_for(page, "SELECT count(*) FROM ze").startswith("bra_sighting")


def origin_of(url):
    u = urlparse(url)
    return f"{u.scheme}://{u.netloc}"


def test_no_request_leaves_the_origin_over_http(page, server):
    requests = []
    page.context.route("**/*", lambda route: (requests.append(route.request.url), route.continue_()))
    open_ready(page, server + "index.html")
    page.click("#editor")
    page.keyboard.type("SELECT name FROM")
    suggestion_for(page, "SELECT name FROM")
    assert requests and all(origin_of(u) == origin_of(server) for u in requests), requests


def test_no_network_request_at_all_from_file(page, site_dir):
    seen = []
    page.context.route("**/*", lambda route: (seen.append(route.request.url), route.continue_()))
    page.on("request", lambda r: seen.append(r.url))
    open_ready(page, "file://" + os.path.join(site_dir, "index.html"))
    page.click("#editor")
    page.keyboard.type("SELECT name FROM")
    suggestion_for(page, "SELECT name FROM")
    schemes = {urlparse(u).scheme for u in seen}
    assert schemes <= {"file", "data", "blob"}, sorted(u for u in seen if urlparse(u).scheme not in ("file", "data", "blob"))


ERRORS = {
    "corrupt-onnx": r"model.int8.onnx could not be loaded by onnxruntime",
    "wrong-hash": r"variant 'int8' file 'model.int8.onnx' has sha256 [0-9a-f]{12}…, the manifest says 0123456789ab…",
}


@pytest.mark.parametrize("model", sorted(ERRORS))
def test_a_broken_model_shows_a_clear_error_within_seconds(page, page_url, model):
    t0 = time.monotonic()
    page.goto(page_url + f"?model={model}")
    page.wait_for_selector("#error:not([hidden])", timeout=30_000)
    elapsed = time.monotonic() - t0
    message = page.inner_text("#error")
    assert message.startswith(f"Could not load {model} (int8): ")
    assert re.search(ERRORS[model], message), message
    assert elapsed < 20, f"took {elapsed:.1f} s"  # loading the healthy runtime takes ~5 s here
    assert page.is_disabled("#editor")


def test_a_missing_model_is_an_error_not_a_hang(page, page_url):
    page.goto(page_url + "?autoload=0")
    message = page.evaluate("pocketlm.load('no-such-model').then(() => 'loaded', (e) => e.message)")
    if page_url.startswith("file:"):
        assert "models/no-such-model/manifest.json is not built into this page" in message
    else:
        assert message == "could not fetch models/no-such-model/manifest.json: HTTP 404 File not found"


def test_a_runtime_that_fails_to_start_times_out_with_a_message(page, server):
    """Pyodide hangs (it does not reject) when its wasm cannot be instantiated: the load timeout
    must turn that into an error in the page."""
    page.context.route("**/vendor/pyodide/pyodide.asm.wasm",
                       lambda route: route.fulfill(status=200, body=b"\0asm not really wasm",
                                                   headers={"Content-Type": "application/wasm"}))

    def without_its_integrity(route):  # else the page refuses the file at once (test_integrity.py)
        text = route.fetch().text()
        config = json.loads(text[text.index("{"): text.rindex("}") + 1])
        del config["integrity"]["vendor/pyodide/pyodide.asm.wasm"]
        route.fulfill(status=200, body="window.POCKETLM_SITE = " + json.dumps(config) + ";",
                      headers={"Content-Type": "text/javascript"})

    page.context.route("**/site-config.js*", without_its_integrity)
    t0 = time.monotonic()
    page.goto(server + "index.html?timeout_ms=4000")
    page.wait_for_selector("#error:not([hidden])", timeout=30_000)
    message = page.inner_text("#error")
    assert "Starting the Python runtime did not finish within 4 s" in message, message
    assert time.monotonic() - t0 < 20
