"""The worked examples in the docstrings of the modules outside pysrc/ hold. pytest's --doctest-modules
reaches only its testpaths (tests/, pysrc/), so the modules of bench/, export/ and webtools/ that carry
examples are found here and run with doctest."""

import doctest
import glob
import importlib
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def modules_with_examples() -> list[str]:
    found = []
    for folder in ("bench", "export", "webtools"):
        for path in sorted(glob.glob(os.path.join(ROOT, folder, "*.py"))):
            if os.path.basename(path) != "__main__.py" and ">>> " in open(path, encoding="utf-8").read():
                found.append(f"{folder}.{os.path.basename(path)[:-3]}")
    return found


MODULES = modules_with_examples()


def test_the_modules_with_examples_are_found():
    assert {"bench.rows", "export.onnx_graph", "webtools.pyodide_snapshot"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name))
    assert result.attempted > 0 and result.failed == 0
