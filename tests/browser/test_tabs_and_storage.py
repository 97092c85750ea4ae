"""Two tabs and unavailable storage (issue 7 item 7): two tabs of the page, each with its own worker, load the
same model and generate at the same time with the same results as one alone; with the browser's storage
denied (localStorage throwing, as in a locked-down or full profile) the page still extracts reminders and
says the list cannot be saved. Its only other storage is the copy of its files in the Cache API
(web/src/filecache.js), whose denial or quota errors tests/browser/test_file_cache.py covers."""

from __future__ import annotations

import json

GENERATE = """async () => { const m = await pocketlm.load("sql-autocomplete");
  const out = await m.generate("SELECT name FROM", {schema: "singer(name, age)", max_new_tokens: 8});
  m.dispose(); return out.token_ids; }"""

DENY_STORAGE = """Object.defineProperty(window, "localStorage", {configurable: true,
  get() { throw new DOMException("The operation is insecure.", "SecurityError"); }});"""


def test_two_tabs_generate_at_the_same_time(browser, server):
    context = browser.new_context()
    try:
        tabs = [context.new_page() for _ in range(2)]
        for tab in tabs:
            tab.goto(server + "index.html?autoload=0")
        for tab in tabs:  # started in both tabs before either is awaited
            tab.evaluate(f"() => {{ window.result = ({GENERATE})(); }}")
        results = [tab.evaluate("window.result") for tab in tabs]
        alone = tabs[0].evaluate(GENERATE)
        assert results[0] == results[1] == alone and len(alone) > 0
    finally:
        context.close()


def test_the_page_runs_with_storage_denied(browser, server):
    context = browser.new_context()
    try:
        context.add_init_script(DENY_STORAGE)
        page = context.new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(server + "index.html?autoload=0&panel=reminders")
        text = "remind me at 7pm to walk the dog"
        page.fill("#rem-input", text)
        page.wait_for_function("(t) => document.getElementById('rem-json').dataset.for === t", arg=text,
                               timeout=60_000)
        assert json.loads(page.inner_text("#rem-json"))["reminder"] == "walk the dog"
        page.click("#rem-add")
        assert "Could not save the list in this browser's storage" in page.inner_text("#panel-reminders")
        assert errors == []
    finally:
        context.close()


def test_the_page_keeps_nothing_but_the_reminder_list_and_its_file_cache():
    """No IndexedDB or sessionStorage in the page's code, the Cache API only in filecache.js, localStorage only
    in reminders.js: denied storage can only affect the list and the file cache (which then fetches)."""
    import glob
    import os

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    for path in glob.glob(os.path.join(root, "web", "src", "*js")):
        with open(path, encoding="utf-8") as f:
            code = f.read()
        for api in ("indexedDB", "sessionStorage"):
            assert api not in code, (path, api)
        # engine.mjs' this.caches are its KV caches, not the Cache API
        assert ("caches.open" in code) == path.endswith("filecache.js"), path
        assert ("localStorage" in code) == path.endswith("reminders.js"), path
