"""The decode graph's greedy head (next_token = ArgMax of the last row, logits_sum) and the runtime path
that uses it (pocketlm.generate + pocketlm.native): plain greedy decoding never brings the logits into
Python, yet gives exactly the tokens of the logits path — on random tiny models, int8 and q4 variants,
rows full of ties, and a broken model (NaN logits still raise the sampler's error). Models whose
manifest predates the head keep the logits path.
"""

from __future__ import annotations

import asyncio
import json
import os

import numpy as np
import onnx
import pytest

from export.onnx_graph import build_decode_graph
from export.quantize import SESSION_CONFIG, VARIANTS, quantize_int8, quantize_q4
from pocketlm.generate import GREEDY_CHUNK, Greedy, generate, uses_chunks, uses_head
from pocketlm.manifest import (Architecture, GraphContract, Manifest, ManifestError, TokenizerInfo, Variant,
                               manifest_from_dict, sha256_file)
from pocketlm.native import ModelLoadError, NativeModel
from pocketlm.sampler import SamplingError, SamplingOptions
from pocketlm.tasks.text import EOS_BAN, ban_token

ARCH = Architecture(vocab_size=97, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=160, max_seq_len=64)
QUANT = {name: quant for name, (_, quant) in VARIANTS.items()}
PROMPT = [1, 5, 9, 22, 40, 3]


def state_dict(seed=0, tie_pairs=False, nan_token=None) -> dict:
    """Random weights with make bench's wide init (bench/models.py: clear margins, varied greedy tokens).

    tie_pairs: token 2k+1's embedding row = token 2k's, so with the tied lm head every pair of logits
    is equal and every step's maximum is a tie (which must go to the lower id).
    nan_token: that token's embedding row is NaN, so its logit is NaN at every position.
    """
    from bench.models import random_state_dict

    sd = {k: v.numpy().copy() for k, v in random_state_dict(ARCH, seed).items()}
    emb = sd["tok_embeddings.weight"]  # [V, D]
    if tie_pairs:
        emb[1::2] = emb[0:-1:2]
    if nan_token is not None:
        emb[nan_token] = np.nan
    return sd


def model_dir(path, sd, *, contract=GraphContract(), manifest_graph: dict | None = None, quant=QUANT) -> str:
    """A model folder with `quant`'s variants; manifest_graph replaces the manifest's "graph" object as JSON."""
    os.makedirs(path, exist_ok=True)
    onnx.save(build_decode_graph(sd, ARCH, contract), os.path.join(path, "model.onnx"))
    if "int8" in quant:
        quantize_int8(os.path.join(path, "model.onnx"), os.path.join(path, "model.int8.onnx"))
    if "q4" in quant:
        quantize_q4(os.path.join(path, "model.onnx"), os.path.join(path, "model.q4.onnx"))
    with open(os.path.join(path, "tokenizer.json"), "w") as f:
        f.write("{}\n")
    variants = {}
    for name, q in quant.items():
        file = os.path.join(path, "model.onnx" if name == "fp32" else f"model.{name}.onnx")
        variants[name] = Variant(os.path.basename(file), sha256_file(file), os.path.getsize(file), q,
                                 dict(SESSION_CONFIG.get(name, {})))
    tok = TokenizerInfo("tokenizer.json", sha256_file(os.path.join(path, "tokenizer.json")), ARCH.vocab_size, 1, 2, 0)
    manifest = Manifest(name="tiny", task="test", architecture=ARCH, tokenizer=tok, variants=variants,
                        default_variant="fp32", graph=contract)
    data = json.loads(manifest.to_json())
    if manifest_graph is not None:
        data["graph"] = manifest_graph
    with open(os.path.join(path, "manifest.json"), "w") as f:
        json.dump(data, f)
    return path


def logits_only(forward):
    """The same forward without the head mark: generate then takes the logits path."""
    async def call(ids, cache):
        return await forward(ids, cache)
    return call


def greedy(forward, model, n=40, **options):
    opts = SamplingOptions(max_new_tokens=n, temperature=0.0, **options)
    r = asyncio.run(generate(forward, model.new_cache(), PROMPT, opts, eos_id=-1, max_seq_len=ARCH.max_seq_len))
    return r.token_ids, r.stats["head_steps"]


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    return model_dir(str(tmp_path_factory.mktemp("plain")), state_dict())


@pytest.fixture(scope="module")
def tied(tmp_path_factory):
    return model_dir(str(tmp_path_factory.mktemp("tied")), state_dict(seed=1, tie_pairs=True))


@pytest.mark.parametrize("variant", sorted(QUANT))
def test_head_gives_the_logits_paths_tokens_without_fetching_logits(plain, variant):
    m = NativeModel(plain, variant=variant)
    assert m.has_head and m.manifest.graph.has_head and uses_head(m.forward)
    head, steps = greedy(m.forward, m)
    ref, ref_steps = greedy(logits_only(m.forward), m)
    assert head == ref and steps == len(head) == 40 and ref_steps == 0
    assert len(set(head)) > 5  # a real sequence, not one token repeated
    cache = m.new_cache()  # the head's own outputs: prefill and one step equal the logits' argmax/sum
    out = asyncio.run(m.forward(PROMPT, cache, want="argmax"))
    cache.truncate(0)
    row = np.asarray(asyncio.run(m.forward(PROMPT, cache)), np.float32)
    assert isinstance(out, Greedy) and out.token == int(np.argmax(row)) and cache.length == len(PROMPT)
    assert out.logits_sum == pytest.approx(float(row.sum()), rel=1e-4, abs=1e-3)
    order = sorted(range(len(row)), key=lambda i: (-row[i], i))  # best first, ties -> lower id first
    assert m.manifest.graph.has_runner_up and out.runner_up == order[1] != out.token


@pytest.mark.parametrize("variant", sorted(QUANT))
def test_ties_go_to_the_lowest_id_on_both_paths(tied, variant):
    m = NativeModel(tied, variant=variant)
    head, steps = greedy(m.forward, m)
    ref, _ = greedy(logits_only(m.forward), m)
    assert head == ref and steps == len(head)
    assert all(t % 2 == 0 for t in head)  # every maximum was a tie of 2k and 2k+1: the lower id won
    row = m.forward_all(PROMPT, m.new_cache())[-1]
    assert row[head[0]] == row[head[0] + 1] == row.max()  # a real tie in the logits
    out = asyncio.run(m.forward(PROMPT, m.new_cache(), want="argmax"))
    assert (out.token, out.runner_up) == (head[0], head[0] + 1)  # the tie's other half is the runner-up


def test_sampling_constraints_and_penalties_keep_the_logits_path(plain):
    m = NativeModel(plain)
    assert greedy(m.forward, m, repetition_penalty=1.3)[1] == 0
    opts = SamplingOptions(max_new_tokens=10, temperature=0.8, seed=3)
    r = asyncio.run(generate(m.forward, m.new_cache(), PROMPT, opts, eos_id=-1))
    assert r.stats["head_steps"] == 0 and len(r.token_ids) == 10

    class EveryOtherStep:  # a mask on even steps only: those use the logits, the others the head
        def __init__(self):
            self.n = 0

        def allowed(self):
            return [7, 8, 9] if self.n % 2 == 0 else None

        def advance(self, token):
            self.n += 1

    c = EveryOtherStep()
    r = asyncio.run(generate(m.forward, m.new_cache(), PROMPT, SamplingOptions(max_new_tokens=10), eos_id=-1,
                             constraint=c))
    assert r.stats["head_steps"] == 5 and all(t in (7, 8, 9) for t in r.token_ids[::2])
    c2 = EveryOtherStep()
    ref = asyncio.run(generate(logits_only(m.forward), m.new_cache(), PROMPT, SamplingOptions(max_new_tokens=10),
                               eos_id=-1, constraint=c2))
    assert r.token_ids == ref.token_ids


def test_nan_logits_through_the_head_raise_the_samplers_error(tmp_path):
    m = NativeModel(model_dir(str(tmp_path / "nan"), state_dict(nan_token=11), quant={"fp32": "none"}))
    with pytest.raises(SamplingError) as head_err:
        greedy(m.forward, m)
    with pytest.raises(SamplingError) as ref_err:
        greedy(logits_only(m.forward), m)
    assert str(head_err.value) == str(ref_err.value)
    assert "invalid logit (nan) at token 11" in str(head_err.value) and "re-export" in str(head_err.value)


def test_a_manifest_without_the_head_keys_runs_the_logits_path(tmp_path, plain):
    """Manifests written before the head (like the committed web/models/*) have no next_token/logits_sum
    keys: they load with has_head False, and the same graph then runs exactly as before."""
    with open(os.path.join(plain, "manifest.json")) as f:
        graph = json.load(f)["graph"]
    old_graph = {k: v for k, v in graph.items() if k not in ("next_token", "logits_sum")}
    old = model_dir(str(tmp_path / "old"), state_dict(), manifest_graph=old_graph)
    m = NativeModel(old)
    assert not m.has_head and not m.manifest.graph.has_head
    assert isinstance(asyncio.run(m.forward(PROMPT, m.new_cache(), want="argmax")), list)  # the fallback
    tokens, steps = greedy(m.forward, m)
    assert steps == 0 and tokens == greedy(NativeModel(plain).forward, NativeModel(plain))[0]
    # a graph built without the head, recorded as such
    none = model_dir(str(tmp_path / "none"), state_dict(), contract=GraphContract(next_token=None, logits_sum=None))
    m = NativeModel(none, variant="q4")
    assert not m.has_head and greedy(m.forward, m)[1] == 0
    # a manifest naming a head the graph does not have is refused at load
    lying = model_dir(str(tmp_path / "lying"), state_dict(), contract=GraphContract(next_token=None, logits_sum=None),
                      manifest_graph=graph)
    with pytest.raises(ModelLoadError, match="next_token"):
        NativeModel(lying)


@pytest.mark.parametrize("variant", ["fp32", "int8"])
def test_ban_token_with_the_runner_up_runs_once_a_step_and_matches_the_banned_rows(plain, variant):
    """ignore_eos through the head: when the best token is the banned one, the graph's runner_up is the
    answer (no second run), and the tokens equal those of banning it in the full rows."""
    m = NativeModel(plain, variant=variant)
    free, _ = greedy(m.forward, m)
    banned_id = max(set(free), key=free.count)  # the token greedy decoding picks most often
    calls = []

    async def counted(ids, cache, want="logits"):
        calls.append(want)
        return await m.forward(ids, cache, want=want)
    counted.head_aware = True

    head, steps = greedy(ban_token(counted, banned_id), m)
    ref, _ = greedy(ban_token(logits_only(m.forward), banned_id), m)
    assert head == ref and banned_id not in head and head != free
    assert steps == len(head) and calls == ["argmax"] * len(head)  # one run a step, never the row


def test_a_head_without_the_runner_up_key_keeps_the_second_run(tmp_path, plain):
    """Heads exported before runner_up (their manifests have no such key) answer None, and ban_token then
    runs the step again for the row, as before."""
    with open(os.path.join(plain, "manifest.json")) as f:
        graph = json.load(f)["graph"]
    older = model_dir(str(tmp_path / "older"), state_dict(), contract=GraphContract(runner_up=None),
                      manifest_graph={k: v for k, v in graph.items() if k != "runner_up"})
    m = NativeModel(older)
    assert m.has_head and not m.manifest.graph.has_runner_up
    out = asyncio.run(m.forward(PROMPT, m.new_cache(), want="argmax"))
    assert out.runner_up is None
    free, _ = greedy(m.forward, m)
    banned_id = max(set(free), key=free.count)
    assert greedy(ban_token(m.forward, banned_id), m)[0] == greedy(ban_token(logits_only(m.forward), banned_id), m)[0]


def single_steps(forward, calls=None):
    """The same head-aware forward without the chunk mark: generate then asks one step per call."""
    async def call(ids, cache, want="logits"):
        if calls is not None:
            calls.append(want)
        return await forward(ids, cache, want=want)
    call.head_aware = True
    return call


@pytest.mark.parametrize("variant", ["fp32", "q4"])
@pytest.mark.parametrize("n", [1, 2, GREEDY_CHUNK, GREEDY_CHUNK + 1, 3 * GREEDY_CHUNK + 5])
def test_greedy_chunks_give_the_single_steps_tokens_and_cache(plain, variant, n):
    m = NativeModel(plain, variant=variant)
    assert uses_chunks(m.forward) and not uses_chunks(single_steps(m.forward))
    calls = []

    async def counted(ids, cache, want="logits", steps=1, ban=None):
        calls.append(steps)
        return await m.forward(ids, cache, want=want, steps=steps, ban=ban)
    counted.head_aware = counted.chunked = True

    opts = SamplingOptions(max_new_tokens=n, temperature=0.0)
    caches = [m.new_cache(), m.new_cache()]
    runs = [asyncio.run(generate(f, c, PROMPT, opts, eos_id=-1, max_seq_len=ARCH.max_seq_len))
            for f, c in zip((counted, single_steps(m.forward)), caches)]
    assert runs[0].token_ids == runs[1].token_ids and len(runs[0].token_ids) == n
    assert caches[0].length == caches[1].length == len(PROMPT) + n - 1  # the last token is not fed
    k0, v0 = caches[0].past(0)
    k1, v1 = caches[1].past(0)
    assert np.array_equal(k0, k1) and np.array_equal(v0, v1)  # the same rows: no step fed twice or skipped
    assert calls[0] == 1 and sum(calls) == n and max(calls) == min(GREEDY_CHUNK, max(n - 1, 1))  # prefill alone


def test_a_chunk_that_meets_eos_or_the_context_keeps_only_its_steps(plain):
    m = NativeModel(plain)
    free, _ = greedy(single_steps(m.forward), m, n=30)
    eos = free[11]  # inside the second chunk (the prefill's token, then steps 1-8, then 9-16)
    want = free[:free.index(eos) + 1]
    for forward in (m.forward, single_steps(m.forward)):
        cache = m.new_cache()
        r = asyncio.run(generate(forward, cache, PROMPT, SamplingOptions(max_new_tokens=30), eos_id=eos,
                                 max_seq_len=ARCH.max_seq_len))
        assert (r.token_ids, r.stop_reason) == (want, "eos") and cache.length == len(PROMPT) + len(want) - 1
        # a context that ends inside what would be a chunk: the chunk is cut to fit, the stop is the same
        cache = m.new_cache()
        r = asyncio.run(generate(forward, cache, PROMPT, SamplingOptions(max_new_tokens=60), eos_id=-1,
                                 max_seq_len=len(PROMPT) + 13))
        assert r.stop_reason == "context_full" and len(r.token_ids) == 14 and cache.length == len(PROMPT) + 13


def test_ban_token_in_chunks_matches_the_banned_rows(plain):
    m = NativeModel(plain)
    free, _ = greedy(m.forward, m)
    banned_id = max(set(free), key=free.count)
    banned = ban_token(m.forward, banned_id)
    assert uses_chunks(banned)
    head, steps = greedy(banned, m)
    assert head == greedy(ban_token(logits_only(m.forward), banned_id), m)[0] and banned_id not in head
    assert steps == len(head)


def test_manifest_head_fields_are_both_or_neither(plain):
    with open(os.path.join(plain, "manifest.json")) as f:
        data = json.load(f)
    assert manifest_from_dict(data).graph.has_head
    for bad in ({"next_token": None}, {"logits_sum": ""}, {"next_token": 3}):
        with pytest.raises(ManifestError, match="next_token / logits_sum"):
            manifest_from_dict({**data, "graph": {**data["graph"], **bad}})
    for bad in ("", 7):
        with pytest.raises(ManifestError, match="runner_up"):
            manifest_from_dict({**data, "graph": {**data["graph"], "runner_up": bad}})
    del data["graph"]
    assert not manifest_from_dict(data).graph.has_head  # no graph object at all: an old manifest


class FakeCache:
    def __init__(self):
        self.length = 0

    def truncate(self, n):
        assert 0 <= n <= self.length
        self.length = n


def test_ban_token_reruns_only_when_the_head_picks_the_banned_token():
    calls = []

    async def forward(ids, cache, want="logits"):  # the head: 2 (<eos>) first, then 3; rows: 2 tops the first only
        calls.append(want)
        cache.length += len(ids)
        if want == "argmax":
            return Greedy(2 if len(calls) == 1 else 3, 0.0)
        return [0.0, 1.0, 5.0 if len(calls) == 2 else 0.0, 0.5]

    forward.head_aware = True
    banned = ban_token(forward, 2)
    assert uses_head(banned) and not uses_head(ban_token(logits_only(forward), 2))
    cache = FakeCache()
    out = asyncio.run(banned([1, 1], cache, want="argmax"))  # rolled back, run again for the row: 2 banned -> 1
    assert out == Greedy(1, 1.5 + EOS_BAN) and calls == ["argmax", "logits"] and cache.length == 2
    assert asyncio.run(banned([1], FakeCache(), want="logits"))[2] == EOS_BAN  # a row asked for: the row, banned
    # the banned token topped a recent row: the next greedy steps ask for rows directly (one run each) until
    # the moving average of "it topped the row" falls below ROWS_WHEN_BANNED_TOPS again
    steps = [asyncio.run(banned([1], cache, want="argmax")) for _ in range(3)]
    assert calls[3:] == ["logits", "logits", "argmax"] and cache.length == 5
    assert steps == [Greedy(1, 1.5 + EOS_BAN)] * 2 + [Greedy(3, 0.0)]
    calls.clear()
    r = asyncio.run(generate(ban_token(forward, 2), FakeCache(), [1], SamplingOptions(max_new_tokens=3), eos_id=2))
    assert r.token_ids == [1, 1, 1] and calls == ["argmax", "logits", "logits", "logits"]
