"""The load's warm-up (issue 5, worker.mjs "warm-up"): by default the model is ready after one short task
generation and warms up afterwards in idle time, giving way to requests and going on after them; "blocking"
warms up before ready; false skips it. Whichever way, the outputs are the same tokens."""

from __future__ import annotations

RUN = """async (warmup) => {
  const opts = {schema: "singer(name, age)", max_new_tokens: 8, temperature: 0};
  const m = await pocketlm.load("sql-autocomplete", {warmup});
  const events = [];
  const warmed = m.warmedUp.then((w) => { events.push("warm"); return w; });
  const first = await m.generate("SELECT name FROM", opts);
  events.push("first");
  const warm = await warmed;
  const second = await m.generate("SELECT name FROM", opts);
  const out = {first: first.token_ids, second: second.token_ids, warm, events, stats: m.stats};
  m.dispose();
  return out;
}"""

IDLE_ONLY = """async () => {
  const m = await pocketlm.load("sql-autocomplete");
  const warm = await m.warmedUp;
  m.dispose();
  return warm;
}"""


def test_idle_warm_up_gives_way_to_the_first_request_then_finishes(page, page_url):
    page.goto(page_url + "?autoload=0")
    idle = page.evaluate(RUN, "idle")
    blocking = page.evaluate(RUN, "blocking")
    # the request sent right after ready is answered before the warm-up is over: it interrupted it
    assert idle["events"] == ["first", "warm"], idle["events"]
    assert idle["warm"]["mode"] == "idle" and idle["warm"]["steps"] > 0
    assert idle["stats"]["warmup_mode"] == "idle" and idle["stats"]["warmup_steps"] == idle["warm"]["steps"]
    # blocking: over before ready, so before the first request
    assert blocking["events"] == ["warm", "first"], blocking["events"]
    assert blocking["warm"]["mode"] == "blocking" and blocking["warm"]["steps"] > 0 and blocking["warm"]["done"]
    # the same tokens whichever way (and the same as each other)
    assert idle["first"] == idle["second"] == blocking["first"] == blocking["second"] and idle["first"]
    assert not page.errors


def test_an_idle_page_warms_up_in_one_stretch(page, page_url):
    page.goto(page_url + "?autoload=0")
    warm = page.evaluate(IDLE_ONLY)
    assert warm["mode"] == "idle" and warm["runs"] == 1 and warm["steps"] > 0 and warm["ms"] > 0


def test_an_unknown_warmup_option_is_refused_by_name(page, page_url):
    page.goto(page_url + "?autoload=0")
    message = page.evaluate("""async () => { try { await pocketlm.load("sql-autocomplete", {warmup: "soon"}); return "loaded"; }
                                             catch (e) { return e.message; } }""")
    assert 'warmup must be "idle" (or true), "blocking" or false, got "soon"' in message
