import json

import pytest

from pipeline.data.negatives import main, mine_negatives
from pipeline.formats import read_qrels, read_run, read_triples, write_qrels, write_run


@pytest.fixture
def inputs(tmp_path):
    ranked = {"q1": [(f"d{i}", 100.0 - i) for i in range(50)], "q2": [("p2", 5.0)], "q3": []}
    write_run(tmp_path / "run.trec", ranked, "bm25")
    write_qrels(tmp_path / "qrels.txt", {"q1": {"d0": 1, "d3": 2, "d7": 0}, "q2": {"p2": 1}, "q3": {"x": 1}})
    return tmp_path


def test_negatives_come_from_the_top_depth_minus_positives(inputs):
    count = mine_negatives(inputs / "run.trec", inputs / "qrels.txt", inputs / "t.tsv", depth=10, per_positive=4)
    triples = read_triples(inputs / "t.tsv")
    assert count == len(triples) == 8  # two positives of q1, four negatives each; q2 and q3 have no candidates
    assert {pos for _, pos, _ in triples} == {"d0", "d3"}
    negatives = {neg for _, _, neg in triples}
    # d7 is judged non-relevant, so it is a legitimate negative; judged positives never are.
    assert negatives <= {f"d{i}" for i in range(10)} - {"d0", "d3"}


def test_mining_is_seeded(inputs):
    def mined(seed, name):
        mine_negatives(inputs / "run.trec", inputs / "qrels.txt", inputs / name, depth=40, per_positive=3, seed=seed)
        return read_triples(inputs / name)

    assert mined(1, "a.tsv") == mined(1, "b.tsv")
    assert mined(1, "a.tsv") != mined(2, "c.tsv")


def test_nothing_to_mine_is_an_error(tmp_path):
    write_run(tmp_path / "run.trec", {"q": [("p", 1.0)]}, "bm25")
    write_qrels(tmp_path / "qrels.txt", {"q": {"p": 1}})
    with pytest.raises(ValueError, match="no triples could be mined"):
        mine_negatives(tmp_path / "run.trec", tmp_path / "qrels.txt", tmp_path / "t.tsv")
    assert not (tmp_path / "t.tsv").exists()


def test_passages_judged_zero_or_below_are_never_positives(tmp_path):
    # TREC's -1 (junk) and 0 are judged non-relevant: no positive, but fine negatives.
    write_run(tmp_path / "run.trec", {"q1": [("d0", 9.0), ("junk", 8.0), ("zero", 7.0), ("d3", 6.0)],
                                      "q2": [("junk", 2.0), ("zero", 1.0), ("d3", 0.5)]}, "bm25")
    write_qrels(tmp_path / "qrels.txt", {"q1": {"d0": 1, "junk": -1, "zero": 0}, "q2": {"junk": -1, "zero": 0}})
    mine_negatives(tmp_path / "run.trec", tmp_path / "qrels.txt", tmp_path / "t.tsv", depth=3, per_positive=2)
    assert sorted(read_triples(tmp_path / "t.tsv")) == [("q1", "d0", "junk"), ("q1", "d0", "zero")]


@pytest.fixture
def round_inputs(tmp_path):
    """A dense model's run over four judged queries: q1 mines, q2's top 3 are all positives, q3 is not in the run,
    q4 has no positive; q9 is in the run but unjudged."""
    ranked = {"q1": [(f"d{i}", 50.0 - i) for i in range(8)],
              "q2": [("a", 3.0), ("b", 2.0), ("c", 1.0), ("x", 0.5)],
              "q4": [("d0", 1.0)], "q9": [("d1", 1.0)]}
    write_run(tmp_path / "run.trec", ranked, "dense")
    write_qrels(tmp_path / "qrels.txt", {"q1": {"d1": 1, "d4": 2, "d2": 0}, "q2": {"a": 1, "b": 1, "c": 1},
                                         "q3": {"z": 1}, "q4": {"d0": 0}})
    return tmp_path


def mine_round(directory, depth=3, seed=13, name="t"):
    count = mine_negatives(directory / "run.trec", directory / "qrels.txt", directory / f"{name}.tsv", depth=depth,
                           per_positive=2, seed=seed, manifest_path=directory / f"{name}.json", source="tct_inbatch")
    return count, read_triples(directory / f"{name}.tsv"), json.loads((directory / f"{name}.json").read_text())


@pytest.mark.parametrize("depth", [3, 5, 200])
def test_hard_negatives_are_unjudged_or_non_relevant_and_within_depth(round_inputs, depth):
    _, triples, _ = mine_round(round_inputs, depth=depth)
    qrels = read_qrels(round_inputs / "qrels.txt")
    run = read_run(round_inputs / "run.trec")
    for qid, pos, neg in triples:
        assert qrels[qid][pos] > 0 and qrels[qid].get(neg, 0) <= 0
        top = sorted(run[qid], key=lambda pid: -run[qid][pid])[:depth]
        assert neg in top
    if depth == 3:  # q1's top 3 are d0, d1 (positive), d2 (judged 0): two candidates per positive
        assert sorted(triples) == [("q1", "d1", "d0"), ("q1", "d1", "d2"), ("q1", "d4", "d0"), ("q1", "d4", "d2")]
    if depth == 5:  # deeper, q2's unjudged x becomes its only candidate
        assert {(q, n) for q, _, n in triples if q == "q2"} == {("q2", "x")}


def test_manifest_counts_match(round_inputs):
    count, triples, manifest = mine_round(round_inputs)
    assert {k: manifest[k] for k in ("source", "depth", "per_positive", "seed")} == {
        "source": "tct_inbatch", "depth": 3, "per_positive": 2, "seed": 13}
    assert manifest["run"] == str(round_inputs / "run.trec")
    assert manifest["counts"] == {
        "judged_queries": 4, "queries_with_positives": 3, "positives": 6, "run_queries": 4, "queries_mined": 1,
        "queries_without_negatives": 1, "queries_missing_from_run": 1, "positives_short_of_negatives": 0,
        "triples": count}
    assert count == len(triples) == 4
    assert manifest["examples"] == {"queries_without_negatives": ["q2"], "queries_missing_from_run": ["q3"]}


def test_hard_negative_mining_is_deterministic_for_a_seed(round_inputs):
    first, second = mine_round(round_inputs, depth=8, name="a"), mine_round(round_inputs, depth=8, name="b")
    assert first[1] == second[1]
    others = [mine_round(round_inputs, depth=8, seed=seed, name=f"s{seed}")[1] for seed in range(1, 6)]
    assert any(other != first[1] for other in others)


def test_a_run_with_queries_split_into_blocks_mines_the_same(round_inputs):
    """Runs are streamed a query at a time; one whose query's lines are not contiguous is read whole instead."""
    _, contiguous, _ = mine_round(round_inputs, depth=8, name="contiguous")
    lines = (round_inputs / "run.trec").read_text().splitlines(keepends=True)
    (round_inputs / "run.trec").write_text("".join(lines[::2] + lines[1::2]))
    _, split, manifest = mine_round(round_inputs, depth=8, name="split")
    assert split == contiguous and manifest["counts"]["run_queries"] == 4


def test_a_run_of_another_split_is_refused_by_name(tmp_path):
    write_run(tmp_path / "dev.trec", {"dev1": [("p", 1.0)], "dev2": [("p", 1.0)]}, "dense")
    write_qrels(tmp_path / "qrels.txt", {"q": {"p": 1}})
    with pytest.raises(ValueError, match=r"dev\.trec holds none of the 1 queries judged in .*qrels\.txt"):
        mine_negatives(tmp_path / "dev.trec", tmp_path / "qrels.txt", tmp_path / "t.tsv",
                       manifest_path=tmp_path / "t.json")
    assert not (tmp_path / "t.tsv").exists() and not (tmp_path / "t.json").exists()


def test_command_line_writes_the_manifest(round_inputs):
    main(["--run", str(round_inputs / "run.trec"), "--qrels", str(round_inputs / "qrels.txt"),
          "--out", str(round_inputs / "cli.tsv"), "--depth", "3", "--per-positive", "2",
          "--manifest", str(round_inputs / "cli.json"), "--source", "tct_inbatch"])
    _, triples, manifest = mine_round(round_inputs, name="api")
    assert read_triples(round_inputs / "cli.tsv") == triples
    assert json.loads((round_inputs / "cli.json").read_text())["counts"] == manifest["counts"]
