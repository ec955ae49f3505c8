"""train_teacher: ColBERT v1 on (query, positive, BM25 negative) triples.

    python -m pipeline.train.teacher --backbone bert-base-uncased --triples resources/D/triples.train.tsv \
        --queries resources/D/queries.train.tsv --collection resources/D/collection.tsv \
        --out resources/D/models/teacher --checkpoints resources/D/checkpoints/teacher \
        --losses results/D/training/teacher.losses.csv --steps 160000 --batch-size 96 --lr 7e-6 --warmup-steps 10000

`--init-from DIR` instead of `--backbone` starts from a teacher this stage saved (BERT and projection), for
TCT-ColBERT v2's HN+ round: the teacher re-trained on hard negatives from the first teacher's weights. Its
dim, bias, query normalisation and tokenisation conventions come from DIR; a conflicting --dim, --bias,
--unnormalized-queries or length option is refused rather than silently ignored.
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
from pipeline.train.context import Context, seed_everything, setup_context
from pipeline.train.gradcache import BatchObjective, Encodings
from pipeline.train.loop import LoopConfig, add_loop_arguments, finish, fit, loop_config
from pipeline.train.losses import inbatch_cross_entropy, teacher_pairwise_loss
from pipeline.train.resume import fingerprint

log = logging.getLogger(__name__)


def _from_teacher(init_from: Path, conv: Conventions | None, dim: int | None, bias: bool | None,
                  normalize_queries: bool | None) -> ColBERT:
    """The saved teacher at `init_from`; the settings given (None: not given) must be the ones it was saved with."""
    model = ColBERT.load(init_from)
    saved = {"dim": model.linear.out_features, "bias": model.linear.bias is not None,
             "normalize_queries": model.normalize_queries, "conventions": model.conv}
    given = {"dim": dim, "bias": bias, "normalize_queries": normalize_queries, "conventions": conv}
    conflicts = [f"{key} {given[key]!r} (saved: {value!r})" for key, value in saved.items()
                 if given[key] is not None and given[key] != value]
    if conflicts:
        raise ValueError(f"--init-from {init_from}: the teacher there was saved with other settings than those given: "
                         f"{'; '.join(conflicts)}. Drop these options (they are read from the saved teacher) or "
                         f"train from --backbone")
    return model


def train_teacher(backbone: str | None, triples: Path, queries: Path, collection: Path, out: Path,
                  checkpoints: Path, losses: Path, cfg: LoopConfig, conv: Conventions | None = None,
                  dim: int | None = None, bias: bool | None = None, normalize_queries: bool | None = None,
                  inbatch: bool = False, ctx: Context | None = None, init_from: Path | None = None) -> None:
    """Train the ColBERT teacher and save it to `out`.

    It starts from `backbone` (a fresh projection head; `conv`, `dim`, `bias`, `normalize_queries` default to
    ColBERT v1's: the TCT conventions, 128, False, True) or, given `init_from` instead, from the teacher saved
    there, whose settings it keeps (one given that differs from them is a ValueError). The loss is ColBERT
    v1's pairwise softmax cross-entropy over (positive, own negative); with `inbatch` every other passage of
    the batch (of this process's share of it under torchrun) is a negative too, across accumulated
    micro-batches as well (gradient caching).
    """
    if (backbone is None) == (init_from is None):
        raise ValueError("train the teacher from either a backbone (--backbone) or a saved teacher (--init-from), "
                         f"not {'both' if backbone else 'neither'}")
    if init_from is not None and Path(init_from).resolve() == Path(out).resolve():
        raise ValueError(f"--init-from {init_from} is also --out: a rerun would start from its own output")
    ctx = ctx or setup_context()
    seed_everything(cfg.seed)  # the projection head is initialised from this seed
    if init_from is not None:
        model = _from_teacher(init_from, conv, dim, bias, normalize_queries)
        conv, dim, bias, normalize_queries = (model.conv, model.linear.out_features, model.linear.bias is not None,
                                              model.normalize_queries)
    else:
        conv, dim = conv or Conventions(), 128 if dim is None else dim
        bias, normalize_queries = bool(bias), normalize_queries is not False
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
    # The starting weights are an input: a checkpoint of a run from the backbone (or from another teacher) is
    # not resumed by a run from this teacher. A run from a backbone keeps the fingerprint it always had, so its
    # existing checkpoints still resume.
    start = {"backbone": backbone} if init_from is None else {"backbone": None, "init_from": init_from}
    made_from = fingerprint("teacher", {"loop": cfg, "conv": conv, "dim": dim, "bias": bias,
                                        "normalize_queries": normalize_queries, "inbatch": inbatch,
                                        "world": ctx.world},
                            {**start, "triples": triples, "queries": queries, "collection": collection}, ctx)
    fit(model, objective, batches, cfg, checkpoints, made_from, ctx, desc="teacher")
    finish(model.save, checkpoints, out, losses, ctx)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    start = parser.add_mutually_exclusive_group(required=True)
    start.add_argument("--backbone", help="Hub id, local directory, or all-MiniLM-L6-v2 (packaged)")
    start.add_argument("--init-from", type=Path, metavar="DIR",
                       help="a teacher saved by this stage: re-train it (HN+), keeping its dim, bias and conventions")
    add_loop_arguments(parser)
    # Defaults None: with --init-from only the options actually given are checked against the saved teacher.
    parser.add_argument("--dim", type=int, default=None, help="projection size (default 128)")
    parser.add_argument("--bias", action="store_true", default=None, help="bias in the 128-d projection")
    parser.add_argument("--unnormalized-queries", action="store_true", help="as the released TCT teacher")
    parser.add_argument("--inbatch", action="store_true", help="in-batch negatives in the teacher loss")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    conv = Conventions(query_length=args.max_query_length, doc_length=args.max_doc_length,
                       pool_start=args.pool_start)
    train_teacher(args.backbone, args.triples, args.queries, args.collection, args.out, args.checkpoints,
                  args.losses, loop_config(args), conv, dim=args.dim, bias=args.bias,
                  normalize_queries=False if args.unnormalized_queries else None, inbatch=args.inbatch,
                  init_from=args.init_from)


if __name__ == "__main__":
    run_stage(main)
