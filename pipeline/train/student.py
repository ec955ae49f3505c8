"""train_student: tightly-coupled distillation of the ColBERT teacher into the PoolAvg bi-encoder.

    python -m pipeline.train.student --teacher resources/D/models/teacher --condition inbatch --gamma 0.1 \
        --triples ... --queries ... --collection ... --out resources/D/models/tct_inbatch \
        --checkpoints resources/D/checkpoints/tct_inbatch --losses results/D/training/tct_inbatch.losses.csv \
        --steps 160000 --batch-size 96 --lr 7e-6 --warmup-steps 10000

Tight coupling: the frozen teacher scores the very batch the student sees, in the same step and
from the same tokens (no precomputed scores). The student starts from the teacher's BERT weights,
from `--backbone` (`--init backbone`), or from a trained student (`--init student --init-from DIR`: a
hard-negative round continuing from the student that mined it). The teacher labels in eval mode unless
`--teacher-dropout` (the released code keeps its dropout on). Margin-MSE (Hofstätter et al. 2020) can
learn from a cross-encoder instead (`--cross-encoder`, scoring each pair online) or from its authors'
score file (`--teacher-scores`). `--embed-weight` adds EmbedDistill's embedding matching: to the ColBERT
teacher's token vectors, or with `--cross-encoder` to its dual-pooling vectors. The whole batch is one
softmax: across GPUs under torchrun (`--gather`, the default) and across accumulated micro-batches
(gradient caching, see `pipeline.train.gradcache`).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import BatchEncoding, PreTrainedTokenizerBase

from pipeline.cli import run_stage
from pipeline.formats import iter_lines, read_predictions
from pipeline.models.backbone import Conventions, tokenize_passages, tokenize_queries
from pipeline.models.biencoder import BiEncoder
from pipeline.models.colbert import ColBERT
from pipeline.models.cross_encoder import CrossEncoder
from pipeline.train.batches import UNSCORED, Batch, TripleBatches, join_passages
from pipeline.train.context import Context, seed_everything, setup_context
from pipeline.train.gradcache import BatchObjective, Encodings
from pipeline.train.loop import LoopConfig, add_loop_arguments, finish, fit, loop_config
from pipeline.train.losses import CONDITIONS
from pipeline.train.resume import fingerprint
from pipeline.train.targets import PairTargets, TeacherTokens, embedding_matching_loss, eq6_loss, gather_passages

log = logging.getLogger(__name__)
# What embedding matching pulls the student toward, recorded in the checkpoints' fingerprint: earlier
# versions matched the teacher's mean BERT hidden state, before its projection.
EMBED_TARGET = "teacher MaxSim token vectors: masked mean, unit length"
INIT_FLAGS = {"teacher": "teacher", "backbone": "backbone", "student": "init-from"}  # --init and the path it needs


class _QueryPassageEncoder(nn.Module):
    """One forward for queries and passages, as DistributedDataParallel expects one call per step.

    With embedding matching, `matcher` (a learned linear map from the student's width to the teacher's
    ColBERT dimension, or to the dual-pooling cross-encoder's width; trained with the student and never saved)
    maps both into the teacher's space, and the forward also returns the mapped vectors.
    """

    def __init__(self, encoder: BiEncoder, matcher: nn.Module | None = None):
        super().__init__()
        self.encoder, self.matcher = encoder, matcher

    def forward(self, query_tokens: dict, passage_tokens: dict) -> tuple[torch.Tensor, ...]:
        vectors = (self.encoder(query_tokens["input_ids"], query_tokens["attention_mask"]),
                   self.encoder(passage_tokens["input_ids"], passage_tokens["attention_mask"]))
        return vectors if self.matcher is None else (*vectors, *map(self.matcher, vectors))


@dataclass(frozen=True)
class _Inputs:
    """One micro-batch as both models read it: the teacher's outputs are computed once, without gradients."""

    query_tokens: BatchEncoding
    passage_tokens: BatchEncoding
    teacher: TeacherTokens | None
    teacher_pairs: torch.Tensor | None  # (B, 2) scores from a score file or the cross-encoder
    labelled: torch.Tensor | None
    pair_targets: PairTargets | None  # the dual-pooling cross-encoder's, for embedding matching


def _cat(parts: Sequence[torch.Tensor | None]) -> torch.Tensor | None:
    return None if parts[0] is None else torch.cat(list(parts))


@dataclass(frozen=True)
class _Distillation:
    """Eq. 6 over the whole batch, plus embedding matching, as the parts of a `BatchObjective`."""

    tokenizer: PreTrainedTokenizerBase
    teacher: ColBERT | None  # None: no online ColBERT teacher (matching, if any, is from the cross-encoder)
    cross_encoder: CrossEncoder | None  # scores each query's own pair (Margin-MSE's teacher)
    conv: Conventions
    ctx: Context
    condition: str
    gamma: float
    teacher_tau: float
    student_tau: float
    embed_weight: float
    gathering: bool  # one softmax over every rank's passages

    def prepare(self, micro: Batch) -> _Inputs:
        device = self.ctx.device
        # Gathered passages must have one shape on every rank, so pad to the full length then.
        padding = "max_length" if self.gathering else "longest"
        query_tokens = tokenize_queries(self.tokenizer, micro.queries, self.conv).to(device)
        passage_tokens = tokenize_passages(self.tokenizer, micro.positives + micro.negatives, self.conv,
                                           padding).to(device)
        teacher = None if self.teacher is None else TeacherTokens.of(self.teacher, query_tokens, passage_tokens)
        pairs = None if micro.teacher_pairs is None else torch.tensor(micro.teacher_pairs, device=device)
        targets = None
        if self.cross_encoder is not None and self.embed_weight:
            targets = PairTargets.of(self.cross_encoder, micro.queries, micro.positives, micro.negatives)
            pairs = targets.pairs
        elif self.cross_encoder is not None:
            scores = self.cross_encoder.score(micro.queries * 2, micro.positives + micro.negatives)
            pairs = torch.stack(scores.float().split(len(micro.queries)), dim=1)
        labelled = None if micro.labelled is None else torch.tensor(micro.labelled, device=device)
        return _Inputs(query_tokens, passage_tokens, teacher, pairs, labelled, targets)

    @staticmethod
    def encode(module: nn.Module, inputs: _Inputs) -> Encodings:
        return module(inputs.query_tokens, inputs.passage_tokens)

    def loss(self, encodings: list[Encodings], inputs: list[_Inputs]) -> torch.Tensor:
        queries = torch.cat([encoded[0] for encoded in encodings])
        passages = join_passages([encoded[1] for encoded in encodings])
        offset = 0
        if self.gathering:
            offset = self.ctx.rank * len(queries)
            passages = gather_passages(passages, self.ctx, differentiable=True)
        tokens = None if self.teacher is None else TeacherTokens.join([part.teacher for part in inputs])
        scored_by = _cat([part.teacher_pairs for part in inputs])
        if scored_by is None and self.condition != "none":
            scored_by = tokens.gathered(self.ctx) if self.gathering else tokens
        loss = eq6_loss(queries, passages, scored_by, self.condition, self.gamma, self.teacher_tau,
                        self.student_tau, offset, _cat([part.labelled for part in inputs]))
        if not self.embed_weight:
            return loss
        mapped_queries = torch.cat([encoded[2] for encoded in encodings])
        mapped_passages = join_passages([encoded[3] for encoded in encodings])
        if tokens is None:  # from the dual-pooling cross-encoder
            matching = PairTargets.join([part.pair_targets for part in inputs])
            return loss + self.embed_weight * matching.matching_loss(mapped_queries, mapped_passages)
        return loss + self.embed_weight * embedding_matching_loss(mapped_queries, mapped_passages, tokens)


def read_generated(paths: list[Path], triples: Path) -> dict[str, list[str]]:
    """Predicted queries (doc2query format) of the triples' positives only: the full MS MARCO
    predictions hold 80 queries for each of 8.8M passages, far more than training needs in memory."""
    positives = {line.split("\t")[1] for _, line in iter_lines(triples) if line.count("\t") == 2}
    return {pid: queries for path in paths for pid, queries in read_predictions(path) if pid in positives}


def train_student(teacher_dir: Path | None, triples: Path, queries: Path, collection: Path, out: Path,
                  checkpoints: Path, losses: Path, cfg: LoopConfig, condition: str = "inbatch", gamma: float = 0.1,
                  teacher_tau: float = 0.25, student_tau: float = 1.0, init: str = "teacher",
                  backbone: str | None = None, gather: bool = True, conv: Conventions = Conventions(),
                  ctx: Context | None = None, teacher_scores: Path | None = None, init_from: Path | None = None,
                  teacher_dropout: bool = False, cross_encoder: Path | None = None, unscored: str = "error",
                  embed_weight: float = 0.0, generated: dict[str, list[str]] | None = None,
                  generated_ratio: float = 0.0, generated_files: Sequence[Path] = ()) -> None:
    """Distil `teacher_dir` into a bi-encoder and save it to `out` (condition `none` needs no teacher).

    `gather` (under torchrun) makes every rank's passages negatives of every query. `teacher_scores`
    replaces the online teacher's scores by a Margin-MSE score file, and `cross_encoder` by a cross-encoder's
    online scores (each query's own pair, so `triplet` or `margin_mse` only); `embed_weight` > 0 adds
    EmbedDistill's embedding matching of queries and passages against the mean of the teacher's MaxSim token
    vectors (`embedding_matching_loss`), or with `cross_encoder` against its dual-pooling vectors (`PairTargets`).
    `generated` (pid -> queries generated from it) mixed in at `generated_ratio`: those rows are labelled
    by the online teacher alone, which only tight coupling makes possible (no qrels, no precomputed
    scores); `generated_files`, the prediction files `generated` was read from, identify it in the checkpoints.
    """
    if condition not in CONDITIONS:
        raise ValueError(f"unknown condition {condition!r}; choose from {CONDITIONS}")
    pair_source = "--teacher-scores" if teacher_scores is not None else "--cross-encoder" if cross_encoder else None
    if teacher_scores is not None and cross_encoder is not None:
        raise ValueError("give the teacher's pair scores once: --teacher-scores or --cross-encoder, not both")
    if pair_source and condition not in ("triplet", "margin_mse"):
        raise ValueError(f"{pair_source} scores each query's own pair only: condition {condition!r} needs "
                         "the ColBERT teacher; use triplet or margin_mse")
    if generated_ratio > 0 and (condition == "none" or pair_source):
        raise ValueError("generated queries are labelled by the online ColBERT teacher: use a distilling condition "
                         "without --teacher-scores or --cross-encoder")
    ctx = ctx or setup_context()
    scorer = None if cross_encoder is None else (
        CrossEncoder.load(cross_encoder).to(ctx.device).train(teacher_dropout).requires_grad_(False))
    if embed_weight > 0 and scorer is not None and scorer.scorer != "dual_pooling":
        raise ValueError(f"embedding matching from cross-encoder {cross_encoder} needs its dual-pooling scorer "
                         "(train it with --scorer dual_pooling)")
    teacher = None
    if (condition != "none" and pair_source is None) or (embed_weight > 0 and cross_encoder is None):
        if teacher_dir is None:
            raise ValueError(f"condition {condition!r} distils a teacher: give --teacher")
        teacher = ColBERT.load(teacher_dir).to(ctx.device).train(teacher_dropout).requires_grad_(False)
        conv = teacher.conv  # share the teacher's tokenisation: one tokenised batch feeds both models
    source = {"teacher": teacher_dir, "backbone": backbone, "student": init_from}[init]
    if source is None:
        raise ValueError(f"--init {init} needs --{INIT_FLAGS[init]}")
    student = BiEncoder.from_backbone(str(source), conv)
    if teacher is not None and student.tokenizer.get_vocab() != teacher.tokenizer.get_vocab():
        raise ValueError(f"student backbone {source} and teacher {teacher_dir} use different vocabularies; "
                         "tight coupling feeds both the same tokens")
    matcher = None
    if embed_weight > 0:
        seed_everything(cfg.seed)  # the map is initialised from this seed
        width = teacher.linear.out_features if scorer is None else scorer.bert.config.hidden_size
        matcher = nn.Linear(student.bert.config.hidden_size, width, bias=False)
    batches = TripleBatches(triples, queries, collection, cfg.batch_size, cfg.seed, teacher_scores, generated,
                            generated_ratio, unscored)
    gathering = gather and ctx.world > 1
    distillation = _Distillation(student.tokenizer, teacher, scorer, conv, ctx, condition, gamma, teacher_tau,
                                 student_tau, embed_weight, gathering)
    made_from = fingerprint(
        "student",
        {"init": init, "loop": cfg, "condition": condition, "gamma": gamma, "teacher_tau": teacher_tau,
         **({"teacher_dropout": True} if teacher_dropout else {}),
         "student_tau": student_tau, "gather": gathering, "conv": conv, "world": ctx.world,
         "embed_weight": embed_weight, "generated_ratio": generated_ratio,
         **({"embed_target": EMBED_TARGET if scorer is None else "cross-encoder dual pooling"}
            if embed_weight > 0 else {})},
        {"teacher": teacher_dir if teacher is not None or init == "teacher" else None,
         "backbone": backbone if init == "backbone" else None,
         **({"init_from": init_from} if init == "student" else {}),  # absent otherwise: older checkpoints resume
         "triples": triples, "queries": queries,
         "collection": collection, "teacher_scores": teacher_scores,
         **({"cross_encoder": cross_encoder} if cross_encoder else {}),  # absent otherwise: older checkpoints resume
         # The prediction files when given (a multi-GB file is sampled), else the queries handed in.
         "generated": list(generated_files) if generated_files else generated},
        ctx)
    objective = BatchObjective(distillation.prepare, distillation.encode, distillation.loss)
    fit(_QueryPassageEncoder(student, matcher), objective, batches, cfg, checkpoints, made_from, ctx,
        desc=f"student[{condition}]")
    finish(student.save, checkpoints, out, losses, ctx)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", type=Path, default=None, help="trained teacher directory")
    parser.add_argument("--condition", choices=CONDITIONS, default="inbatch")
    parser.add_argument("--gamma", type=float, default=0.1, help="weight of the hard-label loss (Eq. 6)")
    parser.add_argument("--teacher-tau", type=float, default=0.25)
    parser.add_argument("--student-tau", type=float, default=1.0)
    parser.add_argument("--init", choices=tuple(INIT_FLAGS), default="teacher")
    parser.add_argument("--backbone", default=None, help="with --init backbone: Hub id, directory or all-MiniLM-L6-v2")
    parser.add_argument("--init-from", type=Path, default=None,
                        help="with --init student: a trained student's directory")
    parser.add_argument("--teacher-dropout", action="store_true",
                        help="the teacher labels with BERT's dropout on (the released code); default: eval mode")
    parser.add_argument("--gather", action=argparse.BooleanOptionalAction, default=True,
                        help="under torchrun, one softmax over every rank's passages (the paper's batch); "
                             "--no-gather: each rank's own")
    parser.add_argument("--teacher-scores", type=Path, default=None,
                        help="Margin-MSE scores ('pos_score neg_score qid pos_pid neg_pid') instead of online ones")
    parser.add_argument("--unscored", choices=UNSCORED, default="error",
                        help="a triple --teacher-scores lacks: stop naming its line (error), or leave it out (drop)")
    parser.add_argument("--cross-encoder", type=Path, default=None,
                        help="a cross-encoder (train_cross_encoder's, or a published one) scoring each pair online; "
                             "with --embed-weight, its dual-pooling vectors are matched too")
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
                  init_from=args.init_from, teacher_dropout=args.teacher_dropout, cross_encoder=args.cross_encoder,
                  unscored=args.unscored,
                  embed_weight=args.embed_weight,
                  generated=read_generated(args.generated, args.triples) if args.generated else None,
                  generated_ratio=args.generated_ratio, generated_files=args.generated)


if __name__ == "__main__":
    run_stage(main)
