"""Build the static site (`make site`): web/ + the pinned npm runtimes + model folders -> site/.

The same folder works two ways:
- over http (`make serve`): the page fetches site/<path>;
- opened as file:// (double-click index.html): fetch is refused there, so every asset the worker
  needs is also written as a classic script site/embed/<path>.js holding it as base64 of gzip
  (../shared/notes/browser.md: the one loading route Chromium allows on file://).

HTML and the site's config script are rendered from jinja2 templates in web/templates/. The site
is built into a temporary folder next to the target and swapped in only when complete, so a failed
build never leaves a half-written site in place.

    python -m webtools.build_site [--out site] [--model DIR ...]
"""

from __future__ import annotations

import argparse
import base64
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import sys
import zipfile

import jinja2

from webtools.csp import CONTENT_SECURITY_POLICY
from webtools.pyodide_snapshot import SnapshotError, snapshot_bytes, sparse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WEB = os.path.join(ROOT, "web")
NODE = os.path.join(WEB, "node_modules")
PYSRC = os.path.join(ROOT, "pysrc")

# site path -> source path: what the worker needs, from npm (versions pinned by web/package-lock.json)
RUNTIME_FILES = {
    "vendor/pyodide/pyodide.mjs": "pyodide/pyodide.mjs",
    "vendor/pyodide/pyodide.asm.mjs": "pyodide/pyodide.asm.mjs",
    "vendor/pyodide/pyodide.asm.wasm": "pyodide/pyodide.asm.wasm",
    "vendor/pyodide/python_stdlib.zip": "pyodide/python_stdlib.zip",
    # the plain WASM build (0.5-0.8 s faster to load than the JSEP build, ../shared/notes/browser.md):
    # only its emscripten module, which web/src/engine.mjs drives through onnxruntime's C API
    "vendor/ort/ort-wasm-simd-threaded.mjs": "onnxruntime-web/dist/ort-wasm-simd-threaded.mjs",
    "vendor/ort/ort-wasm-simd-threaded.wasm": "onnxruntime-web/dist/ort-wasm-simd-threaded.wasm",
}
# loaded by index.html itself, in this order (filecache.js and assets.js call each other once loaded, pocketlm.js
# uses assets.js; folder.js extends pocketlm.js; disk.js routes to the panels)
PAGE_FILES = ["filecache.js", "assets.js", "pocketlm.js", "folder.js", "app.js", "reminders.js", "story.js", "disk.js", "style.css"]
WORKER_FILES = ["worker.mjs", "engine.mjs"]  # handed to the worker as bytes
# Vendor code defaults that would fetch from a CDN if ever used; the page passes its own URLs, and
# the build rewrites these so that even a fallback cannot leave the origin.
VENDOR_REWRITES = {
    "vendor/pyodide/pyodide.mjs": [("https://cdn.jsdelivr.net/pyodide/v${U}/full/", "vendor/pyodide/")],
}
# Measured (README, "Threads"): one ORT thread decodes these models fastest even when isolated.
THREADS_WHEN_ISOLATED = 1
# The Pyodide memory snapshot (webtools/pyodide_snapshot.py): Python booted with pocketlm imported,
# made from the exact pocketlm.zip bytes below, shipped without its all-zero pages (`sparse`: 31 -> 15 MB;
# the page puts them back with a copy, web/src/assets.js `unsparse`) and embedded for file:// like every
# asset. Not gzipped over http: measured on make serve (localhost), fetching 31 MB beat fetching a 6 MB
# .gz and gunzipping it in the page (~0.25 s for 31 MB) or the worker by ~0.3-0.4 s; a real web server
# would compress it on the wire (Content-Encoding) and the browser decodes that natively.
SNAPSHOT = "vendor/pyodide/pyodide.snapshot.sparse"


class BuildError(Exception):
    """Something the build needs is missing or wrong; the message says what to run."""


def pocketlm_zip() -> bytes:
    """The pocketlm package as a zip of its sources, imported in Pyodide with zipimport.

    Fixed timestamps and order, so the same sources give the same bytes.
    """
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for dirpath, dirnames, filenames in os.walk(os.path.join(PYSRC, "pocketlm")):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
            for name in sorted(filenames):
                if name.endswith(".py"):
                    path = os.path.join(dirpath, name)
                    info = zipfile.ZipInfo(os.path.relpath(path, PYSRC).replace(os.sep, "/"), (2020, 1, 1, 0, 0, 0))
                    info.compress_type = zipfile.ZIP_DEFLATED
                    with open(path, "rb") as f:
                        z.writestr(info, f.read())
    return buf.getvalue()


def minimal_lock() -> bytes:
    """Pyodide's lock file minus its package list: the page loads no packages (none are available
    offline), but Pyodide checks the lock's ABI (`info.abi_version`) before it starts."""
    with open(os.path.join(NODE, "pyodide", "pyodide-lock.json"), encoding="utf-8") as f:
        info = json.load(f)["info"]
    return (json.dumps({"info": info, "packages": {}}, sort_keys=True) + "\n").encode()


def embed_script(path: str, data: bytes) -> bytes:
    b64 = base64.b64encode(gzip.compress(data, compresslevel=6, mtime=0)).decode("ascii")
    return f"pocketlmEmbedded({json.dumps(path)}, \"{b64}\");\n".encode("ascii")


def model_files(model_dir: str) -> dict[str, str]:
    """file name -> path for a model folder: its manifest, tokenizer and every variant."""
    manifest_path = os.path.join(model_dir, "manifest.json")
    try:
        with open(manifest_path, encoding="utf-8") as f:
            manifest = json.load(f)
        names = ["manifest.json", manifest["tokenizer"]["file"]] + [v["file"] for v in manifest["variants"].values()]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise BuildError(f"{model_dir} is not a model folder ({manifest_path}: {e}); run make export") from None
    return {n: os.path.join(model_dir, n) for n in names}


def build(out: str, model_dirs: list[str]) -> dict:
    """Write the site to `out` (replacing it only when complete). Returns the site config."""
    for src in RUNTIME_FILES.values():
        if not os.path.isfile(os.path.join(NODE, src)):
            raise BuildError(f"web/node_modules/{src} is missing; run make setup (npm ci in web/)")
    files: dict[str, bytes] = {}  # site path -> bytes
    for dst, src in RUNTIME_FILES.items():
        with open(os.path.join(NODE, src), "rb") as f:
            files[dst] = f.read()
    for dst, rewrites in VENDOR_REWRITES.items():
        text = files[dst].decode("utf-8")
        for old, new in rewrites:
            if old not in text:
                raise BuildError(f"{dst}: expected to find {old!r} to rewrite; update VENDOR_REWRITES for this version")
            text = text.replace(old, new)
        files[dst] = text.encode("utf-8")
    files["vendor/pyodide/pyodide-lock.json"] = minimal_lock()
    files["py/pocketlm.zip"] = pocketlm_zip()
    try:
        snapshot, _ = snapshot_bytes(files["py/pocketlm.zip"], pyodide_dir=os.path.join(NODE, "pyodide"))
        files[SNAPSHOT] = sparse(snapshot)
    except SnapshotError as e:
        raise BuildError(str(e)) from None
    for name in PAGE_FILES + WORKER_FILES:
        with open(os.path.join(WEB, "src", name), "rb") as f:
            files[name] = f.read()
    models = {}
    for model_dir in model_dirs:
        name = os.path.basename(os.path.normpath(model_dir))
        for file, path in model_files(model_dir).items():
            with open(path, "rb") as f:
                files[f"models/{name}/{file}"] = f.read()
        manifest = json.loads(files[f"models/{name}/manifest.json"])
        models[name] = {"default_variant": manifest["default_variant"], "task": manifest.get("task"),
                        "variants": {k: v["bytes"] for k, v in manifest["variants"].items()}}
    schemas = {}
    for file in sorted(os.listdir(os.path.join(WEB, "schemas"))):
        if file.endswith(".txt"):
            with open(os.path.join(WEB, "schemas", file), encoding="utf-8") as f:
                schemas[file[:-4]] = f.read()
    config = {
        "assets": {p: len(b) for p, b in sorted(files.items())},
        # sha256 of what the page fetches over http (web/src/assets.js checks each runtime file against it
        # before use, and refuses one that differs); models are checked against their manifest's sha256.
        "integrity": {p: "sha256-" + base64.b64encode(hashlib.sha256(b).digest()).decode("ascii")
                      for p, b in sorted(files.items()) if not p.startswith("models/")},
        "models": models,
        "schemas": schemas,
        "threads_when_isolated": THREADS_WHEN_ISOLATED,
        "versions": npm_versions(),
    }
    for path in list(files):
        if path not in PAGE_FILES:
            files[f"embed/{path}.js"] = embed_script(path, files[path])
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(os.path.join(WEB, "templates")),
                             autoescape=jinja2.select_autoescape(["html.j2"]), undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True)
    files["site-config.js"] = env.get_template("site-config.js.j2").render(config_json=json.dumps(
        config, indent=1, sort_keys=True)).encode("utf-8")
    files["index.html"] = env.get_template("index.html.j2").render(
        csp=CONTENT_SECURITY_POLICY, models=models, schemas=schemas, versions=config["versions"],
        asset_hash=hashlib.sha256(b"".join(files[p] for p in PAGE_FILES)).hexdigest()[:12]).encode("utf-8")
    check_no_remote_urls(files)
    write_atomically(out, files)
    return config


def npm_versions() -> dict[str, str]:
    versions = {}
    for pkg in ("pyodide", "onnxruntime-web"):
        with open(os.path.join(NODE, pkg, "package.json"), encoding="utf-8") as f:
            versions[pkg] = json.load(f)["version"]
    return versions


URL = re.compile(rb"\b(?:https?|wss?)://[^\s\"'`)<>]+")
# Text that looks like a URL inside vendor code but is never fetched: a template. Anything else makes
# the build fail.
ALLOWED_VENDOR_URLS = {
    "vendor/pyodide/pyodide.asm.mjs": {b"https://${t}"},
}


def remote_urls(path: str, data: bytes) -> list[bytes]:
    """Absolute URLs in a text file of the site, minus the vendor strings known not to be fetched."""
    if not path.endswith((".html", ".js", ".mjs", ".css", ".json")):
        return []  # wasm and zip: documentation strings inside binaries, never requested
    return [u for u in URL.findall(data) if u not in ALLOWED_VENDOR_URLS.get(path, set())]


def check_no_remote_urls(files: dict[str, bytes]) -> None:
    for path, data in files.items():
        found = remote_urls(path, data)
        if found:
            raise BuildError(f"{path} mentions a URL outside the page's origin: {found[0].decode(errors='replace')}")


def write_atomically(out: str, files: dict[str, bytes]) -> None:
    out = os.path.abspath(out)
    tmp, old = out + ".tmp", out + ".old"
    for path in (tmp, old):
        shutil.rmtree(path, ignore_errors=True)
    for rel, data in files.items():
        path = os.path.join(tmp, *rel.split("/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
    if os.path.exists(out):
        os.rename(out, old)
    os.rename(tmp, out)
    shutil.rmtree(old, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m webtools.build_site", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=os.path.join(ROOT, "site"), help="output folder (default: site/)")
    parser.add_argument("--model", action="append", dest="models", metavar="DIR",
                        help="model folder to include (repeatable; default: every folder in web/models/)")
    args = parser.parse_args(argv)
    model_dirs = args.models
    if not model_dirs:
        base = os.path.join(WEB, "models")
        model_dirs = [os.path.join(base, d) for d in sorted(os.listdir(base))
                      if os.path.isfile(os.path.join(base, d, "manifest.json"))]
    try:
        config = build(args.out, model_dirs)
    except BuildError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    total = sum(config["assets"].values())
    print(f"built {args.out}: {len(config['models'])} model(s), {total / 1e6:.1f} MB of assets")
    return 0


if __name__ == "__main__":
    sys.exit(main())
