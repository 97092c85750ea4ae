"""pocketlm on Pyodide's own Python (3.14, Unicode 16), the interpreter the browser runs.

Pyodide (pinned in web/package-lock.json) runs under Node here; the same pure-Python code must give
byte-identical tokens to the `tokenizers` library and the same prompts and sampled tokens as CPython.
"""

import json
import os
import random
import shutil
import subprocess

import pytest
from tokenizers import Tokenizer as HFTokenizer

from export.tokenizer_train import save_tokenizer, train_tokenizer
from pocketlm.sampler import Sampler, SamplingOptions
from pocketlm.tasks import sql
from pocketlm.tokenizer import Tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WEB = os.path.join(ROOT, "web")
RUNNER = os.path.join(ROOT, "tests", "pyodide", "run_python.mjs")

CORPUS = [
    "SELECT name ,  born_state ,  age FROM head ORDER BY age",
    "SELECT T1.Name FROM singer AS T1 JOIN singer_in_concert AS T2 ON T1.Singer_ID  =  T2.Singer_ID",
    "head(head_ID, name, born_state, age)\ndepartment(Department_ID, Name, Creation)",
    "The quick brown fox's 12 dogs — naïve café, 東京タワー, Ελληνικά, עברית, 🙂👍🏽",
] * 20


def fuzz_strings(n: int, seed: int = 0) -> list[str]:
    """Random strings over every plane, whitespace oddities and scripts added in Unicode 15-16."""
    rng = random.Random(seed)
    pools = [(0x20, 0x7E), (0xA0, 0x2FF), (0x300, 0x36F), (0x590, 0x6FF), (0x900, 0x97F), (0x3040, 0x30FF),
             (0x4E00, 0x4E80), (0x1F300, 0x1FAFF), (0x10000, 0x1034F), (0x1E030, 0x1E08F), (0x11F00, 0x11F5F),
             (0x2000, 0x206F), (0xE000, 0xE0FF), (0x0, 0x1F)]
    specials = ["\u00a0", "\u2028", "\u3000", "\u0085", "\u180e", "\u200b", "\u200d", "'s", "'LL", "  ", "\n\n"]
    out = []
    for _ in range(n):
        parts = []
        for _ in range(rng.randint(0, 12)):
            if rng.random() < 0.2:
                parts.append(rng.choice(specials))
            else:
                lo, hi = rng.choice(pools)
                parts.append(chr(rng.randint(lo, hi)))
        out.append("".join(parts))
    return out


@pytest.fixture(scope="module")
def node_ready():
    if shutil.which("node") is None:
        pytest.fail("node is needed to run Pyodide (install nodejs)")
    if not os.path.isdir(os.path.join(WEB, "node_modules", "pyodide")):
        pytest.fail("web/node_modules is missing: run `make test` (it runs npm ci in web/)")


def run_in_pyodide(tmp_path, code: str):
    script = tmp_path / "script.py"
    script.write_text(code, encoding="utf-8")
    proc = subprocess.run(["node", RUNNER, WEB, os.path.join(ROOT, "pysrc"), str(script)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_tokenizer_sampler_and_prompts_match_on_pyodide(node_ready, tmp_path):
    path = tmp_path / "tokenizer.json"
    save_tokenizer(train_tokenizer(CORPUS, 400), path)
    texts = CORPUS[:4] + fuzz_strings(1500) + ["", " ", "<eos>", "x" * 5000]
    logits = [[random.Random(i).gauss(0, 2) for _ in range(50)] for i in range(40)]
    schema = "singer(Singer_ID, Name, Country)\nconcert(concert_ID, Theme)"
    prefixes = ["", "SELECT na", "SELECT * FROM ", "SELECT T1.", "SELECT x FROM si"]
    code = f"""
import json, sys, unicodedata
from pocketlm.tokenizer import Tokenizer
from pocketlm.sampler import Sampler, SamplingOptions
from pocketlm.tasks import sql
tok = Tokenizer.from_str({path.read_text(encoding="utf-8")!r})
texts = json.loads({json.dumps(texts)!r})
logits = json.loads({json.dumps(logits)!r})
sampler = Sampler(SamplingOptions(temperature=0.8, top_k=20, top_p=0.9, seed=5))
prompts = [sql.build_prompt(tok, {schema!r}, p, bos_id=1, max_seq_len=128, reserve=16) for p in {prefixes!r}]
print(json.dumps({{
    "python": sys.version.split()[0], "unicode": unicodedata.unidata_version,
    "ids": [tok.encode(t) for t in texts],
    "decoded": [tok.decode(tok.encode(t)) for t in texts],
    "sampled": [sampler.sample(row) for row in logits],
    "prompts": [[p.ids, p.heal.decode("utf-8")] for p in prompts],
    "endings": [sql.name_endings({schema!r}, p) for p in {prefixes!r}],
}}))
"""
    result = run_in_pyodide(tmp_path, code)
    assert result["python"].startswith("3.14")  # really Pyodide's interpreter, not CPython 3.11
    hf = HFTokenizer.from_file(str(path))
    for text, ids, decoded in zip(texts, result["ids"], result["decoded"]):
        expected = hf.encode(text, add_special_tokens=False).ids
        assert ids == expected, (text, ids, expected)
        assert decoded == hf.decode(expected), text
    ours = Tokenizer.from_file(str(path))
    native = Sampler(SamplingOptions(temperature=0.8, top_k=20, top_p=0.9, seed=5))
    assert result["sampled"] == [native.sample(row) for row in logits]
    assert result["prompts"] == [
        [p.ids, p.heal.decode("utf-8")]
        for p in (sql.build_prompt(ours, schema, x, bos_id=1, max_seq_len=128, reserve=16) for x in prefixes)
    ]
    assert result["endings"] == [sql.name_endings(schema, p) for p in prefixes]
