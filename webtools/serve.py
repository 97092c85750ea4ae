"""`make serve`: a static server for site/ on 127.0.0.1 that makes the page cross-origin isolated.

The headers Cross-Origin-Opener-Policy: same-origin and Cross-Origin-Embedder-Policy: require-corp
let the page use SharedArrayBuffer, which onnxruntime-web needs for threads; Cross-Origin-Resource-
Policy: same-origin marks every file as loadable under that policy. Responses are not cached by the
browser (no-cache revalidates), so a rebuilt site is picked up on reload.

    python -m webtools.serve [--dir site] [--port 8000]
"""

from __future__ import annotations

import argparse
import functools
import http.server
import os
import sys

from webtools.csp import CONTENT_SECURITY_POLICY

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ISOLATION_HEADERS = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cross-Origin-Resource-Policy": "same-origin",
}


class SiteHandler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map,
                      ".mjs": "text/javascript", ".js": "text/javascript", ".wasm": "application/wasm",
                      ".onnx": "application/octet-stream", ".json": "application/json"}

    def end_headers(self):
        for name, value in ISOLATION_HEADERS.items():
            self.send_header(name, value)
        if self.csp_applies():  # the page's policy for every response: a worker script gets none from <meta>
            self.send_header("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        self.send_header("Cache-Control", "no-cache")
        super().end_headers()

    def csp_applies(self) -> bool:  # a pocketlm site (make site wrote site-config.js), not any folder served
        return os.path.isfile(os.path.join(self.directory, "site-config.js"))

    def log_message(self, format, *args):  # quiet: one line per error only
        if len(args) > 1 and str(args[1]).startswith(("4", "5")):
            super().log_message(format, *args)


def make_server(directory: str, port: int, host: str = "127.0.0.1") -> http.server.ThreadingHTTPServer:
    handler = functools.partial(SiteHandler, directory=directory)
    return http.server.ThreadingHTTPServer((host, port), handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m webtools.serve", description=__doc__.split("\n")[0])
    parser.add_argument("--dir", default=os.path.join(ROOT, "site"), help="folder to serve (default: site/)")
    parser.add_argument("--port", type=int, default=8000, help="port on 127.0.0.1 (default 8000; 0 = any free)")
    args = parser.parse_args(argv)
    if not os.path.isfile(os.path.join(args.dir, "index.html")):
        print(f"error: {args.dir} has no index.html; build the site first with make site", file=sys.stderr)
        return 2
    try:
        server = make_server(args.dir, args.port)
    except OSError as e:
        print(f"error: cannot listen on 127.0.0.1:{args.port} ({e.strerror}); pick another with PORT=...", file=sys.stderr)
        return 2
    print(f"serving {args.dir} at http://127.0.0.1:{server.server_address[1]}/ (cross-origin isolated; Ctrl-C stops)",
          flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
