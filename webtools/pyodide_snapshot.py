"""Make the Pyodide memory snapshot at build time: Pyodide booted under Node, pocketlm imported.

A page that restores it (`loadPyodide({_loadSnapshot: bytes})`) skips Python's start-up and
pocketlm's imports. The work is done by webtools/pyodide_snapshot.mjs; this wrapper finds node, runs
it and returns what it wrote. Same inputs give the same bytes (the script fixes the clock and the
entropy source while it runs).

The snapshot is only valid with the exact Pyodide build it was made with, the same
python_stdlib.zip bytes as stdLibURL, and the same pocketlm zip bytes written to the same path
(`zip_path`) before Python imports anything new; see pyodide_snapshot.mjs for the restore recipe.

    python -m webtools.pyodide_snapshot --out runs/pyodide.snapshot [--zip py/pocketlm.zip]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "webtools", "pyodide_snapshot.mjs")
PYODIDE = os.path.join(ROOT, "web", "node_modules", "pyodide")
ZIP_PATH = "/lib/pocketlm.zip"  # where the worker writes the zip (web/src/worker.mjs)


class SnapshotError(Exception):
    """The snapshot could not be made; the message is one line saying why."""


def make_snapshot(zip_file: str, out: str, *, pyodide_dir: str = PYODIDE, zip_path: str = ZIP_PATH,
                  imports: list[str] | None = None, timeout: float = 300) -> dict:
    """Write the snapshot of Pyodide with `zip_file` at `zip_path` on sys.path and `imports` imported.

    Returns the script's report: out (the path written), bytes, heap_bytes, sha256, pyodide, python,
    zip_sha256, stdlib_sha256, imports, modules, pocketlm_modules.
    """
    node = shutil.which("node")
    if node is None:
        raise SnapshotError("node is not installed; it is needed to make the Pyodide snapshot (apt-get install nodejs)")
    if not os.path.isfile(os.path.join(pyodide_dir, "pyodide.mjs")):
        raise SnapshotError(f"{pyodide_dir} has no pyodide.mjs; run make setup (npm ci in web/)")
    cmd = [node, SCRIPT, "--pyodide", pyodide_dir, "--zip", zip_file, "--out", out, "--zip-path", zip_path]
    if imports is not None:
        cmd += ["--import", ",".join(imports)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise SnapshotError(f"making the Pyodide snapshot took more than {timeout:.0f} s") from None
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.strip().splitlines() if line.strip()] or [f"exit status {proc.returncode}"]
        raise SnapshotError(f"making the Pyodide snapshot failed: {lines[0].removeprefix('error: ')}"
                            + (f" ({lines[-1].strip()})" if len(lines) > 1 else ""))
    return json.loads(proc.stdout.strip().splitlines()[-1])


# The snapshot as the site ships it: a Pyodide memory image is half all-zero pages (31 MB, 15 MB of
# them not zero), so the site leaves those out and the page (web/src/assets.js `unsparse`) puts them
# back. Little-endian u32s: magic "PLSS", version 1, total bytes, page size, run count; then per run of
# kept pages (first page, page count); then the kept pages' bytes, in order.
SPARSE_MAGIC, SPARSE_VERSION, PAGE = b"PLSS", 1, 4096


def sparse(data: bytes, page: int = PAGE) -> bytes:
    """`data` without its all-zero pages (see SPARSE_MAGIC).

    >>> s = sparse(b"ab" + bytes(8) + b"c", page=2)  # pages: "ab", 0000, "c"
    >>> s[:4], struct.unpack("<5I", s[:20])[1:], struct.unpack("<4I", s[20:36]), s[36:]
    (b'PLSS', (1, 11, 2, 2), (0, 1, 5, 1), b'abc')
    """
    n_pages = (len(data) + page - 1) // page
    zero = bytes(page)
    runs: list[list[int]] = []
    for i in range(n_pages):
        chunk = data[i * page:(i + 1) * page]
        if chunk != zero[:len(chunk)]:
            if runs and runs[-1][0] + runs[-1][1] == i:
                runs[-1][1] += 1
            else:
                runs.append([i, 1])
    header = struct.pack("<4s4I", SPARSE_MAGIC, SPARSE_VERSION, len(data), page, len(runs))
    table = b"".join(struct.pack("<2I", first, count) for first, count in runs)
    return header + table + b"".join(data[first * page:(first + count) * page] for first, count in runs)


def snapshot_bytes(pocketlm_zip: bytes, **kwargs) -> tuple[bytes, dict]:
    """make_snapshot for a zip held in memory (as webtools.build_site has it): (snapshot, report)."""
    with tempfile.TemporaryDirectory(prefix="pyodide-snapshot-") as tmp:
        zip_file, out = os.path.join(tmp, "pocketlm.zip"), os.path.join(tmp, "pyodide.snapshot")
        with open(zip_file, "wb") as f:
            f.write(pocketlm_zip)
        info = make_snapshot(zip_file, out, **kwargs)
        with open(out, "rb") as f:
            return f.read(), info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m webtools.pyodide_snapshot", description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="snapshot file to write")
    parser.add_argument("--zip", help="the pocketlm zip the page ships (default: built from pysrc/ as make site does)")
    parser.add_argument("--import", dest="imports", help="comma-separated modules to import (default: the worker's)")
    args = parser.parse_args(argv)
    try:
        if args.zip:
            info = make_snapshot(args.zip, args.out, imports=args.imports and args.imports.split(","))
        else:
            from webtools.build_site import pocketlm_zip

            data, info = snapshot_bytes(pocketlm_zip(), imports=args.imports and args.imports.split(","))
            with open(args.out, "wb") as f:
                f.write(data)
            info["out"] = args.out
    except SnapshotError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {info['out']}: {info['bytes'] / 1e6:.1f} MB (heap {info['heap_bytes'] / 2**20:.1f} MiB), "
          f"{info['modules']} modules imported, sha256 {info['sha256'][:12]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
