"""The story panel (web/src/story.js): a text-task model continues a prompt, tokens streamed into the
output. Greedy output equals the native run token for token (both ways of opening the page); Stop
cancels the running run and the queued ones; runs queue and never overlap; an invalid sampling value
shows the runtime's own message. The site carries a tiny random-weight text model (conftest.text_model)
and the release SQL model, so each panel's chooser is seen to list only the models of its task."""

from __future__ import annotations

import os

import pytest

from tests.browser.conftest import RELEASE, TEXT_MODEL, native_generate, serving
from webtools.build_site import build

PROMPT = "Once upon a time, a tiny fox"


@pytest.fixture(scope="module")
def story_site(text_model, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("story-site") / "site")
    build(out, [text_model, RELEASE])
    return out


@pytest.fixture(scope="module")
def story_server(story_site):
    with serving(story_site) as url:
        yield url


@pytest.fixture(params=["file", "http"])
def story_url(request, story_site, story_server):
    if request.param == "file":
        return "file://" + os.path.join(story_site, "index.html")
    return story_server + "index.html"


def open_story(page, url):
    """The page opened on the story panel, its model loaded."""
    page.goto(url + "?autoload=0&panel=story")
    page.wait_for_selector("#story-model-status[data-state=ready]", timeout=60_000)


def set_fields(page, temperature="0", top_p="1", max_new_tokens="200", prompt=PROMPT):
    page.fill("#story-prompt", prompt)
    page.fill("#story-temperature", temperature)
    page.fill("#story-top-p", top_p)
    page.fill("#story-max-new-tokens", max_new_tokens)


def run_queue(page):
    """Wait until every run the panel has queued is over."""
    page.evaluate("() => window.pocketlmStory.state.queue.then(() => null)")


def option_values(page, selector):
    return page.eval_on_selector_all(f"{selector} option", "els => els.map((e) => e.value)")


# Every text the output span is drawn with, as it streams.
WATCH = """() => {
  window.storyLog = [];
  const out = document.getElementById('story-output-text');
  new MutationObserver(() => window.storyLog.push(out.textContent))
    .observe(out, {subtree: true, childList: true, characterData: true});
}"""


def test_each_chooser_lists_the_models_of_its_own_task(page, story_server):
    open_story(page, story_server + "index.html")
    assert option_values(page, "#story-model-select") == [TEXT_MODEL]
    assert option_values(page, "#model-select") == ["sql-autocomplete"]
    assert option_values(page, "#story-variant-select") == ["fp32", "int8", "q4"]
    assert page.get_attribute("#tab-story", "aria-selected") == "true"
    assert not page.errors


def test_greedy_story_streams_the_native_tokens(page, story_url, text_model):
    open_story(page, story_url)
    set_fields(page)
    page.evaluate(WATCH)
    page.click("#story-generate")
    page.wait_for_selector("#story-status[data-state=done]", timeout=30_000)
    run = page.evaluate("window.pocketlmStory.state.runs.at(-1)")
    out = run["out"]
    assert run["options"] == {"temperature": 0, "top_p": 1, "max_new_tokens": 200}
    expected = native_generate(text_model, "fp32", PROMPT, run["options"])
    assert out["token_ids"] == expected["token_ids"]
    assert out["text"] == expected["text"]
    assert page.evaluate("document.getElementById('story-output-text').textContent") == expected["text"]
    assert page.evaluate("document.getElementById('story-output-prompt').textContent") == PROMPT
    # streamed: the output grew a piece at a time, each a prefix of the final text
    log = page.evaluate("window.storyLog")
    partial = [t for t in log if t and t != expected["text"]]
    assert len(partial) >= 5, len(partial)
    assert all(expected["text"].startswith(t) for t in partial)
    status = page.inner_text("#story-status")
    assert f"{len(expected['token_ids'])} tokens in " in status and "tok/s" in status, status
    assert expected["stop_reason"] == "max_new_tokens"  # this random model does not end the text within 200 tokens
    assert status.endswith("Why it stopped: max new tokens reached."), status
    assert not page.errors


def test_runs_are_queued_never_overlapped(page, story_server, text_model):
    open_story(page, story_server + "index.html")
    set_fields(page, max_new_tokens="120")
    # two clicks in one turn of the page's event loop: the second comes while the first run goes on
    queued = page.evaluate("""() => {
      for (let i = 0; i < 2; i++) document.getElementById('story-generate').click();
      return document.getElementById('story-status').dataset.state;
    }""")
    assert queued == "queued"
    run_queue(page)
    runs = page.evaluate("window.pocketlmStory.state.runs")
    assert len(runs) == 2
    assert runs[1]["started"] >= runs[0]["ended"]
    expected = native_generate(text_model, "fp32", PROMPT, runs[0]["options"])["token_ids"]
    assert runs[0]["out"]["token_ids"] == runs[1]["out"]["token_ids"] == expected
    assert page.get_attribute("#story-status", "data-state") == "done"
    assert page.is_disabled("#story-stop")


# Click Generate twice (the second run queues), then Stop as soon as the first token is drawn.
STOP = """async () => {
  const out = document.getElementById('story-output-text');
  const first = new Promise((resolve) => {
    const obs = new MutationObserver(() => {
      obs.disconnect();
      document.getElementById('story-stop').click();
      resolve();
    });
    obs.observe(out, {subtree: true, childList: true, characterData: true});
  });
  document.getElementById('story-generate').click();
  document.getElementById('story-generate').click();
  const stopEnabled = !document.getElementById('story-stop').disabled;
  await first;
  await window.pocketlmStory.state.queue;
  return {stopEnabled, runs: window.pocketlmStory.state.runs};
}"""


def test_stop_cancels_the_run_and_the_queued_one(page, story_server, text_model):
    open_story(page, story_server + "index.html")
    set_fields(page, max_new_tokens="400")
    r = page.evaluate(STOP)
    assert r["stopEnabled"]
    assert len(r["runs"]) == 1  # the queued run never started
    out = r["runs"][0]["out"]
    assert out["stop_reason"] == "cancelled" and 0 < len(out["token_ids"]) < 400, len(out["token_ids"])
    assert page.get_attribute("#story-status", "data-state") == "cancelled"
    assert "Why it stopped: stopped." in page.inner_text("#story-status")
    assert page.is_disabled("#story-stop") and page.is_enabled("#story-generate")
    # the model still works after a stop
    set_fields(page, max_new_tokens="40")
    page.click("#story-generate")
    run_queue(page)
    expected = native_generate(text_model, "fp32", PROMPT, {"temperature": 0, "top_p": 1, "max_new_tokens": 40})
    assert page.evaluate("window.pocketlmStory.state.last.token_ids") == expected["token_ids"]


INVALID = [
    ({"temperature": "-1"}, "temperature must be >= 0 and finite (0 = greedy), got -1"),
    ({"temperature": "warm"}, "temperature must be a number, got 'warm'"),
    ({"top_p": "1.5"}, "top_p must be in (0, 1] (1 = off), got 1.5"),
    ({"max_new_tokens": "0"}, "max_new_tokens must be an integer >= 1, got 0"),
    ({"max_new_tokens": "2.5"}, "max_new_tokens must be an integer >= 1, got 2.5"),
]


def test_an_invalid_sampling_value_shows_the_runtimes_message(page, story_server):
    open_story(page, story_server + "index.html")
    set_fields(page, max_new_tokens="20")
    page.click("#story-generate")
    run_queue(page)
    story = page.evaluate("document.getElementById('story-output-text').textContent")
    assert story
    for fields, message in INVALID:
        set_fields(page, max_new_tokens="20")
        for name, value in fields.items():
            page.fill(f"#story-{name.replace('_', '-')}", value)
        page.click("#story-generate")
        run_queue(page)
        assert page.get_attribute("#story-status", "data-state") == "error", fields
        assert page.inner_text("#story-error") == message
        # not clamped, and the story from before stays on screen
        assert page.evaluate("document.getElementById('story-output-text').textContent") == story
    set_fields(page, max_new_tokens="20")
    page.click("#story-generate")
    run_queue(page)
    assert page.get_attribute("#story-status", "data-state") == "done"
    assert page.is_hidden("#story-error")
