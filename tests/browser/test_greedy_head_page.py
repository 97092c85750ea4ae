"""The greedy head in the page: a model exported with next_token/logits_sum (export/onnx_graph.py) decodes
greedily in the browser without the logits crossing into Python, and gives the very tokens of the
native run — both the native head path and the native logits path.

The model is a tiny random-weight "text" model built like make bench's (bench/models.py), in its own
site (the release models, whose manifests predate the head, are covered by test_page_runtime.py).
"""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.browser.conftest import serving
from webtools.build_site import build

NAME = "head-tiny"
VARIANTS = ["fp32", "int8", "q4"]
PROMPT = "Bako tirel, ma vusi."
OPTIONS = [{"max_new_tokens": 48, "ignore_eos": True}, {"max_new_tokens": 48}]


@pytest.fixture(scope="module")
def head_model(tmp_path_factory):
    from bench.models import build_random_model
    from pocketlm.manifest import Architecture

    arch = Architecture(vocab_size=512, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=160, max_seq_len=128)
    return build_random_model(NAME, str(tmp_path_factory.mktemp("head-models")), arch=arch, seed=0, log=lambda *a: None)


@pytest.fixture(scope="module")
def head_server(head_model, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("head-site") / "site")
    build(out, [head_model])
    with serving(out) as url:
        yield url


def native_runs(model_dir: str, variant: str, head: bool) -> list[dict]:
    """The page's generations, run natively (in a thread: Playwright's sync API holds an event loop here)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(_native_runs, model_dir, variant, head).result()


def _native_runs(model_dir: str, variant: str, head: bool) -> list[dict]:
    from pocketlm.manifest import load_manifest
    from pocketlm.native import NativeModel
    from pocketlm.session import ModelSession
    from pocketlm.tokenizer import Tokenizer

    backend = NativeModel(model_dir, variant=variant)
    if not head:  # the same forward without the head mark: the logits path
        forward = backend.forward
        backend.forward = lambda ids, cache: forward(ids, cache)
    session = ModelSession(load_manifest(model_dir), Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json")),
                           backend)
    return [asyncio.run(session.generate(PROMPT, opts)) for opts in OPTIONS]


PAGE = """async ([name, variants, prompt, options]) => {
  const rows = [];
  for (const variant of variants) {
    const model = await pocketlm.load(name, {variant});
    for (const opts of options) {
      const out = await model.generate(prompt, opts);
      rows.push({variant: model.variant, token_ids: out.token_ids, head_steps: out.stats.head_steps});
    }
    model.dispose();
  }
  return rows;
}"""


def test_page_with_the_head_gives_the_native_greedy_tokens(page, head_server, head_model):
    page.goto(head_server + "index.html?autoload=0")
    rows = page.evaluate(PAGE, [NAME, VARIANTS, PROMPT, OPTIONS])
    assert not page.errors
    for k, row in enumerate(rows):
        variant, case = VARIANTS[k // len(OPTIONS)], k % len(OPTIONS)
        assert row["variant"] == variant
        head = native_runs(head_model, variant, head=True)[case]
        plain = native_runs(head_model, variant, head=False)[case]
        assert row["token_ids"] == head["token_ids"] == plain["token_ids"], (variant, OPTIONS[case])
        assert plain["stats"]["head_steps"] == 0
        # every step but one that <eos> (banned) won used the head, in the page as natively
        assert row["head_steps"] == head["stats"]["head_steps"] >= len(row["token_ids"]) - 1 > 0
