"""`python -m export <recipe> [--quick]`: train and export a model folder into web/models/<recipe>/."""

from __future__ import annotations

import argparse
import os
import sys

from export.recipes import RECIPES, RecipeError, get_recipe

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export", description=__doc__)
    parser.add_argument("model", help=f"recipe name: {', '.join(sorted(RECIPES))}")
    parser.add_argument("--quick", action="store_true", help="tiny config that runs in seconds (for tests)")
    parser.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data"), help="training data folder")
    parser.add_argument("--out", default=os.path.join(ROOT, "web", "models"), help="where model folders go")
    parser.add_argument("--runs", default=os.path.join(ROOT, "runs"), help="work folder: checkpoints, splits")
    parser.add_argument("--split-only", action="store_true",
                        help="only write the train/validation split (runs/<model>/{train,val}.jsonl) and stop")
    args = parser.parse_args(argv)
    try:
        recipe = get_recipe(args.model, quick=args.quick)
        if args.split_only:
            from export.pipeline import write_split

            print(write_split(recipe, args.data, args.runs)[0])
            return 0
        from export.pipeline import export_model  # heavy imports (torch, onnx) only when needed

        export_model(recipe, args.data, args.out, args.runs)
    except KeyboardInterrupt:
        print("export interrupted: the previous model folder is untouched; run again to resume", file=sys.stderr)
        return 130
    except (RecipeError, ValueError, RuntimeError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
