"""pocketlm.session: the generic generate(prompt, options) API the page calls, run natively here."""

import asyncio
import hashlib
import os

import pytest

from pocketlm.completer import SqlCompleter
from pocketlm.manifest import ManifestError
from pocketlm.native import NativeModel
from pocketlm.sampler import SamplingError
from pocketlm.session import ModelSession, open_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = os.path.join(ROOT, "web", "models", "sql-autocomplete")
SCHEMA = "singer(Singer_ID, Name, Country, Age)\nconcert(concert_ID, Theme, Year)"


def read(name, mode="r"):
    with open(os.path.join(MODEL, name), mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
        return f.read()


def digests(*names):
    return {n: [hashlib.sha256(read(n, "rb")).hexdigest(), len(read(n, "rb"))] for n in names}


@pytest.fixture(scope="module")
def session():
    model = NativeModel(MODEL, variant="int8")
    manifest, tokenizer, _ = open_model(read("manifest.json"), read("tokenizer.json"), "int8",
                                        digests("tokenizer.json", "model.int8.onnx"))
    return ModelSession(manifest, tokenizer, model), SqlCompleter(manifest, tokenizer, model)


@pytest.mark.parametrize("prefix", ["", "SELECT count(*) FROM sin", "SELECT Name FROM singer WHERE Age >"])
def test_generate_equals_the_completer(session, prefix):
    s, completer = session
    out = asyncio.run(s.generate(prefix, {"schema": SCHEMA, "max_new_tokens": 12}))
    ref = asyncio.run(completer.complete(SCHEMA, prefix, completer.options(max_new_tokens=12)))
    assert (out["text"], out["token_ids"], out["stop_reason"]) == (ref.text, ref.token_ids, ref.stop_reason)
    assert set(out["stats"]) >= {"prefill_ms", "decode_ms", "tokens_per_s"}


def test_streamed_tokens_add_up_to_the_text(session):
    seen = []
    out = asyncio.run(session[0].generate("SELECT", {"schema": SCHEMA}, on_token=lambda t, d: seen.append((t, d))))
    assert [t for t, _ in seen] and "".join(d for _, d in seen) == out["text"]


def test_cancelled_generation_stops_before_the_first_forward(session):
    out = asyncio.run(session[0].generate("SELECT", {"schema": SCHEMA}, cancelled=lambda: True))
    assert out["stop_reason"] == "cancelled" and out["token_ids"] == []


@pytest.mark.parametrize("options, message", [
    ({"temprature": 0.5}, r"unknown options \['temprature'\]"),
    ({"top_p": 1.5}, r"top_p must be in \(0, 1\]"),
    ({"schema": 5}, "schema must be a string"),
])
def test_bad_options_are_rejected_by_name(session, options, message):
    with pytest.raises(SamplingError, match=message):
        asyncio.run(session[0].generate("SELECT", options))


def test_open_model_names_the_file_whose_hash_is_wrong():
    d = digests("tokenizer.json", "model.int8.onnx")
    d["model.int8.onnx"][0] = "0" * 64
    with pytest.raises(ManifestError, match=r"variant 'int8' file 'model\.int8\.onnx' has sha256 000000000000…"):
        open_model(read("manifest.json"), read("tokenizer.json"), "int8", d)


def test_open_model_rejects_bad_manifest_json_and_unknown_variant():
    with pytest.raises(ManifestError, match="manifest.json is not valid JSON"):
        open_model("{", read("tokenizer.json"), None, {})
    with pytest.raises(ManifestError, match="has no variant 'q8'"):
        open_model(read("manifest.json"), read("tokenizer.json"), "q8", {})


def test_output_does_not_depend_on_what_was_typed_before():
    """int8 quantizes activations per forward call, so the completer always feeds a prompt as the
    same chunks: a completion while typing equals the completion of a fresh session."""
    model = NativeModel(MODEL, variant="int8")
    manifest, tokenizer = model.manifest, open_model(read("manifest.json"), read("tokenizer.json"), "int8",
                                                     digests("tokenizer.json", "model.int8.onnx"))[1]
    typing = ModelSession(manifest, tokenizer, model)
    typed = "SELECT count(*) FROM singer WHERE Age >"
    for n in range(0, len(typed) + 1, 3):
        prefix = typed[:n]
        fresh = ModelSession(manifest, tokenizer, model)
        assert asyncio.run(typing.generate(prefix, {"schema": SCHEMA}))["token_ids"] == \
            asyncio.run(fresh.generate(prefix, {"schema": SCHEMA}))["token_ids"], prefix
