"""Config errors name the key, the bad value, the expectation and the file that set it, in a few lines."""

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from snakemake.utils import update_config

from pipeline.config_check import MAX_LINES, ConfigError, check_config
from tests.conftest import ROOT, copy_workflow, hang_guard

SCHEMA = ROOT / "schemas" / "config.schema.yaml"
PAPER = ROOT / "config.yaml"
DEMO = ROOT / "profiles" / "demo" / "workflow.yaml"


@pytest.fixture(autouse=True)
def in_repo(monkeypatch):
    """Files under the working directory are shown relative to it, as Snakemake runs in the workflow's."""
    monkeypatch.chdir(ROOT)


def merged(*files: Path, command_line: dict | None = None) -> dict:
    """The config Snakemake builds from these files (in order) and --config values."""
    config: dict = {}
    for path in files:
        update_config(config, yaml.safe_load(path.read_text()))
    update_config(config, copy.deepcopy(command_line or {}))
    return config


def error_for(tmp_path: Path, settings: dict) -> str:
    """The message for config.yaml, the demo overlay (config.yaml listed twice, as the demo profile does) and
    `settings` written to an overlay file."""
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(yaml.safe_dump(settings))
    files = [PAPER, DEMO, overlay]
    with pytest.raises(ConfigError) as caught:
        check_config(merged(*files), SCHEMA, ["config.yaml", PAPER, DEMO, overlay])
    message = str(caught.value)
    assert len(message.splitlines()) <= MAX_LINES, message
    return message


def test_nested_typo_names_key_suggestion_and_overlay(tmp_path):
    message = error_for(tmp_path, {"dataset": {"locaton": "x"}})
    assert "dataset.locaton" in message
    assert "did you mean 'location'?" in message
    assert "value: 'x'" in message
    assert f"set in: {tmp_path / 'overlay.yaml'}" in message
    # each file once, in merge order
    assert f"profiles/demo/workflow.yaml, {tmp_path / 'overlay.yaml'}" in message
    assert message.count("config.yaml,") == 1


def test_top_level_typo_suggests_the_section(tmp_path):
    message = error_for(tmp_path, {"fuson": {"seed": 1}})
    assert message.startswith("Invalid config at fuson: unknown key")
    assert "did you mean 'fusion'?" in message
    assert "expected one of the keys: dataset, evaluation" in message


def test_wrong_type_names_the_file_it_overrides(tmp_path):
    message = error_for(tmp_path, {"teacher": {"train": {"steps": "many"}}})
    assert "Invalid config at teacher.train.steps: 'many' is not of type 'integer'" in message
    assert f"set in: {tmp_path / 'overlay.yaml'} (overriding config.yaml, profiles/demo/workflow.yaml)" in message


def test_enum_value_suggests_the_closest_choice(tmp_path):
    message = error_for(tmp_path, {"dense": {"index": {"kind": "hnws"}}})
    assert "dense.index.kind: 'hnws' is not one of ['flat', 'hnsw', 'ivfpq']; did you mean 'hnsw'?" in message
    assert "overlay.yaml" in message


def test_list_items_are_indexed_and_oneof_lists_the_alternatives(tmp_path):
    message = error_for(tmp_path, {"evaluation": {"columns": [{"split": "dev", "measure": "RR@10"},
                                                              {"split": "dev", "measure": "MRR10"}]}})
    assert "evaluation.columns[1].measure: 'MRR10' does not match" in message
    message = error_for(tmp_path, {"fusion": {"alpha": {"bm25": "tune"}}})
    assert "fusion.alpha.bm25: 'tune' fits none of the alternatives; did you mean 'tuned'?" in message
    assert "expected: number >= 0, or 'tuned'" in message


def test_unquoted_exponent_gets_a_hint(tmp_path):
    assert "write e.g. 3.0e-6" in error_for(tmp_path, {"teacher": {"train": {"lr": "3e-6"}}})


def test_many_errors_stay_within_ten_lines(tmp_path):
    message = error_for(tmp_path, {"teacher": {"train": dict.fromkeys(
        ["steps", "batch_size", "warmup_steps", "accumulation", "seed", "checkpoint_every", "keep_checkpoints",
         "lr", "weight_decay", "max_grad_norm"], "many")}})
    assert len(message.splitlines()) == MAX_LINES
    assert message.splitlines()[-1].endswith("more errors")


def test_command_line_values_are_attributed_to_config():
    command_line = {"dense": {"index": {"kind": "hnws"}}}
    with pytest.raises(ConfigError, match=r"set in: --config on the command line \(overriding config\.yaml\)"):
        check_config(merged(PAPER, command_line=command_line), SCHEMA, [PAPER], command_line)


def test_valid_configs_pass():
    check_config(merged(PAPER), SCHEMA, [PAPER])
    check_config(merged(PAPER, DEMO), SCHEMA, [PAPER, DEMO])


@pytest.fixture
def workdir(tmp_path) -> Path:
    return copy_workflow(tmp_path)


def dry_run(workdir: Path, *args: str) -> list[str]:
    """The output lines of a failing `snakemake -n` (stderr and stdout: what the user sees)."""
    result = subprocess.run([sys.executable, "-m", "snakemake", "-n", *args], cwd=workdir, capture_output=True,
                            text=True, timeout=hang_guard(120))
    assert result.returncode != 0
    return (result.stderr + result.stdout).splitlines()


def test_snakemake_prints_an_overlay_typo_in_a_few_lines(workdir):
    overlay = workdir / "overlay.yaml"
    overlay.write_text("dataset:\n  locaton: x\n")
    lines = dry_run(workdir, "--configfile", "config.yaml", "profiles/demo/workflow.yaml", str(overlay))
    output = "\n".join(lines)
    assert len(lines) <= 15, output
    assert "Invalid config at dataset.locaton" in output
    assert "did you mean 'location'?" in output
    assert "set in: overlay.yaml" in output  # relative to the working directory
    assert "Traceback" not in output


def test_snakemake_attributes_a_typo_to_the_command_line(workdir):
    lines = dry_run(workdir, "--profile", "profiles/demo", "--config", "fuson=1")
    output = "\n".join(lines)
    assert len(lines) <= 15, output
    assert "Invalid config at fuson: unknown key ('fuson' was unexpected); did you mean 'fusion'?" in output
    assert "set in: --config on the command line" in output
    assert "config files merged (later ones override earlier): config.yaml, profiles/demo/workflow.yaml" in output


@pytest.mark.parametrize(("settings", "key"), [
    ({"dense": {"published": {"m;echo INJECTED": "castorini/tct_colbert-msmarco"}}}, "dense.published"),
    ({"student": {"variants": {"tct inbatch": {"condition": "inbatch"}}}}, "student.variants"),
    ({"bm25": {"runs": {"$(touch x)": {"collection": "collection"}}}}, "bm25.runs"),
    ({"bm25": {"runs": {"bm25+dense": {"collection": "collection"}}}}, "bm25.runs"),  # '+' joins hybrids
    ({"fusion": {"alpha": {"a'b": 0.1}}}, "fusion.alpha"),
])
def test_names_reaching_commands_and_file_names_are_checked(tmp_path, settings, key):
    """Run and model names become shell words, file names and wildcards: the schema admits [A-Za-z0-9_-]."""
    message = error_for(tmp_path, settings)
    assert f"Invalid config at {key}:" in message and "does not match '^[A-Za-z0-9_-]+$'" in message
