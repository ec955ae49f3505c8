"""train_cross_encoder: the BERT_CAT teacher of Margin-MSE, trained on (query, positive, negative) triples.

    python -m pipeline.train.cross_encoder --backbone bert-base-uncased --triples resources/D/triples.train.tsv \
        --queries resources/D/queries.train.tsv --collection resources/D/collection.tsv \
        --out resources/D/models/cross_encoder --checkpoints resources/D/checkpoints/cross_encoder \
        --losses results/D/training/cross_encoder.losses.csv --steps 160000 --batch-size 32 --lr 7e-6

The loss is RankNet's over each triple, softplus(s- - s+) (the cross-entropy of the positive against its own
negative), as Margin-MSE trained its teachers. A mean over triples: plain gradient accumulation is exact.
`--scorer dual_pooling` trains EmbedDistill's dual-pooling scorer with the same loss (pipeline.models.cross_encoder).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.cli import run_stage
from pipeline.models.cross_encoder import SCORERS, CrossEncoder, PairLengths
from pipeline.train.batches import Batch, TripleBatches
from pipeline.train.context import Context, seed_everything, setup_context
from pipeline.train.loop import LoopConfig, add_loop_arguments, finish, fit, loop_config
from pipeline.train.resume import fingerprint

log = logging.getLogger(__name__)


def ranknet_loss(positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """Mean over triples of -log sigmoid(s+ - s-), in float32 at least."""
    margin = positive.float() - negative.float()
    return F.softplus(-margin).mean()


def train_cross_encoder(backbone: str, triples: Path, queries: Path, collection: Path, out: Path, checkpoints: Path,
                        losses: Path, cfg: LoopConfig, lengths: PairLengths = PairLengths(), scorer: str = "cls",
                        ctx: Context | None = None) -> None:
    """Train a cross-encoder from `backbone` (a fresh head, seeded by `cfg.seed`) and save it to `out`."""
    ctx = ctx or setup_context()
    seed_everything(cfg.seed)  # the head is initialised from this seed
    model = CrossEncoder.from_backbone(backbone, lengths, scorer)
    batches = TripleBatches(triples, queries, collection, cfg.batch_size, cfg.seed)

    def loss_fn(module: nn.Module, micro: Batch) -> torch.Tensor:
        # Positives and negatives in one forward: one call per step, as DistributedDataParallel expects.
        tokens = model.tokenize(micro.queries * 2, micro.positives + micro.negatives).to(ctx.device)
        scores = module(tokens["input_ids"], tokens["attention_mask"], tokens["token_type_ids"])
        positive, negative = scores.split(len(micro.queries))
        return ranknet_loss(positive, negative)

    settings = {"loop": cfg, "lengths": lengths, "world": ctx.world,
                **({"scorer": scorer} if scorer != "cls" else {})}  # absent for cls: older checkpoints resume
    made_from = fingerprint("cross_encoder", settings,
                            {"backbone": backbone, "triples": triples, "queries": queries, "collection": collection},
                            ctx)
    fit(model, loss_fn, batches, cfg, checkpoints, made_from, ctx, desc="cross-encoder")
    finish(model.save, checkpoints, out, losses, ctx)


def main(argv: list[str] | None = None) -> None:
    # "resolve": --max-query-length is redefined below (a cross-encoder's query has no [Q] prefix).
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     conflict_handler="resolve")
    parser.add_argument("--backbone", required=True, help="Hub id, local directory, or all-MiniLM-L6-v2 (packaged)")
    add_loop_arguments(parser)
    parser.add_argument("--max-query-length", type=int, default=PairLengths.query_length,
                        help="word pieces of the query, cut before pairing")
    parser.add_argument("--pair-length", type=int, default=PairLengths.pair_length,
                        help="word pieces of [CLS] query [SEP] passage [SEP]")
    parser.add_argument("--scorer", choices=SCORERS, default="cls",
                        help="cls: a linear head on [CLS] (BERT_CAT); dual_pooling: EmbedDistill's")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    lengths = PairLengths(args.max_query_length, args.pair_length)
    train_cross_encoder(args.backbone, args.triples, args.queries, args.collection, args.out, args.checkpoints,
                        args.losses, loop_config(args), lengths, args.scorer)


if __name__ == "__main__":
    run_stage(main)
