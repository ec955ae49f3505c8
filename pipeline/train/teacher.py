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
from transformers import BatchEncoding

from pipeline.cli import run_stage
from pipeline.models.backbone import Conventions, tokenize_passages, tokenize_queries
from pipeline.models.colbert import ColBERT, maxsim, pad_tokens
from pipeline.train.batches import Batch, TripleBatches, join_passages
from pipeline.train.gradcache import BatchObjective, Encodings
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
    `inbatch` every other passage of the batch (of this process's share of it under torchrun) is a
    negative too, across accumulated micro-batches as well (gradient caching).
    """
    ctx = ctx or setup_context()
    seed_everything(cfg.seed)  # the projection head is initialised from this seed
    model = ColBERT.from_backbone(backbone, conv, dim=dim, bias=bias, normalize_queries=normalize_queries)
    batches = TripleBatches(triples, queries, collection, cfg.batch_size, cfg.seed)

    def prepare(micro: Batch) -> tuple[BatchEncoding, BatchEncoding]:
        return (tokenize_queries(model.tokenizer, micro.queries, conv).to(ctx.device),
                tokenize_passages(model.tokenizer, micro.positives + micro.negatives, conv).to(ctx.device))

    def loss(encodings: list[Encodings], tokens: list[tuple[BatchEncoding, BatchEncoding]]) -> torch.Tensor:
        """MaxSim over the micro-batches' token vectors joined (padded to one length) in batch order."""
        queries, docs, doc_masks = zip(*encodings, strict=True)
        query_mask = torch.cat(pad_tokens([query_tokens["attention_mask"] for query_tokens, _ in tokens]))
        scores = maxsim(torch.cat(pad_tokens(list(queries))), query_mask, join_passages(pad_tokens(list(docs))),
                        join_passages(pad_tokens(list(doc_masks))))
        return inbatch_cross_entropy(scores) if inbatch else teacher_pairwise_loss(scores)

    # The pairwise loss is a mean over queries: plain accumulation is exact for it.
    objective = BatchObjective(prepare, lambda module, tokens: module(*tokens), loss, per_query=not inbatch)
    made_from = fingerprint("teacher", {"loop": cfg, "conv": conv, "dim": dim, "bias": bias,
                                        "normalize_queries": normalize_queries, "inbatch": inbatch,
                                        "world": ctx.world},
                            {"backbone": backbone, "triples": triples, "queries": queries, "collection": collection},
                            ctx)
    fit(model, objective, batches, cfg, checkpoints, made_from, ctx, desc="teacher")
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
