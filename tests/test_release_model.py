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


REMINDERS = os.path.join(MODELS, "reminder-extract")


@pytest.fixture(scope="module")
def extractor():
    from pocketlm.extractor import ReminderExtractor

    model = NativeModel(REMINDERS, variant="int8")
    return ReminderExtractor(model.manifest, Tokenizer.from_file(os.path.join(REMINDERS, "tokenizer.json")), model)


def extract(extractor, text, **kw):
    result = asyncio.run(extractor.extract(text, **kw))
    return json.loads(result.text), result


def test_reminder_model_folder_validates():
    manifest = load_manifest(REMINDERS)
    assert manifest.task == "reminders" and set(manifest.variants) == {"fp32", "int8", "q4"}


@pytest.mark.parametrize("text, expected", [
    ("remind me at 7pm to walk the dog", {"reminder": "walk the dog", "time": "at 7pm", "recurrence": None}),
    ("remind me to take my meds every morning at 8",
     {"reminder": "take my meds", "time": None, "recurrence": "every morning at 8"}),
])
def test_reminder_model_extracts_everyday_requests(extractor, text, expected):
    assert extract(extractor, text)[0] == expected


@pytest.mark.parametrize("text", ["", "   ", "hello", "what time is it", "thanks"])
def test_no_reminder_in_the_text_gives_nulls(extractor, text):
    assert extract(extractor, text)[0] == {"reminder": None, "time": None, "recurrence": None}


@pytest.mark.parametrize("text", ["what's the weather like", "turn off the lights"])
def test_a_command_that_is_no_reminder_still_gives_valid_copied_json(extractor, text):
    """Trained on reminder requests only, the model may take another command for the task (README)."""
    obj, _ = extract(extractor, text)
    assert list(obj) == ["reminder", "time", "recurrence"] and obj["time"] is None and obj["recurrence"] is None
    assert obj["reminder"] is None or obj["reminder"] in text


@pytest.mark.parametrize("text", ["Erinnere mich morgen an den Müll 🗑️", "提醒我明天下午三点开会",
                                  "remind me to 🎂 tomorrow 👍", "remind me to call Zoë\u0000 at 5\ud800"])
def test_non_english_emoji_and_odd_characters_give_valid_copied_json(extractor, text):
    obj, _ = extract(extractor, text)
    clean = text.replace("\ud800", "\ufffd")
    assert list(obj) == ["reminder", "time", "recurrence"]
    assert all(v is None or (v and v in clean) for v in obj.values())


def test_a_5000_character_request_is_cut_to_the_input_budget(extractor):
    text = "remind me at 7pm to walk the dog. " + "blah " * 1000
    obj, result = extract(extractor, text[:5000])
    assert result.stats["truncated_tokens"] > 0  # the first 64 tokens are kept (tasks/reminders.py)
    assert list(obj) == ["reminder", "time", "recurrence"]  # valid, whatever the model makes of the rest
    assert all(v is None or v in text[:1000] for v in obj.values())


@pytest.mark.parametrize("runner, model, what", [
    ("extractor", "sql-autocomplete", "a reminder-extract model"),
    ("completer", "reminder-extract", "a sql-autocomplete model"),
    ("text", "reminder-extract", "a text model"),
])
def test_a_task_runner_refuses_another_tasks_model(runner, model, what):
    from pocketlm.extractor import ReminderExtractor
    from pocketlm.tasks.text import TextGenerator

    cls = {"extractor": ReminderExtractor, "completer": SqlCompleter, "text": TextGenerator}[runner]
    folder = os.path.join(MODELS, model)
    backend = NativeModel(folder)
    with pytest.raises(ValueError, match=f"uses prompt format .*it is not {what}$"):
        cls(backend.manifest, Tokenizer.from_file(os.path.join(folder, "tokenizer.json")), backend)
