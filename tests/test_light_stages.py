"""Stages that work on runs, tables and Faiss indexes start fast: they import neither torch nor transformers
(seconds per job, and the demo runs dozens of them)."""

import subprocess
import sys

import pytest

from tests.conftest import ROOT, hang_guard

LIGHT_STAGES = ["pipeline.evaluate", "pipeline.fusion", "pipeline.fusion_methods", "pipeline.coverage",
                "pipeline.tables", "pipeline.data.sample", "pipeline.tune_alpha", "pipeline.dense.search",
                "pipeline.dense.compare_indexes", "pipeline.dense.index"]


@pytest.mark.parametrize("module", LIGHT_STAGES)
def test_stage_imports_neither_torch_nor_transformers(module):
    check = (f"import sys, {module}; heavy = sorted(m for m in ('torch', 'transformers') if m in sys.modules); "
             "print(' '.join(heavy))")
    result = subprocess.run([sys.executable, "-c", check], cwd=ROOT, capture_output=True, text=True,
                            timeout=hang_guard(120))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [], f"{module} imports {result.stdout.strip()}"
