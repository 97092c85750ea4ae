"""Recipes: what `make export MODEL=<name>` builds — data, tokenizer size, architecture, training.

The release sizes were chosen by measurement on this 2-core machine (see README, "Models"):
a release model trains in well under 15 minutes; `--quick` shrinks everything so a whole
export runs in seconds (tests use it).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from export.train import TrainConfig
from pocketlm.manifest import Architecture
from pocketlm.tasks import reminders, sql


class RecipeError(ValueError):
    pass


@dataclass(frozen=True)
class Recipe:
    name: str
    task: str  # the pocketlm task module that formats prompts ("sql", "reminders")
    data_file: str  # training data, relative to DATA (../shared/data by default)
    vocab_size: int  # BPE vocabulary including the 3 special tokens
    arch: Architecture
    train: TrainConfig
    val_fraction: float = 0.1  # share of databases held out for validation
    split_seed: int = 0
    prompt: dict = field(default_factory=dict)
    sampling: dict = field(default_factory=dict)
    special_tokens: tuple[str, ...] = ()  # the tokenizer's special tokens after <pad>, <bos>, <eos>


# The shipped models' decoder (3.9 M parameters); each recipe sets its own context length.
SMALL = Architecture(vocab_size=2048, dim=256, n_layers=4, n_heads=8, n_kv_heads=8, hidden_dim=768, max_seq_len=512)
# The training run measured to fit ~10-15 min on 2 cores at this size.
RELEASE_TRAIN = TrainConfig(steps=360, batch_tokens=6144, group_tokens=1024, lr=3e-3, warmup=30, ckpt_every=50,
                            eval_every=120)

RECIPES = {
    "sql-autocomplete": Recipe(
        name="sql-autocomplete",
        task="sql",
        data_file="sql/train.jsonl",
        vocab_size=2048,
        arch=SMALL,
        train=dataclasses.replace(RELEASE_TRAIN, rename=1.0, rename_share=0.9),
        prompt={"format": sql.FORMAT, "separator": sql.SEPARATOR, "stop": list(sql.STOP_STRINGS),
                "heal_last_pretoken": True, "finish_names": True},
        sampling={"max_new_tokens": 16, "temperature": 0.0, "stop": list(sql.STOP_STRINGS)},
    ),
    # The sizes of sql-autocomplete (same trainer, same graph); requests are short, so the context is too.
    "reminder-extract": Recipe(
        name="reminder-extract",
        task="reminders",
        data_file="reminders/train.jsonl",
        vocab_size=2048,
        arch=dataclasses.replace(SMALL, max_seq_len=256),
        # Measured on dev.jsonl (README, "reminder-extract"): swapping in other rows' reminder/time phrases
        # (swap) and a language-model loss on the request (prompt_loss) took validation loss 0.689 -> 0.453;
        # packing into 256-token groups instead of 1024 cuts the block-masked attention work (val loss 0.335
        # at 480 steps, one thread). Two threads on a quiet 2-core machine: 1.03 s per step, so 840 steps fit
        # ~14.5 min (TOPv2 exact_both 0.711 -> 0.753; 960 steps: 0.758). Beside another job two
        # threads spin (9 s vs 3 s per step next to a browser benchmark): train on a quiet machine.
        # Tried and dropped: rename_words (val loss better, exact_both worse), dropout 0.1 (slower to
        # converge), writing "time" before "reminder" (prompt keys; TOPv2 0.716 vs 0.758 at 960 steps),
        # lr 5e-3 (840 steps: val loss 0.610 vs 0.187, TOPv2 0.558 vs 0.753). 840 steps took 860 s here, quiet.
        # The exported weights are an average over the run (ema 0.99, export/train.py WeightAverage): TOPv2
        # exact_both 0.764 -> 0.785 on the held-out split of the training data, 0.758 -> 0.772 on dev (same run:
        # decay 0.995 0.781 / 0.771, 0.998 0.733 / 0.720, too long a memory for 840 steps). With it,
        # swap 0.7 instead of 0.5 was tried and dropped (val loss 0.175 -> 0.167, held-out 0.785 -> 0.773),
        # and so were half the batch for twice the steps (3072 tokens x 1680: val loss 0.210, held-out 0.775)
        # and twice the batch for half the steps (12288 x 420: val loss 0.409, held-out 0.713).
        # 1440 steps (session 11, 0.58 s per step on a quieter machine): val loss 0.148, dev TOPv2 0.770 vs 0.772:
        # longer training lowers the loss, not the exact-match errors (README).
        # Session 12: format reminders-v2 (the request written again with its values between marker tokens,
        # then the JSON following the marks; the request read lower-cased): dev TOPv2 exact_both 0.772 -> 0.830
        # with the same training (README "Why a marked copy"). The markers are the tokenizer's special tokens.
        train=dataclasses.replace(RELEASE_TRAIN, swap=0.5, prompt_loss=True, group_tokens=256, steps=840,
                                  eval_every=240, threads=2, ema=0.99),
        val_fraction=0.05,
        prompt={"format": reminders.FORMAT, "separator": reminders.SEPARATOR, "keys": list(reminders.KEYS),
                "max_input_tokens": reminders.MAX_INPUT_TOKENS},
        sampling={"max_new_tokens": reminders.MAX_OUTPUT_TOKENS, "temperature": 0.0},
        special_tokens=tuple(reminders.marker_tokens()),
    ),
}


def get_recipe(name: str, quick: bool = False) -> Recipe:
    if name not in RECIPES:
        raise RecipeError(f"unknown model {name!r}; known recipes: {', '.join(sorted(RECIPES))}")
    recipe = RECIPES[name]
    return quick_variant(recipe) if quick else recipe


def quick_variant(recipe: Recipe) -> Recipe:
    """A few-seconds version for tests: tiny vocabulary, tiny model, a handful of steps."""
    vocab = 320
    arch = dataclasses.replace(recipe.arch, vocab_size=vocab, dim=64, n_layers=2, n_heads=4, n_kv_heads=2,
                               hidden_dim=128, max_seq_len=256)
    # one torch thread: a model this small gains nothing from two, and two threads spin against any
    # other job on a 2-core machine (measured: 2.3 s vs 0.12 s per step with a training job beside it)
    # a 30-step run's weight average needs a short memory (0.99 would still be mostly the first steps' weights)
    train = dataclasses.replace(recipe.train, steps=30, batch_tokens=2048, group_tokens=512, lr=3e-3, warmup=5,
                                ckpt_every=10, eval_every=15, threads=1, ema=0.8 if recipe.train.ema else 0.0)
    return dataclasses.replace(recipe, vocab_size=vocab, arch=arch, train=train)
