"""Every `snakemake` command the README prints in a code block works when pasted: each runs as a dry run."""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, copy_workflow, hang_guard

SNAKEMAKE = re.compile(r"^(\.venv/bin/)?snakemake\s")


def readme_snakemake_commands(readme: Path) -> list[str]:
    """The snakemake command lines of the README's fenced code blocks, comments removed."""
    blocks = re.findall(r"^```[a-z]*\n(.*?)^```", readme.read_text(), flags=re.S | re.M)
    lines = [line.split(" #")[0].strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if SNAKEMAKE.match(line)]


COMMANDS = readme_snakemake_commands(ROOT / "README.md")


def test_the_readme_prints_snakemake_commands():
    assert len(COMMANDS) >= 5, COMMANDS  # the paper-scale, SLURM and own-corpus commands at least


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command_dry_runs(tmp_path, command):
    copy_workflow(tmp_path)
    arguments = shlex.split(command)[1:]
    result = subprocess.run([sys.executable, "-m", "snakemake", *arguments, "-n"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=hang_guard(120))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "This was a dry-run" in output or "Nothing to be done" in output, output[-3000:]
