"""profiles/slurm against a real one-node SLURM on this machine (tests/cluster/slurm.sh).

`make test-cluster` runs this module with PIPELINE_SLURM=1. Under plain `make test` it is collected and
skipped: it installs Debian packages, writes /etc/slurm, starts daemons as root and takes a while.
The SLURM has no accounting database (squeue answers job status) and one fake GPU.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, copy_workflow, hang_guard, neighbour_students, small_demo_overlay
from tests.test_rule_coverage import workflow_rules

if os.environ.get("PIPELINE_SLURM") != "1":
    pytest.skip("SLURM cluster tests run with `make test-cluster` (PIPELINE_SLURM=1): they install and start a "
                "local SLURM as root", allow_module_level=True)

SLURM_SH = Path(__file__).with_name("slurm.sh")
SKIP_CODE = 77                       # slurm.sh: the Debian packages cannot be installed here
PARTITION, ACCOUNT = "debug", "pipelinetest"
LOCAL_RULES = {"all", "prepare_data", "table_spec", "tables", "report"}
GPU_RULES = {"train_teacher", "train_cross_encoder", "train_student", "train_query_encoder", "encode_corpus",
             "encode_queries", "encode_train_queries", "encode_tokens", "colbert_rerank", "cross_encoder_rerank",
             "colbert_index", "colbert_retrieve", "train_doc2query", "generate_doc2query"}
TORCHRUN_PROCESSES = 2               # train_teacher's processes (teacher.gpus) in the whole-DAG test
TEACHER_RULES = {"train_teacher", "train_round_teacher"}  # both take teacher.gpus (torchrun)
# The first status query waits seconds-between-status-checks, the later ones the plugin's own interval:
# shortened from the profile's 30 / 40 s so that a DAG of ~15 dependent steps does not wait ~10 min.
FAST_STATUS = ["--seconds-between-status-checks", "5", "--slurm-init-seconds-before-status-checks", "5"]
SUBMITTED = re.compile(r"Job (\d+) has been submitted with SLURM jobid (\d+)")


def run(command: list[str], seconds: float, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`command` under `timeout -k`, so that a hung child is killed with its process group; `seconds` is a
    hang guard (conftest.hang_guard: PIPELINE_TEST_TIMEOUT_SCALE raises it)."""
    seconds = round(hang_guard(seconds))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(["timeout", "-k", "30", str(seconds), *command], cwd=cwd, env=env, text=True,
                          capture_output=True, timeout=seconds + 60)


def snakemake(workdir: Path, *args: str, seconds: int = 900) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "snakemake", *args], seconds, cwd=workdir)


def output(result: subprocess.CompletedProcess) -> str:
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def slurm():
    """A running SLURM for the module; its daemons are stopped afterwards, whatever happened."""
    started = time.monotonic()
    try:
        result = run(["bash", str(SLURM_SH), "start"], 600)
        if result.returncode == SKIP_CODE:
            pytest.skip(f"no SLURM on this machine: {result.stderr.strip()[-600:]}")
        assert result.returncode == 0, f"slurm.sh start failed ({result.returncode}):\n{output(result)[-3000:]}"
        print(f"SLURM set-up: {time.monotonic() - started:.0f} s")
        yield
    finally:
        stopped = run(["bash", str(SLURM_SH), "stop"], 300)
        assert stopped.returncode == 0, output(stopped)


def slurm_jobs(log: str) -> dict[str, dict[str, str]]:
    """SLURM's record (scontrol show job) of every job Snakemake reports as submitted, by SLURM job id."""
    ids = [slurm_id for _, slurm_id in SUBMITTED.findall(log)]
    assert ids, f"Snakemake submitted no SLURM job:\n{log[-3000:]}"
    jobs = {}
    for slurm_id in ids:
        shown = run(["scontrol", "show", "job", "-o", slurm_id], 60)
        assert shown.returncode == 0, f"SLURM forgot job {slurm_id} (MinJobAge?): {output(shown)}"
        jobs[slurm_id] = dict(field.split("=", 1) for field in shown.stdout.split() if "=" in field)
    return jobs


def rule_of(job: dict[str, str]) -> str:
    """The rule the executor plugin named in the job's comment: rule_<name>[_wildcards_<values>]."""
    match = re.fullmatch(r"rule_(.+?)(?:_wildcards_.*)?", job.get("Comment", ""))
    assert match, f"no rule in the comment of SLURM job {job.get('JobId')}: {job.get('Comment')}"
    return match.group(1)


def job_stats(log: str) -> Counter:
    """Snakemake's 'Job stats' table: jobs per rule."""
    table = log.split("Job stats:", 1)[1].split("total", 1)[0]
    return Counter({name: int(count) for name, count in re.findall(r"^(\w+)\s+(\d+)\s*$", table, re.MULTILINE)})


def test_two_rule_workflow_runs_as_slurm_jobs_with_the_gpu(slurm, tmp_path):
    """The set-up alone: a GPU rule and a CPU rule, each one sbatch job, status through squeue."""
    (tmp_path / "Snakefile").write_text(
        'localrules: all\n\n'
        'rule all:\n    input: "cpu.txt"\n\n'
        'rule gpu_step:\n    output: "gpu.txt"\n    threads: 1\n    resources: gpu=1\n'
        '    shell: "echo gpus=${{CUDA_VISIBLE_DEVICES:-none}} > {output}"\n\n'
        'rule cpu_step:\n    input: "gpu.txt"\n    output: "cpu.txt"\n    threads: 1\n'
        '    shell: "cat {input} > {output}; echo gpus=${{CUDA_VISIBLE_DEVICES:-none}} >> {output}"\n')
    result = snakemake(tmp_path, "--executor", "slurm", "--jobs", "2", "--latency-wait", "10", "--verbose",
                       "--default-resources", f"slurm_partition={PARTITION}", f"slurm_account={ACCOUNT}",
                       "runtime=5", "mem_mb=500",
                       "--set-resources", "gpu_step:gpu_model=fake", "gpu_step:cpus_per_gpu=1",
                       "--slurm-status-command", "squeue", *FAST_STATUS, seconds=600)
    log = output(result)
    assert result.returncode == 0, log[-4000:]
    jobs = slurm_jobs(log)
    by_rule = {rule_of(job): job for job in jobs.values()}
    assert sorted(by_rule) == ["cpu_step", "gpu_step"] and len(jobs) == 2
    assert all(job["JobState"] == "COMPLETED" for job in jobs.values())
    assert by_rule["gpu_step"]["TresPerJob"] == "gres:gpu:fake:1", by_rule["gpu_step"]
    assert "gpu" not in by_rule["cpu_step"].get("TresPerJob", "")
    # SLURM gave the GPU job its (fake) device and the CPU job none.
    assert (tmp_path / "cpu.txt").read_text().split() == ["gpus=0", "gpus=none"]


def every_rule_once(workdir: Path) -> list[str]:
    """The smallest DAG with every kind of rule the workflow has (64 jobs, against the whole-DAG test's 215): the
    small demo of tests/test_workflow.py on the train and dev splits alone, one student (tct_inbatch) and the HN+
    round's (the re-trained teacher), the cross-encoder's and the query encoder's students (`neighbour_students`),
    Table 3 with its one condition, Table 5 with rrf, coverage on dev. Its
    teacher is trained by 2 torchrun processes (gloo on the CPU: the node's GPUs are fake), locally and on SLURM
    alike so that both give the same weights."""
    overlay = small_demo_overlay(workdir)
    settings = yaml.safe_load(overlay.read_text())
    settings["teacher"]["gpus"] = TORCHRUN_PROCESSES
    settings["dataset"]["splits"] = ["train", "dev"]
    settings["evaluation"] = {"columns": [{"split": "dev", "measure": "RR@10"}], "coverage": {"splits": ["dev"]}}
    settings["fusion"]["methods"] = ["eq7", "rrf"]
    settings["student"]["variants"] = {"poolavg": None, "tct_triplet": None, "tct_hn": None}
    neighbour_students(settings, settings["student"]["train"])  # train_cross_encoder, train_query_encoder
    settings["table1"] = {"rows": {name: None for name in (
        "Bi-encoder (PoolAvg)", "PoolAvg + BM25", "PoolAvg + doc2query-T5", "TCT-ColBERT + doc2query-T5",
        "TCT-ColBERT HN", "TCT-ColBERT HN+ + BM25", "TCT-ColBERT HN+ + doc2query-T5")}}
    settings["table1"]["rows"]["Bi-encoder (TCT-ColBERT)"] = {"compare_to": "bm25"}
    settings["table1"]["rows"]["Cross-encoder (re-rank BM25)"] = {"run": "cross_encoder-bm25"}
    settings["table3"] = {"conditions": {"none": None, "triplet": None}}
    overlay.write_text(yaml.safe_dump(settings))
    return ["--configfile", "config.yaml", "profiles/demo/workflow.yaml", str(overlay)]


def profile_for_this_cluster(workdir: Path, rules: list[str]) -> Path:
    """profiles/slurm with this cluster's partition and account, and requests that fit one small node:
    mem_mb and CPUs are capped (the node would reject the paper's 64 GB, 8 CPUs per GPU); everything else
    (executor, status command, GPU mapping, runtimes, retries) is the profile as shipped."""
    profile = yaml.safe_load((ROOT / "profiles" / "slurm" / "config.yaml").read_text())
    cpus = os.cpu_count() or 1
    profile["default-resources"].update(slurm_partition=PARTITION, slurm_account=ACCOUNT, mem_mb=1000)
    resources = profile["set-resources"]
    for rule in rules:
        entry = resources.setdefault(rule, {})
        entry["mem_mb"] = 1000
        if "slurm_partition" in entry:
            entry["slurm_partition"] = PARTITION
        if "cpus_per_gpu" in entry:
            gpus = TORCHRUN_PROCESSES if rule in TEACHER_RULES else 1
            entry["cpus_per_gpu"] = max(1, min(entry["cpus_per_gpu"], cpus // gpus))
    profile["max-threads"] = cpus
    directory = workdir / "profiles" / "slurm-test"
    directory.mkdir()
    (directory / "config.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    return directory


def table_without_latency(path: Path) -> list[list[str]]:
    rows = [line.split("\t") for line in path.read_text().splitlines()]
    drop = rows[0].index("latency_ms")
    return [row[:drop] + row[drop + 1:] for row in rows]


@pytest.mark.slow
def test_every_rule_on_slurm_matches_the_local_run(slurm, tmp_path):
    """A DAG with every kind of rule once locally and once through profiles/slurm: every non-local rule is a
    SLURM job, GPU rules hold a GPU, and Table 1 is the same apart from the latency column. The local run
    goes on beside the SLURM one: most of the SLURM run's time is waiting for the scheduler."""
    local, cluster = copy_workflow(tmp_path / "local"), copy_workflow(tmp_path / "cluster")
    listed = snakemake(cluster, "--list-rules", seconds=300)
    assert listed.returncode == 0, output(listed)
    profile = profile_for_this_cluster(cluster, listed.stdout.split())

    # Both overlays are written here, before the thread starts: a first import of transformers from two threads
    # at once fails (its lazy module is not thread-safe: "cannot import name 'AutoTokenizer'").
    local_args = ["--profile", "profiles/demo", *every_rule_once(local)]
    cluster_args = ["--profile", str(profile.relative_to(cluster)), "--verbose", *FAST_STATUS,
                    *every_rule_once(cluster)]

    def timed(workdir: Path, args: list[str]) -> tuple[subprocess.CompletedProcess, float]:
        started = time.monotonic()
        return snakemake(workdir, *args, seconds=2000), time.monotonic() - started

    with ThreadPoolExecutor(max_workers=1) as beside:
        local_run = beside.submit(timed, local, local_args)
        result, cluster_seconds = timed(cluster, cluster_args)
        local_result, local_seconds = local_run.result()
    assert local_result.returncode == 0, output(local_result)[-3000:]
    expected = job_stats(output(local_result))
    # Every rule but the three that only fetch MS MARCO's published files (tests/README.md says where they run).
    assert workflow_rules() - set(expected) == {"candidate_run", "doc2query_download", "teacher_scores_download"}
    log = output(result)
    (tmp_path / "cluster.log").write_text(log)
    print(f"every rule once: local {local_seconds:.0f} s, SLURM {cluster_seconds:.0f} s (log: {tmp_path}/cluster.log)")
    assert result.returncode == 0, log[-4000:]
    assert job_stats(log) == expected

    jobs = slurm_jobs(log)
    ran = Counter(rule_of(job) for job in jobs.values())
    assert ran == Counter({rule: n for rule, n in expected.items() if rule not in LOCAL_RULES})
    assert [job["JobId"] for job in jobs.values() if job["JobState"] != "COMPLETED"] == []
    for job in jobs.values():
        rule = rule_of(job)
        gpus = TORCHRUN_PROCESSES if rule in TEACHER_RULES else 1 if rule in GPU_RULES else 0
        assert job.get("TresPerJob", "") == (f"gres:gpu:{gpus}" if gpus else ""), (rule, job.get("TresPerJob"))
        assert job["Partition"] == PARTITION
    assert "--gpus=1" in log and "--cpus-per-gpu=" in log  # the sbatch calls (--verbose) of the GPU rules
    # One SLURM job trained the teacher, and inside it torchrun ran every rank (the loop logs one line each).
    assert ran["train_teacher"] == 1
    teacher_log = (cluster / "logs" / "synthetic" / "train_teacher.log").read_text()
    ranks = sorted(set(re.findall(rf"rank (\d) of {TORCHRUN_PROCESSES} on cpu \(pid (\d+)\)", teacher_log)))
    assert [rank for rank, _ in ranks] == [str(r) for r in range(TORCHRUN_PROCESSES)], teacher_log[-2000:]
    assert len({pid for _, pid in ranks}) == TORCHRUN_PROCESSES

    assert table_without_latency(cluster / "results" / "table1.tsv") == \
        table_without_latency(local / "results" / "table1.tsv")
