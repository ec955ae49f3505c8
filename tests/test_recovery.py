"""Recovery after a kill needs only the same command: no stale lock, no leftover staging directory."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from pipeline.workflow_locks import OWNER_FILE, record_owner, release_stale_locks
from tests.conftest import ROOT, copy_workflow, hang_guard, small_demo_overlay


def wait_for(condition, seconds: float, what: str, interval: float = 0.2) -> None:
    deadline = time.monotonic() + hang_guard(seconds)
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {seconds} s for {what}")
        time.sleep(interval)


def test_killed_snakemake_reruns_with_the_same_command(tmp_path):
    """kill -9 of Snakemake and its jobs while a job runs; the same command then completes, without --unlock."""
    copy_workflow(tmp_path)
    command = [sys.executable, "-m", "snakemake", "--profile", "profiles/demo", "--configfile", "config.yaml",
               "profiles/demo/workflow.yaml", str(small_demo_overlay(tmp_path)), "--",
               "results/synthetic/metrics/bm25.dev.tsv"]
    first = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    try:
        wait_for(lambda: (tmp_path / ".snakemake" / OWNER_FILE).exists()
                 and (tmp_path / "logs" / "synthetic" / "bm25_index.collection.log").exists(), 120,
                 "the BM25 index job to start")
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # Snakemake and every job it started, as a crash would
        first.wait()
    assert any((tmp_path / ".snakemake" / "locks").iterdir())  # the lock a killed Snakemake leaves

    again = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=hang_guard(300))
    output = again.stdout + again.stderr
    assert again.returncode == 0, output[-3000:]
    assert "removed the stale lock of Snakemake process" in output
    assert (tmp_path / "results" / "synthetic" / "metrics" / "bm25.dev.tsv").exists()
    assert not (tmp_path / ".snakemake" / OWNER_FILE).exists()  # released on success


def test_a_live_or_foreign_lock_is_kept(tmp_path):
    locks = tmp_path / "locks"
    locks.mkdir()
    (locks / "0.input.lock").write_text("x\n")
    assert release_stale_locks(tmp_path) is None  # no owner recorded: Snakemake's own message stands
    record_owner(tmp_path)  # this test process: alive
    assert release_stale_locks(tmp_path) is None and (locks / "0.input.lock").exists()
    owner = json.loads((tmp_path / OWNER_FILE).read_text())
    (tmp_path / OWNER_FILE).write_text(json.dumps({**owner, "host": "another-node"}))
    assert release_stale_locks(tmp_path) is None and (locks / "0.input.lock").exists()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / OWNER_FILE).write_text(json.dumps({**owner, "pid": dead.pid}))
    assert "stale lock" in release_stale_locks(tmp_path) and not locks.exists()


@pytest.mark.slow(seconds=20)
def test_killed_prepare_data_leaves_no_staging_directory(tmp_path):
    """SIGKILL while prepare_data writes its staging copy; the rerun removes it and finishes."""
    out = tmp_path / "resources"
    arguments = [sys.executable, "-m", "pipeline.data.prepare", "--source", "synthetic", "--splits", "train",
                 "dev", "--out", str(out), "--n-train", "20", "--n-dev", "5", "--n-dl", "1"]
    # 150,000 passages: about 0.2 s of writing to catch (the 20 s before it build them in memory).
    killed = subprocess.Popen([*arguments, "--n-passages", "150000"], cwd=ROOT, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        # The staging copy of collection.tsv is itself written under a temporary name, then renamed.
        wait_for(lambda: any(out.glob(".prepare.*/.collection.tsv.*")), 120, "the staging copy of the collection",
                 interval=0.02)
    finally:
        killed.kill()
        killed.wait()
    assert list(out.glob(".prepare.*"))  # what SIGKILL leaves
    subprocess.run([*arguments, "--n-passages", "50"], cwd=ROOT, check=True, capture_output=True,
                   timeout=hang_guard(120))
    assert not list(out.glob(".prepare.*")) and (out / "collection.tsv").exists()
