"""doc2query predictions: the docTTTTTquery JSON-lines format, and castorini's Hugging Face release fetched.

One passage per line, `{"id": "<pid>", "predicted_queries": ["q1", "q2", ...]}`: castorini's Hugging
Face release for MS MARCO v1 passage (80 top-k sampled queries per passage, in collection order),
what `pipeline.doc2query.generate` writes, and what `pipeline.doc2query.release` makes of the
original md5-verified zip (the pipeline's default; this download, pinned by a first-use checksum, is
`doc2query.download.release: jsonl`). Plain and gzipped (.gz) files are read alike.

    python -m pipeline.doc2query.predictions --download-dir resources/downloads/doc2query \
        --out resources/msmarco-passage/doc2query/predictions.jsonl
    python -m pipeline.doc2query.predictions --merge gen/shard-0.jsonl gen/shard-1.jsonl --out predictions.jsonl

Downloading fetches each part (resumable; md5-verified when an md5 is known, else pinned on first use
by size and sha256 in `checksums.tsv` in the parent of the download directory, the pipeline's
`resources/downloads/checksums.tsv`) and writes them, in order, as one normalised predictions file;
`--merge` does the same with local files (e.g. the shards of a generation run, in shard order, which
gives collection order).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urljoin, urlsplit

from tqdm import tqdm

from pipeline.cli import run_stage
from pipeline.download import CHECKSUMS, download
from pipeline.durable import atomic_output
from pipeline.formats import format_prediction, iter_predictions

log = logging.getLogger(__name__)

HF_BASE_URL = "https://huggingface.co/datasets/castorini/msmarco_v1_passage_doc2query-t5_expansions/resolve/main/"
# The MS MARCO v1 passage release is a single 4.0 GB `d2q.jsonl.gz` (its dataset card loads it with
# data_files='d2q.jsonl.gz'); castorini's v2 releases are split into `d2q/d2q.jsonlNNN.gz` parts, which
# is why a list of parts is accepted. No md5 is published for it (the Hub shows only the LFS sha256,
# which we could not confirm), so it is pinned on first use (md5 None): the first download is checked to
# the end of its gzip stream, then its size and sha256 are recorded and every later use must match them.
# Every line is still checked while merging, so a bad record stops with file and line.
OFFICIAL_PARTS: tuple[tuple[str, str | None], ...] = (("d2q.jsonl.gz", None),)
def merge_predictions(inputs: Sequence[Path], out: Path, progress: bool = True) -> int:
    """Check `inputs` and write them, in order, as one normalised predictions file; returns its line count."""
    count = 0
    with atomic_output(out) as handle:
        for path in inputs:
            for _, pid, queries in tqdm(iter_predictions(path), desc=Path(path).name, unit="passage",
                                        mininterval=5, disable=not progress):
                handle.write(format_prediction(pid, queries))
                count += 1
    return count


def fetch_predictions(parts: Sequence[tuple[str, str | None]], download_dir: Path, out: Path,
                      base_url: str = HF_BASE_URL, progress: bool = True, checksums: Path | None = None) -> int:
    """Download each (name or URL relative to `base_url`, md5 or None) part into `download_dir`, then
    merge them in order into the predictions file `out`; returns the number of passages.

    A part without an md5 is pinned on first use in `checksums` (default: `checksums.tsv` in the parent of
    `download_dir`: the pipeline downloads into `<dataset download_dir>/doc2query`, so one file holds the
    first-use checksums of the datasets and of the predictions)."""
    download_dir = Path(download_dir)
    checksums = download_dir.absolute().parent / CHECKSUMS if checksums is None else Path(checksums)
    files = []
    for name, md5 in parts:
        url = urljoin(base_url, name)
        files.append(download(url, download_dir / Path(urlsplit(url).path).name, md5, progress=progress,
                              checksums=checksums))
    return merge_predictions(files, out, progress)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="predictions file to write (JSON lines)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--download-dir", type=Path, help="where the downloaded parts are kept (and resumed)")
    source.add_argument("--merge", type=Path, nargs="+", metavar="FILE", help="local prediction files, in order")
    parser.add_argument("--base-url", default=HF_BASE_URL)
    parser.add_argument("--part", nargs=2, action="append", metavar=("NAME", "MD5"),
                        help="a part to download (repeatable; MD5 'none': pinned by size and sha256 on first use); "
                             "default: " + " ".join(name for name, _ in OFFICIAL_PARTS))
    parser.add_argument("--checksums", type=Path,
                        help=f"first-use checksums file (default: {CHECKSUMS} in the parent of --download-dir)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.merge:
        count = merge_predictions(args.merge, args.out)
    else:
        parts = ([(name, None if md5.lower() == "none" else md5) for name, md5 in args.part] if args.part
                 else list(OFFICIAL_PARTS))
        count = fetch_predictions(parts, args.download_dir, args.out, args.base_url, checksums=args.checksums)
    log.info("wrote predictions for %d passages to %s", count, args.out)


if __name__ == "__main__":
    run_stage(main)
