"""Command line: `python -m pocketlm complete|extract|generate ...` and `python -m pocketlm eval sql|reminders ...`.

Errors are one line on stderr (exit status 2), never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys

from .copy_search import FLIPS


def _load(model_dir: str, variant: str | None, threads: int):
    from .manifest import ManifestError
    from .native import NativeModel
    from .tokenizer import Tokenizer

    model = NativeModel(model_dir, variant=variant, threads=threads)
    tokenizer = Tokenizer.from_file(os.path.join(model_dir, model.manifest.tokenizer.file))
    if tokenizer.vocab_size != model.manifest.tokenizer.vocab_size:
        raise ManifestError(
            f"tokenizer.json has {tokenizer.vocab_size} tokens, the manifest says {model.manifest.tokenizer.vocab_size}"
        )
    return model, tokenizer


def cmd_complete(args) -> int:
    from .completer import SqlCompleter

    model, tokenizer = _load(args.model, args.variant, args.threads)
    schema = ""
    if args.schema:
        try:
            with open(args.schema, encoding="utf-8") as f:
                schema = f.read()
        except OSError as e:
            raise ValueError(f"cannot read schema file {args.schema!r}: {e.strerror}") from None
    completer = SqlCompleter(model.manifest, tokenizer, model)
    options = completer.options(
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
        min_p=args.min_p, repetition_penalty=args.repetition_penalty, seed=args.seed,
    )
    result = asyncio.run(completer.complete(schema, args.prefix, options,
                                            finish_names=False if args.no_finish_names else None))
    _print_result(result, args.json)
    return 0


def _print_result(result, as_json: bool) -> None:
    """The text alone, or (--json) text, token ids, stop reason and timings."""
    if as_json:
        print(json.dumps({"text": result.text, "token_ids": result.token_ids, "stop_reason": result.stop_reason,
                          "stats": result.stats}, ensure_ascii=False))
    else:
        print(result.text)


def cmd_extract(args) -> int:
    from .extractor import ReminderExtractor

    model, tokenizer = _load(args.model, args.variant, args.threads)
    extractor = ReminderExtractor(model.manifest, tokenizer, model)
    options = extractor.options(max_new_tokens=args.max_new_tokens)
    result = asyncio.run(extractor.extract(args.text, options, response_format=None if args.unconstrained else "default"))
    _print_result(result, args.json)
    return 0


def cmd_generate(args) -> int:
    """A text-task model (e.g. an imported llama2.c checkpoint) continues the prompt, streamed to stdout."""
    from .sampler import SamplingOptions
    from .tasks.text import TextGenerator

    model, tokenizer = _load(args.model, args.variant, args.threads)
    generator = TextGenerator(model.manifest, tokenizer, model)
    options = SamplingOptions.from_dict(model.manifest.sampling, max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                                top_p=args.top_p, seed=args.seed)

    def stream(_token_id, delta):
        sys.stdout.write(delta)
        sys.stdout.flush()

    if not args.json:
        sys.stdout.write(args.prompt)
    result = asyncio.run(generator.generate(args.prompt, options, on_token=None if args.json else stream))
    if args.json:
        _print_result(result, True)
    else:
        print()
    return 0


def _eval_inputs(args, read_rows):
    """(model, tokenizer, rows) of an eval command; a bad --limit or an empty file is a clear error."""
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be a positive number of rows, got {args.limit}")
    model, tokenizer = _load(args.model, args.variant, args.threads)
    rows = read_rows(args.data, args.limit)
    if not rows:
        raise ValueError(f"{args.data} holds no rows")
    return model, tokenizer, rows


def cmd_eval_reminders(args) -> int:
    from .evals import reminders as rem_eval
    from .evals.sql import print_progress
    from .extractor import ReminderExtractor

    model, tokenizer, rows = _eval_inputs(args, rem_eval.read_reminder_rows)
    extractor = ReminderExtractor(model.manifest, tokenizer, model)
    if args.flips is not None and args.flips < 0:
        raise ValueError(f"--flips must be 0 (plain greedy) or more, got {args.flips}")
    flips = FLIPS if args.flips is None else args.flips
    report = asyncio.run(rem_eval.evaluate(extractor, rows, progress=None if args.quiet else print_progress,
                                           flips=flips))
    report["variant"] = args.variant or model.manifest.default_variant
    print(json.dumps(report))
    return 0


def cmd_eval(args) -> int:
    if args.task == "reminders":
        return cmd_eval_reminders(args)
    from .evals import sql as sql_eval

    model, tokenizer, rows = _eval_inputs(args, sql_eval.read_rows)
    training = model.manifest.training
    if not args.train:
        raise ValueError("the n-gram baseline needs the training data: pass --train FILE.jsonl "
                         f"(the model was trained on {training.get('data', 'an unrecorded file')})")
    held_out = set(training.get("val_dbs", []))
    train_rows = [r for r in sql_eval.read_rows(args.train) if r.get("db_id") not in held_out]
    progress = None if args.quiet else sql_eval.print_progress
    report = sql_eval.evaluate(model, tokenizer, rows, train_rows, progress=progress,
                               finish_names=not args.no_finish_names)
    report["variant"] = args.variant or model.manifest.default_variant
    print(json.dumps(report))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pocketlm", description="pocketlm: tiny task models, run natively")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("complete", help="complete a SQL query prefix")
    p.add_argument("prefix", help="the query typed so far (may be empty)")
    p.add_argument("--model", required=True, help="model folder (holds manifest.json)")
    p.add_argument("--variant", choices=["fp32", "int8", "q4"], default=None, help="default: the manifest's")
    p.add_argument("--schema", help="file with the database schema, one table per line: table(col, ...)")
    p.add_argument("--max-new-tokens", type=int, default=None)
    p.add_argument("--temperature", type=float, default=None)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--min-p", type=float, default=None)
    p.add_argument("--repetition-penalty", type=float, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", action="store_true", help="print text, token ids, stop reason and timings as JSON")
    p.add_argument("--no-finish-names", action="store_true", help="do not finish a half-typed word with a schema name")
    p.set_defaults(func=cmd_complete)

    x = sub.add_parser("extract", help="turn a request into the reminder JSON (reminder-extract models)")
    x.add_argument("text", help="the request, e.g. 'remind me at 7pm to walk the dog'")
    x.add_argument("--model", required=True, help="model folder (holds manifest.json)")
    x.add_argument("--variant", choices=["fp32", "int8", "q4"], default=None, help="default: the manifest's")
    x.add_argument("--max-new-tokens", type=int, default=None)
    x.add_argument("--threads", type=int, default=1)
    x.add_argument("--unconstrained", action="store_true", help="no schema-constrained decoding (for comparison)")
    x.add_argument("--json", action="store_true", help="print text, token ids, stop reason and timings as JSON")
    x.set_defaults(func=cmd_extract)

    g = sub.add_parser("generate", help="continue a text with a text-task model (e.g. an imported llama2.c model)")
    g.add_argument("prompt", help="the text to continue (may be empty)")
    g.add_argument("--model", required=True, help="model folder (holds manifest.json)")
    g.add_argument("--variant", choices=["fp32", "int8", "q4"], default=None, help="default: the manifest's")
    g.add_argument("--max-new-tokens", type=int, default=None)
    g.add_argument("--temperature", type=float, default=None, help="0 = greedy; default: the manifest's")
    g.add_argument("--top-k", type=int, default=None)
    g.add_argument("--top-p", type=float, default=None)
    g.add_argument("--seed", type=int, default=None)
    g.add_argument("--threads", type=int, default=1)
    g.add_argument("--json", action="store_true", help="print text, token ids, stop reason and timings as JSON")
    g.set_defaults(func=cmd_generate)

    e = sub.add_parser("eval", help="evaluate a model on a task's data")
    e.add_argument("task", choices=["sql", "reminders"])
    e.add_argument("--model", required=True)
    e.add_argument("--data", required=True,
                   help="JSON lines: sql: fields schema and sql; reminders: text, time, reminder (recurrence optional)")
    e.add_argument("--train", help="training JSON lines for the n-gram baseline (validation databases excluded)")
    e.add_argument("--limit", type=int, default=None)
    e.add_argument("--variant", choices=["fp32", "int8", "q4"], default=None)
    e.add_argument("--threads", type=int, default=1)
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    e.add_argument("--no-finish-names", action="store_true",
                   help="measure the model alone: do not finish half-typed words with schema names")
    e.add_argument("--flips", type=int, default=None,
                   help="reminders: uncertain marks the constrained decoding looks at again (pocketlm.copy_search; "
                        "default %d, 0 = plain greedy)" % FLIPS)
    e.set_defaults(func=cmd_eval)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, RuntimeError, OSError) as e:  # ManifestError, TokenizerError, SamplingError ...
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
