"""`python -m export <recipe> [--quick]`: train and export a model folder into web/models/<recipe>/.

`python -m export llama2c MODEL.bin [--tokenizer TOKENIZER.bin] [--name NAME] [--out DIR] [--variants fp32,int8,q4]`:
import a karpathy/llama2.c checkpoint into web/models/<NAME>/ (export/llama2c.py).
"""

from __future__ import annotations

import argparse
import os
import sys

from export.recipes import RECIPES, RecipeError, get_recipe

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
LLAMA2C = "llama2c"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == [LLAMA2C]:
        return _run(lambda: _import_llama2c(argv[1:]), "import")
    parser = argparse.ArgumentParser(prog="python -m export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help=f"recipe name: {', '.join(sorted(RECIPES))} (or `{LLAMA2C} MODEL.bin ...`)")
    parser.add_argument("--quick", action="store_true", help="tiny config that runs in seconds (for tests)")
    parser.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data"), help="training data folder")
    parser.add_argument("--out", default=os.path.join(ROOT, "web", "models"), help="where model folders go")
    parser.add_argument("--runs", default=os.path.join(ROOT, "runs"), help="work folder: checkpoints, splits")
    parser.add_argument("--split-only", action="store_true",
                        help="only write the train/validation split (runs/<model>/{train,val}.jsonl) and stop")
    args = parser.parse_args(argv)
    return _run(lambda: _export_recipe(args), "export", resumable=True)


def _export_recipe(args) -> None:
    recipe = get_recipe(args.model, quick=args.quick)
    if args.split_only:
        from export.pipeline import write_split

        print(write_split(recipe, args.data, args.runs)[0])
        return
    from export.pipeline import export_model  # heavy imports (torch, onnx) only when needed

    export_model(recipe, args.data, args.out, args.runs)


def _import_llama2c(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog=f"python -m export {LLAMA2C}",
                                     description="Import a llama2.c checkpoint (v0 legacy, v1 fp32, v2 Q8_0) into a "
                                                 "pocketlm model folder (task text).")
    parser.add_argument("checkpoint", help="llama2.c model .bin (e.g. stories15M.bin)")
    parser.add_argument("--tokenizer", help="llama2.c tokenizer.bin (default: tokenizer.bin beside the checkpoint)")
    parser.add_argument("--name", help="model folder name (default: the checkpoint's file name without .bin)")
    parser.add_argument("--out", default=os.path.join(ROOT, "web", "models"), help="where model folders go")
    parser.add_argument("--variants", default="fp32,int8,q4", help="comma-separated: fp32, int8, q4")
    args = parser.parse_args(argv)
    from export.llama2c import import_checkpoint  # heavy imports (torch, onnx) only when needed

    variants = tuple(v.strip() for v in args.variants.split(",") if v.strip())
    import_checkpoint(args.checkpoint, args.tokenizer, args.out, args.name, variants)


def _run(action, what: str, resumable: bool = False) -> int:
    """Run `action`; a known failure is one `error: ...` line and exit 2, Ctrl-C exit 130."""
    try:
        action()
    except KeyboardInterrupt:
        hint = "; run again to resume" if resumable else ""
        print(f"{what} interrupted: the previous model folder is untouched{hint}", file=sys.stderr)
        return 130
    except (RecipeError, ValueError, RuntimeError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
