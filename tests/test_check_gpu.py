"""benchmarks/check_gpu.py without a GPU: its one-line exit, and its checks run on the CPU with a tiny BERT.

The checks take the training device and Faiss's device as parameters, so every code path of the script
but the GPU placement itself runs here: the stage calls, the log and checkpoint checks, the top-10
overlap, the reporting of failures and the skipping of what depends on them.
"""

import dataclasses
import importlib.util
import subprocess
import sys

import faiss
import pytest
import torch

from tests.conftest import ROOT, hang_guard, make_tiny_bert

SCRIPT = ROOT / "benchmarks" / "check_gpu.py"
CPU = torch.device("cpu")


def load_script():
    spec = importlib.util.spec_from_file_location("check_gpu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


check_gpu = load_script()
pytestmark = pytest.mark.filterwarnings("ignore:fp16 on the CPU:RuntimeWarning")  # the fp16 check, run on a CPU


def tiny_plan(backbone: str):
    return check_gpu.Plan(device=CPU, search_device="cpu", backbone=backbone, passages=80, train_queries=16,
                          dev_queries=12, steps=2, fp16_steps=2, batch_size=4)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is present: the script would run its checks")
def test_without_a_gpu_it_says_so_and_exits_0():
    done = subprocess.run([sys.executable, str(SCRIPT)], cwd=ROOT, capture_output=True, text=True,
                          timeout=hang_guard(180))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == check_gpu.NO_GPU


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("check_gpu")
    plan = tiny_plan(str(make_tiny_bert(work / "bert")))
    return plan, work / "run", check_gpu.run_checks(plan, work / "run")


def test_every_check_passes_on_the_cpu(cpu_run):
    plan, _, results = cpu_run
    assert [r.result for r in results] == ["pass"] * 9, results
    by_name = {r.name: r.detail for r in results}
    resolved = check_gpu.precision.resolve("auto", CPU)
    assert by_name[check_gpu.PRECISION].startswith(resolved)
    assert by_name[check_gpu.TEACHER].startswith(f"{resolved}, 2 steps")
    assert by_name[check_gpu.STUDENT].startswith(f"{resolved}, 2 steps")
    assert by_name[check_gpu.FP16].startswith("fp16, 2 steps") and "scale " in by_name[check_gpu.FP16]
    assert "80 passages" in by_name[check_gpu.ENCODE]
    searches = [r for r in results if r.name.startswith("search cpu")]
    assert len(searches) == 3 and all("overlap 1.0000" in r.detail for r in searches)
    table = check_gpu.report(plan, results, 1.0).splitlines()
    assert table[0].startswith("GPU check on the CPU") and check_gpu.precision.cpu_capability() in table[0]
    assert table[2] == "| check | result | detail |" and sum("| pass |" in line for line in table) == 9


@pytest.mark.skipif(faiss.get_num_gpus() > 0, reason="Faiss sees a GPU: the hint cannot be given")
def test_gpu_search_without_faiss_gpu_fails_with_the_install_hint(cpu_run):
    plan, work, _ = cpu_run
    with pytest.raises(check_gpu.CheckFailed, match="make FAISS=gpu install"):
        check_gpu.check_search(dataclasses.replace(plan, search_device="gpu"), work, fp16=True, slices=1)


def test_a_failure_is_reported_and_what_needs_it_skipped(tmp_path):
    plan = tiny_plan(str(tmp_path / "no-such-model"))
    results = check_gpu.run_checks(plan, tmp_path / "run")
    assert [r.result for r in results] == ["pass", "pass", "FAIL"] + ["skipped"] * 6
    assert results[3].detail == f"needs {check_gpu.TEACHER}"
    assert any("| FAIL |" in line for line in check_gpu.report(plan, results, 1.0).splitlines())


def test_top_k_overlap():
    reference = {"q1": {f"d{i}": 10.0 - i for i in range(10)}, "q2": {f"d{i}": float(i) for i in range(10)}}
    assert check_gpu.top_k_overlap(reference, reference) == 1.0
    swapped = {"q1": {**reference["q1"], "d9": 0.5, "x": 0.9}, "q2": reference["q2"]}  # 11 hits: d9 drops out
    assert check_gpu.top_k_overlap(reference, swapped) == pytest.approx(0.95)
    assert check_gpu.top_k_overlap(reference, {"q1": reference["q1"]}) == 0.5  # a missing query counts 0
