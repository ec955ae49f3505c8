import pytest

from pipeline.data.negatives import mine_negatives
from pipeline.io import read_triples, write_qrels, write_run


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
