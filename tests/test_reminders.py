"""reminder-extract: prompt format, packing, a real `--quick` export on a synthetic corpus, and the
CLI (`extract`, `eval reminders`) with and without schema-constrained decoding."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, subprocess_env, write_jsonl
from export.data_reminders import make_groups, span_donors, split_rows, swap_spans
from pocketlm.tasks import reminders
from pocketlm.tokenizer import Tokenizer

RECIPE = "reminder-extract"
TASKS = ["walk the dog", "call mom", "buy milk", "pay the rent", "water the plants", "book a dentist appointment",
         "send the report to Anna", "pick up the kids", "take my meds", "renew my passport", "feed the cat",
         "check the oven", "email Jürgen about the café", "order 🍕 for the party"]
TIMES = ["at 7pm", "tomorrow", "on Friday", "in 10 minutes", "at noon", "tonight", "next Monday at 9am",
         "on June 3rd", "this evening", "at 6:30"]
RECURRENCES = ["every day", "every Monday", "each morning", "weekly"]


def make_rows(n: int = 400, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        task, time = rng.choice(TASKS), rng.choice(TIMES + [None])
        recurrence = rng.choice(RECURRENCES) if time is None and rng.random() < 0.5 else None
        when = time or recurrence
        form = rng.randrange(4)
        if form == 0 and when:
            text = f"remind me {when} to {task}"
        elif form == 1 and when:  # the label keeps the text's capital (labels are copied from the text)
            text = f"{when.capitalize()} remind me to {task}"
            time, recurrence = time and time.capitalize(), recurrence and recurrence.capitalize()
        elif form == 2:
            text = f"set a reminder to {task}" + (f" {when}" if when else "")
        else:
            text = f"remind me to {task}" + (f" {when}" if when else "")
        rows.append({"text": text, "reminder": task, "time": time, "recurrence": recurrence, "source": "synthetic_x"})
    return rows


@pytest.fixture(scope="module")
def rows():
    return make_rows()


@pytest.fixture(scope="module")
def quick_model(tmp_path_factory, rows) -> Path:
    work = tmp_path_factory.mktemp("reminders_export")
    write_jsonl(work / "data" / "reminders" / "train.jsonl", rows)
    proc = subprocess.run(
        [sys.executable, "-m", "export", RECIPE, "--quick", "--data", str(work / "data"), "--out", str(work / "models"),
         "--runs", str(work / "runs")], cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        pytest.fail(f"quick export failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    return work / "models" / RECIPE


def cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "pocketlm", *args], cwd=ROOT, env=subprocess_env(),
                          capture_output=True, text=True, timeout=timeout)


def test_target_is_canonical_json_in_key_order():
    text = reminders.target_text({"time": "at 7pm", "reminder": 'say "hi"', "extra": 1})
    assert text == '{"reminder": "say \\"hi\\"", "time": "at 7pm", "recurrence": null}'
    assert list(json.loads(text)) == list(reminders.KEYS)


@pytest.mark.parametrize("prompt_loss", [False, True])
def test_packed_groups_carry_loss_after_the_request_only(quick_model, rows, prompt_loss):
    """Loss on the marked copy, the JSON and <eos>; or, with prompt_loss, on every token from the second of the request on."""
    tok = Tokenizer.from_file(quick_model / "tokenizer.json")
    groups = make_groups(tok, rows[:5], bos_id=1, eos_id=2, max_seq_len=256, group_tokens=4096, rng=random.Random(0),
                         prompt_loss=prompt_loss)
    assert len(groups) == 1
    g = groups[0]
    for seg in range(1, 6):
        where = [i for i, s in enumerate(g.segment) if s == seg]
        ids = [1] + [g.ids[i] for i in where]
        assert [g.positions[i] for i in where] == list(range(1, len(where) + 1))  # as if unpacked
        decoded = tok.decode(ids)
        row = next(r for r in rows[:5] if decoded.startswith(reminders.model_view(r["text"])))
        full, start = reminders.training_ids(tok, row, bos_id=1, eos_id=2)
        assert ids == full
        scored = [g.targets[i] for i in where if g.targets[i] != -100]
        assert scored == full[2 if prompt_loss else start:]  # every JSON token and <eos> (and the request after its first token)


def test_swapped_spans_stay_exact_labels_of_the_new_text(rows):
    donors = span_donors(rows)
    rng, changed = random.Random(3), 0
    for row in rows:
        new = swap_spans(row, donors, rng)
        for key in reminders.KEYS:  # a label copied from the text once still is
            if row[key] is not None and row["text"].count(row[key]) == 1:
                assert new["text"].count(new[key]) == 1, (row, new)
        assert (new["reminder"] is None) == (row["reminder"] is None) and (new["time"] is None) == (row["time"] is None)
        assert new["recurrence"] == row["recurrence"]
        changed += new != row
    assert changed > len(rows) // 2


def test_split_is_seeded_and_disjoint(rows):
    a, b = split_rows(rows, 0.1, seed=3), split_rows(rows, 0.1, seed=3)
    assert a == b and len(a[1]) == 40 and not {r["text"] for r in a[0]} & {r["text"] for r in a[1]} - {
        r["text"] for r in rows if sum(x["text"] == r["text"] for x in rows) > 1}


def test_quick_export_writes_a_valid_reminder_model(quick_model):
    manifest = json.loads((quick_model / "manifest.json").read_text())
    assert manifest["task"] == "reminders" and manifest["prompt"]["format"] == reminders.FORMAT
    assert set(manifest["variants"]) == {"fp32", "int8", "q4"}


@pytest.mark.parametrize("text", ["remind me at 7pm to walk the dog", "", "what's the weather like",
                                  "erinnere mich morgen an den Müll 🗑️", "x" * 5000, 'remind me to say "hi" \\ bye'])
def test_extract_always_gives_schema_valid_json_copied_from_the_text(quick_model, text):
    proc = cli("extract", "--model", str(quick_model), "--json", text)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    obj = json.loads(out["text"])
    assert list(obj) == list(reminders.KEYS)
    for value in obj.values():
        assert value is None or (isinstance(value, str) and value and value in text)
    if len(text) == 5000:
        assert out["stats"]["truncated_tokens"] > 0


def test_eval_prints_both_decodings_as_the_last_line(quick_model, rows, tmp_path):
    data = tmp_path / "dev.jsonl"
    write_jsonl(data, rows[:12])
    proc = cli("eval", "reminders", "--model", str(quick_model), "--data", str(data), "--quiet")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["n"] == 12
    for key in ("valid_json", "exact_reminder", "exact_time", "exact_both", "lenient_both"):
        assert 0.0 <= report[key] <= 1.0 and key in report["unconstrained"]
    assert report["valid_json"] == report["constrained"]["valid_json"] == 1.0


def test_eval_rejects_a_malformed_row_by_line(quick_model, tmp_path):
    data = tmp_path / "bad.jsonl"
    data.write_text('{"text": "remind me", "time": null, "reminder": null}\n{"text": 3}\n')
    proc = cli("eval", "reminders", "--model", str(quick_model), "--data", str(data))
    assert proc.returncode == 2 and proc.stderr.startswith(f"error: {data}:2: each row needs a string 'text'")


def test_the_extractor_reuses_one_kv_cache_across_requests():
    """The page's KV caches live in JavaScript until dropped: a cache per request leaked 2 MB per extraction
    (make soak). One cache is made at construction and reset per request."""
    import asyncio
    import os

    from pocketlm.extractor import ReminderExtractor
    from pocketlm.manifest import load_manifest
    from pocketlm.native import NativeModel
    from pocketlm.tokenizer import Tokenizer

    folder = os.path.join(ROOT, "web", "models", "reminder-extract")
    backend = NativeModel(folder, variant="fp32")
    made = []
    new_cache = backend.new_cache
    backend.new_cache = lambda: made.append(1) or new_cache()
    extractor = ReminderExtractor(load_manifest(folder), Tokenizer.from_file(os.path.join(folder, "tokenizer.json")),
                                  backend)
    texts = ["remind me at 7pm to walk the dog", "remind me tomorrow to call mom", "remind me at 7pm to walk the dog"]
    outs = [asyncio.run(extractor.extract(t)).text for t in texts]
    assert len(made) == 1 and outs[0] == outs[2]  # reset per call: the same request, the same output


def test_the_model_writes_its_own_key_order_and_the_result_is_in_schema_order():
    """A model trained to write "time" first (manifest prompt["keys"]) is constrained in that order; the
    result is the object in the schema's order. Values take disjoint places of the request."""
    import asyncio
    import dataclasses
    import os

    from pocketlm.extractor import ReminderExtractor
    from pocketlm.manifest import load_manifest
    from pocketlm.native import NativeModel
    from pocketlm.tokenizer import Tokenizer

    folder = os.path.join(ROOT, "web", "models", "reminder-extract")
    manifest = load_manifest(folder)
    order = ["time", "recurrence", "reminder"]
    manifest = dataclasses.replace(manifest, prompt={**manifest.prompt, "keys": order})
    tokenizer = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
    extractor = ReminderExtractor(manifest, tokenizer, NativeModel(folder, variant="fp32"))
    for text in ["remind me at 7pm to walk the dog", "set a daily reminder to water the plants at 8am"]:
        result = asyncio.run(extractor.extract(text))
        written = tokenizer.decode(result.token_ids[:-1]).rsplit(reminders.SEPARATOR, 1)[-1]  # after the marked copy
        assert list(json.loads(written)) == order  # as generated
        assert list(json.loads(result.text)) == list(reminders.KEYS)  # as returned
        assert json.loads(result.text) == json.loads(written)
        values = [v for v in json.loads(result.text).values() if v]
        places = [(text.index(v), text.index(v) + len(v)) for v in values]  # each occurs once in these texts
        assert all(a[1] <= b[0] or b[1] <= a[0] for i, a in enumerate(places) for b in places[i + 1:]), values


def test_a_model_of_the_earlier_json_only_format_is_refused_with_the_fix():
    import dataclasses
    import os

    from pocketlm.extractor import ReminderExtractor
    from pocketlm.manifest import ManifestError, load_manifest
    from pocketlm.tokenizer import Tokenizer

    folder = os.path.join(ROOT, "web", "models", "reminder-extract")
    manifest = load_manifest(folder)
    old = dataclasses.replace(manifest, prompt={**manifest.prompt, "format": "reminders-v1"})
    with pytest.raises(ManifestError, match=r"reminders-v1.*re-export it \(make export MODEL=reminder-extract\)"):
        ReminderExtractor(old, Tokenizer.from_file(os.path.join(folder, "tokenizer.json")), backend=None)


def test_a_tokenizer_without_the_marker_tokens_is_refused_by_name(quick_model):
    from pocketlm.extractor import ReminderExtractor
    from pocketlm.manifest import ManifestError, load_manifest

    sql_tokenizer = Tokenizer.from_file(Path(ROOT) / "web" / "models" / "sql-autocomplete" / "tokenizer.json")
    with pytest.raises(ManifestError, match=r"no special tokens \['<reminder>', '</reminder>'\].*re-export"):
        ReminderExtractor(load_manifest(str(quick_model)), sql_tokenizer, backend=None)


def _release_extractor():
    import os

    from pocketlm.extractor import ReminderExtractor
    from pocketlm.manifest import load_manifest
    from pocketlm.native import NativeModel
    from pocketlm.tokenizer import Tokenizer

    folder = os.path.join(ROOT, "web", "models", "reminder-extract")
    backend = NativeModel(folder, variant="fp32")
    tokenizer = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
    return ReminderExtractor(load_manifest(folder), tokenizer, backend), backend, tokenizer


SEARCH_TEXTS = ["Remind me to let the dog in in 15 minutes", "remind me to order shoes from Payless.com.",
                "Set a reminder to have lunch with Cristina on Frida at 12pm.", "remind me at 7pm to walk the dog",
                "Remind me that I need to leave by 4.", "vet reminders for both dog and cat for october"]


def test_the_search_keeps_a_copy_at_least_as_likely_and_leaves_the_cache_as_if_decoded_alone():
    """With the release model: the kept marked copy is never less likely than the greedy one (scored from
    scratch) by more than the greedy copy's handicap, and after the search and the JSON the extractor's KV cache holds exactly what one plain
    run over the same tokens would (the search's truncations and re-feeds leave no trace)."""
    import asyncio

    import numpy as np

    from pocketlm.copy_search import PREFER_FLIP

    extractor, backend, tokenizer = _release_extractor()
    sep = tokenizer.encode(reminders.SEPARATOR)

    def copy_of(ids, start):  # the marked copy: up to the first separator after the prompt
        i = next(i for i in range(start, len(ids)) if ids[i:i + len(sep)] == sep)
        return ids[:i + len(sep)]

    def log_prob(ids, start):
        logits = backend.forward_all(ids, backend.new_cache()).astype(np.float64)
        top = logits.max(-1, keepdims=True)
        lsm = logits - top - np.log(np.exp(logits - top).sum(-1, keepdims=True))
        return float(sum(lsm[i - 1, ids[i]] for i in range(start, len(ids))))

    tried = 0
    for text in SEARCH_TEXTS:
        prompt = reminders.Request(tokenizer, text, reminders.MAX_INPUT_TOKENS).prompt(1)
        greedy = asyncio.run(extractor.extract(text, flips=0))
        searched = asyncio.run(extractor.extract(text))
        assert greedy.stats["copies_tried"] == 1
        tried += searched.stats["copies_tried"] > 1
        kept, plain = copy_of(prompt + searched.token_ids, len(prompt)), copy_of(prompt + greedy.token_ids, len(prompt))
        assert log_prob(kept, len(prompt)) >= log_prob(plain, len(prompt)) - PREFER_FLIP - 1e-4
        ids = prompt + searched.token_ids[:-1]  # the last token (<eos>) is never fed
        fresh = backend.new_cache()
        backend.forward_all(ids, fresh)
        cache = extractor._cache
        assert cache.length == len(ids)
        for layer in range(len(cache.keys)):
            assert np.allclose(cache.keys[layer][:, :, :len(ids)], fresh.keys[layer][:, :, :len(ids)], atol=1e-4)
            assert np.allclose(cache.values[layer][:, :, :len(ids)], fresh.values[layer][:, :, :len(ids)], atol=1e-4)
    assert tried >= 2  # these requests have uncertain marks: the search ran


def test_eval_flips_option_is_reported_and_checked(quick_model, rows, tmp_path):
    data = tmp_path / "dev.jsonl"
    write_jsonl(data, rows[:4])
    proc = cli("eval", "reminders", "--model", str(quick_model), "--data", str(data), "--quiet", "--flips", "0")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["flips"] == 0
    proc = cli("eval", "reminders", "--model", str(quick_model), "--data", str(data), "--flips", "-1")
    assert proc.returncode == 2 and proc.stderr.strip() == "error: --flips must be 0 (plain greedy) or more, got -1"


def test_the_session_takes_flips_and_streams_the_kept_copy_then_the_json():
    """`flips` is an option of generate in the Python session (and so the page's API): 0 is plain greedy;
    a bad value is refused by name. Streamed text is the kept marked copy, the separator, then the JSON."""
    import asyncio

    from pocketlm.sampler import SamplingError
    from pocketlm.session import ModelSession

    extractor, backend, tokenizer = _release_extractor()
    session = ModelSession(extractor.manifest, tokenizer, backend)
    text = SEARCH_TEXTS[0]
    seen = []
    out = asyncio.run(session.generate(text, on_token=lambda t, d: seen.append((t, d))))
    plain = asyncio.run(session.generate(text, {"flips": 0}))
    assert plain["stats"]["copies_tried"] == 1 and out["stats"]["copies_tried"] >= 1
    assert [t for t, _ in seen] == out["token_ids"][:-1]  # every token but <eos>, which has no text
    streamed = "".join(d for _, d in seen)
    assert streamed.endswith(reminders.SEPARATOR + " " + out["text"])
    assert streamed == tokenizer.decode_bytes(out["token_ids"]).decode()  # the markers have no text of their own
    for bad in (-1, True, 1.5):
        with pytest.raises(SamplingError, match=r"flips must be an integer >= 0"):
            asyncio.run(session.generate(text, {"flips": bad}))
