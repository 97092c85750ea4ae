"""make bench-ab's logic that does not need a browser: the alternating order, the summary, a clear error
for an unknown BASE, and the base page built from a commit's own sources."""

import json
import os
import subprocess

import pytest

from bench import ab
from bench.run import BenchError


def test_rounds_alternate_which_build_goes_first():
    order = ab.rounds(4)
    assert order == [("base", "now"), ("now", "base"), ("base", "now"), ("now", "base")]
    assert sum(o[0] == "base" for o in order) == sum(o[0] == "now" for o in order)


def test_summarize_takes_medians_and_the_ratio():
    rows = ab.summarize({"base": {"ready_ms": [3000.0, 1000.0, 2000.0], "tokens_per_s": [500.0, 700.0]},
                         "now": {"ready_ms": [1000.0, 900.0, 1100.0], "tokens_per_s": [900.0, 700.0]}})
    by = {r["metric"]: r for r in rows}
    assert by["ready_ms"]["base"] == 2000.0 and by["ready_ms"]["now"] == 1000.0 and by["ready_ms"]["ratio"] == 0.5
    assert by["tokens_per_s"]["ratio"] == round(800.0 / 600.0, 3)
    assert by["ready_ms"]["base_runs"] == [3000.0, 1000.0, 2000.0]
    assert "| x | ready_ms | 2000 (3000, 1000, 2000) | 1000 (1000, 900, 1100) | 0.5 |" in \
        ab.table({"base": "0" * 40, "loads": 3, "models": {"x": rows}})


def test_decode_reports_the_first_generation_after_the_warm_up_against_the_same_pages_steady_state():
    class Page:  # what bench.pages.OURS_JS returns for a timed page: 3 runs of 127 tokens at 100 ms each
        def measure(self, url, js, args):
            return {"cold": {"runs": [{"tokens": 127, "decode_ms": 100.0}] * 3,
                             "after_warm_new_tokens": 127, "after_warm_decode_ms": 125.0}}

    out = ab.decode(Page(), "http://x/index.html", {})
    assert out["tokens_per_s"] == pytest.approx(1270.0)
    assert out["after_warm_up_pct_of_steady"] == pytest.approx(80.0)


def test_cold_load_with_reload_lets_the_page_keep_its_files_and_reports_the_reload():
    calls = []

    class Page:
        def measure(self, url, js, cold_args, warm_args=None):
            calls.append((cold_args, warm_args))
            page = {"ready_ms": 900.0, "first_token_ms": 950.0, "load_stats": {"session_ms": 80.0}}
            return {"cold": page, "warm": {"ready_ms": 600.0, "first_token_ms": 640.0} if warm_args else None}

    plain = ab.cold_load(Page(), "http://x/index.html", {"manifest": "m"})
    assert plain == {"ready_ms": 900.0, "first_token_ms": 950.0, "session_ms": 80.0}
    assert calls[-1] == ({"manifest": "m", "coldOnly": True, "keep": False}, None)
    again = ab.cold_load(Page(), "http://x/index.html", {"manifest": "m"}, reload=True)
    assert again["reload_ready_ms"] == 600.0 and again["reload_first_token_ms"] == 640.0
    assert calls[-1][0]["keep"] is True and calls[-1][1] == calls[-1][0]


@pytest.mark.parametrize("bad", ["no-such-ref-anywhere", "0" * 40])
def test_an_unknown_base_is_a_clear_error(bad):
    with pytest.raises(BenchError, match="is not a commit of this repository.*make bench-ab BASE=HEAD~1"):
        ab.resolve(bad)


def test_cli_rejects_unknown_models(capsys):
    assert ab.main(["--base", "HEAD", "--models", "gpt-5"]) == 2
    assert "unknown model(s) ['gpt-5']" in capsys.readouterr().err


def test_base_site_is_built_from_the_commits_sources(tmp_path):
    head = ab.resolve("HEAD")
    out = ab.build_base_site(head, str(tmp_path))
    assert os.path.basename(out) == f"site-{head[:12]}"
    with open(os.path.join(out, "site-config.js")) as f:
        config = json.loads(f.read().split("=", 1)[1].strip().rstrip(";"))
    committed = subprocess.run(["git", "show", f"{head}:web/src/worker.mjs"], cwd=ab.ROOT, capture_output=True).stdout
    with open(os.path.join(out, "worker.mjs"), "rb") as f:
        assert f.read() == committed  # the commit's page code, not the working tree's
    assert any(p.startswith("vendor/pyodide/pyodide.snapshot") for p in config["assets"])
    assert ab.build_base_site(head, str(tmp_path)) == out  # kept: a second run reuses it


def test_cli_rejects_options_that_are_not_a_json_object(capsys):
    assert ab.main(["--base", "HEAD", "--options", "[1]"]) == 2
    assert "--options must be a JSON object" in capsys.readouterr().err
