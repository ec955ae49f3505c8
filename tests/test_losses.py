import numpy as np
import pytest
import torch

from pipeline.train.losses import inbatch_cross_entropy, student_loss, teacher_pairwise_loss


def log_softmax(x):
    x = x - x.max(axis=1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=1, keepdims=True))


def reference_eq6(student, teacher, gamma, tau, own_pair_only=False):
    """Eq. 6 straight from its definition, in numpy, for a (B, 2B) batch."""
    batch = student.shape[0]
    ce = -np.mean([log_softmax(student)[i, i] for i in range(batch)])
    if own_pair_only:
        cols = [[i, batch + i] for i in range(batch)]
        student = np.stack([student[i, c] for i, c in enumerate(cols)])
        teacher = np.stack([teacher[i, c] for i, c in enumerate(cols)])
    p_teacher = np.exp(log_softmax(teacher / tau))
    kl = np.mean(np.sum(p_teacher * (np.log(p_teacher) - log_softmax(student)), axis=1))
    return gamma * ce + (1 - gamma) * kl


@pytest.fixture
def scores():
    rng = np.random.default_rng(0)
    return rng.normal(size=(4, 8)) * 3, rng.normal(size=(4, 8)) * 10


@pytest.mark.parametrize("gamma", [0.0, 0.1, 1.0])
@pytest.mark.parametrize("condition", ["inbatch", "triplet"])
def test_eq6_matches_numpy(scores, gamma, condition):
    student, teacher = scores
    ours = student_loss(torch.tensor(student), torch.tensor(teacher), condition, gamma=gamma, teacher_tau=0.25)
    expected = reference_eq6(student, teacher, gamma, 0.25, own_pair_only=condition == "triplet")
    assert ours.item() == pytest.approx(expected, rel=1e-6)


def test_none_is_hard_labels_only(scores):
    student, teacher = scores
    none = student_loss(torch.tensor(student), None, "none")
    assert none.item() == pytest.approx(reference_eq6(student, teacher, 1.0, 0.25), rel=1e-6)
    assert none.item() == pytest.approx(inbatch_cross_entropy(torch.tensor(student)).item())
    with pytest.raises(ValueError, match="needs teacher scores"):
        student_loss(torch.tensor(student), None, "inbatch")
    with pytest.raises(ValueError, match="unknown distillation condition"):
        student_loss(torch.tensor(student), None, "margin")


def test_hand_computed_values():
    # One query, positive scored 2, negative 0: CE = log(1 + e^-2).
    scores = torch.tensor([[2.0, 0.0]])
    assert teacher_pairwise_loss(scores).item() == pytest.approx(np.log1p(np.exp(-2.0)))
    # Identical teacher and student distributions give zero KL: with gamma = 0 the loss vanishes.
    same = torch.tensor([[1.0, 0.0]])
    assert student_loss(same, same, "inbatch", gamma=0.0, teacher_tau=1.0).item() == pytest.approx(0.0, abs=1e-7)


def test_offset_selects_this_ranks_columns():
    rng = np.random.default_rng(1)
    full_student, full_teacher = rng.normal(size=(4, 8)), rng.normal(size=(4, 8))
    # Rank 1 of 2 holds queries 2 and 3 of the global batch of 4.
    local = student_loss(torch.tensor(full_student[2:]), torch.tensor(full_teacher[2:]), "triplet", offset=2)
    rows = [2, 3]
    expected = reference_eq6(full_student, full_teacher, 0.1, 0.25, own_pair_only=True)
    ce = -np.mean([log_softmax(full_student)[i, i] for i in rows])
    p = np.exp(log_softmax(np.stack([full_teacher[i, [i, 4 + i]] for i in rows]) / 0.25))
    s = log_softmax(np.stack([full_student[i, [i, 4 + i]] for i in rows]))
    assert local.item() == pytest.approx(0.1 * ce + 0.9 * np.mean(np.sum(p * (np.log(p) - s), axis=1)), rel=1e-6)
    assert expected != local.item()
