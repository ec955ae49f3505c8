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
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
from torch import nn

from pipeline.cli import run_stage
from pipeline.doc2query.predictions import read_predictions
from pipeline.io import iter_lines
from pipeline.models.backbone import Conventions, masked_mean, tokenize_passages, tokenize_queries
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
from pipeline.train.losses import CONDITIONS, embedding_matching, student_loss

log = logging.getLogger(__name__)


class _QueryPassageEncoder(nn.Module):
    """One forward for queries and passages, as DistributedDataParallel expects one call per step.

    With embedding matching, `matcher` maps student vectors into the teacher's hidden space (a
    learned linear map when the widths differ) and the forward also returns the mapped vectors.
    """

    def __init__(self, encoder: BiEncoder, matcher: nn.Module | None = None):
        super().__init__()
        self.encoder, self.matcher = encoder, matcher

    def forward(self, query_tokens: dict, passage_tokens: dict) -> tuple[torch.Tensor, ...]:
        vectors = (self.encoder(query_tokens["input_ids"], query_tokens["attention_mask"]),
                   self.encoder(passage_tokens["input_ids"], passage_tokens["attention_mask"]))
        return vectors if self.matcher is None else (*vectors, *map(self.matcher, vectors))


def _gather_passages(local: torch.Tensor, ctx: Context, differentiable: bool) -> torch.Tensor:
    """All ranks' passages as [all positives, all negatives] (each rank holds [its pos, its neg])."""
    parts = dist_fn.all_gather(local) if differentiable else _all_gather_no_grad(local, ctx)
    half = local.shape[0] // 2
    return torch.cat([p[:half] for p in parts] + [p[half:] for p in parts])


def _all_gather_no_grad(local: torch.Tensor, ctx: Context) -> list[torch.Tensor]:
    parts = [torch.empty_like(local) for _ in range(ctx.world)]
    dist.all_gather(parts, local.contiguous())
    return parts


def _online_scores(teacher: ColBERT, query_tokens: dict, passage_tokens: dict, query_hidden: torch.Tensor,
                   doc_hidden: torch.Tensor, ctx: Context | None) -> torch.Tensor:
    """The frozen teacher's MaxSim over this batch (over every rank's passages when `ctx` gathers)."""
    query_embeddings = teacher.query_embeddings(query_tokens["input_ids"], query_tokens["attention_mask"],
                                                query_hidden)
    doc_embeddings, doc_mask = teacher.doc_embeddings(passage_tokens["input_ids"], passage_tokens["attention_mask"],
                                                      doc_hidden)
    if ctx is not None and ctx.world > 1:
        doc_embeddings = _gather_passages(doc_embeddings, ctx, differentiable=False)
        doc_mask = _gather_passages(doc_mask, ctx, differentiable=False)
    return maxsim(query_embeddings, query_tokens["attention_mask"], doc_embeddings, doc_mask)


def read_generated(paths: list[Path], triples: Path) -> dict[str, list[str]]:
    """Predicted queries (doc2query format) of the triples' positives only: the full MS MARCO
    predictions hold 80 queries for each of 8.8M passages, far more than training needs in memory."""
    positives = {line.split("\t")[1] for _, line in iter_lines(triples) if line.count("\t") == 2}
    return {pid: queries for path in paths for pid, queries in read_predictions(path) if pid in positives}


def train_student(teacher_dir: Path | None, triples: Path, queries: Path, collection: Path, out: Path,
                  checkpoints: Path, losses: Path, cfg: LoopConfig, condition: str = "inbatch", gamma: float = 0.1,
                  teacher_tau: float = 0.25, student_tau: float = 1.0, init: str = "teacher",
                  backbone: str | None = None, gather: bool = False, conv: Conventions = Conventions(),
                  ctx: Context | None = None, teacher_scores: Path | None = None,
                  embed_weight: float = 0.0, generated: dict[str, list[str]] | None = None,
                  generated_ratio: float = 0.0, generated_files: Sequence[Path] = ()) -> None:
    """Distil `teacher_dir` into a bi-encoder and save it to `out` (condition `none` needs no teacher).

    `teacher_scores` replaces the online teacher's scores by a Margin-MSE score file (each query's
    own pair, so `triplet` or `margin_mse` only); `embed_weight` > 0 adds EmbedDistill's embedding
    matching of queries and passages against the teacher's pooled hidden states. `generated` (pid ->
    queries generated from it) mixed in at `generated_ratio`: those rows are labelled by the online
    teacher alone, which only tight coupling makes possible (no qrels, no precomputed scores);
    `generated_files`, the prediction files `generated` was read from, identify it in the checkpoints.
    """
    if condition not in CONDITIONS:
        raise ValueError(f"unknown condition {condition!r}; choose from {CONDITIONS}")
    if teacher_scores is not None and condition not in ("triplet", "margin_mse"):
        raise ValueError(f"a teacher score file holds each query's own pair only: condition {condition!r} needs "
                         "the online teacher; use triplet or margin_mse")
    if generated_ratio > 0 and (condition == "none" or teacher_scores is not None):
        raise ValueError("generated queries are labelled by the online teacher: use a distilling condition "
                         "without --teacher-scores")
    ctx = ctx or setup_context()
    teacher = None
    online_scores = condition != "none" and teacher_scores is None
    if online_scores or embed_weight > 0:
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
    matcher = None
    if embed_weight > 0:
        widths = (student.bert.config.hidden_size, teacher.bert.config.hidden_size)
        matcher = nn.Identity() if widths[0] == widths[1] else nn.Linear(*widths, bias=False).to(ctx.device)
    batches = TripleBatches(triples, queries, collection, cfg.batch_size, cfg.seed, teacher_scores, generated,
                            generated_ratio)
    # Gathered passages must have one shape on every rank, so pad to the full length then.
    padding = "max_length" if gather and ctx.world > 1 else "longest"

    def loss_fn(module: nn.Module, batch: Batch) -> torch.Tensor:
        query_tokens = tokenize_queries(student.tokenizer, batch.queries, conv).to(ctx.device)
        passage_tokens = tokenize_passages(student.tokenizer, batch.positives + batch.negatives, conv,
                                           padding).to(ctx.device)
        query_vectors, passage_vectors, *mapped = module(query_tokens, passage_tokens)
        offset = 0
        teacher_scores = None
        if batch.teacher_pairs is not None:
            teacher_scores = torch.tensor(batch.teacher_pairs, device=ctx.device)
        if gather and ctx.world > 1:
            offset = ctx.rank * len(batch.queries)
            passage_vectors = _gather_passages(passage_vectors, ctx, differentiable=True)
        matching = None
        if teacher is not None:
            with torch.no_grad():
                query_hidden = teacher.hidden_states(query_tokens["input_ids"], query_tokens["attention_mask"])
                doc_hidden = teacher.hidden_states(passage_tokens["input_ids"], passage_tokens["attention_mask"])
                if online_scores:
                    teacher_scores = _online_scores(teacher, query_tokens, passage_tokens, query_hidden, doc_hidden,
                                                    ctx if gather else None)
            if mapped:
                # EmbedDistill: the teacher's masked mean over the same tokens the student pools.
                targets = (masked_mean(query_hidden, query_tokens["attention_mask"], conv.pool_start),
                           masked_mean(doc_hidden, passage_tokens["attention_mask"], conv.pool_start))
                matching = sum(map(embedding_matching, mapped, targets)) / 2
        labelled = None if batch.labelled is None else torch.tensor(batch.labelled, device=ctx.device)
        loss = student_loss(query_vectors @ passage_vectors.T, teacher_scores, condition, gamma, teacher_tau,
                            student_tau, offset, labelled)
        return loss if matching is None else loss + embed_weight * matching

    made_from = fingerprint(
        "student",
        {"init": init, "loop": cfg, "condition": condition, "gamma": gamma, "teacher_tau": teacher_tau,
         "student_tau": student_tau, "gather": gather, "conv": conv, "world": ctx.world,
         "embed_weight": embed_weight, "generated_ratio": generated_ratio},
        {"teacher": teacher_dir if teacher is not None or init == "teacher" else None,
         "backbone": backbone if init == "backbone" else None, "triples": triples, "queries": queries,
         "collection": collection, "teacher_scores": teacher_scores,
         # The prediction files when given (a multi-GB file is sampled), else the queries handed in.
         "generated": list(generated_files) if generated_files else generated},
        ctx)
    fit(_QueryPassageEncoder(student, matcher), loss_fn, batches, cfg, checkpoints, made_from, ctx,
        desc=f"student[{condition}]")
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
    parser.add_argument("--teacher-scores", type=Path, default=None,
                        help="Margin-MSE scores ('pos_score neg_score qid pos_pid neg_pid') instead of online ones")
    parser.add_argument("--embed-weight", type=float, default=0.0, help="weight of embedding matching (EmbedDistill)")
    parser.add_argument("--generated", type=Path, nargs="+", default=[],
                        help="doc2query predictions (JSON lines): queries generated from the training positives")
    parser.add_argument("--generated-ratio", type=float, default=0.0,
                        help="share of each batch whose query is a generated one, labelled by the teacher alone")
    add_loop_arguments(parser)
    args = parser.parse_args(argv)
    if args.generated_ratio > 0 and not args.generated:
        parser.error("--generated-ratio needs --generated prediction files")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    conv = Conventions(query_length=args.max_query_length, doc_length=args.max_doc_length,
                       pool_start=args.pool_start)
    train_student(args.teacher, args.triples, args.queries, args.collection, args.out, args.checkpoints,
                  args.losses, loop_config(args), args.condition, args.gamma, args.teacher_tau, args.student_tau,
                  args.init, args.backbone, args.gather, conv, teacher_scores=args.teacher_scores,
                  embed_weight=args.embed_weight,
                  generated=read_generated(args.generated, args.triples) if args.generated else None,
                  generated_ratio=args.generated_ratio, generated_files=args.generated)


if __name__ == "__main__":
    run_stage(main)
