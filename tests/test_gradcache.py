"""Gradient caching: accumulated micro-batches train on one loss over the whole batch (one in-batch softmax).

The student's real objective (online teacher, condition inbatch) on a tiny random BERT with short
sequences, fp32: each test takes a few seconds.
"""

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from pipeline.models.backbone import Conventions
from pipeline.models.colbert import ColBERT
from pipeline.train import student as student_module
from pipeline.train import teacher as teacher_module
from pipeline.train.gradcache import backward_step
from pipeline.train.loop import LoopConfig
from tests.conftest import make_tiny_bert, make_triples_dataset

CPU = torch.device("cpu")
BATCH, PARTS = 96, 4
CFG = LoopConfig(steps=1, batch_size=BATCH, lr=1e-3)
SHORT = Conventions(query_length=12, doc_length=20)
NO_SCALING = torch.amp.GradScaler("cpu", enabled=False)


def handed_to_fit(stage, monkeypatch) -> dict:
    """What the stage hands to `fit` (which is not run): its model (in training mode), objective and batches."""
    handed = {}
    monkeypatch.setattr(stage, "fit", lambda model, objective, batches, *rest, **options: handed.update(
        model=model.train(), objective=objective, batches=batches))
    monkeypatch.setattr(stage, "finish", lambda *args: None)
    return handed


def student_objective(root: Path, monkeypatch, dropout: float, embed_weight: float = 0.0):
    bert = make_tiny_bert(root / "bert", dropout=dropout)
    ColBERT.from_backbone(str(bert), SHORT, dim=8).save(root / "teacher")
    data = make_triples_dataset(root / "data", n_queries=BATCH)
    handed = handed_to_fit(student_module, monkeypatch)
    student_module.train_student(root / "teacher", data["triples"], data["queries"], data["collection"],
                                 root / "student", root / "ck", root / "losses.csv", CFG, embed_weight=embed_weight)
    return handed["model"], handed["objective"], handed["batches"]


def gradients(model: torch.nn.Module, objective, micros: list,
              scaler: torch.amp.GradScaler = NO_SCALING) -> tuple[float, torch.Tensor]:
    """One step's loss and the gradient of every parameter as one vector."""
    model.zero_grad(set_to_none=True)
    loss = backward_step(model, objective, micros, scaler, "fp32", CPU)
    return loss.item(), torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


@pytest.mark.parametrize("embed_weight", [0.0, 0.5])
def test_accumulated_micro_batches_give_the_whole_batch_loss_and_gradient(tmp_path, monkeypatch, embed_weight):
    """4 x 24 accumulated = one batch of 96: the same loss over all 192 passages, the same gradient (fp32
    rounding apart: in float64 the two agree to 1e-14). Per-micro-batch losses would give another loss.
    Loss scaling (fp16) reaches the model through the cached gradients."""
    model, objective, batches = student_objective(tmp_path, monkeypatch, dropout=0.0, embed_weight=embed_weight)
    split = assert_split_step_is_the_whole_one(model, objective, batches)
    micros = [batches.micro_batch(0, part, PARTS) for part in range(PARTS)]
    _, scaled = gradients(model, objective, micros, torch.amp.GradScaler("cpu", init_scale=1024.0))
    assert torch.allclose(scaled, 1024.0 * split, rtol=1e-6, atol=0.0)


def assert_split_step_is_the_whole_one(model: torch.nn.Module, objective, batches) -> torch.Tensor:
    """Same loss and gradient from PARTS accumulated micro-batches as from the whole batch; the former gradient."""
    whole_loss, whole = gradients(model, objective, [batches.micro_batch(0, 0, 1)])
    split_loss, split = gradients(model, objective, [batches.micro_batch(0, part, PARTS) for part in range(PARTS)])
    assert split_loss == pytest.approx(whole_loss, abs=1e-5)
    assert ((split - whole).norm() / whole.norm()).item() < 1e-5
    return split


@pytest.mark.parametrize("inbatch", [False, True])
def test_the_teachers_loss_over_accumulated_micro_batches_is_the_whole_batch_one(tmp_path, monkeypatch, inbatch):
    """ColBERT's pairwise loss is a mean over queries (plain accumulation, no second forward); with in-batch
    negatives the micro-batches' token vectors, padded to one length, are joined under gradient caching."""
    data = make_triples_dataset(tmp_path / "data", n_queries=BATCH)
    handed = handed_to_fit(teacher_module, monkeypatch)
    teacher_module.train_teacher(str(make_tiny_bert(tmp_path / "bert")), data["triples"], data["queries"],
                                 data["collection"], tmp_path / "teacher", tmp_path / "ck", tmp_path / "losses.csv",
                                 CFG, SHORT, dim=8, inbatch=inbatch)
    assert handed["objective"].per_query is not inbatch
    assert_split_step_is_the_whole_one(handed["model"], handed["objective"], handed["batches"])


def test_the_second_pass_replays_the_dropout_masks_of_the_cached_encodings(tmp_path, monkeypatch):
    """With dropout on, re-encoding each micro-batch reproduces its cached encodings exactly, so the step's
    gradient is the one of a single graph over the same micro-batches with the same masks."""
    model, objective, batches = student_objective(tmp_path, monkeypatch, dropout=0.1)
    micros = [batches.micro_batch(0, part, PARTS) for part in range(PARTS)]
    prepared = [objective.prepare(micro) for micro in micros]
    with torch.no_grad():
        assert not torch.equal(objective.encode(model, prepared[0])[0], objective.encode(model, prepared[0])[0])
    start = torch.get_rng_state()

    model.zero_grad(set_to_none=True)
    encodings = [objective.encode(model, inputs) for inputs in prepared]  # one graph, masks drawn in this order
    reference_loss = objective.loss(encodings, prepared)
    reference_loss.backward()
    reference = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])

    seen = []

    def recording(module, inputs):
        encoded = objective.encode(module, inputs)
        seen.append([tensor.detach().clone() for tensor in encoded])
        return encoded

    torch.set_rng_state(start)
    loss, cached = gradients(model, replace(objective, encode=recording), micros)
    assert len(seen) == 2 * PARTS  # each micro-batch encoded twice: without a graph, then with one
    for first, again in zip(seen[:PARTS], seen[PARTS:], strict=True):
        assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert loss == pytest.approx(reference_loss.item(), abs=1e-6)
    assert ((cached - reference).norm() / reference.norm()).item() < 1e-5
