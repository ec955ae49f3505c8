"""tests/README.md names, for every rule of the workflow, a test that runs it; those tests exist."""

import re

from tests.conftest import ROOT

DAG_TEST = "test_workflow.py::test_small_demo_dag_end_to_end"


def workflow_rules() -> set[str]:
    files = [ROOT / "Snakefile", *sorted((ROOT / "rules").glob("*.smk"))]
    return {name for path in files for name in re.findall(r"^rule (\w+):", path.read_text(), re.MULTILINE)}


def coverage_table() -> dict[str, list[str]]:
    """{rule: [file::test, ...]} from the README's table ("DAG" stands for the whole-DAG test)."""
    text = (ROOT / "tests" / "README.md").read_text()
    table = text.split("| rule | runs in |", 1)[1].split("\n\n", 1)[0]
    rows = {}
    for line in table.splitlines()[2:]:
        rule, cell = (part.strip() for part in line.strip("|").split("|", 1))
        assert rule not in rows, f"tests/README.md lists rule {rule} twice"
        tests = re.findall(r"`(\w+\.py::\w+)`", cell)
        rows[rule] = tests + ([DAG_TEST] if re.match(r"DAG\b", cell) else [])
    return rows


def test_every_rule_has_a_test_that_runs_it():
    rows = coverage_table()
    assert len(workflow_rules()) > 30
    assert sorted(workflow_rules() - set(rows)) == [], "rules without a row in tests/README.md"
    assert sorted(set(rows) - workflow_rules()) == [], "rows in tests/README.md naming no rule"
    assert [rule for rule, tests in rows.items() if not tests] == []


def test_the_named_tests_exist():
    for rule, tests in coverage_table().items():
        for reference in tests:
            module, name = reference.split("::")
            source = (ROOT / "tests" / module).read_text()
            assert re.search(rf"^def {name}\(", source, re.MULTILINE), f"{rule}: {reference} does not exist"
