"""train_teacher: ColBERT v1 on (query, positive, BM25 negative) triples.

    python -m pipeline.train.teacher --backbone bert-base-uncased --triples resources/D/triples.train.tsv \
        --queries resources/D/queries.train.tsv --collection resources/D/collection.tsv \
        --out resources/D/models/teacher --checkpoints resources/D/checkpoints/teacher \
        --losses results/D/training/teacher.losses.csv --steps 160000 --batch-size 96 --lr 7e-6 --warmup-steps 10000
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch
from torch import nn

from pipeline.cli import run_stage
from pipeline.models.backbone import Conventions, tokenize_passages, tokenize_queries
from pipeline.models.colbert import ColBERT
from pipeline.train.batches import Batch, TripleBatches
from pipeline.train.loop import (
    Context,
    LoopConfig,
    add_loop_arguments,
    fingerprint,
    finish,
    fit,
    loop_config,
    seed_everything,
    setup_context,
)
from pipeline.train.losses import inbatch_cross_entropy, teacher_pairwise_loss

log = logging.getLogger(__name__)


def train_teacher(backbone: str, triples: Path, queries: Path, collection: Path, out: Path, checkpoints: Path,
                  losses: Path, cfg: LoopConfig, conv: Conventions = Conventions(), dim: int = 128,
                  bias: bool = False, normalize_queries: bool = True, inbatch: bool = False,
                  ctx: Context | None = None) -> None:
    """Train the ColBERT teacher and save it to `out`.

    The loss is ColBERT v1's pairwise softmax cross-entropy over (positive, own negative); with
    `inbatch` every other passage of the batch is a negative too.
    """
    ctx = ctx or setup_context()
    seed_everything(cfg.seed)  # the projection head is initialised from this seed
    model = ColBERT.from_backbone(backbone, conv, dim=dim, bias=bias, normalize_queries=normalize_queries)
    batches = TripleBatches(triples, queries, collection, cfg.batch_size, cfg.seed)

    def loss_fn(module: nn.Module, batch: Batch) -> torch.Tensor:
        query_tokens = tokenize_queries(model.tokenizer, batch.queries, conv).to(ctx.device)
        doc_tokens = tokenize_passages(model.tokenizer, batch.positives + batch.negatives, conv).to(ctx.device)
        scores = module(query_tokens, doc_tokens)
        return inbatch_cross_entropy(scores) if inbatch else teacher_pairwise_loss(scores)

    made_from = fingerprint("teacher", {"loop": cfg, "conv": conv, "dim": dim, "bias": bias,
                                        "normalize_queries": normalize_queries, "inbatch": inbatch,
                                        "world": ctx.world},
                            {"backbone": backbone, "triples": triples, "queries": queries, "collection": collection},
                            ctx)
    fit(model, loss_fn, batches, cfg, checkpoints, made_from, ctx, desc="teacher")
    finish(model.save, checkpoints, out, losses, ctx)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", required=True, help="Hub id, local directory, or all-MiniLM-L6-v2 (packaged)")
    add_loop_arguments(parser)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--bias", action="store_true", help="bias in the 128-d projection")
    parser.add_argument("--unnormalized-queries", action="store_true", help="as the released TCT teacher")
    parser.add_argument("--inbatch", action="store_true", help="in-batch negatives in the teacher loss")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    conv = Conventions(query_length=args.max_query_length, doc_length=args.max_doc_length,
                       pool_start=args.pool_start)
    train_teacher(args.backbone, args.triples, args.queries, args.collection, args.out, args.checkpoints,
                  args.losses, loop_config(args), conv, dim=args.dim, bias=args.bias,
                  normalize_queries=not args.unnormalized_queries, inbatch=args.inbatch)


if __name__ == "__main__":
    run_stage(main)
