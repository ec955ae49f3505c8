"""train_doc2query: fine-tune a seq2seq model to generate a passage's queries (docTTTTTquery's recipe).

    python -m pipeline.doc2query.train --collection resources/D/collection.tsv --queries resources/D/queries.train.tsv \
        --qrels resources/D/qrels.train.txt --out resources/D/models/doc2query \
        --checkpoints resources/D/checkpoints/doc2query --losses results/D/training/doc2query.losses.csv \
        --init scratch --steps 4000 --batch-size 256 --lr 1e-4

The pairs are (judged passage -> its query) for every relevance > 0 in the qrels. `--init` is a
seq2seq checkpoint (directory or Hub id, e.g. t5-base as in docTTTTTquery: 512 passage tokens, 64
query tokens, ~4k steps of 256 pairs with Adafactor at a constant 1e-3; AdamW here, whose usual T5
fine-tuning rate is 1e-4) or `scratch`: a small T5 (sizes from the
flags below) over the vocabulary of `--tokenizer`, by default the packaged all-MiniLM-L6-v2's, so
the demo needs no download. The output directory (safetensors + tokenizer) is what
`pipeline.doc2query.generate --model` reads. Optimisation, checkpoints and resuming are the shared
training loop's; `--triples` of the shared options is not used here.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from pipeline.cli import run_stage
from pipeline.doc2query.model import ScratchT5, encode_sources, encode_targets, load_seq2seq, scratch_t5
from pipeline.formats import InputFormatError, read_collection, read_qrels, read_queries
from pipeline.models.backbone import PACKAGED_MINILM
from pipeline.train.batches import Batch, TripleBatches
from pipeline.train.context import Context, seed_everything, setup_context
from pipeline.train.loop import LoopConfig, add_loop_arguments, finish, fit, loop_config
from pipeline.train.resume import fingerprint

log = logging.getLogger(__name__)


class PairBatches(TripleBatches):
    """(query, passage) pairs as a deterministic stream of global batches, for the shared loop.

    It keeps TripleBatches' seeded per-epoch order (`_order`, `_global_rows` need only `rows`,
    `batch_size`, `seed` and `_orders`), so batch k is a pure function of (seed, k) and a resumed
    run sees the pairs it would have seen. Batch.queries are the targets, Batch.positives the
    passages; there are no negatives.
    """

    def __init__(self, pairs: list[tuple[str, str]], queries: dict[str, str], passages: dict[str, str],
                 batch_size: int, seed: int):
        # Not TripleBatches.__init__: that one reads a triples file.
        self.rows, self.batch_size, self.seed, self._orders = pairs, batch_size, seed, {}
        self.query_texts, self.passages = queries, passages

    def micro_batch(self, step: int, part: int, parts: int) -> Batch:
        rows = self._global_rows(step)
        size = len(rows) // parts
        pairs = [self.rows[row] for row in rows[part * size:(part + 1) * size]]
        return Batch([self.query_texts[qid] for qid, _ in pairs], [self.passages[pid] for _, pid in pairs], [])


def read_pairs(collection: Path, queries: Path,
               qrels: Path) -> tuple[list[tuple[str, str]], dict[str, str], dict[str, str]]:
    """Judged (qid, pid) pairs (relevance > 0, qrels order) with the texts they need."""
    texts = read_queries(queries)
    pairs = [(qid, pid) for qid, judged in read_qrels(qrels).items() for pid, rel in judged.items() if rel > 0]
    if not pairs:
        raise InputFormatError(qrels, None, "at least one judgement with relevance > 0")
    missing = next((qid for qid, _ in pairs if qid not in texts), None)
    if missing is not None:
        raise InputFormatError(qrels, None, f"qids from {queries}; {missing} is not there")
    needed = {pid for _, pid in pairs}
    passages = {pid: text for pid, text in read_collection(collection) if pid in needed}
    missing = next((pid for _, pid in pairs if pid not in passages), None)
    if missing is not None:
        raise InputFormatError(qrels, None, f"pids from {collection}; {missing} is not there")
    return pairs, {qid: texts[qid] for qid, _ in pairs}, passages


def train_doc2query(collection: Path, queries: Path, qrels: Path, out: Path, checkpoints: Path, losses: Path,
                    cfg: LoopConfig, init: str = "scratch", tokenizer: str = PACKAGED_MINILM,
                    size: ScratchT5 | None = None, max_source_length: int = 512, max_target_length: int = 64,
                    ctx: Context | None = None) -> None:
    """Train a (passage -> query) seq2seq model on the judged pairs and save it to `out`.

    `init` is a seq2seq checkpoint (its own tokenizer is used) or "scratch" (a T5 of `size` over
    `tokenizer`'s vocabulary, initialised from cfg.seed).
    """
    ctx = ctx or setup_context()
    seed_everything(cfg.seed)
    if init == "scratch":
        size = size or ScratchT5()
        model, vocab = scratch_t5(tokenizer, size)
    else:
        model, vocab = load_seq2seq(init)
    eos = model.config.eos_token_id
    if eos is None or model.config.decoder_start_token_id is None:
        raise ValueError(f"'{init}' has no eos or decoder start token in its config: not usable as doc2query")
    pairs, query_texts, passages = read_pairs(collection, queries, qrels)
    log.info("%d (passage, query) pairs over %d passages", len(pairs), len(passages))
    batches = PairBatches(pairs, query_texts, passages, cfg.batch_size, cfg.seed)

    def loss_fn(module: nn.Module, batch: Batch) -> torch.Tensor:
        sources = encode_sources(vocab, batch.positives, max_source_length).to(ctx.device)
        labels = encode_targets(vocab, batch.queries, max_target_length, eos).to(ctx.device)
        return module(**sources, labels=labels).loss  # token-level cross-entropy, padding ignored

    made_from = fingerprint("doc2query",
                            {"init": "scratch" if init == "scratch" else "checkpoint",
                             "size": asdict(size) if init == "scratch" else None, "loop": cfg,
                             "max_source_length": max_source_length, "max_target_length": max_target_length,
                             "world": ctx.world},
                            {"init": None if init == "scratch" else init,
                             "tokenizer": tokenizer if init == "scratch" else None,
                             "collection": collection, "queries": queries, "qrels": qrels},
                            ctx)

    def save(directory: Path) -> None:
        model.save_pretrained(directory)  # safetensors
        vocab.save_pretrained(directory)

    fit(model, loss_fn, batches, cfg, checkpoints, made_from, ctx, desc="doc2query")
    finish(save, checkpoints, out, losses, ctx)


def _not_triples(parser: argparse.ArgumentParser) -> None:
    """The shared options are written for stages trained on triples: this one learns from qrels, so
    --triples is neither required nor shown, and T5's lengths replace the 4-token-prefix ones."""
    for action in parser._actions:
        if action.dest == "triples":
            action.required, action.help = False, argparse.SUPPRESS
        elif action.dest in ("max_query_length", "max_doc_length"):
            action.help = argparse.SUPPRESS


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--qrels", type=Path, required=True, help="train qrels: pairs are judgements with rel > 0")
    add_loop_arguments(parser)
    _not_triples(parser)
    parser.add_argument("--init", default="scratch", help="'scratch', or a seq2seq directory or Hub id (t5-base)")
    parser.add_argument("--tokenizer", default=PACKAGED_MINILM,
                        help="with --init scratch: the WordPiece vocabulary (directory, Hub id or all-MiniLM-L6-v2)")
    defaults = ScratchT5()
    parser.add_argument("--d-model", type=int, default=defaults.d_model)
    parser.add_argument("--encoder-layers", type=int, default=defaults.encoder_layers)
    parser.add_argument("--decoder-layers", type=int, default=defaults.decoder_layers)
    parser.add_argument("--heads", type=int, default=defaults.heads)
    parser.add_argument("--d-ff", type=int, default=defaults.d_ff)
    parser.add_argument("--dropout", type=float, default=defaults.dropout)
    parser.add_argument("--max-source-length", type=int, default=512, help="passage tokens")
    parser.add_argument("--max-target-length", type=int, default=64, help="query tokens, eos included")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    size = ScratchT5(args.d_model, args.encoder_layers, args.decoder_layers, args.heads, args.d_ff, args.dropout)
    train_doc2query(args.collection, args.queries, args.qrels, args.out, args.checkpoints, args.losses,
                    loop_config(args), args.init, args.tokenizer, size, args.max_source_length,
                    args.max_target_length)


if __name__ == "__main__":
    run_stage(main)
