"""prepare_data: normalise a dataset into MS MARCO-format files under resources/<dataset>/.

    python -m pipeline.data.prepare --source synthetic --out resources/synthetic --splits train dev dl
    python -m pipeline.data.prepare --source beir --name scifact --location ../shared/data/scifact \
        --out resources/scifact --splits train test
    python -m pipeline.data.prepare --source msmarco-local --location ../shared/data/msmarco-dl-mini \
        --out resources/dl-mini --splits dl19 --files dl19=topics.dl19-passage.txt,qrels.dl19-passage.txt
    python -m pipeline.data.prepare --source msmarco-passage --out resources/msmarco-passage \
        --splits train dev dl19 --download-dir resources/downloads

Writes collection.tsv, queries.<split>.tsv, qrels.<split>.txt (TREC), triples.train.tsv when the
source has official triples, and manifest.json with the counts. Cross-file checks happen here:
qrels naming unknown passages or queries stop the run; queries without any judgement are dropped
and counted (the official MS MARCO train and TREC DL topic files contain many), since nothing can
be learnt or measured from them. Passages and queries with empty text stop the run too, unless
`--empty-text drop` leaves them out (counted, with what named them; see `prepare_data`). All files
appear together or not at all.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tqdm import tqdm

from pipeline.cli import run_stage
from pipeline.data import EMPTY_TEXT, Source, Split, refuse_empty
from pipeline.formats import InputFormatError, write_id_text, write_qrels, write_triples

log = logging.getLogger(__name__)

SOURCES = ("msmarco-passage", "beir", "msmarco-local", "synthetic")


def _locate(origin: str, token: str) -> tuple[str, int | None]:
    """Find the file and line of `origin` (paths joined by ' / ') where `token` first occurs as a field."""
    for candidate in origin.split(" / "):
        if os.path.isfile(candidate):
            with open(candidate, encoding="utf-8", errors="replace") as handle:
                for number, line in enumerate(handle, start=1):
                    if token in line.replace("\t", " ").split():
                        return candidate, number
    return origin, None


UNKNOWN_JUDGED = ("error", "keep", "drop")


def prepare_data(source: Source, out_dir: Path, splits: list[str], unknown_judged: str = "error",
                 empty_text: str = "error") -> dict:
    """Validate `source` and write its normalised files into `out_dir`; returns the manifest.

    `unknown_judged` says what to do with judgements of passages absent from the collection:
    `error` (the default: usually a broken dataset), or, for deliberate sub-collections such as
    msmarco-dl-mini, `keep` them as published (recall still counts them) or `drop` them.

    `empty_text` says what to do with passages and queries whose text is empty or whitespace: `error`
    (the default), or `drop` them. File sources refuse them as they read, naming file and line, unless
    built with the same `empty_text`. Judgements of a dropped passage then follow `unknown_judged` like
    those of a passage absent from the collection; judgements of a dropped query are dropped (it cannot
    be evaluated), and so are official triples naming a dropped passage or query (no dangling ids).

    Manifest: `collection` passages written, `dropped_empty_passages`; per split (`splits.<name>`),
    `queries` written, `dropped_unjudged` and `dropped_empty_queries` (queries left out), `judgements`
    written, `judged_outside` (judgements naming a passage not in collection.tsv, kept or dropped as
    `unknown_judged` says), `dropped_empty_query_judgements` and `negative_judgements` (written
    judgements with relevance < 0, such as TREC's -1 for junk: kept as published, and like trec_eval
    every stage treats relevance <= 0 as not relevant); with triples, `triples` written and
    `dropped_triples_naming_empty`.
    """
    if unknown_judged not in UNKNOWN_JUDGED:
        raise ValueError(f"unknown_judged must be one of {UNKNOWN_JUDGED}, not {unknown_judged!r}")
    if empty_text not in EMPTY_TEXT:
        raise ValueError(f"empty_text must be one of {EMPTY_TEXT}, not {empty_text!r}")
    out_dir = Path(out_dir)
    missing = [s for s in splits if s not in source.splits]
    if missing:
        raise ValueError(f"split(s) {missing} not in this dataset; it has {sorted(source.splits)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob(".prepare.*"):  # left by a killed run: SIGKILL skips the clean-up below
        shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=".prepare.", dir=out_dir))
    try:
        manifest = _write_all(source, staging, splits, unknown_judged, empty_text)
        for item in sorted(staging.iterdir()):
            os.replace(item, out_dir / item.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest


def _write_all(source: Source, staging: Path, splits: list[str], unknown_judged: str, empty_text: str) -> dict:
    pids: set[str] = set()
    empty: set[str] = set()  # pids left out for empty text
    written = write_id_text(staging / "collection.tsv", _checked_collection(source, pids, empty, empty_text))
    manifest: dict = {"collection": written, "dropped_empty_passages": len(empty), "splits": {},
                      "notes": list(source.notes)}
    if empty:
        log.warning("dropped %d passages with empty text", len(empty))
    for name in splits:
        manifest["splits"][name] = _write_split(name, source.splits[name], staging, pids, empty, unknown_judged,
                                                empty_text)
    if source.triples is not None:
        manifest["triples"], manifest["dropped_triples_naming_empty"] = _write_triples(source, staging, pids, empty)
    with open(staging / "manifest.json", "w", encoding="utf-8") as out:
        json.dump(manifest, out, indent=2)
    return manifest


def _checked_collection(source: Source, pids: set[str], empty: set[str],
                        empty_text: str) -> Iterator[tuple[str, str]]:
    """Stream the collection, recording its pids in `pids` and those left out for empty text in `empty`."""
    for pid, text in tqdm(source.collection(), desc="collection", unit="doc", mininterval=5):
        if pid in pids or pid in empty:
            raise InputFormatError(source.collection_origin, None, f"unique pids; {pid} appears twice")
        if not text.strip():
            refuse_empty(source.collection_origin, None, f"non-empty text for pid {pid}", empty_text)
            empty.add(pid)
            continue
        pids.add(pid)
        yield pid, text


def _write_split(name: str, split: Split, staging: Path, pids: set[str], empty_pids: set[str],
                 unknown_judged: str, empty_text: str) -> dict:
    """Write one split's queries and qrels after the cross-file checks; returns its manifest entry."""
    for qid in split.qrels:
        if qid not in split.queries:
            path, line = _locate(split.origin, qid)
            raise InputFormatError(path, line, f"judgements only for known queries; qid {qid} has no query text")
    empty = dict.fromkeys(qid for qid, text in split.queries.items() if not text.strip())
    if empty:  # file sources refuse these as they read (naming the line) unless told to drop them
        refuse_empty(split.origin, None, f"non-empty text for qid {next(iter(empty))}", empty_text)
    empty_judgements = sum(len(split.qrels.get(qid, {})) for qid in empty)
    qrels, outside = {}, 0
    for qid, judged in split.qrels.items():
        if qid in empty:
            continue
        unknown = [pid for pid in judged if pid not in pids]
        if unknown and unknown_judged == "error":
            raise _judged_outside_error(split.origin, unknown[0], unknown[0] in empty_pids)
        outside += len(unknown)
        qrels[qid] = {p: r for p, r in judged.items() if p in pids} if unknown_judged == "drop" else judged
    if outside:
        log.warning("split %s: %d judgements name passages outside the collection (%s)", name, outside,
                    "dropped" if unknown_judged == "drop" else "kept as published")
    if empty:
        log.warning("split %s: dropped %d queries with empty text and their %d judgements", name, len(empty),
                    empty_judgements)
    kept = {qid: text for qid, text in split.queries.items() if qrels.get(qid)}
    if not kept:
        raise ValueError(f"split '{name}' ({split.origin}): no query has judgements")
    unjudged = len(split.queries) - len(kept) - len(empty)
    if unjudged:
        log.info("split %s: dropped %d of %d queries that have no judgements", name, unjudged, len(split.queries))
    write_id_text(staging / f"queries.{name}.tsv", kept.items())
    write_qrels(staging / f"qrels.{name}.txt", {qid: qrels[qid] for qid in kept})
    return {"queries": len(kept), "dropped_unjudged": unjudged, "dropped_empty_queries": len(empty),
            "judgements": sum(len(qrels[q]) for q in kept), "judged_outside": outside,
            "dropped_empty_query_judgements": empty_judgements,
            "negative_judgements": sum(rel < 0 for q in kept for rel in qrels[q].values())}


def _judged_outside_error(origin: str, pid: str, was_empty: bool) -> InputFormatError:
    path, line = _locate(origin, pid)
    if was_empty:
        return InputFormatError(path, line, f"judged passages from the collection; pid {pid} was dropped for its "
                                "empty text (set dataset.unknown_judged to keep or drop its judgements, or "
                                "dataset.empty_text to error to stop at the passage itself)")
    return InputFormatError(path, line, f"judged passages from the collection; pid {pid} is not in it "
                            "(set dataset.unknown_judged to keep or drop for a sub-collection)")


def _write_triples(source: Source, staging: Path, pids: set[str], empty_pids: set[str]) -> tuple[int, int]:
    """Write the official triples checked against the collection and the train queries.

    Triples naming a passage or query left out for empty text are left out too; returns
    (written, left out).
    """
    train = source.splits.get("train")
    empty_qids = {qid for qid, text in train.queries.items() if not text.strip()} if train is not None else set()
    left_out = 0

    def checked_triples() -> Iterator[tuple[str, str, str]]:
        nonlocal left_out
        for number, (qid, pos, neg) in enumerate(source.triples(), start=1):
            if train is not None and qid not in train.queries:
                raise InputFormatError(source.triples_origin, number, f"a train qid; {qid} is not a train query")
            if qid in empty_qids or pos in empty_pids or neg in empty_pids:
                left_out += 1
                continue
            for pid in (pos, neg):
                if pid not in pids:
                    raise InputFormatError(source.triples_origin, number,
                                           f"pids from the collection; {pid} is not in it")
            yield qid, pos, neg

    written = write_triples(staging / "triples.train.tsv", checked_triples())
    if left_out:
        log.warning("dropped %d triples naming a passage or query with empty text", left_out)
    return written, left_out


def _parse_files(pairs: list[str]) -> dict[str, dict[str, str]]:
    """`split=queries_file,qrels_file` items into {split: {queries, qrels}}."""
    files = {}
    for pair in pairs:
        split, _, names = pair.partition("=")
        queries, _, qrels = names.partition(",")
        if not (split and queries and qrels):
            raise ValueError(f"--files expects split=queries_file,qrels_file, got {pair!r}")
        files[split] = {"queries": queries, "qrels": qrels}
    return files


def build_source(args: argparse.Namespace) -> Source:
    """Construct the chosen source from command-line arguments."""
    if args.source == "synthetic":
        from pipeline.data.synthetic import synthetic_source

        return synthetic_source(seed=args.seed, n_passages=args.n_passages, n_train=args.n_train,
                                n_dev=args.n_dev, n_dl=args.n_dl)
    if args.source == "beir":
        from pipeline.data.beir import beir_source

        return beir_source(args.name, args.location, args.download_dir, args.splits, args.empty_text)
    if args.source == "msmarco-local":
        from pipeline.data.local import msmarco_local_source

        return msmarco_local_source(Path(args.location), args.splits, _parse_files(args.files), args.empty_text)
    from pipeline.data.msmarco import msmarco_passage_source

    kwargs = {"base_url": args.location} if args.location else {}
    return msmarco_passage_source(args.download_dir, empty_text=args.empty_text, **kwargs)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", choices=SOURCES, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--splits", nargs="+", required=True)
    parser.add_argument("--name", default="", help="BEIR dataset name (beir)")
    parser.add_argument("--location", default="", help="local directory or base URL (beir, msmarco-*)")
    parser.add_argument("--download-dir", type=Path, default=Path("resources/downloads"))
    parser.add_argument("--files", nargs="*", default=[], help="msmarco-local: split=queries_file,qrels_file")
    parser.add_argument("--unknown-judged", choices=UNKNOWN_JUDGED, default="error",
                        help="judgements of passages absent from the collection")
    parser.add_argument("--empty-text", choices=EMPTY_TEXT, default="error",
                        help="passages and queries with empty text: stop (error) or leave them out (drop)")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--n-passages", type=int, default=3000)
    parser.add_argument("--n-train", type=int, default=2000)
    parser.add_argument("--n-dev", type=int, default=200)
    parser.add_argument("--n-dl", type=int, default=30)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    manifest = prepare_data(build_source(args), args.out, args.splits, args.unknown_judged, args.empty_text)
    log.info("prepared %s: %s", args.out, json.dumps(manifest))


if __name__ == "__main__":
    run_stage(main)
