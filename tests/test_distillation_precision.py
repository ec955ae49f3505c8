"""Eq. 6 under bf16 autocast: the scores and logits are float32, so the student's gradient is the fp32 one.

At TCT's score range (60-90) bf16 steps by 0.5: bf16 student scores, or bf16 teacher MaxSim scores
divided by tau = 0.25, would put the gradient percents off.
"""

import torch
import torch.nn.functional as F

from pipeline.train.targets import TeacherTokens, eq6_loss

BATCH, WIDTH, QUERY_TOKENS, DOC_TOKENS, DIM = 8, 64, 36, 24, 16
GAMMA, TAU = 0.1, 0.25


def bf16_valued(tensor: torch.Tensor) -> torch.Tensor:
    """float32 holding bf16 values: what bf16 encoders hand over, so both computations see the same inputs."""
    return tensor.bfloat16().float()


def batch() -> tuple[torch.Tensor, torch.Tensor, TeacherTokens]:
    """Student vectors whose dot products lie in 55-90 and teacher token vectors (unnormalised queries, as
    the released TCT teacher's) whose MaxSim scores lie in 55-90, spread over the passages."""
    generator = torch.Generator().manual_seed(0)
    direction = F.normalize(torch.randn(WIDTH, generator=generator), dim=0)
    queries = bf16_valued(8.6 * direction + 0.5 * torch.randn(BATCH, WIDTH, generator=generator))
    passages = bf16_valued(8.6 * direction + 0.5 * torch.randn(2 * BATCH, WIDTH, generator=generator))
    token = F.normalize(torch.randn(DIM, generator=generator), dim=0)
    query_tokens = 2.45 * F.normalize(token + 0.2 * torch.randn(BATCH, QUERY_TOKENS, DIM, generator=generator), dim=-1)
    spread = torch.linspace(0.05, 0.45, 2 * BATCH)[:, None, None]
    doc_tokens = F.normalize(token + spread * torch.randn(2 * BATCH, DOC_TOKENS, DIM, generator=generator), dim=-1)
    doc_mask = torch.rand(2 * BATCH, DOC_TOKENS, generator=generator) > 0.2
    teacher = TeacherTokens(bf16_valued(query_tokens), torch.ones(BATCH, QUERY_TOKENS, dtype=torch.bool),
                            bf16_valued(doc_tokens), doc_mask)
    return queries, passages, teacher


def reference_gradients(queries, passages, teacher: TeacherTokens) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 6 written out in float64, without autocast."""
    queries, passages = queries.double().requires_grad_(), passages.double().requires_grad_()
    student = queries @ passages.T
    sim = torch.einsum("bqh,nph->bnqp", teacher.queries.double(), teacher.docs.double())
    best = sim.masked_fill(~teacher.doc_mask[None, :, None, :], float("-inf")).amax(-1)
    scores = (best * teacher.query_mask[:, None, :]).sum(-1)
    hard = F.cross_entropy(student, torch.arange(BATCH))
    kl = F.kl_div(F.log_softmax(student, -1), F.log_softmax(scores / TAU, -1), log_target=True, reduction="batchmean")
    (GAMMA * hard + (1 - GAMMA) * kl).backward()
    return queries.grad, passages.grad


def test_eq6_gradient_under_bf16_autocast_equals_the_fp32_one():
    queries, passages, teacher = batch()
    for scores in (queries @ passages.T, teacher.scores()):  # TCT's range, where bf16 steps by 0.25 to 0.5
        assert scores.min() > 50 and scores.max() < 95
    query_leaf, passage_leaf = queries.clone().requires_grad_(), passages.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = eq6_loss(query_leaf, passage_leaf, teacher, "inbatch", GAMMA, TAU)
    assert loss.dtype == torch.float32
    loss.backward()
    for ours, reference in zip((query_leaf.grad, passage_leaf.grad), reference_gradients(queries, passages, teacher),
                               strict=True):
        assert ((ours.double() - reference).norm() / reference.norm()).item() < 1e-3
