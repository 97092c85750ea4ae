"""pocketlm runs in Pyodide: every module but the native backend imports only the standard library."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PURE = [
    "pocketlm", "pocketlm.manifest", "pocketlm.tokenizer", "pocketlm.sampler", "pocketlm.generate",
    "pocketlm.constraints", "pocketlm.completer", "pocketlm.ngram", "pocketlm.tasks.sql", "pocketlm.evals.sql",
    "pocketlm.native", "pocketlm.browser", "pocketlm.__main__", "pocketlm.session", "pocketlm.json_constraint",
    "pocketlm.json_schema", "pocketlm.tasks.text", "pocketlm.tokenizer_spm",
    "pocketlm.extractor", "pocketlm.tasks.reminders", "pocketlm.evals.reminders", "pocketlm.evals.rows",
    "pocketlm.echo_constraint", "pocketlm.copy_search",
]

PROBE = """
import sys
sys.path.insert(0, {path!r})
before = set(sys.modules)
for name in {modules!r}:
    __import__(name)
third_party = sorted(
    m for m in set(sys.modules) - before
    if m.split(".")[0] not in sys.stdlib_module_names and m.split(".")[0] != "pocketlm"
)
print(third_party)
"""


def test_pocketlm_modules_import_only_the_standard_library():
    # -I: isolated interpreter, so site-packages (numpy, onnxruntime...) are not even importable
    code = PROBE.format(path=os.path.join(ROOT, "pysrc"), modules=PURE)
    out = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
