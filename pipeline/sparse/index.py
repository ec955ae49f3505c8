"""Build an Anserini (Lucene) BM25 index of an MS MARCO-format collection.

    python -m pipeline.sparse.index --collection resources/D/collection.tsv --index resources/D/bm25 --threads 8
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from contextlib import ExitStack
from pathlib import Path

from pipeline.cli import run_stage
from pipeline.durable import atomic_directory
from pipeline.formats import read_collection
from pipeline.sparse.jvm import start_jvm

log = logging.getLogger(__name__)


def build_bm25_index(collection: Path, index_dir: Path, threads: int = 1, max_heap: str | None = None) -> dict:
    """Index `collection` (pid<TAB>text) into `index_dir`; returns the manifest written beside it.

    The collection is split round-robin into one JSONL file per thread because Anserini's
    IndexCollection parallelises over input files, not within one.
    """
    start_jvm(max_heap)
    from jnius import autoclass

    started = time.perf_counter()
    with atomic_directory(index_dir) as staging:
        shards = staging / "jsonl"
        shards.mkdir()
        count = 0
        with ExitStack() as stack:
            outs = [stack.enter_context(open(shards / f"part{i:03d}.jsonl", "w", encoding="utf-8"))
                    for i in range(max(threads, 1))]
            for pid, text in read_collection(collection):
                outs[count % len(outs)].write(json.dumps({"id": pid, "contents": text}, ensure_ascii=False) + "\n")
                count += 1
        lucene = staging / "lucene"
        args = ["-collection", "JsonCollection", "-generator", "DefaultLuceneDocumentGenerator",
                "-input", str(shards), "-index", str(lucene), "-threads", str(max(threads, 1))]
        log.info("IndexCollection %s", " ".join(args))
        autoclass("io.anserini.index.IndexCollection").main(args)
        indexed = autoclass("io.anserini.index.IndexReaderUtils").getIndexStats(
            autoclass("io.anserini.index.IndexReaderUtils").getReader(str(lucene))).get("documents")
        if int(indexed) != count:
            raise RuntimeError(f"Anserini indexed {indexed} documents of the {count} in {collection}")
        for part in shards.iterdir():
            part.unlink()
        shards.rmdir()
        manifest = {"collection": str(collection), "documents": count, "threads": threads,
                    "seconds": round(time.perf_counter() - started, 3)}
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def lucene_dir(index_dir: Path) -> Path:
    """Where the Lucene files of an index built by `build_bm25_index` live."""
    return Path(index_dir) / "lucene"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--collection", type=Path, required=True)
    parser.add_argument("--index", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-heap", default=None, help="JVM -Xmx, e.g. 8g")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    manifest = build_bm25_index(args.collection, args.index, args.threads, args.max_heap)
    log.info("indexed %d documents in %.1f s", manifest["documents"], manifest["seconds"])


if __name__ == "__main__":
    run_stage(main)
