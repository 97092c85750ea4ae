"""`python -m pocketlm eval reminders`: how well a reminder-extract model fills the JSON.

Rows: JSON lines with "text", "time", "reminder" (and optionally "recurrence"; other fields ignored).
Each row is extracted twice, with and without constrained decoding, and scored:

- valid_json: the output parses and validates against the task schema (keys, string-or-null values);
- exact_reminder / exact_time / exact_both: strict match after pocketlm.tasks.reminders.normalize
  (lower-case, whitespace collapsed, outer punctuation trimmed; null must equal null); an output that
  does not parse counts as wrong;
- lenient_both: exact_both, but `time` also ignores one leading preposition (at/on/for/by/in);
- exact_recurrence, over the rows that give a recurrence field;
- and per mode what it cost: ms_median, ms_p95 (one extraction, on this machine) and tokens_run (the
  tokens a row ran through the model, the second look's included; pocketlm.copy_search).
Figures are also given per source (the row's "source" field up to its first "_", e.g. topv2).
"""

from __future__ import annotations

from typing import Any

from ..json_schema import SchemaError, compile_schema, parse_output
from ..tasks import reminders
from .rows import read_jsonl

_SCHEMA = compile_schema(reminders.SCHEMA)


def read_reminder_rows(path: str, limit: int | None = None) -> list[dict]:
    """Rows with a string "text" and string-or-null "time"/"reminder"; an error names the bad line."""
    def valid(row: dict) -> bool:
        fields = ("time", "reminder") + (("recurrence",) if "recurrence" in row else ())
        return isinstance(row.get("text"), str) and all(k in row and (row[k] is None or isinstance(row[k], str))
                                                        for k in fields)

    return read_jsonl(path, limit, valid=valid, need="a string 'text' and string-or-null 'time' and 'reminder' "
                                                      "(and 'recurrence' if present)")


def score_row(row: dict, output: dict | None) -> dict[str, Any]:
    """Per-row hits (booleans) of one output (None = did not parse/validate)."""
    got = output or {}
    valid = output is not None
    n = reminders.normalize
    hits = {
        "valid_json": valid,
        "exact_reminder": valid and n(got.get("reminder")) == n(row["reminder"]),
        "exact_time": valid and n(got.get("time")) == n(row["time"]),
    }
    hits["exact_both"] = hits["exact_reminder"] and hits["exact_time"]
    lenient_time = valid and reminders.normalize_time_lenient(got.get("time")) == \
        reminders.normalize_time_lenient(row["time"])
    hits["lenient_both"] = hits["exact_reminder"] and lenient_time
    if "recurrence" in row:
        hits["exact_recurrence"] = valid and n(got.get("recurrence")) == n(row["recurrence"])
    return hits


def validated(text: str) -> dict | None:
    try:
        return parse_output(text, _SCHEMA)
    except (SchemaError, ValueError):
        return None


def summarize(hits: list[dict[str, Any]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key in ("valid_json", "exact_reminder", "exact_time", "exact_both", "lenient_both", "exact_recurrence"):
        values = [h[key] for h in hits if key in h]
        if values:
            out[key] = round(sum(values) / len(values), 4)
    return out


def source_of(row: dict) -> str:
    return str(row.get("source", "unknown")).split("_")[0]


async def evaluate(extractor, rows: list[dict], progress=None, flips: int | None = None) -> dict[str, Any]:
    """Extract every row with and without the constraint; return the report (a JSON-able dict).
    flips: the constrained decoding's second looks at uncertain marks (pocketlm.copy_search; None = its default)."""
    per_mode: dict[str, list[dict]] = {"constrained": [], "unconstrained": []}
    cost: dict[str, list[tuple[float, int]]] = {mode: [] for mode in per_mode}  # (ms, tokens run) per row
    options = extractor.options()
    for i, row in enumerate(rows):
        for mode in per_mode:
            result = await extractor.extract(row["text"], options,
                                             response_format="default" if mode == "constrained" else None, flips=flips)
            per_mode[mode].append(score_row(row, validated(result.text)))
            cost[mode].append((result.stats.get("total_ms", 0.0),
                               len(result.token_ids) + int(result.stats.get("search_tokens", 0))))
        if progress is not None:
            progress(i + 1, len(rows))
    report: dict[str, Any] = {"n": len(rows)}
    if flips is not None:
        report["flips"] = flips
    for mode, hits in per_mode.items():
        report[mode] = summarize(hits)
        ms = sorted(c[0] for c in cost[mode])
        report[mode]["ms_median"] = round(ms[len(ms) // 2], 1)  # one extraction, this machine (a cost, not a score)
        report[mode]["ms_p95"] = round(ms[min(len(ms) - 1, int(0.95 * len(ms)))], 1)
        report[mode]["tokens_run"] = round(sum(c[1] for c in cost[mode]) / len(rows), 1)  # per row, the search's too
        sources = sorted({source_of(r) for r in rows})
        if len(sources) > 1:
            report[mode]["by_source"] = {
                s: {"n": sum(source_of(r) == s for r in rows),
                    **summarize([h for h, r in zip(hits, rows) if source_of(r) == s])} for s in sources}
    # the headline figures are the product's (constrained decoding), at the top level
    report.update({k: v for k, v in report["constrained"].items() if k != "by_source"})
    return report
