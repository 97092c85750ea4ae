"""The page's Content Security Policy: one definition, written into index.html as a <meta> tag by
webtools/build_site.py (so it holds on file://, where no server sends headers) and sent as a header by
webtools/serve.py (so it also holds for the http worker script, which a <meta> tag does not cover).

Each directive, and why it is what it is (tests/browser/test_csp.py loads, generates and checks that an
injected remote script or fetch is blocked and reported, both ways of opening the page):
- default-src 'none': anything not listed below is refused;
- script-src 'self' blob: 'wasm-unsafe-eval': the page's own scripts; the worker imports Pyodide's and
  onnxruntime-web's code from blob: URLs it makes from bytes; both compile WebAssembly. No inline
  script, no eval, no remote origin;
- worker-src 'self' blob: data:: the worker is worker.mjs over http and a data: URL on file://;
- connect-src 'self' blob:: fetches go to the page's own origin only (models, runtime assets), plus the
  blob: URL Pyodide reads its standard library from;
- style-src 'self': the stylesheet (no inline style attributes in the HTML);
- img-src 'self' data:: the empty data: favicon; object-src, base-uri, form-action: 'none'.
"""

CONTENT_SECURITY_POLICY = ("default-src 'none'; script-src 'self' blob: 'wasm-unsafe-eval'; "
                           "worker-src 'self' blob: data:; connect-src 'self' blob:; style-src 'self'; "
                           "img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'none'")
