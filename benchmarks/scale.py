"""Scale: wall time and peak RSS of each retrieval stage at 100k and 1M passages, on this machine.

A seeded collection of short passages (20-40 made-up words) is streamed to disk, then every
stage runs as its own process with the arguments its Snakemake rule passes (rules/dense.smk,
rules/bm25.smk): encode_corpus as 16 sequential shard jobs with a tiny random BERT, build_index
(flat), encode_queries and dense_run for 1,000 queries, bm25_index and bm25_run. Peak RSS is the
ru_maxrss of that one process, read by GNU `time -v` (or an os.wait4 wrapper), so no stage is
charged for another or for this script. Prints a Markdown table and writes it to
benchmarks/scale.md, with the raw numbers in benchmarks/scale.json.

    python benchmarks/scale.py [--sizes 100000 1000000] [--workdir DIR] [--keep] [--shards 16]
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from pipeline.dense.runtime import device_name
from pipeline.durable import atomic_output
from pipeline.formats import count_lines, write_id_text
from pipeline.precision import PRECISIONS, cpu_capability

ROOT = Path(__file__).resolve().parents[1]
CHUNK = 10_000  # passages generated at a time: the collection is never held whole
HITS, LATENCY_QUERIES = 1000, 200  # the rules' defaults (config schema)
# What Snakemake exports to a job with `threads: n` (torch, faiss and BLAS read these).
THREAD_VARIABLES = ("OMP_NUM_THREADS", "GOTO_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                    "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")


def vocabulary(size: int, seed: int) -> np.ndarray:
    """Made-up words of 2-4 syllables: WordPiece splits them into several pieces, as it does rare terms."""
    rng = np.random.default_rng([seed, 0])
    onsets, vowels = list("bdfgklmnprstvz"), list("aeiou")
    words: set[str] = set()
    while len(words) < size:
        words.add("".join(rng.choice(onsets) + rng.choice(vowels) for _ in range(rng.integers(2, 5))))
    return rng.permutation(sorted(words))


def zipf_weights(size: int) -> np.ndarray:
    """Word frequencies falling as 1/rank, so BM25 sees long and short posting lists."""
    weights = 1.0 / np.arange(1, size + 1)
    return weights / weights.sum()


def passages(count: int, vocab: np.ndarray, seed: int) -> Iterator[tuple[str, str]]:
    """(pid, text), CHUNK at a time; chunk c depends on (seed, c) alone, so with sizes that are
    multiples of CHUNK the smaller collection is a prefix of the larger one."""
    weights = zipf_weights(len(vocab))
    for first in range(0, count, CHUNK):
        rng = np.random.default_rng([seed, 1, first])
        lengths = rng.integers(20, 41, size=min(CHUNK, count - first))
        words = vocab[rng.choice(len(vocab), size=int(lengths.sum()), p=weights)].tolist()
        start = 0
        for offset, end in enumerate(np.cumsum(lengths).tolist()):
            yield str(first + offset), " ".join(words[start:end])
            start = end


def queries(count: int, vocab: np.ndarray, seed: int) -> Iterator[tuple[str, str]]:
    """3-8 words each, from the passages' distribution: the same queries at every size."""
    rng = np.random.default_rng([seed, 2])
    weights = zipf_weights(len(vocab))
    for qid in range(count):
        yield f"q{qid}", " ".join(vocab[rng.choice(len(vocab), size=int(rng.integers(3, 9)), p=weights)])


# The os.wait4 stand-in for GNU time: a fresh, small process between us and the stage, which writes
# the stage's own peak RSS in GNU time's words (KiB; macOS reports bytes).
WAIT4 = """import os, subprocess, sys
child = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(child.pid, 0)
child.returncode = os.waitstatus_to_exitcode(status)
kib = usage.ru_maxrss // (1024 if sys.platform == "darwin" else 1)
open(sys.argv[1], "w").write(f"Maximum resident set size (kbytes): {kib}\\n")
sys.exit(child.returncode if child.returncode >= 0 else 128 - child.returncode)
"""


@functools.cache
def gnu_time() -> bool:
    if not Path("/usr/bin/time").is_file():
        return False
    version = subprocess.run(["/usr/bin/time", "--version"], capture_output=True, text=True)
    return "GNU" in version.stdout + version.stderr


def rss_tool() -> str:
    return "GNU time -v" if gnu_time() else "an os.wait4 wrapper"


def peak_rss_wrapper(report: Path) -> list[str]:
    """GNU `time -v`, else the WAIT4 script. A stage exec'd straight from this process would not do:
    Linux carries the parent's peak RSS (torch is loaded here) into the child's ru_maxrss as a floor."""
    return ["/usr/bin/time", "-v", "-o", str(report)] if gnu_time() else [sys.executable, "-c", WAIT4, str(report)]


def measure(module: str, argv: list, log: Path, threads: int) -> dict[str, float]:
    """Run `python -m module argv > log 2>&1` as a job would; its wall time and its own peak RSS."""
    env = {**os.environ, **dict.fromkeys(THREAD_VARIABLES, str(threads))}
    report = log.with_suffix(".rusage")
    command = [*peak_rss_wrapper(report), sys.executable, "-m", module, *map(str, argv)]
    with open(log, "w") as out:
        tick = time.perf_counter()
        code = subprocess.run(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
        seconds = time.perf_counter() - tick
    if code:
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-20:])
        raise SystemExit(f"{module} failed with exit code {code}; end of {log}:\n{tail}")
    kib = re.search(r"Maximum resident set size \(kbytes\): (\d+)", report.read_text()).group(1)
    return {"seconds": round(seconds, 2), "rss_mb": round(int(kib) / 1024, 1)}


def label(size: int) -> str:
    if size % 1_000_000 == 0:
        return f"{size // 1_000_000}M"
    return f"{size // 1000}k" if size % 1000 == 0 else str(size)


def run_size(size: int, args: argparse.Namespace, model: Path, vocab: np.ndarray, work: Path) -> dict:
    """Generate one collection and put it through every stage; returns its measurements."""
    root = work / f"n{size}"
    logs = root / "logs"
    logs.mkdir(parents=True)
    collection, topics = root / "collection.tsv", root / "queries.tsv"
    tick = time.perf_counter()
    write_id_text(collection, passages(size, vocab, args.seed))
    write_id_text(topics, queries(args.queries, vocab, args.seed))
    record: dict = {"size": size, "generate_seconds": round(time.perf_counter() - tick, 2),
                    "collection_bytes": collection.stat().st_size, "shards": [], "stages": {}}

    def stage(name: str, module: str, argv: list, threads: int = args.threads) -> dict[str, float]:
        result = measure(module, argv, logs / f"{name}.log", threads)
        print(f"[{label(size)}] {name}: {result['seconds']:.1f} s, {result['rss_mb']:.0f} MB", file=sys.stderr)
        return result

    shard_dirs = [root / "embeddings" / f"shard-{i}" for i in range(args.shards)]
    for i, out in enumerate(shard_dirs):  # threads: 2 in the encode_corpus rule
        record["shards"].append(stage(f"encode_corpus.{i}", "pipeline.dense.encode", [
            "--model", model, "--collection", collection, "--out", out, "--shard", i, "--shards", args.shards,
            "--dtype", "float16", "--batch-size", args.batch_size, "--precision", args.precision], 2))
    slowest = max(record["shards"], key=lambda shard: shard["seconds"])
    record["stages"][f"encode_corpus, {args.shards} shards (sum; peak shard RSS)"] = {
        "seconds": round(sum(shard["seconds"] for shard in record["shards"]), 2),
        "rss_mb": max(shard["rss_mb"] for shard in record["shards"])}
    record["stages"]["encode_corpus, slowest shard"] = slowest
    index, encoded = root / "indexes" / "dense", root / "queries" / "tiny"
    record["stages"]["build_index (flat)"] = stage("build_index", "pipeline.dense.index", [
        "--shards", *shard_dirs, "--collection", collection, "--out", index, "--kind", "flat"], 2)
    record["stages"]["encode_queries"] = stage("encode_queries", "pipeline.dense.queries", [
        "--model", model, "--queries", topics, "--out", encoded, "--precision", args.precision,
        "--latency-queries", LATENCY_QUERIES], 1)  # threads: 1 in its rule
    dense_run = root / "runs" / "tiny.trec"
    record["stages"]["dense_run"] = stage("dense_run", "pipeline.dense.search", [
        "--index", index, "--queries", encoded, "--run", dense_run, "--hits", HITS, "--threads", args.threads,
        "--latency-queries", LATENCY_QUERIES, "--tag", "tiny"])
    bm25, bm25_run = root / "indexes" / "bm25-collection", root / "runs" / "bm25.trec"
    record["stages"]["bm25_index"] = stage("bm25_index", "pipeline.sparse.index", [
        "--collection", collection, "--index", bm25, "--threads", args.threads, "--max-heap", args.max_heap])
    record["stages"]["bm25_run"] = stage("bm25_run", "pipeline.sparse.search", [
        "--index", bm25, "--queries", topics, "--run", bm25_run, "--k1", 0.9, "--b", 0.4, "--hits", HITS,
        "--threads", args.threads, "--latency-queries", LATENCY_QUERIES, "--tag", "bm25", "--max-heap", args.max_heap])
    record["index_bytes"] = (index / "index").stat().st_size
    record["run_lines"] = {"dense": count_lines(dense_run), "bm25": count_lines(bm25_run)}
    if record["run_lines"]["dense"] != args.queries * min(HITS, size):
        raise SystemExit(f"{dense_run}: {record['run_lines']['dense']} lines, expected {args.queries} x {HITS}")
    if not args.keep:
        shutil.rmtree(root)
    return record


def table(records: list[dict], args: argparse.Namespace) -> str:
    """Stages as rows; time and RSS at each size, then their growth from the smallest to the largest."""
    sizes = [label(r["size"]) for r in records]
    growth = f"{sizes[-1]}/{sizes[0]}"
    lines = ["| stage | " + " | ".join(f"wall s @{s}" for s in sizes) + " | "
             + " | ".join(f"peak RSS MB @{s}" for s in sizes) + f" | time x ({growth}) | RSS x ({growth}) |",
             "|---" * (2 * len(sizes) + 3) + "|"]
    for name in records[0]["stages"]:
        first, last = records[0]["stages"][name], records[-1]["stages"][name]
        cells = ([f"{r['stages'][name]['seconds']:.1f}" for r in records]
                 + [f"{r['stages'][name]['rss_mb']:.0f}" for r in records]
                 + [f"{last['seconds'] / first['seconds']:.2f}", f"{last['rss_mb'] / first['rss_mb']:.2f}"])
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    mb = lambda n: f"{n / 2**20:.0f} MB"  # noqa: E731
    per_size = lambda what: ", ".join(f"{label(r['size'])} {what(r)}" for r in records)  # noqa: E731
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    lines += [
        "",
        f"- Machine: {device_name(torch.device('cpu'))}, {os.cpu_count()} cores, {memory / 2**30:.0f} GiB; "
        f"{args.threads} threads per stage (encode_queries 1, as its rule); "
        f"{datetime.date.today().isoformat()}. Size ratio {records[-1]['size'] / records[0]['size']:g}x.",
        f"- Collection: {per_size(lambda r: mb(r['collection_bytes']))} on disk (20-40 made-up words per passage); "
        f"{args.queries} queries, {HITS} hits.",
        f"- Encoder: random 2-layer BERT, {args.dims} dims, batch {args.batch_size}, precision {args.precision} "
        f"(PyTorch CPU capability {cpu_capability()}); "
        f"{args.shards} encode_corpus jobs run one after another.",
        f"- Raw embeddings (float16 shards): {per_size(lambda r: mb(r['size'] * args.dims * 2))}; "
        f"as float32 in the flat index: {per_size(lambda r: mb(r['size'] * args.dims * 4))} "
        f"(index file {per_size(lambda r: mb(r['index_bytes']))}).",
        f"- Peak RSS: ru_maxrss of the stage's own process ({rss_tool()}). It counts the in-process JVM of the "
        f"BM25 stages, which both run with -Xmx{args.max_heap} (bm25.max_heap, as their rules pass it) and grow "
        "into it; encode_corpus tokenises 50,000 passages at a time, so a shard's RSS stops growing beyond that.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--workdir", type=Path, help="an empty or new directory (default: a fresh one in /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (collections, indexes, logs)")
    parser.add_argument("--shards", type=int, default=16)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dims", type=int, default=32, help="hidden size of the tiny random BERT")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="encoders' precision (fp32: the tiny BERT gains nothing from bf16 on a CPU)")
    parser.add_argument("--max-heap", default="4g", help="JVM -Xmx of the BM25 stages")
    parser.add_argument("--vocabulary", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "scale.md")
    args = parser.parse_args()
    if args.workdir and args.workdir.exists() and any(args.workdir.iterdir()):
        parser.error(f"--workdir {args.workdir} is not empty (it is deleted at the end unless --keep)")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="scale-bench.", dir="/tmp"))
    work.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(ROOT))  # tests/ is not installed; its tiny BERT is reused from there
    from tests.conftest import make_tiny_bert

    started = time.perf_counter()
    model = make_tiny_bert(work / "tiny-bert", hidden_size=args.dims)
    vocab = vocabulary(args.vocabulary, args.seed)
    records = [run_size(size, args, model, vocab, work) for size in sorted(args.sizes)]
    markdown = table(records, args)
    print("\n" + markdown)
    with atomic_output(args.out) as out:
        out.write(markdown)
    with atomic_output(args.out.with_suffix(".json")) as out:
        json.dump({"settings": {k: str(v) for k, v in vars(args).items()}, "rss_tool": rss_tool(), "sizes": records,
                   "total_seconds": round(time.perf_counter() - started, 1)}, out, indent=2)
    for written in (args.out, args.out.with_suffix(".json")):
        written.chmod(0o644)  # atomic_output's temporary file is owner-only
    print(f"wrote {args.out} and {args.out.with_suffix('.json')} in {time.perf_counter() - started:.0f} s; "
          f"work directory {work} {'kept' if args.keep else 'deleted'}", file=sys.stderr)
    if not args.keep:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
