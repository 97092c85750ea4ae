"""A Pyodide memory snapshot made at build time under Node restores in Chromium (issue 5).

webtools/pyodide_snapshot.py makes the snapshot (Pyodide booted, pocketlm's zip on sys.path, the
worker's modules imported); a minimal page + module worker (tests/browser/pyodide_snapshot/) boots
Pyodide from it the way web/src/worker.mjs would — every byte posted by the page, over http and on
file:// (data: URL worker, assets embedded as base64 of gzip) — and runs pocketlm's tokenizer and
sampler, which must agree with CPython. Boot times with and without the snapshot are printed
(`pytest -s`), not asserted: the machine is shared.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import os
import shutil
import zipfile

import pytest

from pocketlm.tokenizer import Tokenizer
from tests.browser.conftest import serving
from webtools import pyodide_snapshot
from webtools.build_site import minimal_lock, pocketlm_zip
from webtools.pyodide_snapshot import SnapshotError, make_snapshot

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ASSETS = os.path.join(ROOT, "tests", "browser", "pyodide_snapshot")
PYODIDE = os.path.join(ROOT, "web", "node_modules", "pyodide")
TOKENIZER = os.path.join(ROOT, "web", "models", "sql-autocomplete", "tokenizer.json")
# page key -> file name (tests/browser/pyodide_snapshot/page.html)
NAMES = {"pyodide": "pyodide.mjs", "pyodideAsm": "pyodide.asm.mjs", "pyodideWasm": "pyodide.asm.wasm",
         "stdlib": "python_stdlib.zip", "lock": "pyodide-lock.json", "pocketlm": "pocketlm.zip",
         "snapshot": "pyodide.snapshot", "worker": "worker.mjs"}
INITIAL_HEAP = 30 * 2**20  # Pyodide 314's wasm memory before it grows
# Run in the worker after boot: pocketlm modules from the snapshot, one pocketlm module and one stdlib
# module the snapshot did not import (read through the zip directories cached in it), and the random
# module, which the worker reseeds.
CHECK = """
import json, random, sys
from pocketlm.tokenizer import Tokenizer
from pocketlm.sampler import Sampler, SamplingOptions
import pocketlm.evals.rows, textwrap
tok = Tokenizer.from_str(CHECK_INPUT)
ids = tok.encode("SELECT name FROM singer WHERE age > 30 -- naïve café")
sampler = Sampler(SamplingOptions(temperature=0.8, top_k=5, seed=7))
draws = [sampler.sample([((i * 37) % 11) / 3 for i in range(50)]) for _ in range(8)]
json.dumps({"ids": ids, "text": tok.decode(ids), "draws": draws, "random": random.random(),
            "executable": sys.executable, "lazy": textwrap.shorten("a b c", 10)})
"""
# A module that leaves the heap above its initial size, to hit pyodide #6254 on purpose.
BIG_HEAP_MODULE = "KEEP = [bytes(1000) + i.to_bytes(4, 'little') for i in range(12_000)]\nBLOB = bytearray(12 * 2**20)\n"


def node_or_fail():
    if shutil.which("node") is None:
        pytest.fail("node is needed to make the Pyodide snapshot (apt-get install nodejs)")
    if not os.path.isfile(os.path.join(PYODIDE, "pyodide.mjs")):
        pytest.fail("web/node_modules is missing: run make setup (npm ci in web/)")


def write_site(folder, pocketlm: bytes, snapshot_file: str) -> str:
    """The test page, its worker and the runtime files, plus embed.js for file://."""
    files = {}
    for key in ("pyodide", "pyodideAsm", "pyodideWasm", "stdlib"):
        with open(os.path.join(PYODIDE, NAMES[key]), "rb") as f:
            files[key] = f.read()
    files["lock"] = minimal_lock()
    files["pocketlm"] = pocketlm
    with open(snapshot_file, "rb") as f:
        files["snapshot"] = f.read()
    with open(os.path.join(ASSETS, "worker.mjs"), "rb") as f:
        files["worker"] = f.read()
    os.makedirs(folder, exist_ok=True)
    for key, data in files.items():
        with open(os.path.join(folder, NAMES[key]), "wb") as f:
            f.write(data)
    shutil.copy(os.path.join(ASSETS, "page.html"), folder)
    embed = {k: base64.b64encode(gzip.compress(v, compresslevel=6, mtime=0)).decode("ascii") for k, v in files.items()}
    with open(os.path.join(folder, "embed.js"), "w", encoding="ascii") as f:
        f.write(f"window.EMBED = {json.dumps(embed)};\n")
    return str(folder)


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory):
    node_or_fail()
    base = tmp_path_factory.mktemp("pyodide-snapshot")
    zip_bytes = pocketlm_zip()
    (base / "pocketlm.zip").write_bytes(zip_bytes)
    info = make_snapshot(str(base / "pocketlm.zip"), str(base / "pyodide.snapshot"))
    info["gzip_bytes"] = len(gzip.compress((base / "pyodide.snapshot").read_bytes(), compresslevel=6, mtime=0))
    info["site"] = write_site(base / "site", zip_bytes, info["out"])
    return info


@pytest.fixture(scope="module")
def page_base(snapshot):
    with serving(snapshot["site"]) as url:
        yield url + "page.html"


def boot(browser, url, mode, imports, grow=True):
    """One cold boot: a fresh browser context, page and worker."""
    with open(TOKENIZER, encoding="utf-8") as f:
        tokenizer_text = f.read()
    context = browser.new_context()
    try:
        page = context.new_page()
        page.set_default_timeout(120_000)
        page.goto(url)
        return page.evaluate("([m, i, c, t, g]) => runBoot(m, i, c, t, g)", [mode, imports, CHECK, tokenizer_text, grow])
    finally:
        context.close()


def expected_check() -> dict:
    """CHECK run by CPython: the browser's answers must be the same."""
    with open(TOKENIZER, encoding="utf-8") as f:
        scope = {"CHECK_INPUT": f.read()}
    exec(CHECK, scope)
    tok, ids = scope["tok"], scope["ids"]
    assert isinstance(tok, Tokenizer)
    return {"ids": ids, "text": tok.decode(ids), "draws": scope["draws"], "lazy": scope["textwrap"].shorten("a b c", 10)}


def test_the_snapshot_holds_the_workers_modules_and_is_deterministic(snapshot, tmp_path):
    assert snapshot["pyodide"] == "314.0.7" and snapshot["zip_path"] == "/lib/pocketlm.zip"
    for module in ("pocketlm.browser", "pocketlm.session", "pocketlm.completer", "pocketlm.extractor",
                   "pocketlm.tasks.text", "pocketlm.tokenizer", "pocketlm.sampler"):
        assert module in snapshot["pocketlm_modules"]
    again = make_snapshot(os.path.join(os.path.dirname(snapshot["out"]), "pocketlm.zip"), str(tmp_path / "again"))
    assert again["sha256"] == snapshot["sha256"], "two runs on the same inputs gave different snapshots"
    print(f"\nsnapshot: {snapshot['bytes']} bytes raw, {snapshot['gzip_bytes']} gzip -6, heap {snapshot['heap_bytes']}")


@pytest.mark.parametrize("how", ["http", "file"])
def test_pyodide_boots_from_the_snapshot_in_a_module_worker(browser, snapshot, page_base, how):
    url = page_base if how == "http" else "file://" + os.path.join(snapshot["site"], "page.html")
    want = expected_check()
    reports = {}
    for mode in ("plain", "snapshot", "snapshot"):
        r = boot(browser, url, mode, snapshot["imports"])
        assert r["ok"], r.get("error")
        got = json.loads(r["result"])
        assert {k: got[k] for k in want} == want, f"{mode} boot over {how} disagrees with CPython"
        assert got["executable"] == "/home/pyodide/this.program"
        assert r["roundtrip"] == [3, 0.5]  # JS -> async Python -> awaited JS -> Float32Array back
        assert r["preloaded"] is (mode == "snapshot")  # pocketlm.session came with the snapshot, not an import
        reports.setdefault(mode, []).append((r, got))
    first, second = (got["random"] for _, got in reports["snapshot"])
    assert first != second, "the random module was not reseeded after restoring the snapshot"
    for mode, runs in reports.items():
        for r, _ in runs:
            print(f"\n{how} {mode}: assets {r['assets_ms']:.0f} ms, loadPyodide {r['boot_ms']:.0f} ms, "
                  f"pocketlm ready +{r['import_ms']:.0f} ms, page total {r['total_ms']:.0f} ms", end="")


def test_a_snapshot_larger_than_the_initial_heap_needs_the_memory_grown_first(browser, tmp_path):
    """Pyodide 314's wasm exports a 30 MiB memory and ignores INITIAL_MEMORY: restoring a bigger heap
    fails ("offset is out of bounds", pyodide #6254) unless the loader grows the memory first."""
    node_or_fail()
    buf = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(pocketlm_zip())) as src, zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            dst.writestr(item, src.read(item))
        dst.writestr(zipfile.ZipInfo("bigheap.py", (2020, 1, 1, 0, 0, 0)), BIG_HEAP_MODULE)
    (tmp_path / "pocketlm.zip").write_bytes(buf.getvalue())
    imports = ["pocketlm.browser", "pocketlm.session", "bigheap"]
    info = make_snapshot(str(tmp_path / "pocketlm.zip"), str(tmp_path / "pyodide.snapshot"), imports=imports)
    assert info["heap_bytes"] > INITIAL_HEAP
    with serving(write_site(tmp_path / "site", buf.getvalue(), info["out"])) as base:
        url = base + "page.html"
        bad = boot(browser, url, "snapshot", imports, grow=False)
        assert not bad["ok"] and "out of bounds" in bad["error"], bad
        good = boot(browser, url, "snapshot", imports, grow=True)
        assert good["ok"], good.get("error")
        assert good["heap_bytes"] >= info["heap_bytes"] and good["preloaded"]


def test_the_wrapper_says_in_one_line_when_node_is_missing(monkeypatch, tmp_path):
    monkeypatch.setattr(pyodide_snapshot.shutil, "which", lambda name: None)
    with pytest.raises(SnapshotError, match=r"^node is not installed; .*nodejs\)$"):
        make_snapshot(str(tmp_path / "pocketlm.zip"), str(tmp_path / "out"))


def test_the_wrapper_reports_a_failed_import_in_one_line(tmp_path):
    node_or_fail()
    (tmp_path / "pocketlm.zip").write_bytes(pocketlm_zip())
    with pytest.raises(SnapshotError) as err:
        make_snapshot(str(tmp_path / "pocketlm.zip"), str(tmp_path / "out"), imports=["pocketlm.no_such_module"])
    message = str(err.value)
    assert "\n" not in message and "pocketlm.no_such_module" in message and "ModuleNotFoundError" in message
    assert not (tmp_path / "out").exists()
