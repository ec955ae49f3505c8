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
be learnt or measured from them. All files appear together or not at all.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from tqdm import tqdm

from pipeline.cli import run_stage
from pipeline.data import Source
from pipeline.io import InputFormatError, write_id_text, write_qrels, write_triples

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


def prepare_data(source: Source, out_dir: Path, splits: list[str], unknown_judged: str = "error") -> dict:
    """Validate `source` and write its normalised files into `out_dir`; returns the manifest.

    `unknown_judged` says what to do with judgements of passages absent from the collection:
    `error` (the default: usually a broken dataset), or, for deliberate sub-collections such as
    msmarco-dl-mini, `keep` them as published (recall still counts them) or `drop` them.
    """
    if unknown_judged not in UNKNOWN_JUDGED:
        raise ValueError(f"unknown_judged must be one of {UNKNOWN_JUDGED}, not {unknown_judged!r}")
    out_dir = Path(out_dir)
    missing = [s for s in splits if s not in source.splits]
    if missing:
        raise ValueError(f"split(s) {missing} not in this dataset; it has {sorted(source.splits)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".prepare.", dir=out_dir))
    try:
        manifest = _write_all(source, staging, splits, unknown_judged)
        for item in sorted(staging.iterdir()):
            os.replace(item, out_dir / item.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest


def _write_all(source: Source, staging: Path, splits: list[str], unknown_judged: str) -> dict:
    pids: set[str] = set()

    def checked_collection():
        for pid, text in tqdm(source.collection(), desc="collection", unit="doc", mininterval=5):
            if pid in pids:
                raise InputFormatError(source.collection_origin, None, f"unique pids; {pid} appears twice")
            if not text.strip():
                raise InputFormatError(source.collection_origin, None, f"non-empty text for pid {pid}")
            pids.add(pid)
            yield pid, text

    manifest: dict = {"collection": write_id_text(staging / "collection.tsv", checked_collection()),
                      "splits": {}, "notes": list(source.notes)}
    for name in splits:
        split = source.splits[name]
        for qid in split.qrels:
            if qid not in split.queries:
                path, line = _locate(split.origin, qid)
                raise InputFormatError(path, line, f"judgements only for known queries; qid {qid} has no query text")
        qrels, outside = {}, 0
        for qid, judged in split.qrels.items():
            unknown = [pid for pid in judged if pid not in pids]
            if unknown and unknown_judged == "error":
                path, line = _locate(split.origin, unknown[0])
                raise InputFormatError(path, line, f"judged passages from the collection; pid {unknown[0]} is not in "
                                       "it (set dataset.unknown_judged to keep or drop for a sub-collection)")
            outside += len(unknown)
            qrels[qid] = {p: r for p, r in judged.items() if p in pids} if unknown_judged == "drop" else judged
        if outside:
            log.warning("split %s: %d judgements name passages outside the collection (%s)", name, outside,
                        "dropped" if unknown_judged == "drop" else "kept as published")
        kept = {qid: text for qid, text in split.queries.items() if qrels.get(qid)}
        if not kept:
            raise ValueError(f"split '{name}' ({split.origin}): no query has judgements")
        dropped = len(split.queries) - len(kept)
        if dropped:
            log.info("split %s: dropped %d of %d queries that have no judgements", name, dropped, len(split.queries))
        write_id_text(staging / f"queries.{name}.tsv", kept.items())
        write_qrels(staging / f"qrels.{name}.txt", {qid: qrels[qid] for qid in kept})
        manifest["splits"][name] = {"queries": len(kept), "dropped_unjudged": dropped,
                                    "judgements": sum(len(qrels[q]) for q in kept), "judged_outside": outside}
    if source.triples is not None:
        train = source.splits.get("train")

        def checked_triples():
            for number, (qid, pos, neg) in enumerate(source.triples(), start=1):
                if train is not None and qid not in train.queries:
                    raise InputFormatError(source.triples_origin, number, f"a train qid; {qid} is not a train query")
                for pid in (pos, neg):
                    if pid not in pids:
                        raise InputFormatError(source.triples_origin, number,
                                               f"pids from the collection; {pid} is not in it")
                yield qid, pos, neg

        manifest["triples"] = write_triples(staging / "triples.train.tsv", checked_triples())
    with open(staging / "manifest.json", "w", encoding="utf-8") as out:
        json.dump(manifest, out, indent=2)
    return manifest


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

        return beir_source(args.name, args.location, args.download_dir, args.splits)
    if args.source == "msmarco-local":
        from pipeline.data.local import msmarco_local_source

        return msmarco_local_source(Path(args.location), args.splits, _parse_files(args.files))
    from pipeline.data.msmarco import msmarco_passage_source

    kwargs = {"base_url": args.location} if args.location else {}
    return msmarco_passage_source(args.download_dir, **kwargs)


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
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--n-passages", type=int, default=3000)
    parser.add_argument("--n-train", type=int, default=2000)
    parser.add_argument("--n-dev", type=int, default=200)
    parser.add_argument("--n-dl", type=int, default=30)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    manifest = prepare_data(build_source(args), args.out, args.splits, args.unknown_judged)
    log.info("prepared %s: %s", args.out, json.dumps(manifest))


if __name__ == "__main__":
    run_stage(main)
