"""`make site`: what the build writes, what it refuses, and that it never leaves a half-built site."""

from __future__ import annotations

import base64
import gzip
import os
import re
import subprocess
import sys

import pytest

from webtools.build_site import BuildError, build

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OWN_FILES = ["index.html", "site-config.js", "filecache.js", "assets.js", "pocketlm.js", "app.js", "style.css", "worker.mjs", "engine.mjs"]
URL = re.compile(r"\b(?:https?|wss?|ftp)://[^\s\"'`)<>]+")


def site_files(site):
    for dirpath, _, names in os.walk(site):
        for name in names:
            path = os.path.join(dirpath, name)
            yield os.path.relpath(path, site).replace(os.sep, "/"), path


def test_the_pages_own_files_name_no_url_at_all(site_dir):
    for rel in OWN_FILES:
        with open(os.path.join(site_dir, rel), encoding="utf-8") as f:
            assert not URL.findall(f.read()), rel


def test_vendor_code_names_no_fetchable_remote_url(site_dir):
    """Vendor JavaScript keeps only a URL template; the CDN default of Pyodide is rewritten by the
    build. Embedded copies are checked the same way."""
    allowed = {"https://${t}"}
    checked = 0
    for rel, path in site_files(site_dir):
        if not rel.endswith((".js", ".mjs", ".json", ".html", ".css")):
            continue
        with open(path, encoding="utf-8") as f:
            text = f.read()
        if rel.startswith("embed/"):
            b64 = re.fullmatch(r'pocketlmEmbedded\("[^"]+", "([A-Za-z0-9+/=]*)"\);\n', text).group(1)
            data = gzip.decompress(base64.b64decode(b64))
            if not rel.endswith((".js.js", ".mjs.js", ".json.js")):
                continue  # embedded wasm, zip and onnx are binaries
            text = data.decode("utf-8")
        assert set(URL.findall(text)) <= allowed, rel
        checked += 1
    assert checked > 10


def test_every_worker_asset_is_embedded_for_file_mode(site_dir):
    for rel, path in site_files(site_dir):
        if rel.startswith(("vendor/", "models/", "py/")) or rel in ("worker.mjs", "engine.mjs"):
            embed = os.path.join(site_dir, "embed", rel + ".js")
            with open(embed, encoding="ascii") as f:
                b64 = f.read().split('"')[3]
            with open(path, "rb") as f:
                assert gzip.decompress(base64.b64decode(b64)) == f.read(), rel


def test_a_failed_build_leaves_the_previous_site_in_place(site_dir, tmp_path):
    out = tmp_path / "site"
    out.mkdir()
    (out / "index.html").write_text("the previous site")
    broken = tmp_path / "not-a-model"
    broken.mkdir()
    (broken / "manifest.json").write_text("{")
    with pytest.raises(BuildError, match="not-a-model is not a model folder"):
        build(str(out), [str(broken)])
    assert (out / "index.html").read_text() == "the previous site"
    assert not (tmp_path / "site.tmp").exists() or not (tmp_path / "site.tmp" / "index.html").exists()


def test_cli_error_is_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "webtools.build_site", "--out", str(tmp_path / "s"),
                           "--model", str(tmp_path / "missing")], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr


def test_serve_without_a_built_site_is_a_one_line_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "webtools.serve", "--dir", str(tmp_path), "--port", "0"],
                          capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert proc.returncode == 2
    assert proc.stderr == f"error: {tmp_path} has no index.html; build the site first with make site\n"


def test_served_files_carry_the_isolation_headers_and_wasm_type(server):
    import urllib.request

    for path, ctype in (("index.html", "text/html"), ("vendor/ort/ort-wasm-simd-threaded.wasm", "application/wasm"),
                        ("worker.mjs", "text/javascript")):
        with urllib.request.urlopen(urllib.request.Request(server + path, method="HEAD")) as r:
            assert r.headers["Content-Type"].startswith(ctype), path
            assert r.headers["Cross-Origin-Opener-Policy"] == "same-origin"
            assert r.headers["Cross-Origin-Embedder-Policy"] == "require-corp"
            assert r.headers["Cross-Origin-Resource-Policy"] == "same-origin"


def unsparse(data: bytes) -> bytes:
    """The image back from webtools.pyodide_snapshot.sparse's layout (the page's reader is
    web/src/assets.js `unsparse`; this one checks what the build wrote)."""
    import struct

    magic, version, total, page, runs = struct.unpack_from("<4s4I", data, 0)
    assert (magic, version) == (b"PLSS", 1)
    out, at = bytearray(total), 20 + 8 * runs
    for r in range(runs):
        first, count = struct.unpack_from("<2I", data, 20 + 8 * r)
        n = min(count * page, total - first * page)
        out[first * page:first * page + n] = data[at:at + n]
        at += n
    assert at == len(data)
    return bytes(out)


def test_the_site_carries_a_pyodide_snapshot_and_its_embed(site_dir):
    """make site restores Python from a memory snapshot (webtools/pyodide_snapshot.py) made from the
    site's own pocketlm.zip, shipped without its all-zero pages; it is listed in site-config.js and
    embedded for file:// like every asset."""
    import struct

    path = os.path.join(site_dir, "vendor", "pyodide", "pyodide.snapshot.sparse")
    with open(path, "rb") as f:
        sparse = f.read()
    snap = unsparse(sparse)
    header_bytes = struct.unpack_from("<I", snap, 4)[0]
    assert len(snap) % 4 == 0 and 16 <= header_bytes < len(snap)
    assert len(snap) - header_bytes >= 30 * 2**20  # the wasm heap: at least Pyodide's initial 30 MiB
    assert len(sparse) < 0.6 * len(snap)  # about half of the image is zero pages
    with open(os.path.join(site_dir, "embed", "vendor", "pyodide", "pyodide.snapshot.sparse.js"), encoding="ascii") as f:
        assert gzip.decompress(base64.b64decode(f.read().split('"')[3])) == sparse
    with open(os.path.join(site_dir, "site-config.js"), encoding="utf-8") as f:
        assert f'"vendor/pyodide/pyodide.snapshot.sparse": {len(sparse)}' in f.read()


@pytest.mark.parametrize("data", [b"", b"abc", bytes(9000), b"x" * 4096 + bytes(4096) + b"y", bytes(4096) + b"z"])
def test_the_sparse_layout_gives_back_every_byte(data):
    from webtools.pyodide_snapshot import sparse

    assert unsparse(sparse(data)) == data
    assert len(sparse(bytes(4096 * 100))) == 20  # all zero: a header, no pages


def test_a_snapshot_that_cannot_be_made_fails_the_build_in_one_line(monkeypatch, tmp_path):
    from webtools import pyodide_snapshot

    monkeypatch.setattr(pyodide_snapshot.shutil, "which", lambda name: None)
    with pytest.raises(BuildError, match=r"^node is not installed; [^\n]*$"):
        build(str(tmp_path / "site"), [])
    assert not (tmp_path / "site").exists()


def test_the_sql_editor_offers_only_sql_models(site_dir):
    """The SQL panel's model list holds the sql-task models only: with every folder of web/models/ built
    in (reminder-extract sorts first), the editor must still start on an SQL model."""
    import json

    with open(os.path.join(site_dir, "site-config.js"), encoding="utf-8") as f:
        config = json.loads(f.read().split("window.POCKETLM_SITE = ", 1)[1].rstrip().rstrip(";"))
    tasks = {name: m["task"] for name, m in config["models"].items()}
    assert tasks["reminder-extract"] == "reminders" and tasks["sql-autocomplete"] == "sql", tasks
    with open(os.path.join(site_dir, "index.html"), encoding="utf-8") as f:
        html = f.read()
    select = html[html.index('<select id="model-select">'):]
    options = re.findall(r'<option value="([^"]+)">', select[:select.index("</select>")])
    assert options and all(tasks[name] == "sql" for name in options), (options, tasks)
