"""Integrity of what the page loads (issue 7 item 2): over http every runtime asset is checked against the
sha256 make site recorded (site-config.js) before use, so a site file changed after the build —
one flipped byte — is refused, with a message naming the file. Model files are checked against their
manifest's sha256 by pocketlm itself, in the page and natively (test_page_ui.py, test_model_from_disk.py,
tests/test_cli.py "corrupt-onnx")."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil

from tests.browser.conftest import serving

LOAD = """async () => { try { const m = await pocketlm.load("sql-autocomplete"); m.dispose(); return "loaded"; }
                        catch (e) { return e.message; } }"""


def test_every_runtime_asset_carries_its_hash(site_dir):
    with open(os.path.join(site_dir, "site-config.js"), encoding="utf-8") as f:
        text = f.read()
    config = json.loads(text[text.index("{"): text.rindex("}") + 1])
    integrity = config["integrity"]
    assert "py/pocketlm.zip" in integrity and "vendor/ort/ort-wasm-simd-threaded.wasm" in integrity
    assert not any(p.startswith("models/") for p in integrity)
    with open(os.path.join(site_dir, "engine.mjs"), "rb") as f:
        assert integrity["engine.mjs"] == "sha256-" + base64.b64encode(hashlib.sha256(f.read()).digest()).decode()


def test_a_site_file_with_one_flipped_byte_is_refused_by_name(page, site_dir, tmp_path):
    site = str(tmp_path / "site")
    shutil.copytree(site_dir, site)
    path = os.path.join(site, "py", "pocketlm.zip")
    with open(path, "r+b") as f:
        f.seek(100)
        b = f.read(1)
        f.seek(100)
        f.write(bytes([b[0] ^ 0x01]))
    with serving(site) as url:
        page.goto(url + "index.html?autoload=0")
        message = page.evaluate(LOAD)
    assert message.startswith("could not fetch py/pocketlm.zip") and "integrity" in message, message


def test_a_model_file_with_one_flipped_byte_is_refused_by_name(page, site_dir, tmp_path):
    site = str(tmp_path / "site")
    shutil.copytree(site_dir, site)
    manifest = json.load(open(os.path.join(site, "models", "sql-autocomplete", "manifest.json")))
    file = manifest["variants"][manifest["default_variant"]]["file"]
    path = os.path.join(site, "models", "sql-autocomplete", file)
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2)
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 0x80]))
    with serving(site) as url:
        page.goto(url + "index.html?autoload=0")
        message = page.evaluate(LOAD)
    assert f"file '{file}' has sha256" in message and "the manifest says" in message, message
