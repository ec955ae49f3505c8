"""Gradient caching: one loss over the whole batch however many micro-batches it is split into.

The paper's loss is one in-batch softmax over the whole batch: each of the 96 queries scores all 192
passages (every positive and every BM25 negative). A batch that does not fit in memory at once is split
into micro-batches; plain gradient accumulation would then take one softmax per micro-batch, a different
loss with fewer negatives. Gradient caching (GradCache: Gao et al. 2021, "Scaling Deep Contrastive
Learning Batch Size under Memory Limited Setup", as in tevatron's GradCache) keeps the full-batch loss
with one micro-batch's graph in memory: every micro-batch is encoded without gradients, the loss over
the whole batch is backpropagated to those encodings only, then each micro-batch is encoded again with
its graph, its random state replayed (the same dropout masks), and its cached gradients are
backpropagated into the model.

A stage states its loss as a `BatchObjective`; `backward_step` runs one optimisation step's backward
pass, through the cache where the objective needs it (`caches_gradients`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from pipeline import precision as amp_precision
from pipeline.train.batches import Batch

Encodings = tuple[torch.Tensor, ...]


@dataclass(frozen=True)
class BatchObjective:
    """A loss over a whole batch from what each micro-batch encodes, so that gradient accumulation
    splits the memory of the step but not the loss (one softmax over every in-batch passage).

    `prepare(micro)` computes, once and without gradients, what the trained model only reads (tokens,
    a frozen teacher's outputs); `encode(module, prepared)` runs the trained model on one micro-batch
    (one call, as DDP expects) and returns its encodings; `loss(encodings, prepared)` is the loss over
    the micro-batches given (lists, one entry per micro-batch, in batch order), in float32 outside
    autocast. `per_query`: the loss is a mean of per-query terms, so plain accumulation is already
    exact and `backward_step` skips the cache's second forward.
    """

    prepare: Callable[[Batch], Any]
    encode: Callable[[nn.Module, Any], Encodings]
    loss: Callable[[list[Encodings], list[Any]], torch.Tensor]
    per_query: bool = False


# A plain loss function `loss_fn(module, micro_batch)` (run whole under autocast) or a BatchObjective.
Objective = Callable[[nn.Module, Batch], torch.Tensor] | BatchObjective


def backward_step(module: nn.Module, objective: Objective, micros: list[Batch], scaler: torch.amp.GradScaler,
                  precision: str, device: torch.device) -> torch.Tensor:
    """Backpropagate one optimisation step over this rank's `micros` into the gradients (scaled by
    `scaler`) and return its loss: a `BatchObjective` over several micro-batches through the gradient
    cache, anything else micro-batch by micro-batch (the mean of their losses, exact for per-example losses)."""
    if caches_gradients(objective, len(micros)):
        return _cached_backward(module, objective, micros, scaler, precision, device)
    total = torch.zeros((), device=device)
    for index, micro in enumerate(micros):
        with _sync_on_last(module, index, len(micros)):
            loss = _single_pass(module, objective, micro, precision, device) / len(micros)
            scaler.scale(loss).backward()
        total += loss.detach()
    return total


def caches_gradients(objective: Objective, micro_batches: int) -> bool:
    """Whether a step of `micro_batches` goes through the gradient cache: a whole-batch loss split in several."""
    return isinstance(objective, BatchObjective) and micro_batches > 1 and not objective.per_query


def _single_pass(module: nn.Module, objective: Objective, micro: Batch, precision: str,
                 device: torch.device) -> torch.Tensor:
    """One micro-batch's loss with its graph: an objective encodes under autocast and takes its loss in float32."""
    if isinstance(objective, BatchObjective):
        prepared = _prepare(objective, micro, precision, device)
        with amp_precision.autocast(device, precision):
            encodings = objective.encode(module, prepared)
        return objective.loss([encodings], [prepared])
    with amp_precision.autocast(device, precision):
        return objective(module, micro)


def _cached_backward(module: nn.Module, objective: BatchObjective, micros: list[Batch],
                     scaler: torch.amp.GradScaler, precision: str, device: torch.device) -> torch.Tensor:
    """GradCache (Gao et al. 2021): the gradient of the whole batch's loss with one micro-batch's graph in memory.

    Every micro-batch is encoded without a graph, from a remembered random state; the loss over all of
    them is backpropagated to those encodings only (leaves: the model is not in this graph); then each
    micro-batch is encoded again with its graph, from the same random state (the same dropout masks,
    so the same encodings), and its encodings' cached gradients are backpropagated into the model.
    """
    prepared = [_prepare(objective, micro, precision, device) for micro in micros]
    states, cached = [], []
    with torch.no_grad():
        for inputs in prepared:
            states.append(_RandomState.capture(device))
            with amp_precision.autocast(device, precision):
                encodings = objective.encode(module, inputs)
            cached.append(tuple(t.detach().requires_grad_(t.is_floating_point()) for t in encodings))
    loss = objective.loss(cached, prepared)
    scaler.scale(loss).backward()  # scaled here, so the model's gradients below are scaled as GradScaler expects
    for index, (inputs, state, leaves) in enumerate(zip(prepared, states, cached, strict=True)):
        with _sync_on_last(module, index, len(micros)), state.replay():
            with amp_precision.autocast(device, precision):
                encodings = objective.encode(module, inputs)
            used = [(t, leaf.grad) for t, leaf in zip(encodings, leaves, strict=True) if leaf.grad is not None]
            torch.autograd.backward([t for t, _ in used], [grad for _, grad in used])
    return loss.detach()


def _prepare(objective: BatchObjective, micro: Batch, precision: str, device: torch.device) -> Any:
    with torch.no_grad(), amp_precision.autocast(device, precision):
        return objective.prepare(micro)


def _sync_on_last(module: nn.Module, index: int, count: int) -> contextlib.AbstractContextManager:
    """DDP all-reduces the accumulated gradients once, in the last micro-batch's backward pass (its
    forward must run inside `no_sync` too for the others: DDP prepares the reduction in the forward)."""
    if isinstance(module, nn.parallel.DistributedDataParallel) and index < count - 1:
        return module.no_sync()
    return contextlib.nullcontext()


@dataclass(frozen=True)
class _RandomState:
    """The generators one micro-batch's encoding starts from, to replay its dropout masks (CPU, and its GPU)."""

    cpu: torch.Tensor
    device: torch.device
    cuda: torch.Tensor | None

    @classmethod
    def capture(cls, device: torch.device) -> _RandomState:
        return cls(torch.get_rng_state(), device, torch.cuda.get_rng_state(device) if device.type == "cuda" else None)

    @contextlib.contextmanager
    def replay(self) -> Iterator[None]:
        """Run from the captured state, then give the generators back as they were found."""
        devices = [self.device] if self.cuda is not None else []
        with torch.random.fork_rng(devices=devices, device_type="cuda"):
            torch.set_rng_state(self.cpu)
            if self.cuda is not None:
                torch.cuda.set_rng_state(self.cuda, self.device)
            yield
