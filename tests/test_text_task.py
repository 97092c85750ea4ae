"""The generic "text" task (pocketlm.tasks.text) through ModelSession, natively, on the committed
sql-autocomplete weights loaded as a text model (the task runs any model folder whose manifest says so)."""

import asyncio
import dataclasses
import os
import subprocess
import sys
from array import array

import pytest

from pocketlm.generate import generate
from pocketlm.manifest import load_manifest
from pocketlm.native import NativeModel
from pocketlm.sampler import SamplingError, SamplingOptions
from pocketlm.session import ModelSession
from pocketlm.tasks import text
from pocketlm.tokenizer import Tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = os.path.join(ROOT, "web", "models", "sql-autocomplete")
PROMPT = "singer(Singer_ID, Name, Country, Age)\n\nSELECT name FROM singer WHERE"


@pytest.fixture(scope="module")
def parts():
    manifest = dataclasses.replace(load_manifest(MODEL), task="text", prompt={"format": text.FORMAT})
    tokenizer = Tokenizer.from_file(os.path.join(MODEL, "tokenizer.json"))
    backend = NativeModel(MODEL, variant="fp32")
    return manifest, tokenizer, backend


@pytest.fixture(scope="module")
def session(parts):
    return ModelSession(*parts)


def run(session, prompt, **options):
    return asyncio.run(session.generate(prompt, {"temperature": 0.0, **options}))


def test_text_task_is_the_plain_generate_loop_from_bos_plus_the_text(parts, session):
    manifest, tokenizer, backend = parts
    out = run(session, PROMPT, max_new_tokens=12)
    ids = [manifest.tokenizer.bos_id] + tokenizer.encode(PROMPT)
    ref = asyncio.run(generate(backend.forward, backend.new_cache(), ids, SamplingOptions(max_new_tokens=12),
                               eos_id=manifest.tokenizer.eos_id, decode_bytes=tokenizer.decode_bytes))
    assert (out["token_ids"], out["text"], out["stop_reason"]) == (ref.token_ids, ref.text, ref.stop_reason)
    assert out["stats"]["prompt_tokens"] == len(ids) and out["stats"]["truncated_tokens"] == 0
    again = run(session, PROMPT, max_new_tokens=12)  # the kept cache is reset: the same prompt, the same output
    assert (again["token_ids"], again["text"]) == (out["token_ids"], out["text"])


def test_ignore_eos_generates_exactly_max_new_tokens_and_never_eos(parts, session):
    eos = parts[0].tokenizer.eos_id
    free = run(session, PROMPT, max_new_tokens=64)
    assert free["stop_reason"] == "eos"  # this model ends a query quickly
    forced = run(session, PROMPT, max_new_tokens=64, ignore_eos=True, stop=[])
    assert forced["stop_reason"] == "max_new_tokens" and len(forced["token_ids"]) == 64 and eos not in forced["token_ids"]
    # identical up to where the free run chose <eos>; there the forced run takes the runner-up
    n = len(free["token_ids"]) - 1
    assert forced["token_ids"][:n] == free["token_ids"][:n]


def test_long_text_keeps_its_most_recent_tokens(parts, session):
    manifest, tokenizer, _ = parts
    long_text = " ".join(f"SELECT c{i} FROM t{i};" for i in range(400))
    out = run(session, long_text, max_new_tokens=8)
    arch = manifest.architecture
    assert out["stats"]["truncated_tokens"] > 0
    assert out["stats"]["prompt_tokens"] == arch.max_seq_len - 8
    ids, dropped = text.prompt_ids(tokenizer, long_text, bos_id=1, max_seq_len=arch.max_seq_len, reserve=8)
    assert ids[1:] == tokenizer.encode(long_text)[dropped:]


def test_a_generation_that_reaches_the_context_stops_cleanly_with_a_reason(parts, session):
    """A long text keeps room for min(max_new_tokens, context/2) new tokens; asking for more than that room
    runs to the last position and stops with stop_reason "context_full" (and the text so far)."""
    manifest, _, _ = parts
    M = manifest.architecture.max_seq_len
    long_text = " ".join(f"SELECT c{i} FROM t{i};" for i in range(400))
    out = run(session, long_text, max_new_tokens=M, ignore_eos=True, stop=[])
    assert out["stop_reason"] == "context_full"
    assert out["stats"]["prompt_tokens"] + len(out["token_ids"]) == M + 1  # the last token needs no position
    assert len(out["token_ids"]) == M // 2 + 1 and isinstance(out["text"], str)


def test_options_are_checked(session):
    with pytest.raises(SamplingError, match="ignore_eos must be true or false"):
        run(session, "x", ignore_eos="yes")
    with pytest.raises(SamplingError, match=r"unknown options \['schema'\]"):
        run(session, "x", schema="t(a)")


def test_other_prompt_formats_are_refused(parts):
    manifest, tokenizer, backend = parts
    with pytest.raises(ValueError, match="not a text model"):
        text.TextGenerator(dataclasses.replace(manifest, prompt={"format": "sql-v2"}), tokenizer, backend)


def test_ban_token_handles_lists_and_read_only_views():
    async def forward_list(ids, cache):
        return [0.0, 5.0, 1.0]

    async def forward_view(ids, cache):  # like a memoryview of JS memory: not writable
        return memoryview(array("f", [0.0, 5.0, 1.0]).tobytes()).cast("f")

    for forward in (forward_list, forward_view):
        logits = asyncio.run(text.ban_token(forward, 1)([0], None))
        assert list(logits)[0] == 0.0 and list(logits)[1] == text.EOS_BAN and list(logits)[2] == 1.0


def test_text_task_is_standard_library_only():
    code = ("import sys; sys.path.insert(0, %r); before = set(sys.modules); import pocketlm.tasks.text, pocketlm.session; "
            "print(sorted(m for m in set(sys.modules) - before if m.split('.')[0] not in sys.stdlib_module_names "
            "and m.split('.')[0] != 'pocketlm'))" % os.path.join(ROOT, "pysrc"))
    out = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr


def test_warm_up_is_greedy_even_when_the_manifest_samples(parts):
    """The page's check before ready (session.warm_up) asks the graph's greedy head at every step: a
    sampled step would scan the whole row in Python (~0.45 s of a 32 000-token model's cold load)."""
    manifest, tokenizer, backend = parts
    sampled = dataclasses.replace(manifest, sampling={"temperature": 1.0, "top_p": 0.9, "max_new_tokens": 64})
    wants = []

    class Recording:
        def new_cache(self):
            return backend.new_cache()

        async def forward(self, ids, cache, want="logits"):
            wants.append(want)
            return await backend.forward(ids, cache, want)

    Recording.forward.head_aware = True
    assert backend.has_head
    assert asyncio.run(ModelSession(sampled, tokenizer, Recording()).warm_up()) is True
    assert wants and set(wants) == {"argmax"}
    # the same session samples as its manifest says when asked: full rows, not the head
    wants.clear()
    asyncio.run(ModelSession(sampled, tokenizer, Recording()).generate("", {"max_new_tokens": 4, "seed": 1}))
    assert "logits" in wants


@pytest.mark.parametrize("tokens", [1, 2, 8])
def test_warm_up_generates_the_tokens_it_is_asked_for(parts, tokens):
    """The page's load check asks for 2 (pocketlm.browser.CHECK_TOKENS): the prompt's pass and one decode step."""
    manifest, tokenizer, backend = parts
    calls = []

    class Counting:
        def new_cache(self):
            return backend.new_cache()

        async def forward(self, ids, cache, want="logits"):
            calls.append(len(ids))
            return await backend.forward(ids, cache, want)

    Counting.forward.head_aware = True
    assert asyncio.run(ModelSession(manifest, tokenizer, Counting()).warm_up(tokens=tokens)) is True
    assert len(calls) == tokens  # one forward pass per new token: the prompt's, then one per decode step
