"""Train the torch decoder on packed groups (export/data.py), seeded, resumable, with a progress bar.

Loss is cross-entropy on the query tokens only (the schema is context, not something to predict).
A checkpoint (model + optimizer + step, and the weight average when `ema` is on) is written atomically
every `ckpt_every` steps; a run restarted with the same config resumes from it and ends with the same
weights as an uninterrupted run, because batches are a function of (seed, epoch) only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import random
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm import tqdm

from export.data import Group
from export.model import Transformer
from pocketlm.manifest import Architecture


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 3000  # optimizer steps
    batch_tokens: int = 8192  # tokens per step (groups are packed up to this, padded)
    group_tokens: int = 1024  # tokens per packed group (one schema + several queries)
    lr: float = 2e-3  # peak learning rate (AdamW), cosine decay to lr * min_lr_ratio
    min_lr_ratio: float = 0.1
    warmup: int = 100  # linear warm-up steps
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    dropout: float = 0.0  # on embeddings and residual branches while training (the exported graph has none)
    shuffle_tables: float = 0.5  # probability a group's schema lists its tables in shuffled order
    rename: float = 0.0  # probability a database's identifiers are partly renamed in a group (augmentation)
    rename_share: float = 0.5  # share of its identifiers renamed when it is
    swap: float = 0.0  # reminders: probability an example's reminder/time are swapped for other rows' (augmentation)
    prompt_loss: bool = False  # reminders: the request's tokens carry loss too, not only the JSON
    seed: int = 1234
    ckpt_every: int = 200  # steps between checkpoints
    eval_every: int = 500  # steps between validation-loss reports
    threads: int = 2  # torch CPU threads
    bf16: bool = True  # bf16 autocast: measured 2.0x faster per step on this CPU (avx512_bf16), fp32 weights
    ema: float = 0.0  # > 0: the trained model is an exponential moving average of the weights with this
    #                   decay per step (from the first step's weights), not the last step's weights


# Fields added to TrainConfig after checkpoints existed, with the value that means "as before": left out of
# the fingerprint at that value, so those checkpoints still resume (and their exports still reproduce).
ADDED_LATER = {"ema": 0.0}


def config_dict(cfg) -> dict:
    """A config dataclass as a dict, without the ADDED_LATER fields at their "as before" value."""
    return {k: v for k, v in dataclasses.asdict(cfg).items() if not (k in ADDED_LATER and v == ADDED_LATER[k])}


def fingerprint(*parts) -> str:
    blob = json.dumps([config_dict(p) if dataclasses.is_dataclass(p) else p for p in parts], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def collate(groups: list[Group]):
    """-> ids [B, T], positions [B, T], targets [B, T], mask [B, T, T] (True = may attend)."""
    T = max(len(g.ids) for g in groups)
    pad = lambda xs, v: xs + [v] * (T - len(xs))  # noqa: E731
    ids = torch.tensor([pad(g.ids, 0) for g in groups])
    positions = torch.tensor([pad(g.positions, 0) for g in groups])
    targets = torch.tensor([pad(g.targets, -100) for g in groups])
    segment = torch.tensor([pad(g.segment, -1) for g in groups])  # -1 marks padding
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    same = (segment[:, :, None] == segment[:, None, :]) | (segment[:, None, :] == 0)  # [B, T, T]
    mask = causal[None] & same & (segment[:, None, :] >= 0)
    mask |= torch.eye(T, dtype=torch.bool)[None]  # padding rows attend to themselves (no NaN)
    return ids, positions, targets, mask


def batches_for_epoch(groups: list[Group], batch_tokens: int, rng: random.Random) -> list[list[Group]]:
    """Shuffle, then fill batches up to batch_tokens counted as B * longest group."""
    order = list(groups)
    rng.shuffle(order)
    batches, current, longest = [], [], 0
    for g in order:
        new_longest = max(longest, len(g.ids))
        if current and new_longest * (len(current) + 1) > batch_tokens:
            batches.append(current)
            current, new_longest = [], len(g.ids)
        current.append(g)
        longest = new_longest
    if current:
        batches.append(current)
    return batches


def lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


@torch.no_grad()
def evaluate(model: Transformer, groups: list[Group], batch_tokens: int) -> dict:
    """Mean loss and top-1 accuracy over the query tokens of `groups`."""
    model.eval()
    total_loss, total_correct, total = 0.0, 0, 0
    for batch in batches_for_epoch(groups, batch_tokens, random.Random(0)):
        ids, positions, targets, mask = collate(batch)
        logits, _ = model(ids, positions=positions, mask=mask)  # fp32: the numbers the manifest records
        valid = targets >= 0
        total_loss += F.cross_entropy(logits[valid], targets[valid], reduction="sum").item()
        total_correct += (logits[valid].argmax(-1) == targets[valid]).sum().item()
        total += valid.sum().item()
    model.train()
    return {"loss": total_loss / max(total, 1), "acc": total_correct / max(total, 1), "tokens": total}


def train(arch: Architecture, cfg: TrainConfig, data, *, run_dir: str, log=print) -> tuple[Transformer, dict]:
    """Train (or resume) and return the model and a summary dict for the manifest.

    data: the task's training data (export.data.SqlTrainingData, export.data_reminders.ReminderTrainingData):
    `key` (what a checkpoint must match to be resumed), `val_groups()`, `train_groups(rng)`.
    """
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    model = Transformer(arch, dropout=cfg.dropout)
    optimizer = torch.optim.AdamW(
        _param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.95), eps=1e-8
    )
    os.makedirs(run_dir, exist_ok=True)
    ckpt_path = os.path.join(run_dir, "ckpt.pt")
    key = fingerprint(arch, cfg, data.key)
    step = 0
    average = WeightAverage(cfg.ema) if cfg.ema else None
    if os.path.exists(ckpt_path):
        state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        if state.get("key") == key:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            if average is not None:
                average.load_state_dict(state["ema"])
            step = int(state["step"])
            log(f"resuming training from step {step} ({ckpt_path})")
        else:
            log(f"ignoring checkpoint {ckpt_path}: it was made with another config or data")
    val_groups = data.val_groups()
    log(f"model: {model.num_params() / 1e6:.2f} M parameters")
    current: dict[int, list] = {}  # the batches of one epoch at a time
    epoch_sizes: dict[int, int] = {}  # batches per epoch, remembered so earlier epochs are built once

    def batches_of(epoch: int) -> list:
        if epoch not in current:
            current.clear()
            rng = random.Random(cfg.seed * 1000 + epoch)
            groups = data.train_groups(rng)
            current[epoch] = batches_for_epoch(groups, cfg.batch_tokens, rng)
            epoch_sizes[epoch] = len(current[epoch])
        return current[epoch]

    def batch_at(s: int):
        """Batches depend only on (seed, epoch): resuming at step s sees what an uninterrupted run saw."""
        epoch, index = 0, s
        while index >= (epoch_sizes[epoch] if epoch in epoch_sizes else len(batches_of(epoch))):
            index -= epoch_sizes[epoch]
            epoch += 1
        return epoch, batches_of(epoch)[index]

    model.train()
    t0, history = time.time(), []
    bar = tqdm(total=cfg.steps, initial=step, desc="training", unit="step", dynamic_ncols=True)
    while step < cfg.steps:
        epoch, batch = batch_at(step)
        ids, positions, targets, mask = collate(batch)
        for g in optimizer.param_groups:
            g["lr"] = lr_at(step, cfg)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
            logits, _ = model(ids, positions=positions, mask=mask)
        loss = F.cross_entropy(logits.float().view(-1, logits.shape[-1]), targets.view(-1), ignore_index=-100)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        if average is not None:
            average.update(model)
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}", epoch=epoch)
        if step % cfg.eval_every == 0 or step == cfg.steps:
            metrics = evaluate(model, val_groups, cfg.batch_tokens)
            history.append({"step": step, "train_loss": round(loss.item(), 4), "val_loss": round(metrics["loss"], 4),
                            "val_acc": round(metrics["acc"], 4)})
            bar.write(f"step {step}: train loss {loss.item():.3f}, val loss {metrics['loss']:.3f}, "
                      f"val next-token acc {metrics['acc']:.3f}")
        if step % cfg.ckpt_every == 0 or step == cfg.steps:
            extra = {"ema": average.state_dict()} if average is not None else {}
            _save_atomic({"key": key, "step": step, "model": model.state_dict(),
                          "optimizer": optimizer.state_dict(), **extra}, ckpt_path)
    bar.close()
    log(f"trained {cfg.steps} steps in {time.time() - t0:.0f} s")
    if average is not None:
        average.copy_to(model)  # the model that is evaluated and exported
    final = evaluate(model, val_groups, cfg.batch_tokens)
    summary = {
        "params": model.num_params(), "steps": cfg.steps,
        "val_loss": round(final["loss"], 4), "val_next_token_acc": round(final["acc"], 4),
        "config": config_dict(cfg),
    }  # no timings or per-step history: the same seed must give the same manifest, resumed or not
    model.eval()
    return model, summary


class WeightAverage:
    """An exponential moving average of a model's parameters: avg <- decay * avg + (1 - decay) * weights
    after every optimizer step, starting from the first step's weights.

    Why: a small model trained for a few epochs generalises better from its averaged weights; the
    figures that chose reminder-extract's decay are in export/recipes.py and the README ("reminder-extract").
    """

    def __init__(self, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema must be a decay in (0, 1), got {decay}")
        self.decay = decay
        self.params: dict[str, torch.Tensor] = {}  # name -> averaged tensor; empty before the first step

    @torch.no_grad()
    def update(self, model: Transformer) -> None:
        for name, p in model.named_parameters():
            if name not in self.params:
                self.params[name] = p.detach().clone()
            else:
                self.params[name].mul_(self.decay).add_(p.detach(), alpha=1 - self.decay)

    @torch.no_grad()
    def copy_to(self, model: Transformer) -> None:
        for name, p in model.named_parameters():
            p.copy_(self.params[name])

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.params)

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.params = {k: v.clone() for k, v in state.items()}


def _param_groups(model, weight_decay):
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _save_atomic(obj, path):
    tmp = path + ".tmp"
    torch.save(obj, tmp)
    os.replace(tmp, path)
