"""A llama2.c checkpoint in the page: `python -m export llama2c` on a model.bin + tokenizer.bin written by
the test (llama2.c's version-1 format, random weights; a SentencePiece-style vocabulary with byte
fallback), the folder opened from disk in the story panel, greedy output equal to native token for
token and text for text — so Pyodide runs the Llama tokenizer family (pocketlm/tokenizer_spm.py)
exactly as CPython does, emoji and CJK (byte-fallback pieces) included.
"""

from __future__ import annotations

import os

import pytest

from tests.browser.conftest import native_generate
from tests.browser.test_model_from_disk import GREEDY, open_folder, story_greedy

PROMPTS = ["Once upon a time, Bala kitu", "Pika 🙂 sees 東京, then"]


@pytest.fixture(scope="module")
def llama2c_model(tmp_path_factory):
    from bench.llama2c_model import write_checkpoint_v1, write_tokenizer_bin
    from export.llama2c import import_checkpoint
    from pocketlm.manifest import Architecture

    src = tmp_path_factory.mktemp("llama2c-files")
    arch = Architecture(vocab_size=700, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=128, max_seq_len=256)
    write_checkpoint_v1(str(src / "model.bin"), arch, seed=3)
    write_tokenizer_bin(str(src / "tokenizer.bin"), arch.vocab_size, seed=3)
    out = tmp_path_factory.mktemp("llama2c-models")
    return import_checkpoint(str(src / "model.bin"), out_root=str(out), name="stories-tiny", variants=("fp32",),
                             log=lambda m: None)


@pytest.mark.parametrize("page_url", ["file"], indirect=True)
def test_an_imported_llama2c_model_runs_in_the_page_as_natively(page, page_url, llama2c_model):
    page.goto(page_url + "?autoload=0")
    assert open_folder(page, llama2c_model) == "loaded", page.inner_text("#folder-error")
    for prompt in PROMPTS:
        out = story_greedy(page, prompt)
        expected = native_generate(llama2c_model, "fp32", prompt, GREEDY)
        assert out["token_ids"] == expected["token_ids"] and out["text"] == expected["text"]
        assert len(out["token_ids"]) > 10
    # the byte-fallback pieces are in play: the emoji and the CJK characters are not in the vocabulary
    from pocketlm.tokenizer import Tokenizer

    tok = Tokenizer.from_file(os.path.join(llama2c_model, "tokenizer.json"))
    ids = tok.encode(PROMPTS[1])
    assert any(3 <= i < 259 for i in ids) and tok.decode(ids) == PROMPTS[1]
    assert not page.errors
