"""cross_encoder_rerank: the cross-encoder re-scores each query's first-stage top `depth` (Table 4's reference row,
the teacher of the Margin-MSE students ranking on its own).

    python -m pipeline.cross_encoder_rerank --model resources/D/models/cross_encoder \
        --queries resources/D/queries.dev.tsv --collection resources/D/collection.tsv \
        --candidates results/D/runs/bm25.dev.trec --run results/D/runs/cross_encoder-bm25.dev.trec --depth 1000

Every (query, passage) pair goes through BERT, so at MS MARCO's scale (7M pairs on dev.small) the stage runs for
hours: finished queries are appended to `<run>.partial-<inputs digest>` as they complete, and a restarted job
with the same inputs skips them. Only the candidates' passages are kept in memory, read in one pass over the
collection.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from pipeline import precision as amp_precision
from pipeline.cli import run_stage
from pipeline.dense.runtime import device_name
from pipeline.durable import atomic_output
from pipeline.formats import read_collection, read_queries, read_run, run_line, write_run
from pipeline.models.cross_encoder import CrossEncoder, PairLengths
from pipeline.timing import rerank_latency, time_each
from pipeline.train.resume import source_digest

log = logging.getLogger(__name__)

FLUSH_EVERY = 50  # queries between fsyncs of the partial run: a kill loses at most this much work


def _run_lines(qid: str, hits: list[tuple[str, float]], tag: str) -> str:
    """One query's lines of the partial run, scores in full (the final run is written from them)."""
    return "".join(f"{qid} Q0 {pid} {rank} {score!r} {tag}\n" for rank, (pid, score) in enumerate(hits, 1))


def _finished(partial: Path) -> dict[str, list[tuple[str, float]]]:
    """Queries a killed job completed: the partial run's whole lines, less its last query (maybe cut short)."""
    if not partial.exists():
        return {}
    ranked: dict[str, list[tuple[str, float]]] = {}
    text = partial.read_text()
    lines = text.splitlines()[: text.count("\n")]  # a last line without its newline was cut by the kill
    for number, line in enumerate(lines, 1):
        parsed = run_line(partial, number, line)
        if parsed:
            qid, pid, score = parsed
            ranked.setdefault(qid, []).append((pid, score))
    if ranked:
        ranked.pop(next(reversed(ranked)))
    return ranked


def cross_encoder_rerank(model: str, queries_path: Path, collection: Path, candidates: Path, run_path: Path,
                         depth: int = 1000, lengths: PairLengths | None = None, batch_size: int = 64,
                         precision: str = "auto", latency_queries: int = 200,
                         tag: str = "cross_encoder-rerank") -> dict:
    """Re-rank the top `depth` candidates of every query by the cross-encoder's score (pairs cut to `lengths`, by
    default the model's own); returns the timing record."""
    encoder = CrossEncoder.load(model, lengths)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    encoder.to(device).eval()
    resolved = amp_precision.resolve_and_log(precision, device, "cross_encoder_rerank")
    queries, first_stage = read_queries(queries_path), read_run(candidates)
    tops = {qid: sorted(first_stage.get(qid, {}), key=lambda p: -first_stage[qid][p])[:depth] for qid in queries}
    needed = {pid for pids in tops.values() for pid in pids}
    passages = {pid: text for pid, text in read_collection(collection) if pid in needed}
    missing = needed - passages.keys()
    if missing:
        raise ValueError(f"{candidates} ranks {len(missing)} passages absent from {collection}, "
                         f"e.g. {sorted(missing)[0]!r}: re-rank a run of this collection")

    def rerank(qid: str) -> list[tuple[str, float]]:
        pids = tops[qid]
        scores = np.empty(len(pids), dtype=np.float32)
        for start in range(0, len(pids), batch_size):
            chunk = pids[start:start + batch_size]
            with amp_precision.autocast(device, resolved):
                batch = encoder.score([queries[qid]] * len(chunk), [passages[pid] for pid in chunk])
            scores[start:start + len(chunk)] = batch.float().cpu().numpy()
        order = np.lexsort((np.array(pids), -scores))  # score, then docid for a deterministic order
        return [(pids[i], float(scores[i])) for i in order]

    # The partial run is named by what it was made from, so a restart after changed inputs starts afresh.
    made_from = source_digest([model, queries_path, collection, candidates,
                               {"depth": depth, "lengths": asdict(encoder.lengths), "tag": tag,
                                "precision": resolved}])
    partial = Path(f"{run_path}.partial-{made_from.rpartition(':')[2][:16]}")
    for stale in Path(run_path).parent.glob(f"{Path(run_path).name}.partial-*"):
        if stale != partial:
            stale.unlink()
    ranked = _finished(partial)
    if ranked:
        log.info("resuming: %d queries re-ranked before, read from %s", len(ranked), partial)
    with atomic_output(partial) as out:  # the queries kept, without a last one cut short
        out.writelines(_run_lines(qid, hits, tag) for qid, hits in ranked.items())
    with torch.inference_mode():
        with open(partial, "a") as out:
            for done, qid in enumerate(tqdm([q for q in queries if q not in ranked], desc="cross-encoder rerank",
                                            unit="q", mininterval=5), 1):
                ranked[qid] = rerank(qid)
                out.write(_run_lines(qid, ranked[qid], tag))
                if done % FLUSH_EVERY == 0:
                    out.flush()
                    os.fsync(out.fileno())
        timing = time_each(list(queries)[:latency_queries], rerank)
    write_run(run_path, {qid: ranked[qid] for qid in queries}, tag)
    partial.unlink()
    record = {"queries": len(queries), "depth": depth, "pairs": sum(map(len, tops.values())),
              "device": device_name(device), "threads": torch.get_num_threads(), **rerank_latency(candidates, timing),
              **amp_precision.describe(resolved)}
    with atomic_output(Path(run_path).with_suffix(".latency.json")) as out:
        json.dump(record, out, indent=2)
    return record


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a cross-encoder directory, or a published one (Hub id)")
    parser.add_argument("--queries", type=Path, required=True)
    parser.add_argument("--collection", type=Path, required=True)
    parser.add_argument("--candidates", type=Path, required=True)
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--depth", type=int, default=1000)
    parser.add_argument("--max-query-length", type=int, help="word pieces of the query (default: the model's own)")
    parser.add_argument("--pair-length", type=int, help="word pieces of the pair (default: the model's own)")
    parser.add_argument("--batch-size", type=int, default=64, help="pairs per forward pass")
    parser.add_argument("--latency-queries", type=int, default=200)
    parser.add_argument("--tag", default="cross_encoder-rerank")
    amp_precision.add_precision_argument(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if (args.max_query_length is None) != (args.pair_length is None):
        parser.error("give both --max-query-length and --pair-length, or neither")
    lengths = PairLengths(args.max_query_length, args.pair_length) if args.pair_length else None
    record = cross_encoder_rerank(args.model, args.queries, args.collection, args.candidates, args.run, args.depth,
                                  lengths, args.batch_size, args.precision, args.latency_queries, args.tag)
    log.info("re-ranked %d queries (%d pairs): %s ms/query", record["queries"], record["pairs"],
             record["rerank_ms_median"])


if __name__ == "__main__":
    run_stage(main)
