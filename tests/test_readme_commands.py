"""Every `snakemake` command the README and docs/ print in a code block works when pasted (each runs as a dry run),
every `make` target they name exists, and every relative link of a Markdown file resolves to a file, and to a
heading where it names one."""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, copy_workflow, hang_guard

SNAKEMAKE = re.compile(r"^(\.venv/bin/)?snakemake\s")
MAKE = re.compile(r"^make\s")
MARKDOWN = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md"), ROOT / "benchmarks" / "README.md",
                   ROOT / "tests" / "README.md"])
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def commands(markdown: Path, kind: re.Pattern) -> list[str]:
    """The command lines of a Markdown file's fenced code blocks that `kind` matches, comments removed."""
    blocks = re.findall(r"^```[a-z]*\n(.*?)^```", markdown.read_text(), flags=re.S | re.M)
    lines = [line.split(" #")[0].strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if kind.match(line)]


def anchors(markdown: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation but hyphens and underscores dropped, spaces as hyphens."""
    headings = re.findall(r"^#+ (.+)$", markdown.read_text(), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-") for heading in headings}


COMMANDS = sorted({command for markdown in MARKDOWN for command in commands(markdown, SNAKEMAKE)})
MAKE_COMMANDS = sorted({command for markdown in MARKDOWN for command in commands(markdown, MAKE)})


def test_the_docs_print_snakemake_commands():
    assert len(COMMANDS) >= 5, COMMANDS  # the paper-scale, SLURM and own-corpus commands at least


@pytest.mark.parametrize("command", COMMANDS)
def test_documented_command_dry_runs(tmp_path, command):
    copy_workflow(tmp_path)
    arguments = shlex.split(command)[1:]
    result = subprocess.run([sys.executable, "-m", "snakemake", *arguments, "-n"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=hang_guard(120))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "This was a dry-run" in output or "Nothing to be done" in output, output[-3000:]


@pytest.mark.parametrize("command", MAKE_COMMANDS)
def test_documented_make_target_exists(command):
    """`make -n` prints what the target would run without running it; an unknown target fails."""
    result = subprocess.run(["make", "-n", *shlex.split(command)[1:]], cwd=ROOT, capture_output=True, text=True,
                            timeout=hang_guard(60))
    assert result.returncode == 0, result.stderr


def broken_links(markdown: Path) -> list[str]:
    """The relative links of `markdown` whose file, or heading within a Markdown file, does not exist."""
    broken = []
    for target in LINK.findall(markdown.read_text()):
        if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        linked = (markdown.parent / path).resolve() if path else markdown
        if not linked.exists():
            broken.append(f"{target}: no file {linked}")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{target}: no heading #{anchor} in {linked.name}")
    return broken


@pytest.mark.parametrize("markdown", MARKDOWN, ids=lambda path: str(path.relative_to(ROOT)))
def test_relative_links_resolve(markdown):
    assert broken_links(markdown) == []


def test_a_broken_link_or_heading_is_reported(tmp_path):
    (tmp_path / "other.md").write_text("## Fusion methods (2026-12-07, 2 cores; quiet)\n")
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n[fine](#title) [gone](missing.md) [no heading](#nowhere) [web](https://x.org)\n"
                    "[there](other.md#fusion-methods-2026-12-07-2-cores-quiet) [not there](other.md#fusion)\n")
    assert [line.split(":")[0] for line in broken_links(page)] == ["missing.md", "#nowhere", "other.md#fusion"]
