"""A user's own corpus end to end: msmarco-local layout, train/test splits only, a profile from the template.

The profile changes only the dataset block of profiles/custom/workflow.yaml and switches doc2query and Table 4
off; config.yaml stays as it is. Snakemake runs without the venv on PATH, as `.venv/bin/snakemake` would.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.data.synthetic import synthetic_source
from pipeline.formats import read_qrels
from tests.conftest import ROOT, copy_workflow, hang_guard, small_demo_overlay

SCIFACT = ROOT.parent / "shared" / "data" / "scifact"


def write_corpus(directory: Path) -> dict:
    """400 synthetic passages as collection.tsv (one of them empty), 60 train queries, 20 graded test queries
    with one -1 judgement. Returns what the test checks later."""
    source = synthetic_source(seed=3, n_passages=400, n_train=60, n_dev=0, n_dl=20)
    directory.mkdir(parents=True)
    train, test = source.splits["train"], source.splits["dl"]
    judged = {pid for split in (train, test) for judgements in split.qrels.values() for pid in judgements}
    empty = next(pid for pid, _ in source.collection() if pid not in judged)
    with open(directory / "collection.tsv", "w") as out:
        out.writelines(f"{pid}\t{'' if pid == empty else text}\n" for pid, text in source.collection())
    junk_qid = next(iter(test.qrels))
    junk_pid = next(pid for pid, _ in source.collection() if pid not in test.qrels[junk_qid] and pid != empty)
    test.qrels[junk_qid][junk_pid] = -1
    for name, split in (("train", train), ("test", test)):
        with open(directory / f"queries.{name}.tsv", "w") as out:
            out.writelines(f"{qid}\t{text}\n" for qid, text in split.queries.items())
        with open(directory / f"qrels.{name}.txt", "w") as out:
            out.writelines(f"{qid} 0 {pid} {rel}\n" for qid, judgements in split.qrels.items()
                           for pid, rel in judgements.items())
    assert {rel for judgements in test.qrels.values() for rel in judgements.values()} >= {-1, 1, 2, 3}  # graded
    return {"empty": empty, "junk": (junk_qid, junk_pid)}


def profile_from_template(workdir: Path, name: str, dataset: dict, without_doc2query_and_table4: bool) -> Path:
    """profiles/<name>: the template with only its dataset block replaced (and, when asked, doc2query and
    Table 4 switched off as its comments say)."""
    profile = workdir / "profiles" / name
    shutil.copytree(workdir / "profiles" / "custom", profile)
    settings = yaml.safe_load((profile / "workflow.yaml").read_text())
    settings["dataset"] = dataset
    if without_doc2query_and_table4:
        settings["doc2query"]["source"] = "none"
        settings["student"]["variants"] = {"tct_margin": None, "tct_embed": None, "tct_generated": None}
        settings["table4"] = None
    (profile / "workflow.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))
    launcher = (profile / "config.yaml").read_text().replace("profiles/custom/", f"profiles/{name}/")
    (profile / "config.yaml").write_text(launcher)
    return profile


def snakemake_outside_venv(workdir: Path, *args: str, timeout: float) -> subprocess.CompletedProcess:
    """The venv's Snakemake with a PATH that lacks the venv: the rules must not depend on `python` there."""
    env = {**os.environ, "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=workdir, capture_output=True, text=True,
                          timeout=hang_guard(timeout), env=env)


@pytest.fixture
def workdir(tmp_path) -> Path:
    return copy_workflow(tmp_path)


@pytest.mark.slow(seconds=100)
def test_own_corpus_train_test_splits_end_to_end(workdir):
    """About 2 minutes on 2 cores (a tiny random BERT and 3 training steps); the guard allows 20."""
    facts = write_corpus(workdir / "data" / "mine")
    paper_config = (workdir / "config.yaml").read_text()
    dataset = {"name": "mine", "source": "msmarco-local", "location": "data/mine", "splits": ["train", "test"],
               "empty_text": "drop", "unknown_judged": "error"}
    profile_from_template(workdir, "mine", dataset, without_doc2query_and_table4=True)
    speed = small_demo_overlay(workdir)  # a tiny random BERT and 3 steps instead of MiniLM and 150: CI time
    settings = yaml.safe_load(speed.read_text())
    settings["fusion"]["tune_queries"] = 100  # more than train's 60: all of them are used
    # Table 5, the hard-negative rounds and ColBERT end to end run in the whole-DAG test (tests/README.md); on
    # this corpus they would only add jobs, not paths of their own.
    settings["fusion"]["methods"] = ["eq7"]
    settings["student"]["variants"] = {"tct_hn": None, "tct_hnp": None}
    settings["table1"] = {"rows": {name: None for name in (
        "ColBERT (end to end)", "TCT-ColBERT HN", "TCT-ColBERT HN+", "TCT-ColBERT HN+ + BM25")}}
    speed.write_text(yaml.safe_dump(settings))
    # One thread a job: a tiny model's job is mostly Python's start-up, so two run side by side on 2 cores.
    result = snakemake_outside_venv(workdir, "--profile", "profiles/mine", "--max-threads", "1", "--configfile",
                                    "config.yaml", "profiles/mine/workflow.yaml", str(speed), timeout=1200)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert (workdir / "config.yaml").read_text() == paper_config
    assert "left out: doc2query.source is none:" in result.stdout + result.stderr

    lines = (workdir / "results" / "table1.tsv").read_text().splitlines()
    header = lines[0].split("\t")
    assert header[:5] == ["method", "test/nDCG@10", "test/RR@10", "test/R@100", "latency_ms"]
    rows = {cells[0]: dict(zip(header, cells, strict=True)) for cells in (line.split("\t") for line in lines[1:])}
    assert list(rows) == ["BM25", "Bi-encoder (PoolAvg)", "Bi-encoder (TCT-ColBERT)", "PoolAvg + BM25",
                          "TCT-ColBERT + BM25", "ColBERT (re-rank BM25 top-100)"]
    assert float(rows["BM25"]["test/nDCG@10"]) > 0.1
    assert not (workdir / "results" / "table4_distillation.tsv").exists()
    table2 = (workdir / "results" / "table2_latency.tsv").read_text()
    assert "query encoder" in table2
    table3 = [line.split("\t") for line in (workdir / "results" / "table3_ablation.tsv").read_text().splitlines()]
    assert [row[0] for row in table3[1:]] == ["none", "triplet", "inbatch"]
    assert "Per query" in (workdir / "results" / "report.html").read_text()
    alpha = json.loads((workdir / "results" / "mine" / "fusion" / "tct_inbatch+bm25.alpha.json").read_text())
    assert alpha["measure"] == "nDCG@10" and alpha["queries"] == 60  # 100 asked, the 60 of train used

    resources = workdir / "resources" / "mine"
    assert not (resources / "collection.d2q.tsv").exists() and not (resources / "models" / "tct_margin").exists()
    collection = (resources / "collection.tsv").read_text()
    assert f"\n{facts['empty']}\t" not in f"\n{collection}" and len(collection.splitlines()) == 399
    manifest = json.loads((resources / "manifest.json").read_text())
    assert manifest["dropped_empty_passages"] == 1 and manifest["splits"]["test"]["negative_judgements"] == 1
    junk_qid, junk_pid = facts["junk"]
    assert read_qrels(resources / "qrels.test.txt")[junk_qid][junk_pid] == -1  # kept, as published


def test_template_on_scifact_plans_every_stage(workdir):
    """The template with its dataset block pointed at ../shared/data/scifact plans the whole DAG (a dry run;
    the real run is `snakemake --profile profiles/scifact-custom`, docs/own-corpus.md)."""
    if not SCIFACT.is_dir():
        pytest.skip(f"{SCIFACT} is absent (the shared data directory)")
    dataset = {"name": "scifact", "source": "beir", "location": str(SCIFACT), "splits": ["train", "test"]}
    profile_from_template(workdir, "scifact-custom", dataset, without_doc2query_and_table4=False)
    result = snakemake_outside_venv(workdir, "--profile", "profiles/scifact-custom", "-n", "--quiet", "rules",
                                    timeout=120)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    stats = result.stdout.split("Job stats:")[-1]
    for rule in ("prepare_data", "bm25_run", "mine_negatives", "train_teacher", "train_student", "train_doc2query",
                 "generate_doc2query", "colbert_rerank", "tune_alpha", "fuse", "tables", "report"):
        assert rule in stats, rule
