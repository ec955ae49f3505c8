"""The training loop shared by teacher and student.

AdamW (no decay on biases and LayerNorm), a linear warm-up then a linear decay to 0 or a constant rate
(`schedule`: the students' released recipe, and ColBERT v1's teacher), gradient clipping,
gradient accumulation, mixed precision chosen from the hardware (`pipeline.precision`; fp16 with a
GradScaler), a progress bar, a CSV of losses, checkpoints every N steps
that a killed run resumes from, and DistributedDataParallel when started by torchrun.

Under accumulation a loss over the whole batch (one in-batch softmax) stays one loss through
gradient caching (GradCache, Gao et al. 2021): see `pipeline.train.gradcache`.

Checkpoints, and the fingerprint of inputs and settings that decides whether one is resumed, are
`pipeline.train.resume`'s.

Global batch `batch_size` is the paper's batch: it is split into world_size x accumulation equal
micro-batches, so the same triples make one optimisation step however many processes share it.
"""

from __future__ import annotations

import argparse
import csv
import logging
import time
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm
from transformers import get_scheduler

from pipeline import precision as amp_precision
from pipeline.durable import atomic_directory, atomic_output
from pipeline.train.batches import TripleBatches
from pipeline.train.context import Context, seed_everything
from pipeline.train.gradcache import Objective, backward_step, caches_gradients
from pipeline.train.resume import (
    Fingerprint,
    checkpoint_state,
    resume_from_checkpoint,
    rng_states,
    save_checkpoint,
)

log = logging.getLogger(__name__)
LOSS_FILE = "losses.csv"


@dataclass(frozen=True)
class LoopConfig:
    steps: int
    batch_size: int
    lr: float
    warmup_steps: int = 0
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    accumulation: int = 1
    precision: str = "auto"
    seed: int = 13
    # Fields that do not change the trained weights are left out of the fingerprint: a resume may change them.
    checkpoint_every: int = field(default=1000, metadata={"fingerprint": False})
    keep_checkpoints: int = field(default=2, metadata={"fingerprint": False})
    resume: str = field(default="auto", metadata={"fingerprint": False})  # or "discard": see RESUME_MODES
    # `linear` was the only schedule before the setting existed: left unrecorded, so that checkpoints written then
    # still resume; `constant` is recorded.
    schedule: str = field(default="linear", metadata={"unrecorded": "linear"})  # or "constant": see SCHEDULES


RESUME_MODES = ("auto", "discard")
# After `warmup_steps` of linear warm-up: transformers' schedule of that name.
SCHEDULES = {"linear": "linear", "constant": "constant_with_warmup"}


def _optimizer(model: nn.Module, cfg: LoopConfig) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if name.endswith("bias") or "LayerNorm" in name or "norm" in name else decay).append(param)
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)


def fit(model: nn.Module, objective: Objective, batches: TripleBatches, cfg: LoopConfig, checkpoint_dir: Path,
        made_from: Fingerprint, ctx: Context, desc: str = "train") -> None:
    """Train `model` in place for `cfg.steps` optimisation steps, resuming from `checkpoint_dir`.

    `objective` is a `BatchObjective`, or a plain `loss_fn(module, micro_batch)` returning the mean loss
    of one micro-batch; `module` is the DDP wrapper when distributed. Losses (mean over the global
    batch) go to `checkpoint_dir/losses.csv`. A checkpoint is resumed only if it was made from
    `made_from` (inputs and settings; a run that caches gradients adds `gradient_cache`, as its loss
    differs from the per-micro-batch one earlier versions used); otherwise `cfg.resume` decides:
    "auto" stops with a ValueError naming what changed, "discard" deletes the checkpoints and trains
    from step 0.
    """
    if cfg.resume not in RESUME_MODES:
        raise ValueError(f"resume must be one of {RESUME_MODES}, not {cfg.resume!r}")
    if cfg.schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {tuple(SCHEDULES)}, not {cfg.schedule!r}")
    parts = ctx.world * cfg.accumulation
    if cfg.batch_size % parts:
        raise ValueError(f"batch size {cfg.batch_size} is not divisible by world size x accumulation = {parts}")
    if caches_gradients(objective, cfg.accumulation):
        made_from = replace(made_from, settings={**made_from.settings, "gradient_cache": True})
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.seed + ctx.rank)
    model.to(ctx.device).train()
    module = (nn.parallel.DistributedDataParallel(model, device_ids=[ctx.device.index] if ctx.device.type == "cuda"
                                                  else None) if ctx.world > 1 else model)
    optimizer = _optimizer(model, cfg)
    scheduler = get_scheduler(SCHEDULES[cfg.schedule], optimizer, num_warmup_steps=cfg.warmup_steps,
                              num_training_steps=cfg.steps)
    precision = amp_precision.resolve_and_log(cfg.precision, ctx.device, desc)
    scaler = amp_precision.grad_scaler(ctx.device, precision)
    start = resume_from_checkpoint(model, optimizer, scheduler, scaler, checkpoint_dir, made_from, cfg.resume, ctx)
    loss_path = checkpoint_dir / LOSS_FILE

    def checkpoint(step: int) -> None:
        rng = rng_states(ctx)  # collective: every rank hands in its generators
        if ctx.main:
            save_checkpoint(checkpoint_dir, checkpoint_state(model, optimizer, scheduler, scaler, step, made_from, rng),
                            cfg.keep_checkpoints)

    if ctx.main:
        _truncate_log(loss_path, start)
    hardware = amp_precision.describe(precision)
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc=desc, disable=not ctx.main,
               mininterval=2)
    for step in bar:
        tick = time.perf_counter()
        micros = [batches.micro_batch(step, ctx.rank * cfg.accumulation + accum, parts)
                  for accum in range(cfg.accumulation)]
        total = backward_step(module, objective, micros, scaler, precision, ctx.device)
        scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        scaler.step(optimizer)  # skipped when fp16 gradients overflowed (the scale then shrinks)
        scaler.update()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if ctx.world > 1:
            dist.all_reduce(total)
            total /= ctx.world
        if ctx.main:
            with open(loss_path, "a", newline="") as out:
                csv.writer(out).writerow([step + 1, f"{total.item():.6f}", f"{scheduler.get_last_lr()[0]:.3e}",
                                          f"{grad_norm.item():.4f}", f"{time.perf_counter() - tick:.3f}",
                                          hardware["precision"], hardware["cpu_capability"]])
            bar.set_postfix(loss=f"{total.item():.4f}")
        if (step + 1) % cfg.checkpoint_every == 0 and step + 1 < cfg.steps:
            checkpoint(step + 1)
        if ctx.world > 1:
            dist.barrier()
    if cfg.steps > start:
        checkpoint(cfg.steps)


def _truncate_log(path: Path, step: int) -> None:
    """Keep the loss rows of steps up to `step`: a resumed run rewrites what came after its checkpoint."""
    rows = []
    if path.exists() and step:
        with open(path, newline="") as handle:
            rows = [row for row in csv.reader(handle) if row and row[0].isdigit() and int(row[0]) <= step]
    with open(path, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["step", "loss", "lr", "grad_norm", "seconds", "precision", "cpu_capability"])
        writer.writerows(rows)


def add_loop_arguments(parser: argparse.ArgumentParser) -> None:
    """Command-line options shared by the training stages (data, output and LoopConfig)."""
    parser.add_argument("--triples", type=Path, required=True)
    parser.add_argument("--queries", type=Path, required=True, help="train queries (qid<TAB>text)")
    parser.add_argument("--collection", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="model directory to write")
    parser.add_argument("--checkpoints", type=Path, required=True, help="checkpoint directory (resumed from)")
    parser.add_argument("--losses", type=Path, required=True, help="CSV of per-step losses to write")
    for option in fields(LoopConfig):
        flag = "--" + option.name.replace("_", "-")
        if option.name == "precision":
            amp_precision.add_precision_argument(parser)
        elif option.name == "schedule":
            parser.add_argument("--schedule", choices=tuple(SCHEDULES), default=option.default,
                                help="after the warm-up: linear decay to 0 at the last step, or a constant rate")
        elif option.name == "resume":
            parser.add_argument("--resume", choices=RESUME_MODES, default="auto",
                                help="checkpoints made from other inputs or settings: auto = stop with an error "
                                     "naming what changed, discard = delete them and train afresh (checkpoints of "
                                     "the same inputs are resumed either way)")
        else:
            kind = {"int": int, "float": float}[option.type]
            parser.add_argument(flag, type=kind, default=None if option.default is MISSING else option.default,
                                required=option.default is MISSING)
    parser.add_argument("--max-query-length", type=int, default=36, help="query tokens incl. the 4-token prefix")
    parser.add_argument("--max-doc-length", type=int, default=154, help="passage tokens incl. the 4-token prefix")
    parser.add_argument("--pool-start", type=int, default=4, help="first pooled position (4: after the prefix)")


def loop_config(args: argparse.Namespace) -> LoopConfig:
    return LoopConfig(**{field.name: getattr(args, field.name) for field in fields(LoopConfig)})


def finish(model_save: Callable[[Path], None], checkpoint_dir: Path, out_dir: Path, losses: Path,
           ctx: Context) -> None:
    """On rank 0: write the model directory and the loss CSV atomically, from the trained model."""
    if ctx.main:
        with atomic_directory(out_dir) as staging:
            model_save(staging)
        with atomic_output(losses) as out:
            out.write((checkpoint_dir / LOSS_FILE).read_text())
    if ctx.world > 1:
        dist.barrier()
        dist.destroy_process_group()
