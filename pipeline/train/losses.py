"""Losses of the teacher (ColBERT v1) and of the student (TCT-ColBERT, Eq. 6).

Score matrices are (B, 2G): row i holds query i against every passage of the batch, ordered
[positive_1 .. positive_G, negative_1 .. negative_G]. Usually G = B, so query i's positive is
column i and its own BM25 negative column B + i; when passages are gathered from all ranks of a
distributed run, G is the global batch and this rank's queries start at column `offset`.

Scores and losses are float32 even when the encoders run under bf16/fp16 autocast: at TCT's score
range (60-90) bf16 steps by 0.5, and the teacher's scores are divided by tau = 0.25 (logits off by
up to 2), so every loss here computes in float32 at least and never casts the teacher down to the
student's dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

CONDITIONS = ("none", "triplet", "inbatch", "margin_mse")


def dot_scores(queries: torch.Tensor, passages: torch.Tensor) -> torch.Tensor:
    """(B, N) float32 dot products of (B, h) query and (N, h) passage vectors, autocast off (see above)."""
    with torch.autocast(queries.device.type, enabled=False):
        return queries.float() @ passages.float().T


def _wide(scores: torch.Tensor) -> torch.Tensor:
    """`scores` in float32, or wider when they already are (float64 stays float64)."""
    return scores.to(torch.promote_types(scores.dtype, torch.float32))


def teacher_pairwise_loss(scores: torch.Tensor) -> torch.Tensor:
    """ColBERT v1: softmax cross-entropy over (positive, own negative), positive as the label."""
    pairs = _own_pair(scores, 0)
    return F.cross_entropy(pairs, torch.zeros(scores.shape[0], dtype=torch.long, device=scores.device))


def inbatch_cross_entropy(scores: torch.Tensor, offset: int = 0, labelled: torch.Tensor | None = None) -> torch.Tensor:
    """Hard labels over all in-batch passages: query i's positive is column offset + i.

    `labelled` (B,) bool keeps only rows whose positive is judged (generated queries have none);
    the mean is over those rows, and 0 when there are none.
    """
    targets = torch.arange(scores.shape[0], device=scores.device) + offset
    if labelled is None:
        return F.cross_entropy(scores, targets)
    if not labelled.any():
        return scores.sum() * 0.0
    return F.cross_entropy(scores[labelled], targets[labelled])


def _own_pair(scores: torch.Tensor, offset: int) -> torch.Tensor:
    """(B, 2): each query's score for its own positive and its own negative."""
    rows = torch.arange(scores.shape[0], device=scores.device)
    return torch.stack([scores[rows, rows + offset], scores[rows, rows + offset + scores.shape[1] // 2]], dim=1)


def margin_mse(student_pairs: torch.Tensor, teacher_pairs: torch.Tensor) -> torch.Tensor:
    """Margin-MSE (Hofstätter et al. 2020, Eq. 1): mean over queries of ((s+ - s-) - (t+ - t-))^2.

    Pairs are (B, 2): each query's score for its positive and its negative. Only the teacher's
    margin is matched, so teacher and student may score on different scales (cross-architecture).
    """
    student_margin = student_pairs[:, 0] - student_pairs[:, 1]
    teacher_margin = teacher_pairs[:, 0] - teacher_pairs[:, 1]
    return F.mse_loss(_wide(student_margin), _wide(teacher_margin.detach()))


def embedding_matching(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """EmbedDistill's embedding matching (Kim et al. 2023): mean over rows of ||student_i - teacher_i||^2.

    Both (N, d): the student's pooled embeddings and the teacher's embeddings of the same texts,
    already mapped into one space (the caller applies any learned projection).
    """
    return (_wide(student) - _wide(teacher.detach())).pow(2).sum(dim=-1).mean()


def _kl(teacher: torch.Tensor, student: torch.Tensor, teacher_tau: float, student_tau: float) -> torch.Tensor:
    """KL(P_teacher || P_student) per row, averaged over rows."""
    target = F.log_softmax(teacher / teacher_tau, dim=-1)
    return F.kl_div(F.log_softmax(student / student_tau, dim=-1), target, log_target=True, reduction="batchmean")


def student_loss(student: torch.Tensor, teacher: torch.Tensor | None, condition: str = "inbatch",
                 gamma: float = 0.1, teacher_tau: float = 0.25, student_tau: float = 1.0,
                 offset: int = 0, labelled: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 6: gamma * CE(hard labels over 2B) + (1 - gamma) * KL(P_teacher || P_student).

    `condition` picks the distillation of Table 3: `none` (hard labels only, the PoolAvg baseline;
    `teacher` may be None), `triplet` (KL over each query's own positive and negative) or `inbatch`
    (KL over all 2B passages). The teacher's softmax is taken at temperature `teacher_tau`; the
    paper leaves the student's untempered (`student_tau` = 1). gamma = 0 is the released code's pure KL.
    `margin_mse` puts Margin-MSE in place of the KL term. For `triplet` and `margin_mse` the teacher
    may give only each query's (positive, negative) pair, shape (B, 2), as a score file does.
    `labelled` masks rows out of the hard-label term: generated queries learn from the teacher only.
    Both score matrices are taken in float32 at least.
    """
    if condition not in CONDITIONS:
        raise ValueError(f"unknown distillation condition {condition!r}; choose from {CONDITIONS}")
    student = _wide(student)
    hard = inbatch_cross_entropy(student, offset, labelled)
    if condition == "none":
        if labelled is not None and not labelled.all():
            raise ValueError("generated queries carry no label: they need a distilling condition")
        return hard
    if teacher is None:
        raise ValueError(f"condition {condition!r} needs teacher scores")
    teacher = _wide(teacher.detach())
    if condition in ("triplet", "margin_mse"):
        student = _own_pair(student, offset)
        teacher = teacher if teacher.shape[1] == 2 else _own_pair(teacher, offset)
    if condition == "margin_mse":
        return gamma * hard + (1 - gamma) * margin_mse(student, teacher)
    return gamma * hard + (1 - gamma) * _kl(teacher, student, teacher_tau, student_tau)
