"""The training loop shared by teacher and student.

AdamW (no decay on biases and LayerNorm), linear warm-up then linear decay, gradient clipping,
gradient accumulation, mixed precision chosen from the hardware (`pipeline.precision`; fp16 with a
GradScaler), a progress bar, a CSV of losses, checkpoints every N steps
that a killed run resumes from, and DistributedDataParallel when started by torchrun.

Global batch `batch_size` is the paper's batch: it is split into world_size x accumulation equal
micro-batches, so the same triples make one optimisation step however many processes share it.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import MISSING, dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm
from transformers import get_linear_schedule_with_warmup

from pipeline import precision as amp_precision
from pipeline.io import atomic_directory, atomic_output
from pipeline.train.batches import Batch, TripleBatches

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
    checkpoint_every: int = 1000
    keep_checkpoints: int = 2


@dataclass(frozen=True)
class Context:
    """Where this process runs: device, rank and world size."""

    device: torch.device
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_context() -> Context:
    """Single process, or one rank of a torchrun job (gloo on CPU, nccl on GPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    rank = dist.get_rank() if world > 1 else 0
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    # One line per process: how a job log shows that torchrun started every rank.
    log.info("rank %d of %d on %s (pid %d)", rank, world, device, os.getpid())
    return Context(device, rank, world)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def fingerprint(settings: dict) -> str:
    """Identity of a training configuration, stored in checkpoints so a resume cannot mix runs."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _optimizer(model: nn.Module, cfg: LoopConfig) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if name.endswith("bias") or "LayerNorm" in name or "norm" in name else decay).append(param)
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)


def _checkpoints(directory: Path) -> list[Path]:
    return sorted(directory.glob("step-*.pt"), key=lambda p: int(p.stem.split("-")[1]))


def _save_checkpoint(directory: Path, state: dict, keep: int) -> None:
    path = directory / f"step-{state['step']:08d}.pt"
    tmp = path.with_suffix(".pt.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    for old in _checkpoints(directory)[:-keep]:
        old.unlink()


def fit(model: nn.Module, loss_fn: Callable[[nn.Module, Batch], torch.Tensor], batches: TripleBatches,
        cfg: LoopConfig, checkpoint_dir: Path, identity: str, ctx: Context, desc: str = "train") -> None:
    """Train `model` in place for `cfg.steps` optimisation steps, resuming from `checkpoint_dir`.

    `loss_fn(module, micro_batch)` returns the mean loss of one micro-batch; `module` is the DDP
    wrapper when distributed. Losses (mean over the global batch) go to `checkpoint_dir/losses.csv`.
    """
    parts = ctx.world * cfg.accumulation
    if cfg.batch_size % parts:
        raise ValueError(f"batch size {cfg.batch_size} is not divisible by world size x accumulation = {parts}")
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.seed + ctx.rank)
    model.to(ctx.device).train()
    module = (nn.parallel.DistributedDataParallel(model, device_ids=[ctx.device.index] if ctx.device.type == "cuda"
                                                  else None) if ctx.world > 1 else model)
    optimizer = _optimizer(model, cfg)
    scheduler = get_linear_schedule_with_warmup(optimizer, cfg.warmup_steps, cfg.steps)
    precision = amp_precision.resolve_and_log(cfg.precision, ctx.device, desc)
    scaler = amp_precision.grad_scaler(ctx.device, precision)
    start = _resume(model, optimizer, scheduler, scaler, checkpoint_dir, identity, ctx)
    loss_path = checkpoint_dir / LOSS_FILE
    if ctx.main:
        _truncate_log(loss_path, start)
    hardware = amp_precision.describe(precision)
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc=desc, disable=not ctx.main,
               mininterval=2)
    for step in bar:
        tick = time.perf_counter()
        total = torch.zeros((), device=ctx.device)
        for accum in range(cfg.accumulation):
            micro = batches.micro_batch(step, ctx.rank * cfg.accumulation + accum, parts)
            with amp_precision.autocast(ctx.device, precision):
                loss = loss_fn(module, micro) / cfg.accumulation
            if ctx.world > 1 and accum < cfg.accumulation - 1:
                with module.no_sync():
                    scaler.scale(loss).backward()
            else:
                scaler.scale(loss).backward()
            total += loss.detach()
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
            rng = _rng_states(ctx)  # collective: every rank hands in its generators
            if ctx.main:
                _save_checkpoint(checkpoint_dir, _state(model, optimizer, scheduler, scaler, step + 1, identity, rng),
                                 cfg.keep_checkpoints)
        if ctx.world > 1:
            dist.barrier()
    if cfg.steps > start:
        rng = _rng_states(ctx)
        if ctx.main:
            _save_checkpoint(checkpoint_dir, _state(model, optimizer, scheduler, scaler, cfg.steps, identity, rng),
                             cfg.keep_checkpoints)


def _rng_states(ctx: Context) -> list[dict]:
    """Every rank's random generators, by rank: each rank draws its own dropout masks, so a resumed
    multi-process run must give each rank back its own state to continue as if never stopped."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
             "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}
    if ctx.world == 1:
        return [state]
    states: list = [None] * ctx.world
    dist.all_gather_object(states, state)
    return states


def _state(model, optimizer, scheduler, scaler, step: int, identity: str, rng: list[dict]) -> dict:
    return {"step": step, "identity": identity, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "rng": rng}


def _resume(model, optimizer, scheduler, scaler, checkpoint_dir: Path, identity: str, ctx: Context) -> int:
    existing = _checkpoints(checkpoint_dir)
    if not existing:
        return 0
    state = torch.load(existing[-1], map_location=ctx.device, weights_only=False)
    if state.get("identity") != identity:
        raise ValueError(f"{existing[-1]} belongs to another training configuration (fingerprint "
                         f"{state.get('identity')} != {identity}); move {checkpoint_dir} away to start afresh")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if state.get("scaler"):  # empty when the checkpointed run did not scale its loss (not fp16)
        scaler.load_state_dict(state["scaler"])
    if "rng" not in state:
        raise ValueError(f"{existing[-1]} was written by an earlier version of this pipeline (no per-rank random "
                         f"state); move {checkpoint_dir} away to start afresh")
    if len(state["rng"]) != ctx.world:
        raise ValueError(f"{existing[-1]} was written by {len(state['rng'])} process(es), this run has {ctx.world}: "
                         f"resume with the same number of GPUs, or move {checkpoint_dir} away to start afresh")
    rng = state["rng"][ctx.rank]
    torch.set_rng_state(rng["torch"].cpu())
    if rng["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([generator.cpu() for generator in rng["cuda"]])
    np.random.set_state(rng["numpy"])
    random.setstate(rng["python"])
    if ctx.main:
        log.info("resumed from %s (step %d)", existing[-1], state["step"])
    return state["step"]


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
    for field in fields(LoopConfig):
        flag = "--" + field.name.replace("_", "-")
        if field.name == "precision":
            amp_precision.add_precision_argument(parser)
        else:
            kind = {"int": int, "float": float}[field.type]
            parser.add_argument(flag, type=kind, default=None if field.default is MISSING else field.default,
                                required=field.default is MISSING)
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
