"""One http origin for everything `make bench` loads in the browser (webtools.serve's handler: COOP/COEP,
so pages are cross-origin isolated and may use threads):

    /                 the built site (runs/bench/site: pocketlm's page, shipped models embedded too)
    /bench-models/    runs/bench/models (random-weight models, text-task copies of the shipped ones)
    /hf/              runs/bench/hf (the hf/ exports transformers.js reads)
    /bench/           bench/web (the transformers.js page)
    /tjs/, /tjs-ort/  transformers.js' dist/ and the onnxruntime-web dist/ it pins (bench/js/node_modules)
"""

from __future__ import annotations

import functools
import http.server
import os
import threading

from webtools.serve import SiteHandler

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NODE = os.path.join(ROOT, "bench", "js", "node_modules")


def mounts(site: str, work: str) -> dict[str, str]:
    return {
        "/bench-models/": os.path.join(work, "models"),
        "/hf/": os.path.join(work, "hf"),
        "/bench/": os.path.join(ROOT, "bench", "web"),
        "/tjs/": os.path.join(NODE, "@huggingface", "transformers", "dist"),
        "/tjs-ort/": os.path.join(NODE, "onnxruntime-web", "dist"),
        "/": site,
    }


class BenchHandler(SiteHandler):
    def __init__(self, *args, mounts: dict[str, str], **kwargs):
        self.mounts = mounts
        super().__init__(*args, directory=mounts["/"], **kwargs)

    def csp_applies(self) -> bool:  # the transformers.js page and its files are not ours: no policy there
        return not self.path.startswith(("/bench/", "/tjs/", "/tjs-ort/", "/hf/")) and super().csp_applies()

    def translate_path(self, path):
        for prefix, folder in self.mounts.items():
            if path.startswith(prefix):
                self.directory = folder
                return super().translate_path("/" + path[len(prefix):])
        return super().translate_path(path)


def start(site: str, work: str, extra: dict[str, str] | None = None) -> tuple[http.server.ThreadingHTTPServer, str]:
    """Serve on 127.0.0.1 (a free port) in a daemon thread; returns (server, base URL). `extra`: more
    prefix -> folder mounts, matched before the site's "/" (bench/ab.py serves a second page at /base/)."""
    handler = functools.partial(BenchHandler, mounts={**(extra or {}), **mounts(site, work)})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"
