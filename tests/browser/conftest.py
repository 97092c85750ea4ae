"""Fixtures for the page tests: a site built for the tests, a local server, Debian's chromium.

The site is built into a temporary folder (not site/) with the release sql-autocomplete model plus
two broken copies of it, so error handling is tested on the real build:
- `corrupt-onnx`: model.int8.onnx with bytes overwritten, the manifest updated to match it (a
  self-consistent but broken export: onnxruntime must refuse it);
- `wrong-hash`: the manifest records a sha256 the file does not have.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import threading

import pytest

from webtools.build_site import build
from webtools.serve import make_server

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RELEASE = os.path.join(ROOT, "web", "models", "sql-autocomplete")
REMINDERS = os.path.join(ROOT, "web", "models", "reminder-extract")
CHROMIUM = "/usr/bin/chromium"
# Without the background-networking flags Chromium keeps trying to reach the (closed) network.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]


def broken_copy(dst: str, corrupt_bytes: bool, fix_manifest: bool) -> str:
    """A copy of the release model with only its int8 variant; bytes and/or manifest tampered."""
    os.makedirs(dst)
    with open(os.path.join(RELEASE, "manifest.json"), encoding="utf-8") as f:
        manifest = json.load(f)
    shutil.copy(os.path.join(RELEASE, "tokenizer.json"), dst)
    with open(os.path.join(RELEASE, "model.int8.onnx"), "rb") as f:
        data = bytearray(f.read())
    if corrupt_bytes:
        data[len(data) // 3: len(data) // 3 + 4096] = b"\xff" * 4096  # inside the graph's protobuf
        data = data[: len(data) // 2]
    with open(os.path.join(dst, "model.int8.onnx"), "wb") as f:
        f.write(data)
    variant = dict(manifest["variants"]["int8"])
    if fix_manifest:
        variant.update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
    else:
        variant.update(sha256="0123456789abcdef" * 4)
    manifest.update(name=os.path.basename(dst), variants={"int8": variant}, default_variant="int8")
    with open(os.path.join(dst, "manifest.json"), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2)
    return dst


@pytest.fixture(scope="session")
def site_dir(tmp_path_factory):
    base = tmp_path_factory.mktemp("site-build")
    models = [RELEASE, REMINDERS, broken_copy(str(base / "corrupt-onnx"), corrupt_bytes=True, fix_manifest=True),
              broken_copy(str(base / "wrong-hash"), corrupt_bytes=False, fix_manifest=False)]
    out = str(base / "site")
    build(out, models)
    return out


@contextlib.contextmanager
def serving(folder: str):
    """webtools.serve's server (COOP/COEP) on a free port for `folder`; yields its base URL."""
    srv = make_server(folder, 0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}/"
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.fixture(scope="session")
def server(site_dir):
    with serving(site_dir) as url:
        yield url


@pytest.fixture(scope="module")  # not session: Playwright's sync API keeps an event loop running in
def browser():                    # this thread while it is open, which breaks asyncio.run in other tests
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium); .ci/run does")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(params=["file", "http"])
def page_url(request, site_dir, server):
    """The page's URL opened either way: file:// (double-click) or from the local server."""
    if request.param == "file":
        return "file://" + os.path.join(site_dir, "index.html")
    return server + "index.html"


@pytest.fixture
def page(browser):
    context = browser.new_context()
    pg = context.new_page()
    pg.set_default_timeout(60_000)
    errors = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.errors = errors
    yield pg
    context.close()


# ---- a tiny model of task "text" (the story panel, model folders opened from disk) ----
# The shape of test_greedy_head_page.py's model with a longer context, so a run lasts long enough to be
# stopped: built like make bench's random-weight models (bench/models.py), ≈5 s, 0.5 MB fp32.
TEXT_MODEL = "story-tiny"
TEXT_ARCH = {"vocab_size": 512, "dim": 64, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "hidden_dim": 160,
             "max_seq_len": 512}


@pytest.fixture(scope="session")
def text_model(tmp_path_factory):
    """A model folder (manifest task "text", prompt format text-v1; variants fp32, int8, q4)."""
    from bench.models import build_random_model
    from pocketlm.manifest import Architecture

    return build_random_model(TEXT_MODEL, str(tmp_path_factory.mktemp("text-models")), arch=Architecture(**TEXT_ARCH),
                              seed=0, log=lambda *a: None)


def native_generate(model_dir: str, variant: str, prompt: str, options: dict) -> dict:
    """ModelSession.generate on native onnxruntime: what the page must reproduce token for token.

    Runs in a thread: Playwright's sync API keeps an event loop running in the test's thread."""
    from concurrent.futures import ThreadPoolExecutor

    def run():
        import asyncio

        from pocketlm.manifest import load_manifest
        from pocketlm.native import NativeModel
        from pocketlm.session import ModelSession
        from pocketlm.tokenizer import Tokenizer

        session = ModelSession(load_manifest(model_dir), Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json")),
                               NativeModel(model_dir, variant=variant))
        return asyncio.run(session.generate(prompt, options))

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(run).result()
