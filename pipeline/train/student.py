"""train_student: tightly-coupled distillation of the ColBERT teacher into the PoolAvg bi-encoder.

    python -m pipeline.train.student --teacher resources/D/models/teacher --condition inbatch --gamma 0.1 \
        --triples ... --queries ... --collection ... --out resources/D/models/tct_inbatch \
        --checkpoints resources/D/checkpoints/tct_inbatch --losses results/D/training/tct_inbatch.losses.csv \
        --steps 160000 --batch-size 96 --lr 7e-6 --warmup-steps 10000

Tight coupling: the frozen teacher scores the very batch the student sees, in the same step and
from the same tokens (no precomputed scores). The student starts from the teacher's BERT weights
unless `--init backbone`.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
from torch import nn

from pipeline.cli import run_stage
from pipeline.models.backbone import Conventions, tokenize_passages, tokenize_queries
from pipeline.models.biencoder import BiEncoder
from pipeline.models.colbert import ColBERT, maxsim
from pipeline.train.batches import Batch, TripleBatches
from pipeline.train.loop import (
    Context,
    LoopConfig,
    add_loop_arguments,
    fingerprint,
    finish,
    fit,
    loop_config,
    setup_context,
)
from pipeline.train.losses import CONDITIONS, student_loss

log = logging.getLogger(__name__)


class _QueryPassageEncoder(nn.Module):
    """One forward for queries and passages, as DistributedDataParallel expects one call per step."""

    def __init__(self, encoder: BiEncoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, query_tokens: dict, passage_tokens: dict) -> tuple[torch.Tensor, torch.Tensor]:
        return (self.encoder(query_tokens["input_ids"], query_tokens["attention_mask"]),
                self.encoder(passage_tokens["input_ids"], passage_tokens["attention_mask"]))


def _gather_passages(local: torch.Tensor, ctx: Context, differentiable: bool) -> torch.Tensor:
    """All ranks' passages as [all positives, all negatives] (each rank holds [its pos, its neg])."""
    parts = dist_fn.all_gather(local) if differentiable else _all_gather_no_grad(local, ctx)
    half = local.shape[0] // 2
    return torch.cat([p[:half] for p in parts] + [p[half:] for p in parts])


def _all_gather_no_grad(local: torch.Tensor, ctx: Context) -> list[torch.Tensor]:
    parts = [torch.empty_like(local) for _ in range(ctx.world)]
    dist.all_gather(parts, local.contiguous())
    return parts


def train_student(teacher_dir: Path | None, triples: Path, queries: Path, collection: Path, out: Path,
                  checkpoints: Path, losses: Path, cfg: LoopConfig, condition: str = "inbatch", gamma: float = 0.1,
                  teacher_tau: float = 0.25, student_tau: float = 1.0, init: str = "teacher",
                  backbone: str | None = None, gather: bool = False, conv: Conventions = Conventions(),
                  ctx: Context | None = None) -> None:
    """Distil `teacher_dir` into a bi-encoder and save it to `out` (condition `none` needs no teacher)."""
    if condition not in CONDITIONS:
        raise ValueError(f"unknown condition {condition!r}; choose from {CONDITIONS}")
    ctx = ctx or setup_context()
    teacher = None
    if condition != "none":
        if teacher_dir is None:
            raise ValueError(f"condition {condition!r} distils a teacher: give --teacher")
        teacher = ColBERT.load(teacher_dir).to(ctx.device).eval().requires_grad_(False)
        conv = teacher.conv  # share the teacher's tokenisation: one tokenised batch feeds both models
    source = {"teacher": teacher_dir, "backbone": backbone}[init]
    if source is None:
        raise ValueError(f"--init {init} needs --{init}")
    student = BiEncoder.from_backbone(str(source), conv)
    if teacher is not None and student.tokenizer.get_vocab() != teacher.tokenizer.get_vocab():
        raise ValueError(f"student backbone {source} and teacher {teacher_dir} use different vocabularies; "
                         "tight coupling feeds both the same tokens")
    batches = TripleBatches(triples, queries, collection, cfg.batch_size, cfg.seed)
    # Gathered passages must have one shape on every rank, so pad to the full length then.
    padding = "max_length" if gather and ctx.world > 1 else "longest"

    def loss_fn(module: nn.Module, batch: Batch) -> torch.Tensor:
        query_tokens = tokenize_queries(student.tokenizer, batch.queries, conv).to(ctx.device)
        passage_tokens = tokenize_passages(student.tokenizer, batch.positives + batch.negatives, conv,
                                           padding).to(ctx.device)
        query_vectors, passage_vectors = module(query_tokens, passage_tokens)
        offset = 0
        teacher_scores = None
        if gather and ctx.world > 1:
            offset = ctx.rank * len(batch.queries)
            passage_vectors = _gather_passages(passage_vectors, ctx, differentiable=True)
        if teacher is not None:
            with torch.no_grad():
                query_embeddings = teacher.query_embeddings(query_tokens["input_ids"], query_tokens["attention_mask"])
                doc_embeddings, doc_mask = teacher.doc_embeddings(passage_tokens["input_ids"],
                                                                  passage_tokens["attention_mask"])
                if gather and ctx.world > 1:
                    doc_embeddings = _gather_passages(doc_embeddings, ctx, differentiable=False)
                    doc_mask = _gather_passages(doc_mask, ctx, differentiable=False)
                teacher_scores = maxsim(query_embeddings, query_tokens["attention_mask"], doc_embeddings, doc_mask)
        return student_loss(query_vectors @ passage_vectors.T, teacher_scores, condition, gamma, teacher_tau,
                            student_tau, offset)

    identity = fingerprint({"stage": "student", "teacher": str(teacher_dir), "init": init, "backbone": backbone,
                            "triples": str(triples), "loop": cfg, "condition": condition, "gamma": gamma,
                            "teacher_tau": teacher_tau, "student_tau": student_tau, "gather": gather,
                            "conv": conv, "world": ctx.world})
    fit(_QueryPassageEncoder(student), loss_fn, batches, cfg, checkpoints, identity, ctx, desc=f"student[{condition}]")
    finish(student.save, checkpoints, out, losses, ctx)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", type=Path, default=None, help="trained teacher directory")
    parser.add_argument("--condition", choices=CONDITIONS, default="inbatch")
    parser.add_argument("--gamma", type=float, default=0.1, help="weight of the hard-label loss (Eq. 6)")
    parser.add_argument("--teacher-tau", type=float, default=0.25)
    parser.add_argument("--student-tau", type=float, default=1.0)
    parser.add_argument("--init", choices=("teacher", "backbone"), default="teacher")
    parser.add_argument("--backbone", default=None, help="with --init backbone: Hub id, directory or all-MiniLM-L6-v2")
    parser.add_argument("--gather", action="store_true", help="in-batch negatives from every rank (torchrun)")
    add_loop_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    conv = Conventions(query_length=args.max_query_length, doc_length=args.max_doc_length)
    train_student(args.teacher, args.triples, args.queries, args.collection, args.out, args.checkpoints,
                  args.losses, loop_config(args), args.condition, args.gamma, args.teacher_tau, args.student_tau,
                  args.init, args.backbone, args.gather, conv)


if __name__ == "__main__":
    run_stage(main)
