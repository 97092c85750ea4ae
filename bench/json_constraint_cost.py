"""Per-token cost of schema-constrained decoding (pocketlm.json_constraint) on a real tokenizer.

Runs the reminder schema with the copy constraint over a few requests, picking random allowed
tokens until the object closes, and times every allowed() and advance() call.

    python -m bench.json_constraint_cost [--model web/models/reminder-extract] [--runs 40]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time

from pocketlm.constraints import TokenBytesIndex
from pocketlm.json_constraint import JsonConstraint
from pocketlm.json_schema import compile_schema
from pocketlm.tasks import reminders
from pocketlm.tokenizer import Tokenizer

TEXTS = ["remind me at 7pm to walk the dog", "remind me to take my meds every morning at 8",
         "Set up a reminder to bring Dad to doctors on Wednesday, and tell Zoë \"happy birthday\" 🎂",
         "remind me to " + "read the long report about the quarterly numbers and " * 12 + "call Anna"]


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.json_constraint_cost", description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="web/models/reminder-extract")
    parser.add_argument("--runs", type=int, default=40)
    args = parser.parse_args(argv)
    path = os.path.join(args.model, "tokenizer.json")
    if not os.path.isfile(path):
        print(f"error: no tokenizer.json in {args.model}", file=sys.stderr)
        return 2
    tokenizer = Tokenizer.from_file(path)
    index = TokenBytesIndex.from_tokenizer(tokenizer)
    t0 = time.perf_counter()
    JsonConstraint.prepare(index)
    prepare_ms = (time.perf_counter() - t0) * 1000
    schema = compile_schema(reminders.SCHEMA)
    allowed_us, advance_us, build_us = [], [], []
    for run in range(args.runs):
        rng, text = random.Random(run), TEXTS[run % len(TEXTS)]
        t = time.perf_counter()
        c = JsonConstraint(index, schema, eos_id=2, max_tokens=128, copy_source=text, prefix=b" ", whole_words=True)
        build_us.append((time.perf_counter() - t) * 1e6)
        while True:
            t = time.perf_counter()
            allowed = c.allowed()
            allowed_us.append((time.perf_counter() - t) * 1e6)
            token = rng.choice(allowed)
            if token == 2:
                break
            t = time.perf_counter()
            c.advance(token)
            advance_us.append((time.perf_counter() - t) * 1e6)
    print(f"vocabulary {tokenizer.vocab_size}, per-tokenizer tables {prepare_ms:.1f} ms, {args.runs} generations, "
          f"{len(allowed_us)} steps (Python {sys.version.split()[0]})")
    for name, values in (("allowed()", allowed_us), ("advance()", advance_us), ("new constraint", build_us)):
        print(f"{name:15s} median {statistics.median(values):7.1f} µs   p95 {percentile(values, 0.95):7.1f} µs   "
              f"max {max(values):8.1f} µs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
