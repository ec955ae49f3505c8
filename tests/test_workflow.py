"""The Snakemake workflow itself: schema validation, the paper DAG, lint, and a small demo run."""

import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

from pipeline.formats import read_triples
from tests.conftest import copy_workflow, hang_guard, small_demo_overlay


@pytest.fixture
def workdir(tmp_path) -> Path:
    return copy_workflow(tmp_path)


def snakemake(workdir: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Snakemake in `workdir`; the default guard fits dry runs and lint (seconds each)."""
    # Rules run `python -m pipeline...`: put this interpreter's environment first on PATH.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=workdir, capture_output=True,
                          text=True, timeout=hang_guard(timeout), env=env)


def overlay(workdir: Path, settings: dict) -> str:
    path = workdir / "overlay.yaml"
    path.write_text(yaml.safe_dump(settings))
    return str(path)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"bm25": {"k1": 0.9}}, "'k1' was unexpected"),
        ({"bm25": {"threads": "many"}}, "'many' is not of type 'integer'"),
        ({"dataset": {"source": "trec"}}, "'trec' is not one of"),
        ({"evaluation": {"columns": [{"split": "dev", "measure": "MRR10"}]}}, "'MRR10' does not match"),
    ],
)
def test_bad_config_stops_with_the_key_named(workdir, settings, message):
    result = snakemake(workdir, "-n", "--configfile", "config.yaml", overlay(workdir, settings))
    assert result.returncode != 0
    assert message in result.stderr + result.stdout


def test_paper_config_dag_lists_every_stage(workdir):
    result = snakemake(workdir, "-n", "--quiet", "rules")
    assert result.returncode == 0, result.stderr
    stages = ("prepare_data", "bm25_index", "bm25_run", "train_teacher", "train_student", "encode_corpus",
              "build_index", "encode_queries", "dense_run", "encode_tokens", "colbert_rerank", "dense_rerank",
              "colbert_index", "colbert_retrieve", "candidate_run",
              "sample_queries", "tune_alpha", "fuse", "tune_fusion_methods", "fuse_methods", "evaluate", "coverage",
              "table_spec", "tables", "report", "doc2query_download", "expand_collection", "mine_round",
              "train_round_teacher")
    listed = result.stdout.split("Job stats:")[-1]
    assert [rule for rule in stages if rule not in listed] == []
    assert "mine_negatives" not in result.stdout  # MS MARCO ships official triples
    assert "generate_doc2query" not in listed  # the published predictions are downloaded


def test_demo_is_table1_and_demo_full_adds_tables_3_5_and_the_rounds(workdir):
    """`make demo` plans Table 1's stages and the report only; `make demo-full` adds Table 3's student, Table 5's
    fusions and the hard-negative rounds, and reuses every job of the first (same dataset, same outputs)."""
    first = snakemake(workdir, "-n", "--quiet", "rules", "--profile", "profiles/demo")
    full = snakemake(workdir, "-n", "--quiet", "rules", "--profile", "profiles/demo-full")
    assert first.returncode == 0 and full.returncode == 0, first.stderr + full.stderr

    def stats(result):
        table = result.stdout.split("Job stats:")[-1].split("total")[0]
        return {name: int(count) for name, count in re.findall(r"^(\w+)\s+(\d+)\s*$", table, re.MULTILINE)}

    demo, demo_full = stats(first), stats(full)
    for rule in ("train_teacher", "train_student", "colbert_retrieve", "colbert_rerank", "fuse", "tables", "report"):
        assert demo.get(rule), rule
    extra = ("fuse_methods", "tune_fusion_methods", "mine_round", "train_round_teacher", "dense_rerank")
    assert [rule for rule in extra if rule in demo] == [] and all(demo_full.get(rule) for rule in extra)
    assert demo["train_student"] == 2 and demo_full["train_student"] == 5  # + tct_triplet, tct_hn, tct_hnp
    assert demo_full["mine_round"] == 1  # HN and HN+ mine alike: one job, one file
    assert all(demo_full[rule] >= count for rule, count in demo.items())


def jobs_of(result, rule: str) -> list[str]:
    """The blocks of a `snakemake -n -p` listing for `rule`'s jobs: its inputs, wildcards and shell command."""
    blocks = re.split(r"\n(?=(?:local)?rule \w+:)", result.stdout)
    return [block for block in blocks if block.startswith((f"rule {rule}:", f"localrule {rule}:"))]


def test_paper_recipe_schedules_inits_and_shared_mining(workdir):
    """config.yaml's recipe as the jobs receive it: the teacher at a constant rate (ColBERT v1), the students
    decaying linearly (released code); the round students continue from tct_inbatch, so they train after it;
    HN and HN+ share one mining job, over the judged train queries only."""
    result = snakemake(workdir, "-n", "-p")
    assert result.returncode == 0, result.stderr
    [teacher] = jobs_of(result, "train_teacher")
    assert "--schedule constant" in teacher and "--warmup-steps 0" in teacher
    students = {re.search(r"variant=(\w+)", block).group(1): block for block in jobs_of(result, "train_student")}
    inbatch = "resources/msmarco-passage/models/tct_inbatch"
    for name in ("tct_hn", "tct_hnp"):
        assert f"--init student --init-from {inbatch}" in students[name] and "--schedule linear" in students[name]
        assert inbatch in students[name].split("output:")[0]  # an input: the DAG trains tct_inbatch first
    assert "--init teacher" in students["tct_inbatch"] and "--teacher-dropout" not in students["tct_inbatch"]
    [mining] = jobs_of(result, "mine_round")
    assert "triples.mined-tct_inbatch-top200-x4-seed13.tsv" in mining
    [encoding] = jobs_of(result, "encode_train_queries")
    assert "--judged resources/msmarco-passage/qrels.train.txt" in encoding
    # A round may fine-tune its students for fewer steps, on a schedule of its own.
    shorter = snakemake(workdir, "-n", "-p", "--configfile", "config.yaml",
                        overlay(workdir, {"negatives": {"rounds": {"hnp": {"steps": 20000, "schedule": "constant"}}}}))
    assert shorter.returncode == 0, shorter.stderr
    students = {re.search(r"variant=(\w+)", block).group(1): block for block in jobs_of(shorter, "train_student")}
    assert "--steps 20000" in students["tct_hnp"] and "--schedule constant" in students["tct_hnp"]
    assert "--steps 160000" in students["tct_hn"] and "--schedule linear" in students["tct_hn"]


def test_margin_mse_in_its_own_setting_learns_from_the_cross_encoder(workdir):
    """A student with `teacher: cross_encoder` waits for train_cross_encoder and reads its scores alone (no ColBERT
    teacher), from the dual-pooling one with its embeddings too; the cross-encoder re-ranks BM25 for Table 4's
    reference row; with a published cross-encoder nothing is trained for it."""
    variant = {"condition": "margin_mse", "gamma": 0.0, "teacher": "cross_encoder", "init": "backbone"}
    settings = {"student": {"variants": {"margin_ce": variant}}}
    result = snakemake(workdir, "-n", "-p", "--configfile", "config.yaml", overlay(workdir, settings))
    assert result.returncode == 0, result.stderr
    [training] = jobs_of(result, "train_cross_encoder")
    assert "--max-query-length 30 --pair-length 230" in training and "--batch-size 32" in training
    [student] = [block for block in jobs_of(result, "train_student") if "variant=margin_ce" in block]
    model = "resources/msmarco-passage/models/cross_encoder"
    assert f"--cross-encoder {model}" in student and model in student.split("output:")[0]
    assert "--teacher " not in student and "--init backbone" in student
    # EmbedDistill's dual-pooling scorer: a second cross-encoder, and its student matches embeddings to it; the
    # first cross-encoder re-ranks BM25 for Table 4's reference row.
    settings["student"]["variants"]["dual_ce"] = {**variant, "scorer": "dual_pooling", "embed_weight": 1.0}
    settings["table4"] = {"strategies": {"cross-encoder": "cross_encoder-bm25"}}
    dual = snakemake(workdir, "-n", "-p", "--configfile", "config.yaml", overlay(workdir, settings))
    assert dual.returncode == 0, dual.stderr
    trained = {re.search(r"cross_encoder=([\w-]+)", block).group(1): block
               for block in jobs_of(dual, "train_cross_encoder")}
    assert "--scorer" not in trained["cross_encoder"]  # cls, the default
    assert "--scorer dual_pooling" in trained["cross_encoder-dual_pooling"]
    [student] = [block for block in jobs_of(dual, "train_student") if "variant=dual_ce" in block]
    assert f"--cross-encoder {model}-dual_pooling" in student and "--embed-weight 1.0" in student
    assert "--teacher " not in student
    reranks = jobs_of(dual, "cross_encoder_rerank")
    assert {re.search(r"split=(\w+)", block).group(1) for block in reranks} == {"dev", "dl19"}
    assert all(f"--model {model} " in block and "--depth 1000" in block for block in reranks)
    del settings["student"]["variants"]["dual_ce"], settings["table4"]
    settings["cross_encoder"] = {"published": "cross-encoder/ms-marco-MiniLM-L-6-v2"}
    # The authors' score file instead, leaving out the triples it lacks.
    (workdir / "scores.tsv").write_text("1.0\t0.5\tq\tp\tn\n")
    settings["student"]["variants"]["margin_file"] = {"condition": "margin_mse", "gamma": 0.0, "init": "backbone",
                                                      "teacher_scores": "scores.tsv", "unscored": "drop"}
    published = snakemake(workdir, "-n", "-p", "--configfile", "config.yaml", overlay(workdir, settings))
    assert published.returncode == 0, published.stderr
    assert jobs_of(published, "train_cross_encoder") == []
    assert "--cross-encoder cross-encoder/ms-marco-MiniLM-L-6-v2" in published.stdout
    assert "--teacher-scores scores.tsv --unscored drop" in published.stdout
    # A release of the Margin-MSE authors' scores, named instead of a path, is downloaded first.
    settings["student"]["variants"]["margin_file"]["teacher_scores"] = "bert_cat_ensemble"
    released = snakemake(workdir, "-n", "-p", "--configfile", "config.yaml", overlay(workdir, settings))
    assert released.returncode == 0, released.stderr
    [download] = jobs_of(released, "teacher_scores_download")
    scores = "resources/downloads/margin-mse/bert_cat_ensemble.tsv"
    assert scores in download and f"--teacher-scores {scores} --unscored drop" in released.stdout


def test_an_asymmetric_student_searches_the_index_of_the_model_it_learned_from(workdir):
    """EmbedDistill's asymmetric student: trained against tct_inbatch, its queries search tct_inbatch's index; no
    corpus encoding, index or index comparison runs for it."""
    settings = {"student": {"variants": {"asym": {"condition": "inbatch", "searches": "tct_inbatch",
                                                  "backbone": "all-MiniLM-L6-v2"}}},
                "dense": {"compare": {"kinds": ["hnsw"]}},
                "table4": {"strategies": {"EmbedDistill: asymmetric student": "asym"}}}
    result = snakemake(workdir, "-n", "-p", "--configfile", "config.yaml", overlay(workdir, settings))
    assert result.returncode == 0, result.stderr
    [training] = jobs_of(result, "train_query_encoder")
    assert "--teacher resources/msmarco-passage/models/tct_inbatch --backbone all-MiniLM-L6-v2" in training
    assert "resources/msmarco-passage/models/tct_inbatch" in training.split("output:")[0]
    assert not [block for block in jobs_of(result, "train_student") if "variant=asym" in block]
    [search] = [block for block in jobs_of(result, "dense_run") if "model=asym, split=dev" in block]
    queries = "--queries results/msmarco-passage/queries/asym.dev"
    assert f"--index resources/msmarco-passage/indexes/dense-tct_inbatch {queries}" in search
    for rule in ("encode_corpus", "build_index", "compare_indexes"):
        assert not [block for block in jobs_of(result, rule) if "/asym" in block or "model=asym" in block], rule
    assert jobs_of(result, "compare_indexes")  # the other models still compare their indexes


def test_released_profile_trains_nothing(workdir):
    """profiles/released evaluates the v1 and v2 checkpoints as published: no training rule in its DAG."""
    result = snakemake(workdir, "-n", "--quiet", "rules", "--profile", "profiles/released")
    assert result.returncode == 0, result.stderr
    listed = result.stdout.split("Job stats:")[-1]
    assert [rule for rule in ("train_teacher", "train_student", "train_round_teacher", "train_doc2query",
                              "mine_round", "encode_tokens") if rule in listed] == []
    assert re.search(r"\bencode_queries +4\n", listed) and "fuse " in listed


def test_doc2query_sources_choose_their_rules(workdir):
    """generate: one job per shard from a checkpoint; train: the model first; none: everything built on the
    expansion leaves the DAG (its BM25 run, the rows and hybrids using it, the student on generated queries)."""
    generate = snakemake(workdir, "-n", "--quiet", "rules", "--configfile", "config.yaml",
                         overlay(workdir, {"doc2query": {"source": "generate", "generate": {"shards": 3}}}))
    assert generate.returncode == 0, generate.stderr
    stats = generate.stdout.split("Job stats:")[-1]
    assert re.search(r"\bgenerate_doc2query +3\n", stats) and "train_doc2query" not in stats
    assert "doc2query_download" not in stats
    trained = snakemake(workdir, "-n", "--quiet", "rules", "--configfile", "config.yaml",
                        overlay(workdir, {"doc2query": {"source": "train"}}))
    assert trained.returncode == 0 and "train_doc2query" in trained.stdout, trained.stderr
    table4 = yaml.safe_load((workdir / "config.yaml").read_text())["table4"]
    settings = {"doc2query": {"source": "none"}, "table4": table4}
    switched_off = snakemake(workdir, "-n", "-p", "--configfile", "config.yaml", overlay(workdir, settings))
    assert switched_off.returncode == 0, switched_off.stderr
    for left_out in ("bm25.runs.d2q", "student.variants.tct_generated", "table1.rows.'doc2query-T5'",
                     "table1.rows.'TCT-ColBERT + doc2query-T5'", "table4.strategies.'Eq. 6 + generated queries'"):
        assert left_out in switched_off.stdout + switched_off.stderr, left_out
    for rule in ("doc2query_download", "expand_collection", "generate_doc2query"):
        assert f"rule {rule}:" not in switched_off.stdout, rule
    jobs = [line for line in switched_off.stdout.splitlines() if "left out" not in line]
    assert not [line for line in jobs if "d2q" in line or "tct_generated" in line]


def test_training_rules_with_several_gpus_start_torchrun(workdir):
    settings = {"teacher": {"gpus": 2}, "student": {"gpus": 4},
                "doc2query": {"source": "train", "train": {"gpus": 2}}}
    result = snakemake(workdir, "-n", "-p", "--configfile", "config.yaml", overlay(workdir, settings))
    assert result.returncode == 0, result.stderr
    torchrun = "python -m torch.distributed.run --standalone --nproc_per_node"
    for stage, gpus in (("pipeline.train.teacher", 2), ("pipeline.train.student", 4), ("pipeline.doc2query.train", 2)):
        assert f"{torchrun} {gpus} -m {stage}" in result.stdout, stage
    assert "gpu=4" in result.stdout and "gpu=2" in result.stdout  # each job asks for its GPUs


def test_published_checkpoint_rows_train_nothing(workdir):
    """A config whose dense rows name a published checkpoint schedules no training at all."""
    config = yaml.safe_load((workdir / "config.yaml").read_text())
    config["student"]["variants"] = {}
    config["dense"]["published"] = {"tct_published": "castorini/tct_colbert-msmarco"}
    config["table1"]["rows"] = {"BM25": {"run": "bm25"}, "TCT-ColBERT (published)": {"run": "tct_published"},
                                "TCT-ColBERT (published) + BM25": {"run": "tct_published+bm25"}}
    config["fusion"]["alpha"] = {"bm25": 0.12, "d2q": 0.22}
    config["doc2query"]["source"] = "none"
    config["bm25"]["runs"] = {"bm25": config["bm25"]["runs"]["bm25"]}
    for table in ("table2", "table3", "table4"):
        del config[table]  # their schema default: null, no table
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    result = snakemake(workdir, "-n", "--quiet", "rules")
    assert result.returncode == 0, result.stderr
    stats = result.stdout.split("Job stats:")[-1]
    for rule in ("encode_corpus", "build_index", "dense_run", "fuse", "tables"):
        assert rule in stats
    for rule in ("train_teacher", "train_student", "tune_alpha", "encode_tokens"):
        assert rule not in stats


def test_lint_is_clean(workdir):
    result = snakemake(workdir, "--lint", "--configfile", "config.yaml")
    assert result.returncode == 0 and "Congratulations" in result.stdout + result.stderr, result.stdout


@pytest.mark.slow(seconds=330)
def test_small_demo_dag_end_to_end(workdir):
    """The demo profile's whole DAG on a small synthetic set with a tiny random BERT, Table 4 included.

    About 5 minutes on 2 cores; the guard allows 30."""
    small = small_demo_overlay(workdir, table4=True)
    settings = yaml.safe_load(small.read_text())
    # Table 5 with one tuned and one untuned method beside Eq. 7: each method's scores are held to trectools in
    # tests/test_fusion_methods.py; here the rules' wiring is what is tested, and 36 evaluations fewer.
    settings["fusion"]["methods"] = ["eq7", "rrf", "combmnz"]
    small.write_text(yaml.safe_dump(settings, sort_keys=False))
    small = str(small)
    # One thread a job: a tiny model's job is mostly Python's start-up, so two run side by side on 2 cores.
    result = snakemake(workdir, "--profile", "profiles/demo", "--max-threads", "1", "--configfile", "config.yaml",
                       "profiles/demo/workflow.yaml", small, timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = (workdir / "results" / "table1.tsv").read_text().splitlines()
    header = lines[0].split("\t")
    assert header[:8] == ["method", "dev/RR@10", "dev/R@1000", "dl/nDCG@10", "dl/R(rel=2)@1000", "dl/Judged@10",
                          "dl/RBP(p=0.8)", "latency_ms"]  # judgement coverage on the TREC-style split
    rows = {cells[0]: dict(zip(header, cells, strict=True)) for cells in (line.split("\t") for line in lines[1:])}
    assert list(rows) == ["BM25", "doc2query-T5", "Bi-encoder (PoolAvg)", "Bi-encoder (TCT-ColBERT)",
                          "ColBERT (end to end)", "PoolAvg + BM25", "TCT-ColBERT + BM25", "PoolAvg + doc2query-T5",
                          "TCT-ColBERT + doc2query-T5", "TCT-ColBERT HN", "TCT-ColBERT HN+", "TCT-ColBERT HN+ + BM25",
                          "TCT-ColBERT HN+ + doc2query-T5", "ColBERT (re-rank BM25 top-100)"]
    for row in rows.values():
        assert 0.0 <= float(row["dev/RR@10"].rstrip("*")) <= 1.0 and float(row["latency_ms"]) > 0
    assert 0.0 <= float(rows["TCT-ColBERT + BM25"]["alpha"]) <= 1.0
    for row in rows.values():
        rbp, residual = map(float, row["dl/RBP(p=0.8)"].split(" + "))
        assert 0.0 <= float(row["dl/Judged@10"]) <= 1.0 and 0.0 <= rbp <= rbp + residual <= 1.0
    # Table 5: every hybrid of Table 1 by each fusion method asked for, k tuned.
    table5 = [line.split("\t") for line in (workdir / "results" / "table5_fusion.tsv").read_text().splitlines()]
    fused = {(row[0], row[1]): row for row in table5[1:]}
    methods = ["eq7", "rrf", "combmnz"]
    hybrids = ["poolavg+bm25", "tct_inbatch+bm25", "poolavg+d2q", "tct_inbatch+d2q", "tct_hnp+bm25", "tct_hnp+d2q"]
    assert sorted(fused) == sorted((hybrid, method) for hybrid in hybrids for method in methods)
    assert fused["tct_inbatch+bm25", "rrf"][2].startswith("k=") and fused["poolavg+d2q", "combmnz"][2] == ""
    assert fused["tct_inbatch+bm25", "eq7"][3] == rows["TCT-ColBERT + BM25"]["dev/RR@10"].rstrip("*")
    assert all(0.0 <= float(cell.rstrip("*")) <= 1.0 for row in table5[1:] for cell in row[3:7])
    assert rows["BM25"]["dev/RR@10"] != "0.0000"
    table4 = (workdir / "results" / "table4_distillation.tsv").read_text()
    strategies = [line.split("\t") for line in table4.splitlines()]
    assert [row[1] for row in strategies[1:]] == ["poolavg", "tct_inbatch", "tct_margin", "tct_embed", "tct_generated",
                                                  "margin_ce", "asym", "cross_encoder-bm25"]
    assert all(0.0 <= float(row[2].rstrip("*")) <= 1.0 for row in strategies[1:])
    assert all(float(row[6]) > 0 for row in strategies[1:-1]) and strategies[-1][6] == ""  # re-ranking: no training
    expansion = json.loads((workdir / "results" / "synthetic" / "doc2query" / "expansion.json").read_text())
    assert expansion["expanded"] == expansion["passages"] == 400 and expansion["n_queries"] == 2
    triples = read_triples(workdir / "resources" / "synthetic" / "triples.train.tsv")
    per_query = Counter(qid for qid, _, _ in triples)  # mined: up to 4 BM25 negatives per positive
    assert len(per_query) >= 0.9 * 60 and max(per_query.values()) <= 4
    assert_hard_negative_rounds(workdir / "resources" / "synthetic", workdir / "results" / "synthetic")
    for rule_log in ("prepare_data.log", "bm25_index.collection.log", "train_teacher.log", "tables.log", "report.log"):
        assert (workdir / "logs" / "synthetic" / rule_log).exists()
    assert (workdir / "results" / "synthetic" / "training" / "tct_inbatch.losses.csv").exists()
    assert (workdir / "results" / "synthetic" / "benchmarks" / "bm25_run.bm25.dev.tsv").exists()
    compared = (workdir / "results" / "synthetic" / "indexes" / "tct_inbatch.dev.tsv").read_text().splitlines()
    assert [line.split("\t")[0] for line in compared[1:]] == ["flat", "hnsw", "ivfpq"]
    report = (workdir / "results" / "report.html").read_text()
    assert "Approximate indexes against flat search" in report and "Table 5" in report
    table2 = (workdir / "results" / "table2_latency.tsv").read_text().splitlines()
    assert len(table2) == 11 and all(float(line.split("\t")[1]) > 0 for line in table2[1:])
    table3 = [line.split("\t") for line in (workdir / "results" / "table3_ablation.tsv").read_text().splitlines()]
    assert [row[0] for row in table3[1:]] == ["none", "triplet", "inbatch"]
    assert all(0.0 <= float(cell) <= 1.0 for row in table3[1:] for cell in row[2:])
    figures = {path.name for path in (workdir / "results" / "figures").glob("*.png")}
    assert figures == {"training_losses.png", "alpha_curves.png", "latency.png", "per_query.png"}
    # A second run has nothing to do: every output is complete and up to date.
    again = snakemake(workdir, "--profile", "profiles/demo", "--configfile", "config.yaml",
                      "profiles/demo/workflow.yaml", small, "-n")
    assert "Nothing to be done" in again.stdout + again.stderr


def assert_hard_negative_rounds(resources, results):
    """The demo's HN and HN+ rounds: negatives mined once from tct_inbatch's own train run, top 200, never a judged
    positive; the HN+ teacher trained from the first teacher's weights, and the HN+ student, continuing from
    tct_inbatch, distilling it."""
    import torch

    from pipeline.formats import read_qrels, read_run
    from pipeline.train.resume import source_digest

    qrels, run = read_qrels(resources / "qrels.train.txt"), read_run(results / "runs" / "tct_inbatch.train.trec")
    top = {qid: set(sorted(hits, key=lambda pid: (-hits[pid], pid))[:200]) for qid, hits in run.items()}
    # HN and HN+ mine alike (tct_inbatch, top 200, 4 per positive, seed 13): one file, one mine_round job.
    mined = resources / "triples.mined-tct_inbatch-top200-x4-seed13.tsv"
    assert sorted(path.name for path in resources.glob("triples.mined-*.tsv")) == [mined.name]
    manifest = json.loads(mined.with_suffix(".manifest.json").read_text())
    assert manifest["source"] == "tct_inbatch" and manifest["depth"] == 200
    assert Path(manifest["run"]).name == "tct_inbatch.train.trec"
    triples = read_triples(mined)
    assert len(triples) == manifest["counts"]["triples"] > 0
    for qid, positive, negative in triples:
        assert qrels[qid][positive] > 0 and qrels[qid].get(negative, 0) <= 0 and negative in top[qid]
    checkpoints = sorted((resources / "checkpoints" / "teacher-hnp").glob("step-*.pt"))
    made_from = torch.load(checkpoints[-1], map_location="cpu", weights_only=False)["made_from"]["inputs"]
    assert Path(made_from["init_from"]["path"]) == Path("resources/synthetic/models/teacher")
    assert made_from["init_from"]["digest"] == source_digest(resources / "models" / "teacher")
    assert made_from["triples"]["digest"] == source_digest(mined)
    student = sorted((resources / "checkpoints" / "tct_hnp").glob("step-*.pt"))
    inputs = torch.load(student[-1], map_location="cpu", weights_only=False)["made_from"]["inputs"]
    assert inputs["teacher"]["digest"] == source_digest(resources / "models" / "teacher-hnp")
    assert inputs["init_from"]["digest"] == source_digest(resources / "models" / "tct_inbatch")  # v2: continued
