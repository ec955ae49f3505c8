"""The training loop shared by teacher and student.

AdamW (no decay on biases and LayerNorm), a linear warm-up then a linear decay to 0 or a constant rate
(`schedule`: the students' released recipe, and ColBERT v1's teacher), gradient clipping,
gradient accumulation, mixed precision chosen from the hardware (`pipeline.precision`; fp16 with a
GradScaler), a progress bar, a CSV of losses, checkpoints every N steps
that a killed run resumes from, and DistributedDataParallel when started by torchrun.

Under accumulation a loss over the whole batch (one in-batch softmax) stays one loss through
gradient caching (GradCache, Gao et al. 2021): see `pipeline.train.gradcache`.

A checkpoint is resumed only when it was made from the same inputs: it records a `Fingerprint` of
the content of every input file and model directory and of the settings that determine training
(see `content_digest` for how files are hashed). A checkpoint of other inputs stops the stage with
a message naming what changed, or with `resume="discard"` is deleted and training starts afresh.
Checkpoints hold tensors and plain containers only, so they are read with
`torch.load(weights_only=True)`, which unpickles no arbitrary objects.

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
import pickle
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import MISSING, asdict, dataclass, fields, is_dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm
from transformers import get_scheduler

from pipeline import precision as amp_precision
from pipeline.io import atomic_directory, atomic_output, file_checksum
from pipeline.models.backbone import resolve_backbone
from pipeline.train.batches import TripleBatches
from pipeline.train.gradcache import Objective, backward_step, caches_gradients

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
    resume: str = "auto"  # or "discard": see RESUME_MODES
    schedule: str = "linear"  # or "constant": see SCHEDULES


RESUME_MODES = ("auto", "discard")
# After `warmup_steps` of linear warm-up: transformers' schedule of that name.
SCHEDULES = {"linear": "linear", "constant": "constant_with_warmup"}
# LoopConfig fields that do not change the trained weights: a resume may change them freely.
NOT_FINGERPRINTED = ("checkpoint_every", "keep_checkpoints", "resume")
# Where each stage's `resume` lives in the config, for the message of a refused resume.
RESUME_KEYS = {"teacher": "teacher.train.resume", "student": "student.train.resume",
               "doc2query": "doc2query.train.loop.resume"}


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


FULL_HASH_LIMIT = 256 << 20  # files up to this size are hashed whole
SAMPLE_BLOCK = 1 << 20
SAMPLE_BLOCKS = 64


def content_digest(path: Path) -> str:
    """The content identity of one file, for checkpoint fingerprints.

    Files up to FULL_HASH_LIMIT (256 MiB) are hashed whole with blake2b, so any edit, even one that
    keeps the size and the mtime, is caught. Measured on the reference machine (2 AVX2 cores, file
    in the page cache, one core): 985 MiB/s, 0.26 s for a 256 MiB file; a cold file is read at disk
    speed. blake2b rather than sha256: it keeps this speed on CPUs without SHA extensions, where
    sha256 runs at about a third of it. Larger files (MS MARCO's 3 GB collection, multi-GB
    prediction files, a BERT-large checkpoint) are identified by size + mtime_ns + blake2b of
    SAMPLE_BLOCKS (64) blocks of 1 MiB at evenly spaced offsets, the first and the last block
    included: 64 MiB read whatever the size (0.07 s for 1 GiB). Rewriting such a file changes its
    mtime, so a same-size edit between sampled blocks is still caught unless the mtime was set back
    on purpose; the price is that a copy without preserved times, or a `touch`, of a large file
    also counts as a change (the stage then stops, see `fit`). The digest never depends on the path.
    """
    stat = path.stat()
    digest = hashlib.blake2b(digest_size=16)
    if stat.st_size <= FULL_HASH_LIMIT:
        return f"blake2b:{stat.st_size}:{file_checksum(path, digest)}"
    with open(path, "rb") as handle:
        last = stat.st_size - SAMPLE_BLOCK
        for k in range(SAMPLE_BLOCKS):
            handle.seek(last * k // (SAMPLE_BLOCKS - 1))
            digest.update(handle.read(SAMPLE_BLOCK))
    return f"sampled:{stat.st_size}:{stat.st_mtime_ns}:{digest.hexdigest()}"


def source_digest(source: str | Path | Sequence | dict | None) -> str:
    """The content identity of one training input: a file or directory (every file in it, by
    relative name and `content_digest`), a model name (the packaged all-MiniLM-L6-v2 is resolved to
    its directory; a Hub id that is no local directory stands for itself, by name), a list of
    these, an in-memory mapping (hashed as JSON), or None (absent)."""
    if source is None:
        return "absent"
    if isinstance(source, dict):
        text = json.dumps(source, sort_keys=True, ensure_ascii=False)
        return "json:" + hashlib.blake2b(text.encode(), digest_size=16).hexdigest()
    if isinstance(source, list | tuple):
        parts = [source_digest(item) for item in source]
        return "list:" + hashlib.blake2b("\n".join(parts).encode(), digest_size=16).hexdigest()
    path = Path(resolve_backbone(str(source)))
    if path.is_file():
        return content_digest(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        if not files:
            return "empty directory"
        digest = hashlib.blake2b(digest_size=16)
        for file in files:
            digest.update(f"{file.relative_to(path).as_posix()}\t{content_digest(file)}\n".encode())
        return f"directory:{len(files)}:{digest.hexdigest()}"
    return f"name:{source}"


def _plain(value):
    """Settings as JSON values: dataclasses as dicts (without NOT_FINGERPRINTED loop fields), paths as strings."""
    if isinstance(value, LoopConfig):
        # `schedule: linear` was the only schedule before the setting existed: left out, so that checkpoints
        # written then still resume; `constant` is recorded.
        return {k: _plain(v) for k, v in asdict(value).items()
                if k not in NOT_FINGERPRINTED and (k, v) != ("schedule", "linear")}
    if is_dataclass(value) and not isinstance(value, type):
        return _plain(asdict(value))
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


@dataclass(frozen=True)
class Fingerprint:
    """What a training run is made from: `inputs` {name: {"path", "digest"}} and `settings`.

    `identity` covers the digests and the settings, never the paths: the same data at another path
    resumes. Checkpoints store all three, so a refused resume can say which input changed.
    """

    stage: str
    inputs: dict
    settings: dict

    @property
    def identity(self) -> str:
        payload = {"digests": {name: entry["digest"] for name, entry in self.inputs.items()},
                   "settings": self.settings}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]

    def record(self) -> dict:
        return {"stage": self.stage, "identity": self.identity, "inputs": self.inputs, "settings": self.settings}

    def changes(self, recorded: dict) -> list[str]:
        """What differs from a checkpoint's `record()`: changed inputs by name and path, then settings."""
        before = recorded.get("inputs", {})
        changed = []
        for name in sorted(set(before) | set(self.inputs)):
            old, new = before.get(name), self.inputs.get(name)
            if old is None or new is None or old["digest"] != new["digest"]:
                where = (new or old)["path"]
                changed.append(f"{name} {where} changed" if where else f"{name} changed")
        old_settings = recorded.get("settings", {})
        for key in sorted(set(old_settings) | set(self.settings)):
            old, new = old_settings.get(key), self.settings.get(key)
            if old == new:
                continue
            if isinstance(old, dict) and isinstance(new, dict):
                changed += [f"{key}.{sub} {old.get(sub)!r} -> {new.get(sub)!r}" for sub in sorted(set(old) | set(new))
                            if old.get(sub) != new.get(sub)]
            else:
                changed.append(f"{key} {old!r} -> {new!r}")
        return changed or ["the fingerprint differs"]


def fingerprint(stage: str, settings: dict, inputs: dict, ctx: Context | None = None) -> Fingerprint:
    """The `Fingerprint` of a run of `stage` (teacher, student or doc2query): `inputs` maps a name to
    what `source_digest` accepts; `settings` are the values that shape training (LoopConfig, model
    options, world size). Under torchrun rank 0 hashes and the other ranks receive its digests."""
    digests: list = [None]
    if ctx is None or ctx.main:
        digests = [{name: {"path": _where(source), "digest": source_digest(source)}
                    for name, source in inputs.items()}]
    if ctx is not None and ctx.world > 1:
        dist.broadcast_object_list(digests, src=0)
    return Fingerprint(stage, digests[0], _plain(settings))


def _where(source) -> str:
    if source is None or isinstance(source, dict):
        return ""
    if isinstance(source, list | tuple):
        return " ".join(map(str, source))
    return str(source)


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
    with atomic_output(directory / f"step-{state['step']:08d}.pt", "wb") as out:  # fsynced, then renamed
        torch.save(state, out)
    for old in _checkpoints(directory)[:-keep]:
        old.unlink()


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
    start = _resume(model, optimizer, scheduler, scaler, checkpoint_dir, made_from, cfg.resume, ctx)
    loss_path = checkpoint_dir / LOSS_FILE
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
            rng = _rng_states(ctx)  # collective: every rank hands in its generators
            if ctx.main:
                _save_checkpoint(checkpoint_dir, _state(model, optimizer, scheduler, scaler, step + 1, made_from, rng),
                                 cfg.keep_checkpoints)
        if ctx.world > 1:
            dist.barrier()
    if cfg.steps > start:
        rng = _rng_states(ctx)
        if ctx.main:
            _save_checkpoint(checkpoint_dir, _state(model, optimizer, scheduler, scaler, cfg.steps, made_from, rng),
                             cfg.keep_checkpoints)


def _rng_states(ctx: Context) -> list[dict]:
    """Every rank's random generators, by rank: each rank draws its own dropout masks, so a resumed
    multi-process run must give each rank back its own state to continue as if never stopped.
    Held as tensors and numbers (numpy's and Python's states converted), as weights_only loading needs."""
    _, keys, position, has_gauss, gauss = np.random.get_state(legacy=True)
    version, python_state, gauss_next = random.getstate()
    state = {"torch": torch.get_rng_state(),
             "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(position),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(gauss)},
             "python": {"version": version, "state": torch.tensor(python_state, dtype=torch.int64),
                        "gauss_next": gauss_next},
             "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}
    if ctx.world == 1:
        return [state]
    states: list = [None] * ctx.world
    dist.all_gather_object(states, state)
    return states


def _set_rng_states(rng: dict) -> None:
    torch.set_rng_state(rng["torch"].cpu())
    if rng["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([generator.cpu() for generator in rng["cuda"]])
    numpy_state = rng["numpy"]
    np.random.set_state(("MT19937", numpy_state["keys"].cpu().numpy().astype(np.uint32), numpy_state["pos"],
                         numpy_state["has_gauss"], numpy_state["cached_gaussian"]))
    python_state = rng["python"]
    random.setstate((python_state["version"], tuple(python_state["state"].tolist()), python_state["gauss_next"]))


def _state(model, optimizer, scheduler, scaler, step: int, made_from: Fingerprint, rng: list[dict]) -> dict:
    return {"step": step, "identity": made_from.identity, "made_from": made_from.record(),
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(), "rng": rng}


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict | None:
    """A checkpoint's state, read with weights_only=True; None for one this loader cannot read (written
    by an earlier version of the pipeline, whose random states were pickled numpy and Python objects)."""
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError:
        return None


def _resume(model, optimizer, scheduler, scaler, checkpoint_dir: Path, made_from: Fingerprint, resume: str,
            ctx: Context) -> int:
    existing = _checkpoints(checkpoint_dir)
    if not existing:
        return 0
    state = load_checkpoint(existing[-1], ctx.device)
    if state is None or "made_from" not in state:
        changes = ["written by an earlier version of this pipeline, without a content fingerprint"]
    elif state["identity"] != made_from.identity:
        changes = made_from.changes(state["made_from"])
    else:
        changes = []
    if changes:
        key = RESUME_KEYS.get(made_from.stage, f"{made_from.stage}.train.resume")
        reason = "; ".join(changes)
        if resume != "discard":
            raise ValueError(f"checkpoints under {checkpoint_dir} were made from other inputs ({reason}); delete them "
                             f"or set {key}: discard (--resume discard) to train afresh")
        if ctx.world > 1:
            dist.barrier()  # every rank has read the checkpoint before rank 0 deletes it
        if ctx.main:
            log.warning("discarding %d checkpoint(s) under %s: made from other inputs (%s); training from step 0",
                        len(existing), checkpoint_dir, reason)
            for path in existing + list(checkpoint_dir.glob(".step-*.pt.*.tmp")):  # atomic_output's, if killed
                path.unlink(missing_ok=True)
        if ctx.world > 1:
            dist.barrier()
        return 0
    if len(state["rng"]) != ctx.world:
        raise ValueError(f"{existing[-1]} was written by {len(state['rng'])} process(es), this run has {ctx.world}: "
                         f"resume with the same number of GPUs, or move {checkpoint_dir} away to start afresh")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if state.get("scaler"):  # empty when the checkpointed run did not scale its loss (not fp16)
        scaler.load_state_dict(state["scaler"])
    _set_rng_states(state["rng"][ctx.rank])
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
        elif field.name == "schedule":
            parser.add_argument("--schedule", choices=tuple(SCHEDULES), default=field.default,
                                help="after the warm-up: linear decay to 0 at the last step, or a constant rate")
        elif field.name == "resume":
            parser.add_argument("--resume", choices=RESUME_MODES, default="auto",
                                help="checkpoints made from other inputs or settings: auto = stop with an error "
                                     "naming what changed, discard = delete them and train afresh (checkpoints of "
                                     "the same inputs are resumed either way)")
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
