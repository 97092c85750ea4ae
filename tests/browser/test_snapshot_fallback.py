"""The page restores Python from the build's memory snapshot (test_page_runtime.py checks it does);
when the snapshot is missing or corrupt it starts Python the plain way and still works, both ways of
opening the page. The broken sites are symlink copies of the test site with the snapshot removed, its
sparse header overwritten (the page cannot put its zero pages back) or the first bytes of its image
overwritten (the page decodes it and Pyodide's restore refuses it: "invalid magic number")."""

from __future__ import annotations

import json
import os
import shutil
import struct
import threading

import pytest

from webtools.build_site import embed_script
from webtools.serve import make_server

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SNAPSHOT = "vendor/pyodide/pyodide.snapshot.sparse"
with open(os.path.join(ROOT, "tests", "golden", "sql-autocomplete.json"), encoding="utf-8") as f:
    CASE = next(c for c in json.load(f)["cases"] if c["prefix"])
with open(os.path.join(ROOT, "docs", CASE["schema_file"]), encoding="utf-8") as f:
    SCHEMA = f.read()

LOAD = """async ([variant, prefix, schema]) => {
  const model = await pocketlm.load("sql-autocomplete", {variant});
  const out = await model.generate(prefix, {schema});
  model.dispose();
  return {stats: model.stats, token_ids: out.token_ids};
}"""


@pytest.fixture(scope="module", params=["missing", "corrupt", "corrupt-image"])
def broken_site(request, site_dir, tmp_path_factory):
    out = str(tmp_path_factory.mktemp(f"snapshot-{request.param}") / "site")
    shutil.copytree(site_dir, out, copy_function=os.symlink)
    raw, embed = os.path.join(out, *SNAPSHOT.split("/")), os.path.join(out, "embed", *SNAPSHOT.split("/")) + ".js"
    with open(raw, "rb") as f:
        data = bytearray(f.read())
    os.remove(raw)
    os.remove(embed)
    if request.param.startswith("corrupt"):
        runs = struct.unpack_from("<I", data, 16)[0]  # webtools.pyodide_snapshot.sparse's layout
        at = 0 if request.param == "corrupt" else 20 + 8 * runs  # the header, or the image's first bytes
        data[at:at + 64] = b"\xa5" * 64
        with open(raw, "wb") as f:
            f.write(data)
        with open(embed, "wb") as f:
            f.write(embed_script(SNAPSHOT, bytes(data)))
    srv = make_server(out, 0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield request.param, out, f"http://127.0.0.1:{srv.server_address[1]}/"
    srv.shutdown()
    srv.server_close()


@pytest.mark.parametrize("how", ["file", "http"])
def test_the_page_starts_python_plainly_without_a_usable_snapshot(page, broken_site, how):
    kind, folder, base = broken_site
    url = "file://" + os.path.join(folder, "index.html") if how == "file" else base + "index.html"
    page.goto(url + "?autoload=0")
    r = page.evaluate(LOAD, [CASE["variant"], CASE["prefix"], SCHEMA])
    assert r["stats"]["python_boot"] == "plain", r["stats"]
    if kind == "corrupt" and how == "file":  # the page cannot decode it
        assert r["stats"]["python_note"] == (f"the snapshot could not be read ({SNAPSHOT}: it is not a sparse "
                                             "snapshot of version 1 (rebuild the site with make site))"), r["stats"]
    elif kind == "corrupt-image" and how == "file":  # the worker's restore refuses it
        assert "invalid magic number" in r["stats"]["python_note"], r["stats"]
    elif kind.startswith("corrupt"):  # over http its integrity hash refuses it before the worker sees it
        assert r["stats"]["python_note"].startswith("the snapshot could not be fetched (could not fetch "
                                                    f"{SNAPSHOT}"), r["stats"]
        assert "integrity hash" in r["stats"]["python_note"]
    else:  # missing: the page says why it could not send it
        assert r["stats"]["python_note"].startswith("the snapshot could not be fetched (")
        assert SNAPSHOT in r["stats"]["python_note"], r["stats"]
    assert r["token_ids"] == CASE["token_ids"]
    assert not page.errors
