"""What a training run is made from, and the checkpoints a killed run resumes from.

A checkpoint is resumed only when it was made from the same inputs: it records a `Fingerprint` of
the content of every input file and model directory and of the settings that determine training
(see `content_digest` for how files are hashed). A checkpoint of other inputs stops the stage with
a message naming what changed, or with `resume="discard"` is deleted and training starts afresh.
Checkpoints hold tensors and plain containers only, so they are read with
`torch.load(weights_only=True)`, which unpickles no arbitrary objects; every rank's random generators
are saved with them, so a resumed run continues as if never stopped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
import random
from collections.abc import Sequence
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from pipeline.durable import atomic_output
from pipeline.models.backbone import resolve_backbone
from pipeline.shards import file_checksum
from pipeline.train.context import Context

log = logging.getLogger(__name__)

# Where each stage's `resume` lives in the config, for the message of a refused resume.
RESUME_KEYS = {"teacher": "teacher.train.resume", "student": "student.train.resume",
               "doc2query": "doc2query.train.loop.resume"}

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
    """Settings as JSON values: dataclasses as dicts (without the fields whose metadata says `fingerprint: False`,
    nor a field at the value its metadata names `unrecorded`), paths as strings."""
    if is_dataclass(value) and not isinstance(value, type):
        return {field.name: _plain(getattr(value, field.name)) for field in fields(value)
                if field.metadata.get("fingerprint", True)
                and ("unrecorded" not in field.metadata or getattr(value, field.name) != field.metadata["unrecorded"])}
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


def checkpoint_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("step-*.pt"), key=lambda p: int(p.stem.split("-")[1]))


def save_checkpoint(directory: Path, state: dict, keep: int) -> None:
    with atomic_output(directory / f"step-{state['step']:08d}.pt", "wb") as out:  # fsynced, then renamed
        torch.save(state, out)
    for old in checkpoint_files(directory)[:-keep]:
        old.unlink()


def rng_states(ctx: Context) -> list[dict]:
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


def set_rng_states(rng: dict) -> None:
    torch.set_rng_state(rng["torch"].cpu())
    if rng["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([generator.cpu() for generator in rng["cuda"]])
    numpy_state = rng["numpy"]
    np.random.set_state(("MT19937", numpy_state["keys"].cpu().numpy().astype(np.uint32), numpy_state["pos"],
                         numpy_state["has_gauss"], numpy_state["cached_gaussian"]))
    python_state = rng["python"]
    random.setstate((python_state["version"], tuple(python_state["state"].tolist()), python_state["gauss_next"]))


def checkpoint_state(model, optimizer, scheduler, scaler, step: int, made_from: Fingerprint, rng: list[dict]) -> dict:
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


def resume_from_checkpoint(model, optimizer, scheduler, scaler, checkpoint_dir: Path, made_from: Fingerprint,
                           resume: str, ctx: Context) -> int:
    """The step to start from: that of the last checkpoint under `checkpoint_dir`, whose states are loaded into the
    model, optimizer, scheduler, scaler and random generators, if it was made from `made_from`; else 0, the
    checkpoints deleted (`resume` "discard") or the stage stopped naming what changed ("auto")."""
    existing = checkpoint_files(checkpoint_dir)
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
    set_rng_states(state["rng"][ctx.rank])
    if ctx.main:
        log.info("resumed from %s (step %d)", existing[-1], state["step"])
    return state["step"]
