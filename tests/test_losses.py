import numpy as np
import pytest
import torch

from pipeline.train.losses import (
    embedding_matching,
    inbatch_cross_entropy,
    margin_mse,
    student_loss,
    teacher_pairwise_loss,
)


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


def test_margin_mse_hand_computed_and_sign():
    # Student margins 2 - 1 = 1 and 0 - 3 = -3; teacher margins 5 - 1 = 4 and 1 - 0 = 1.
    student = torch.tensor([[2.0, 1.0], [0.0, 3.0]])
    teacher = torch.tensor([[5.0, 1.0], [1.0, 0.0]])
    assert margin_mse(student, teacher).item() == pytest.approx(((1 - 4) ** 2 + (-3 - 1) ** 2) / 2)
    # Swapping positive and negative flips both margins: the loss compares margins, not their sizes.
    assert margin_mse(student.flip(1), teacher.flip(1)).item() == pytest.approx(12.5)
    assert margin_mse(student, teacher + 100.0).item() == pytest.approx(12.5)  # shift invariant
    student.requires_grad_(True)
    margin_mse(student, teacher).backward()
    # d/ds+ of (m_s - m_t)^2 / B = 2 (m_s - m_t) / B: negative when the student's margin is too small.
    assert student.grad[0, 0].item() == pytest.approx(2 * (1 - 4) / 2)


@pytest.mark.parametrize("gamma", [0.0, 0.1, 1.0])
def test_margin_condition_matches_numpy_with_a_full_or_pair_teacher(scores, gamma):
    student, teacher = scores
    batch = student.shape[0]
    rows = np.arange(batch)
    s_margin = student[rows, rows] - student[rows, batch + rows]
    t_margin = teacher[rows, rows] - teacher[rows, batch + rows]
    ce = -np.mean(log_softmax(student)[rows, rows])
    expected = gamma * ce + (1 - gamma) * np.mean((s_margin - t_margin) ** 2)
    full = student_loss(torch.tensor(student), torch.tensor(teacher), "margin_mse", gamma=gamma)
    pairs = torch.tensor(np.stack([teacher[rows, rows], teacher[rows, batch + rows]], axis=1))
    from_file = student_loss(torch.tensor(student), pairs, "margin_mse", gamma=gamma)
    assert full.item() == pytest.approx(expected, rel=1e-6)
    assert from_file.item() == pytest.approx(expected, rel=1e-6)


def test_embedding_matching_is_mean_squared_distance():
    student = torch.tensor([[1.0, 2.0], [0.0, 0.0], [3.0, -1.0]])
    teacher = torch.tensor([[1.0, 0.0], [1.0, 1.0], [3.0, -1.0]])
    # Squared distances 4, 2 and 0, averaged over the three rows (not over the 6 numbers).
    assert embedding_matching(student, teacher).item() == pytest.approx(2.0)
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(5, 7)), rng.normal(size=(5, 7))
    assert embedding_matching(torch.tensor(a), torch.tensor(b)).item() == pytest.approx(
        np.mean(np.sum((a - b) ** 2, axis=1)), rel=1e-9)


def test_generated_rows_are_left_out_of_the_hard_label_term(scores):
    student, teacher = scores
    mask = np.array([True, False, True, False])
    rows = np.flatnonzero(mask)
    ce = -np.mean(log_softmax(student)[rows, rows])
    assert inbatch_cross_entropy(torch.tensor(student), labelled=torch.tensor(mask)).item() == pytest.approx(ce)
    none_labelled = torch.zeros(4, dtype=torch.bool)
    assert inbatch_cross_entropy(torch.tensor(student), labelled=none_labelled).item() == 0.0
    # The KL term still covers every row, generated or not.
    mixed = student_loss(torch.tensor(student), torch.tensor(teacher), "inbatch", gamma=0.1, teacher_tau=0.25,
                         labelled=torch.tensor(mask))
    kl_only = reference_eq6(student, teacher, 0.0, 0.25)
    assert mixed.item() == pytest.approx(0.1 * ce + 0.9 * kl_only, rel=1e-6)
    with pytest.raises(ValueError, match="generated queries carry no label"):
        student_loss(torch.tensor(student), None, "none", labelled=torch.tensor(mask))


def test_a_bf16_student_leaves_the_teacher_in_float32():
    """Scores at TCT's range (60-90), where bf16 steps by 0.5: the losses widen the student, never round the teacher."""
    rng = np.random.default_rng(2)
    student = torch.tensor(rng.uniform(60, 90, size=(4, 8)), dtype=torch.bfloat16)
    teacher = torch.tensor(rng.uniform(60, 90, size=(4, 8)), dtype=torch.float32)
    for condition in ("inbatch", "triplet", "margin_mse"):
        loss = student_loss(student, teacher, condition)
        assert loss.dtype == torch.float32
        assert loss.item() == student_loss(student.float(), teacher, condition).item()
    assert embedding_matching(student, teacher).item() == embedding_matching(student.float(), teacher).item()
