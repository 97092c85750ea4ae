"""A dead inference worker (issue 7 item 3): killed from the test — terminated, and the error event a
crashing worker (out of memory, an abort inside Pyodide or onnxruntime) delivers — the request in flight
fails with a message saying so, pocketlm starts a new worker with the same model, and the next request
works and gives the same tokens as before; the SQL page says so and suggests again."""

from __future__ import annotations

import pytest

KILL = """async () => {
  const m = await pocketlm.load("sql-autocomplete");
  const opts = {schema: "singer(name, age)", max_new_tokens: 8, temperature: 0};
  const before = await m.generate("SELECT name FROM", opts);
  const states = [];
  m.onStatus = (state) => states.push(state);
  const inflight = m.generate("SELECT name FROM singer WHERE", opts).then(() => "resolved", (e) => e.message);
  m.worker.terminate();
  m.worker.dispatchEvent(new ErrorEvent("error", {message: "out of memory"}));
  const failed = await inflight;
  const after = await m.generate("SELECT name FROM", opts);
  const again = await m.generate("SELECT name FROM singer WHERE", opts);
  const out = {before: before.token_ids, after: after.token_ids, again: again.text, failed, states,
               restarts: m.stats.restarts};
  m.dispose();
  return out;
}"""


def test_a_killed_worker_is_restarted_and_the_next_request_works(page, page_url):
    page.goto(page_url + "?autoload=0")
    out = page.evaluate(KILL)
    assert out["failed"].startswith("the inference worker stopped (out of memory); it is being restarted")
    assert out["after"] == out["before"] and len(out["after"]) > 0 and isinstance(out["again"], str)
    assert out["restarts"] == 1 and out["states"] == ["restarting", "restarted"]
    assert not page.errors


@pytest.mark.parametrize("page_url", ["http"], indirect=True)
def test_the_sql_page_says_so_and_suggests_again(page, page_url):
    page.goto(page_url)
    page.wait_for_selector("#loader.done", timeout=60_000)
    page.evaluate("""() => { const w = pocketlmApp.state.model.worker; w.terminate();
                             w.dispatchEvent(new ErrorEvent("error", {message: "simulated crash"})); }""")
    page.wait_for_function("() => document.getElementById('progress-text').textContent.includes('was restarted')",
                           timeout=60_000)
    assert "simulated crash" in page.inner_text("#progress-text")
    page.fill("#editor", "SELECT name FROM")
    page.dispatch_event("#editor", "input")
    page.wait_for_selector("#ghost[data-final='1']", state="attached", timeout=30_000)
    assert page.get_attribute("#ghost", "data-for") == "SELECT name FROM"
    assert not page.errors
