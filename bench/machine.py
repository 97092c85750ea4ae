"""What `make bench` records about the machine it ran on: CPU, versions, load, memory bandwidth, L3 size, commit."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")


def machine_info(chromium_version: str | None) -> dict:
    import onnxruntime

    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass

    def npm_version(folder, pkg):
        try:
            with open(os.path.join(folder, "node_modules", pkg, "package.json"), encoding="utf-8") as f:
                return json.load(f)["version"]
        except OSError:
            return None

    return {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "chromium": chromium_version, "native_onnxruntime": onnxruntime.__version__,
            "pyodide": npm_version(os.path.join(ROOT, "web"), "pyodide"),
            "onnxruntime_web": npm_version(os.path.join(ROOT, "web"), "onnxruntime-web"),
            "transformers_js": npm_version(os.path.join(BENCH, "js"), "@huggingface/transformers"),
            "transformers_js_onnxruntime_web": npm_version(os.path.join(BENCH, "js"), "onnxruntime-web"),
            "load_average_start": list(os.getloadavg()), "memory_read_gb_s": memory_read_gb_s(),
            "l3_cache_bytes": l3_cache_bytes()}


def memory_read_gb_s() -> float:
    """One core's read bandwidth from memory (GB/s): the best of 5 maxima over 256 MB, far more than any cache
    (max, not sum: numpy's sum is compute-bound near this figure even in cache; max runs ~3x faster there).
    A decode step reads every weight once, so a model bigger than the caches cannot decode faster than
    this / its weight bytes tokens per second, whatever the kernels (the report's decode table)."""
    import numpy as np

    a = np.ones(64 * 1024 * 1024, dtype=np.float32)  # 256 MB
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        a.max()
        best = min(best, time.perf_counter() - t0)
    return a.nbytes / best / 1e9


def l3_cache_bytes() -> int | None:
    try:
        with open("/sys/devices/system/cpu/cpu0/cache/index3/size") as f:
            text = f.read().strip()  # e.g. "32768K"
        return int(text[:-1]) * {"K": 1024, "M": 1024 ** 2}[text[-1]] if text[-1] in "KM" else int(text)
    except (OSError, ValueError):
        return None


def git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None
