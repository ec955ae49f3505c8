"""candidate_run: a first-stage run read from a file, for re-ranking (config `rerank.candidates`).

    python -m pipeline.data.candidates --source top1000.dev --queries resources/D/queries.dev.tsv \
        --run results/D/runs/top1000.dev.trec --download-dir resources/downloads

`--source` is an official MS MARCO candidate list, downloaded from the MS MARCO host and checked
against its published md5, or the path of a file of your own:

- `top1000.dev`: `top1000.dev.tar.gz`, the organisers' BM25 top 1000 of the 6,980 dev.small queries,
  the candidates ColBERT v1 re-ranks (Khattab & Zaharia 2020, Table 1);
- `top1000.dl19`: `msmarco-passagetest2019-top1000.tsv.gz`, the same for TREC DL 2019's queries;
- a path: a TREC run (`qid Q0 docid rank score tag`) or MS MARCO's `qid<TAB>pid<TAB>query<TAB>passage`.

MS MARCO's lists carry no scores and are not in rank order, so the run scores them by their order in
the file (the first line of a query scores highest): re-ranking at depth 1000 uses all of them,
and the order then does not matter. Only queries of `--queries` are kept.
"""

from __future__ import annotations

import argparse
import gzip
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from pipeline.archives import open_member
from pipeline.cli import run_stage
from pipeline.data.msmarco import AZURE_HEADERS, OFFICIAL_URL, decoded_lines
from pipeline.download import CHECKSUMS, download
from pipeline.formats import InputFormatError, iter_lines, read_queries, run_line, write_run

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OfficialList:
    file: str
    md5: str
    member: str | None  # inside a tar archive; None for a gzipped file


# MD5s from allenai/ir_datasets (msmarco-passage dev/small and trec-dl-2019 "scoreddocs" resources).
OFFICIAL = {"top1000.dev": OfficialList("top1000.dev.tar.gz", "8c140662bdf123a98fbfe3bb174c5831", "top1000.dev"),
            "top1000.dl19": OfficialList("msmarco-passagetest2019-top1000.tsv.gz",
                                         "ec9e012746aa9763c7ff10b3336a3ce1", None)}


def _pairs(lines: Iterator[tuple[int, str]], origin: str) -> Iterator[tuple[str, str, float | None]]:
    """(qid, pid, score or None) of every line: 4 tab-separated fields (MS MARCO) or a TREC run line."""
    for number, line in lines:
        fields = line.split("\t")
        if len(fields) == 4:
            if not fields[0] or not fields[1]:
                raise InputFormatError(origin, number, "'qid<TAB>pid<TAB>query<TAB>passage'", line)
            yield fields[0], fields[1], None
            continue
        parsed = run_line(origin, number, line)
        if parsed is not None:
            yield parsed


def _official_path(entry: OfficialList, download_dir: Path) -> Path:
    return Path(download_dir) / "msmarco-passage" / entry.file


def _official_lines(entry: OfficialList, download_dir: Path, base_url: str) -> Iterator[tuple[int, str]]:
    archive = download(base_url.rstrip("/") + "/" + entry.file, _official_path(entry, download_dir), entry.md5,
                       headers=AZURE_HEADERS, checksums=Path(download_dir) / CHECKSUMS)
    if entry.member is None:
        with gzip.open(archive, "rb") as stream:
            yield from decoded_lines(stream, str(archive))
        return
    with open_member(archive, entry.member) as stream:
        yield from decoded_lines(stream, f"{archive}:{entry.member}")


def candidate_run(source: str, queries_path: Path, run_path: Path, download_dir: Path = Path("resources/downloads"),
                  base_url: str = OFFICIAL_URL, tag: str | None = None,
                  official: Mapping[str, OfficialList] = OFFICIAL) -> dict:
    """Write `source`'s candidates of the queries in `queries_path` as a TREC run; returns counts.
    `official` maps the names of downloadable lists to their file and md5 (tests serve their own)."""
    queries = read_queries(queries_path)
    if source in official:
        origin = str(_official_path(official[source], download_dir))
        lines = _official_lines(official[source], download_dir, base_url)
    elif Path(source).is_file():
        origin, lines = source, iter_lines(source)
    else:
        raise FileNotFoundError(f"candidates {source!r}: neither an official list ({', '.join(official)}) nor a file")
    ranked: dict[str, dict[str, float]] = {}
    skipped = 0
    for qid, pid, score in _pairs(lines, origin):
        if qid not in queries:
            skipped += 1
            continue
        hits = ranked.setdefault(qid, {})
        if pid not in hits:  # MS MARCO's lists repeat no pair; a run of your own keeps its first
            hits[pid] = -float(len(hits)) if score is None else score
    ordered = {qid: sorted(hits.items(), key=lambda hit: (-hit[1], hit[0])) for qid, hits in ranked.items()}
    write_run(run_path, ordered, tag or Path(source).name)
    record = {"source": source, "queries": len(ordered), "queries_without_candidates": len(queries) - len(ordered),
              "candidates": sum(map(len, ordered.values())), "lines_of_other_queries": skipped}
    log.info("%s: %d candidates for %d of %d queries (%d lines of other queries skipped)", source,
             record["candidates"], record["queries"], len(queries), skipped)
    return record


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True, help=f"{' or '.join(OFFICIAL)}, or a run file")
    parser.add_argument("--queries", type=Path, required=True, help="the split's queries: only these are kept")
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--download-dir", type=Path, default=Path("resources/downloads"))
    parser.add_argument("--base-url", default=OFFICIAL_URL, help="the MS MARCO host (a mirror, or a local server)")
    parser.add_argument("--tag", default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    candidate_run(args.source, args.queries, args.run, args.download_dir, args.base_url, args.tag)


if __name__ == "__main__":
    run_stage(main)
