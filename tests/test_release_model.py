"""The committed release model folder loads, validates, and reproduces its golden greedy output."""

import asyncio
import json
import os

import pytest

from export.golden import golden
from pocketlm.completer import SqlCompleter
from pocketlm.manifest import load_manifest
from pocketlm.native import NativeModel
from pocketlm.tokenizer import Tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = os.path.join(ROOT, "web", "models")
RELEASED = ["sql-autocomplete"]


@pytest.mark.parametrize("name", RELEASED)
def test_release_folder_validates_against_its_manifest(name):
    manifest = load_manifest(os.path.join(MODELS, name))  # sizes and sha256 of every file
    assert set(manifest.variants) == {"fp32", "int8", "q4"}
    assert manifest.training["val_dbs"], "the held-out databases must be recorded"


@pytest.mark.parametrize("name", RELEASED)
def test_release_model_reproduces_golden_greedy_output(name):
    with open(os.path.join(ROOT, "tests", "golden", f"{name}.json"), encoding="utf-8") as f:
        expected = json.load(f)
    actual = golden(os.path.join(MODELS, name))
    assert [(c["variant"], c["prefix"], c["token_ids"]) for c in actual["cases"]] == [
        (c["variant"], c["prefix"], c["token_ids"]) for c in expected["cases"]
    ]


@pytest.mark.parametrize("name", RELEASED)
def test_release_model_completes_real_queries(name):
    """Not a golden check: the shipped model knows SQL's structure, and the product finishes names
    from the schema (a trained model, not random weights, on a schema it never saw)."""
    model = NativeModel(os.path.join(MODELS, name))
    tokenizer = Tokenizer.from_file(os.path.join(MODELS, name, "tokenizer.json"))
    completer = SqlCompleter(model.manifest, tokenizer, model)
    schema = "singer(Singer_ID, Name, Country, Age)\nconcert(concert_ID, Theme, Year)"

    def complete(prefix, **kw):
        return asyncio.run(completer.complete(schema, prefix, **kw)).text

    assert complete("SELECT count(*)", finish_names=False).startswith(" FROM")
    assert complete("SELECT name FROM singer WHERE age  >  30 ORDER", finish_names=False).startswith(" BY")
    assert complete("SELECT count(*) FROM sin").startswith("ger")
    assert complete("SELECT T1.Name FROM singer AS T1 JOIN c").startswith("oncert")
