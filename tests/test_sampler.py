"""Sampler: determinism, each option's effect, and rejection of bad options and logits."""

import math
from collections import Counter

import pytest

from pocketlm.sampler import Sampler, SamplingError, SamplingOptions, argmax

LOGITS = [2.0, 1.5, 1.0, 0.5, 0.0, -1.0, -2.0, -3.0]


def draws(n=2000, **opts):
    sampler = Sampler(SamplingOptions(seed=7, **opts))
    return Counter(sampler.sample(LOGITS) for _ in range(n))


def test_greedy_is_argmax_with_lowest_id_on_ties():
    assert Sampler(SamplingOptions()).sample(LOGITS) == 0
    assert Sampler(SamplingOptions()).sample([1.0, 3.0, 3.0]) == 1
    assert argmax([1.0, 3.0, 2.0], allowed=[0, 2]) == 2


def test_same_seed_same_tokens_and_different_seed_differs():
    a = [Sampler(SamplingOptions(temperature=1.0, seed=3)).sample(LOGITS) for _ in range(1)]
    s1, s2 = Sampler(SamplingOptions(temperature=1.0, seed=3)), Sampler(SamplingOptions(temperature=1.0, seed=3))
    seq1 = [s1.sample(LOGITS) for _ in range(200)]
    seq2 = [s2.sample(LOGITS) for _ in range(200)]
    assert seq1 == seq2 and a[0] == seq1[0]
    s3 = Sampler(SamplingOptions(temperature=1.0, seed=4))
    assert [s3.sample(LOGITS) for _ in range(200)] != seq1


def test_temperature_sharpens_and_flattens():
    cold, hot = draws(temperature=0.2), draws(temperature=5.0)
    assert cold[0] > 1800
    assert len(hot) == len(LOGITS) and hot[0] < 600


def test_softmax_frequencies_match_probabilities():
    counts = draws(n=20000, temperature=1.0)
    z = sum(math.exp(v) for v in LOGITS)
    for token in range(3):
        assert abs(counts[token] / 20000 - math.exp(LOGITS[token]) / z) < 0.015


def test_top_k_keeps_k_tokens():
    assert set(draws(temperature=5.0, top_k=3)) == {0, 1, 2}
    assert set(draws(temperature=5.0, top_k=1)) == {0}


def test_top_p_keeps_the_nucleus():
    # probabilities at T=1: 0.39, 0.24, 0.14, ... ; top_p=0.5 needs the first two
    assert set(draws(temperature=1.0, top_p=0.5)) == {0, 1}
    assert set(draws(temperature=1.0, top_p=0.3)) == {0}


def test_min_p_drops_unlikely_tokens():
    # p_i / p_max = exp(l_i - 2): 1, .61, .37, .22, .14, ...
    assert set(draws(temperature=1.0, min_p=0.3)) == {0, 1, 2}


def test_repetition_penalty_discourages_generated_tokens():
    sampler = Sampler(SamplingOptions(repetition_penalty=10.0))
    assert sampler.sample(LOGITS, generated=[0]) == 1
    assert sampler.sample([-1.0, -1.5], generated=[0]) == 1  # negative logits are multiplied


def test_allowed_mask():
    assert Sampler(SamplingOptions()).sample(LOGITS, allowed=[5, 3]) == 3
    assert set(Counter(Sampler(SamplingOptions(temperature=1.0, seed=1)).sample(LOGITS, allowed=[6, 7])
                       for _ in range(100))) <= {6, 7}
    with pytest.raises(SamplingError, match="masked"):
        Sampler(SamplingOptions()).sample(LOGITS, allowed=[])


@pytest.mark.parametrize(
    "options, message",
    [
        ({"temperature": -1.0}, "temperature must be >= 0"),
        ({"temperature": float("nan")}, "temperature must be a number"),
        ({"top_p": 1.5}, "top_p must be in"),
        ({"top_p": 0.0}, "top_p must be in"),
        ({"top_k": -1}, "top_k must be an integer >= 0"),
        ({"min_p": 2.0}, "min_p must be in"),
        ({"repetition_penalty": 0.0}, "repetition_penalty must be > 0"),
        ({"max_new_tokens": 0}, "max_new_tokens must be an integer >= 1"),
        ({"stop": ("",)}, "stop must be"),
        ({"seed": 1.5}, "seed must be an integer"),
    ],
)
def test_out_of_range_options_are_rejected_with_a_specific_message(options, message):
    with pytest.raises(SamplingError, match=message):
        SamplingOptions(**options)


def test_from_dict_rejects_unknown_keys_and_accepts_a_single_stop_string():
    assert SamplingOptions.from_dict({"stop": ";"}).stop == (";",)
    with pytest.raises(SamplingError, match="unknown sampling options"):
        SamplingOptions.from_dict({"temprature": 1.0})


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_broken_logits_are_an_error_not_a_token(bad):
    with pytest.raises(SamplingError, match="invalid logit"):
        Sampler(SamplingOptions()).sample([0.0, bad, 1.0])



def _cases():
    """Logits (wide and narrow spreads, many ties, a 32 000-token row, tokens on both sides of the gap)
    x options x seeds."""
    import random

    rng = random.Random(11)
    rows = [[rng.gauss(0, scale) for _ in range(size)] for size, scale in ((7, 1.0), (300, 0.2), (2000, 3.0), (2000, 30.0))]
    rows.append([float(rng.randrange(4)) for _ in range(500)])  # ties everywhere: lowest id first
    rows.append([rng.gauss(0, 17.0) for _ in range(32000)])  # a random-weight model's spread
    rows.append([0.0] * 50 + [40.0, 39.5, 0.5])  # one token holds nearly all the mass; two just inside the gap
    options = [dict(temperature=t, top_p=p, min_p=m) for t, p, m in
               ((1.0, 1.0, 0.0), (1.0, 0.9, 0.0), (0.5, 0.3, 0.0), (1.7, 1.0, 0.05), (1.0, 0.9, 0.05), (25.0, 1.0, 0.0))]
    return [(r, o) for r in rows for o in options]


@pytest.mark.parametrize("row, opts", _cases())
def test_sampling_the_whole_vocabulary_draws_what_the_full_sort_draws(row, opts):
    """Without a mask, sample() sorts only the tokens within NEGLIGIBLE_GAP of the best; with `allowed`
    it sorts every candidate. The same seed must draw the same tokens either way."""
    fast, full = Sampler(SamplingOptions(seed=5, **opts)), Sampler(SamplingOptions(seed=5, **opts))
    everything = range(len(row))
    assert [fast.sample(row) for _ in range(20)] == [full.sample(row, allowed=everything) for _ in range(20)]
