"""train_query_encoder: EmbedDistill's asymmetric student (Kim et al. 2023), a small query encoder distilled from a
dense model whose passage vectors and index it then uses.

    python -m pipeline.train.query_encoder --teacher resources/D/models/tct_inbatch --backbone all-MiniLM-L6-v2 \
        --triples resources/D/triples.train.tsv --queries resources/D/queries.train.tsv \
        --collection resources/D/collection.tsv --out resources/D/models/asym_minilm \
        --checkpoints resources/D/checkpoints/asym_minilm --losses results/D/training/asym_minilm.losses.csv \
        --steps 160000 --batch-size 96 --lr 7e-6 --warmup-steps 10000

Each step the frozen dense model (ours, or a published TCT-ColBERT checkpoint) encodes the batch's queries and
its 2B passages; the student encodes the queries, mapped by a learned linear layer to the dense model's width
where the two differ (the map is part of the query encoder: it is saved). The loss is

    KL(softmax(q_t . P_t / tau) || softmax(q_s . P_t)) + embed_weight * mean ||q_s - q_t||^2

over the in-batch passages P_t, scored by the dense model's own passage vectors for both: score distillation
plus embedding matching of the query vectors, the batch one softmax (gradient caching under accumulation;
under torchrun each process's share of it). The passage side is never trained, so the corpus is never
encoded again.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import BatchEncoding

from pipeline.cli import run_stage
from pipeline.dense.runtime import model_fingerprint
from pipeline.models.backbone import Conventions, tokenize_passages, tokenize_queries
from pipeline.models.biencoder import BiEncoder
from pipeline.models.query_encoder import QueryEncoder
from pipeline.train.batches import Batch, TripleBatches, join_passages
from pipeline.train.context import Context, seed_everything, setup_context
from pipeline.train.gradcache import BatchObjective, Encodings
from pipeline.train.loop import LoopConfig, add_loop_arguments, finish, fit, loop_config
from pipeline.train.losses import dot_scores, embedding_matching, student_loss
from pipeline.train.resume import fingerprint

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Inputs:
    """One micro-batch: the student's query tokens, and the frozen dense model's query and passage vectors."""

    query_tokens: BatchEncoding
    teacher_queries: torch.Tensor
    teacher_passages: torch.Tensor


def asymmetric_loss(student_queries: torch.Tensor, teacher_queries: torch.Tensor, teacher_passages: torch.Tensor,
                    embed_weight: float, teacher_tau: float) -> torch.Tensor:
    """The KL of the module docstring over the batch's passages plus embed_weight x query embedding matching."""
    teacher_scores = dot_scores(teacher_queries, teacher_passages)
    kl = student_loss(dot_scores(student_queries, teacher_passages), teacher_scores, "inbatch", gamma=0.0,
                      teacher_tau=teacher_tau)
    return kl + embed_weight * embedding_matching(student_queries, teacher_queries)


def train_query_encoder(teacher: str, backbone: str, triples: Path, queries: Path, collection: Path, out: Path,
                        checkpoints: Path, losses: Path, cfg: LoopConfig, embed_weight: float = 1.0,
                        teacher_tau: float = 1.0, conv: Conventions = Conventions(),
                        ctx: Context | None = None) -> None:
    """Train a query encoder from `backbone` against the dense model `teacher` and save it to `out`."""
    ctx = ctx or setup_context()
    dense = BiEncoder.load_any(teacher).to(ctx.device).eval().requires_grad_(False)
    student = BiEncoder.from_backbone(backbone, conv)
    width, target = student.bert.config.hidden_size, dense.bert.config.hidden_size
    seed_everything(cfg.seed)  # the map is initialised from this seed
    projection = nn.Linear(width, target, bias=False) if width != target else None
    model = QueryEncoder(student, projection, str(teacher), model_fingerprint(str(teacher)))
    batches = TripleBatches(triples, queries, collection, cfg.batch_size, cfg.seed)

    def prepare(micro: Batch) -> _Inputs:
        with torch.no_grad():
            dense_queries = dense.encode_queries(micro.queries).float()
            tokens = tokenize_passages(dense.tokenizer, micro.positives + micro.negatives, dense.conv).to(ctx.device)
            dense_passages = dense(tokens["input_ids"], tokens["attention_mask"]).float()
        return _Inputs(tokenize_queries(student.tokenizer, micro.queries, conv).to(ctx.device), dense_queries,
                       dense_passages)

    def encode(module: nn.Module, inputs: _Inputs) -> Encodings:
        return (module(inputs.query_tokens["input_ids"], inputs.query_tokens["attention_mask"]),)

    def loss(encodings: list[Encodings], inputs: list[_Inputs]) -> torch.Tensor:
        return asymmetric_loss(torch.cat([encoded[0] for encoded in encodings]),
                               torch.cat([part.teacher_queries for part in inputs]),
                               join_passages([part.teacher_passages for part in inputs]), embed_weight, teacher_tau)

    made_from = fingerprint("query_encoder", {"loop": cfg, "conv": conv, "embed_weight": embed_weight,
                                              "teacher_tau": teacher_tau, "world": ctx.world},
                            {"teacher": teacher, "backbone": backbone, "triples": triples, "queries": queries,
                             "collection": collection}, ctx)
    fit(model, BatchObjective(prepare, encode, loss), batches, cfg, checkpoints, made_from, ctx,
        desc="query encoder")
    finish(model.save, checkpoints, out, losses, ctx)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", required=True, help="the dense model whose passages and index the student uses")
    parser.add_argument("--backbone", required=True, help="the student: Hub id, directory or all-MiniLM-L6-v2")
    parser.add_argument("--embed-weight", type=float, default=1.0, help="weight of query embedding matching")
    parser.add_argument("--teacher-tau", type=float, default=1.0, help="the dense model's softmax temperature")
    add_loop_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    conv = Conventions(query_length=args.max_query_length, doc_length=args.max_doc_length,
                       pool_start=args.pool_start)
    train_query_encoder(args.teacher, args.backbone, args.triples, args.queries, args.collection, args.out,
                        args.checkpoints, args.losses, loop_config(args), args.embed_weight, args.teacher_tau, conv)


if __name__ == "__main__":
    run_stage(main)
