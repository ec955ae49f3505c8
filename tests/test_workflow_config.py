"""pipeline.workflow_config: what a profile can remove, the defaults that follow the dataset, doc2query's switch,
and the errors that name the key to change."""

import copy

import pytest
import yaml
from snakemake.utils import update_config, validate

from pipeline.workflow_config import ConfigReferenceError, resolve_config
from tests.conftest import ROOT

PAPER = yaml.safe_load((ROOT / "config.yaml").read_text())
OWN_SPLITS = {"dataset": {"name": "mine", "source": "msmarco-local", "location": "data/mine",
                          "splits": ["train", "test"]},
              "evaluation": {"columns": [{"split": "test", "measure": "nDCG@10"},
                                         {"split": "test", "measure": "R@100"}]}}


def merged(*overlays: dict) -> tuple[dict, list[str]]:
    """config.yaml with the overlays merged as Snakemake merges profiles, validated (defaults filled) and resolved."""
    config = copy.deepcopy(PAPER)
    for overlay in overlays:
        update_config(config, copy.deepcopy(overlay))
    validate(config, str(ROOT / "schemas" / "config.schema.yaml"))
    return config, resolve_config(config)


def test_paper_config_resolves_to_the_paper_settings():
    config, notes = merged()
    assert notes == []
    assert config["evaluation"]["latency_split"] == "dev"
    assert config["table2"]["split"] == "dev" and config["table3"]["split"] == "dev"
    assert config["table3"]["measure"] == "RR@10" and config["fusion"]["tune_measure"] == "RR@10"
    assert config["report"] == {"split": "dev", "measure": "RR@10", "scatter": ["bm25", "tct_inbatch"]}
    assert list(config["table1"]["rows"])[:2] == ["BM25", "doc2query-T5"] and len(config["table1"]["rows"]) == 14
    assert config["evaluation"]["coverage"]["splits"] == ["dl19"]  # auto: Table 1's TREC DL split
    assert config["fusion"]["methods"] == ["eq7", "rrf", "rbp", "combsum", "combmnz", "borda"]  # Table 5


def test_null_removes_inherited_entries_and_tables():
    config, _ = merged({"bm25": {"runs": {"d2q": None}}, "doc2query": {"source": "download"},
                        "student": {"variants": {"tct_margin": None, "tct_embed": None, "tct_generated": None}},
                        "table1": {"rows": {"doc2query-T5": None, "PoolAvg + doc2query-T5": None,
                                            "TCT-ColBERT + doc2query-T5": None,
                                            "TCT-ColBERT HN+ + doc2query-T5": None}},
                        "table2": None, "table4": None, "report": None})
    assert list(config["bm25"]["runs"]) == ["bm25"]
    assert list(config["student"]["variants"]) == ["poolavg", "tct_triplet", "tct_inbatch", "tct_hn", "tct_hnp"]
    assert "doc2query-T5" not in config["table1"]["rows"] and len(config["table1"]["rows"]) == 10
    assert config["table2"] is None and config["table4"] is None and config["report"] is None
    assert config["table3"]["split"] == "dev"  # not removed, still resolved


def test_null_removes_a_condition_or_strategy():
    config, _ = merged({"table3": {"conditions": {"none": None, "triplet": None}},
                        "table4": {"strategies": {"Margin-MSE": None}}})
    assert config["table3"]["conditions"] == {"inbatch": "tct_inbatch"}
    assert "Margin-MSE" not in config["table4"]["strategies"] and len(config["table4"]["strategies"]) == 4


def test_an_empty_mapping_changes_nothing():
    """Overlays merge: `table2: {}` keeps config.yaml's Table 2 (null is the way to remove it)."""
    config, _ = merged({"table2": {}})
    assert config["table2"]["dense"] == "tct_inbatch"


def test_train_test_dataset_needs_no_table_settings():
    config, notes = merged(OWN_SPLITS, {"doc2query": {"source": "none"}, "table4": None})
    assert config["evaluation"]["latency_split"] == "test"
    assert config["table2"]["split"] == config["table3"]["split"] == config["report"]["split"] == "test"
    assert config["table3"]["measure"] == config["report"]["measure"] == "nDCG@10"
    assert config["fusion"]["tune_measure"] == "nDCG@10"  # not RR@10: this is not MS MARCO
    assert "doc2query.source is none: bm25.runs.d2q (indexes collection.d2q)" in notes
    # MS MARCO's official candidate lists go with the row re-ranking them; Table 3 re-ranks BM25 instead.
    assert config["rerank"]["candidates"] == {} and config["table3"]["sparse"] == "bm25"
    assert "MS MARCO's official candidate lists are not mine's: table1.rows.'ColBERT (re-rank BM25 top-1000)'" in notes


def test_doc2query_none_takes_its_dependants_with_it():
    config, notes = merged({"doc2query": {"source": "none"}})
    assert list(config["bm25"]["runs"]) == ["bm25"] and "tct_generated" not in config["student"]["variants"]
    assert not [name for name, row in config["table1"]["rows"].items() if "d2q" in row["run"]]
    assert "tct_generated" not in config["table4"]["strategies"].values()
    assert len(config["table4"]["strategies"]) == 4
    assert notes == ["doc2query.source is none: " + note for note in (
        "bm25.runs.d2q (indexes collection.d2q)", "student.variants.tct_generated (trains on generated queries)",
        "table1.rows.'doc2query-T5'", "table1.rows.'PoolAvg + doc2query-T5'",
        "table1.rows.'TCT-ColBERT + doc2query-T5'", "table1.rows.'TCT-ColBERT HN+ + doc2query-T5'",
        "table4.strategies.'Eq. 6 + generated queries'")]


def test_candidate_lists_are_first_stage_runs_and_need_every_evaluated_split():
    config, notes = merged()
    assert config["table1"]["rows"]["ColBERT (re-rank BM25 top-1000)"]["run"] == "colbert-top1000" and not notes
    assert config["table3"]["sparse"] == "top1000"
    paper = copy.deepcopy(PAPER)
    paper["rerank"]["candidates"]["top1000"] = {"dev": "top1000.dev"}  # overlays merge: replace it here
    validate(paper, str(ROOT / "schemas" / "config.schema.yaml"))
    with pytest.raises(ConfigReferenceError, match=r"candidate list 'top1000' on split 'dl19'.*rerank.candidates"):
        resolve_config(paper)
    config, _ = merged({"rerank": {"candidates": {"top1000": None}},
                        "table1": {"rows": {"ColBERT (re-rank BM25 top-1000)": None}}, "table3": {"sparse": "bm25"}})
    assert config["rerank"]["candidates"] == {}


def test_explicit_settings_win_over_the_dataset_defaults():
    config, _ = merged({"table3": {"split": "dl19", "measure": "nDCG@10"}, "fusion": {"tune_measure": "nDCG@10"},
                        "report": {"scatter": ["bm25", "poolavg"]}})
    assert config["table3"]["split"] == "dl19" and config["table3"]["measure"] == "nDCG@10"
    assert config["fusion"]["tune_measure"] == "nDCG@10" and config["report"]["scatter"] == ["bm25", "poolavg"]


def test_coverage_splits_and_fusion_method_runs():
    config, _ = merged(OWN_SPLITS)
    assert config["evaluation"]["coverage"]["splits"] == []  # no dl* split: no coverage columns unless asked
    config, _ = merged(OWN_SPLITS, {"evaluation": {"coverage": {"splits": ["test"]}},
                                    "fusion": {"methods": ["eq7", "rrf"]},
                                    "report": {"scatter": ["tct_inbatch+bm25", "tct_inbatch+bm25@rrf"]}})
    assert config["evaluation"]["coverage"]["splits"] == ["test"]
    with pytest.raises(ConfigReferenceError, match="names run 'tct_inbatch\\+bm25@rbp', which no rule produces"):
        merged({"fusion": {"methods": ["eq7", "rrf"]}, "report": {"scatter": ["bm25", "tct_inbatch+bm25@rbp"]}})
    with pytest.raises(ConfigReferenceError, match=r"evaluation\.coverage\.splits is 'dl20', not one of"):
        merged({"evaluation": {"coverage": {"splits": ["dl20"]}}})
    paper = copy.deepcopy(PAPER)
    paper["fusion"]["methods"] = ["rrf"]  # Eq. 7 is every hybrid's own run: it cannot be left out
    with pytest.raises(Exception, match="does not contain"):
        validate(paper, str(ROOT / "schemas" / "config.schema.yaml"))


def test_hard_negative_rounds_resolve_and_name_the_key():
    config, _ = merged({"negatives": {"rounds": {"hn2": {"model": "tct_hn", "teacher": "retrain"}}}})
    assert config["negatives"]["rounds"]["hn2"] == {"model": "tct_hn", "depth": 200, "per_positive": 4, "seed": 13,
                                                   "teacher": "retrain"}  # negatives' settings, teacher kept
    assert list(config["negatives"]["rounds"]) == ["hn", "hnp", "hn2"]  # in order: later rounds chain
    with pytest.raises(ConfigReferenceError, match=r"negatives\.rounds\.hn\.model is 'nothing', not a model"):
        merged({"negatives": {"rounds": {"hn": {"model": "nothing"}}}})
    with pytest.raises(ConfigReferenceError, match=r"student\.variants\.tct_hn\.negatives is 'hn', not a round"):
        merged({"negatives": {"rounds": {"hn": None}}})
    with pytest.raises(ConfigReferenceError, match=r"which mines with tct_hn itself"):
        merged({"negatives": {"rounds": {"hn": {"model": "tct_hn"}}}})
    with pytest.raises(ConfigReferenceError, match=r"hard-negative rounds mine the train split"):
        merged(OWN_SPLITS, {"dataset": {"splits": ["test"]}, "doc2query": {"source": "none"}})


def test_a_variant_starts_from_the_teacher_the_backbone_or_another_variant():
    config, _ = merged()
    assert config["student"]["variants"]["tct_hn"]["init"] == "tct_inbatch"  # v2: the round continues
    assert "init" not in config["student"]["variants"]["tct_inbatch"]  # student.init: the teacher
    with pytest.raises(ConfigReferenceError, match=r"student\.variants\.tct_hn\.init is 'tct_gone': not teacher, "
                                                   r"backbone or a variant"):
        merged({"student": {"variants": {"tct_hn": {"condition": "inbatch", "negatives": "hn", "init": "tct_gone"}}}})
    with pytest.raises(ConfigReferenceError, match=r"init goes round in a circle \(tct_inbatch -> tct_hn -> "
                                                   r"tct_inbatch\)"):
        merged({"student": {"variants": {"tct_inbatch": {"condition": "inbatch", "init": "tct_hn"}}}})


def test_a_student_of_the_cross_encoder_learns_its_pairs_from_it_alone():
    variant = {"condition": "margin_mse", "gamma": 0.0, "teacher": "cross_encoder", "init": "backbone"}
    config, _ = merged({"student": {"variants": {"margin_ce": variant}}})
    assert config["student"]["variants"]["margin_ce"]["teacher"] == "cross_encoder"
    with pytest.raises(ConfigReferenceError, match=r"student\.variants\.margin_ce\.condition is 'inbatch': the "
                                                   r"cross-encoder scores each query's own pair only"):
        merged({"student": {"variants": {"margin_ce": {**variant, "condition": "inbatch"}}}})
    with pytest.raises(ConfigReferenceError, match=r"margin_ce sets teacher_scores beside teacher: cross_encoder"):
        merged({"student": {"variants": {"margin_ce": {**variant, "teacher_scores": "scores.tsv"}}}})
    dual = {**variant, "scorer": "dual_pooling", "embed_weight": 1.0}
    assert merged({"student": {"variants": {"dual_ce": dual}}})[0]["student"]["variants"]["dual_ce"] == dual
    with pytest.raises(ConfigReferenceError, match=r"dual_ce\.embed_weight: embedding matching from the "
                                                   r"cross-encoder needs its dual-pooling scorer"):
        merged({"student": {"variants": {"dual_ce": {**dual, "scorer": "cls"}}}})
    with pytest.raises(ConfigReferenceError, match=r"tct_x\.scorer is the cross-encoder's: set teacher"):
        merged({"student": {"variants": {"tct_x": {"condition": "inbatch", "scorer": "dual_pooling"}}}})


def test_an_asymmetric_student_searches_a_model_that_encodes_passages():
    asym = {"condition": "inbatch", "searches": "tct_inbatch"}
    config, _ = merged({"student": {"variants": {"asym": asym}}})
    assert config["student"]["variants"]["asym"]["searches"] == "tct_inbatch"
    with pytest.raises(ConfigReferenceError, match=r"student\.variants\.asym\.searches is 'gone', not a dense model"):
        merged({"student": {"variants": {"asym": {**asym, "searches": "gone"}}}})
    with pytest.raises(ConfigReferenceError, match=r"searches is 'asym', not a dense model .* encodes its own"):
        merged({"student": {"variants": {"asym": asym, "asym2": {**asym, "searches": "asym"}}}})
    with pytest.raises(ConfigReferenceError, match=r"asym searches tct_inbatch, from which it learns alone .*: "
                                                   r"remove negatives"):
        merged({"student": {"variants": {"asym": {**asym, "negatives": "hn"}}}})


def test_index_comparison_names_dense_models():
    config, _ = merged({"dense": {"compare": {"kinds": ["hnsw"], "models": ["tct_inbatch"]}}})
    assert config["dense"]["compare"]["models"] == ["tct_inbatch"]
    with pytest.raises(ConfigReferenceError, match=r"dense\.compare\.models names 'bm25', not a dense model"):
        merged({"dense": {"compare": {"kinds": ["hnsw"], "models": ["bm25"]}}})


def test_report_scatter_follows_table1_without_table2():
    config, _ = merged({"table2": None})
    assert config["report"]["scatter"] == ["bm25", "d2q"]


@pytest.mark.parametrize(("overlays", "message"), [
    ((OWN_SPLITS, {"evaluation": {"latency_split": "dev"}}),
     "evaluation.latency_split is 'dev', not one of dataset.splits ['train', 'test']: change evaluation.latency_split"),
    (({"dataset": {"splits": ["train", "test"]}},),
     "evaluation.columns[0].split is 'dev', not one of dataset.splits ['train', 'test']"),
    (({"student": {"variants": {"poolavg": None}}},),
     "table1.rows.'Bi-encoder (PoolAvg)'.run names run 'poolavg', which is not defined in bm25.runs, "
     "rerank.candidates, student.variants or dense.published"),
    (({"student": {"variants": {"poolavg": None}}, "table1": {"rows": {
        "Bi-encoder (PoolAvg)": None, "PoolAvg + BM25": None, "PoolAvg + doc2query-T5": None}},
      "table3": None, "table4": None},),
     "table1.rows.'Bi-encoder (TCT-ColBERT)'.compare_to names run 'poolavg'"),
    (({"table2": {"dense": "tct"}},), "table2.dense names run 'tct'"),
    (({"table3": {"conditions": {"none": "poolavg+bm25x"}}},),
     "table3.conditions.none names run 'poolavg+bm25x', which uses 'bm25x', which is not defined"),
    (({"report": {"scatter": ["bm25", "nothing"]}},), "or switch the report off with `report: null`"),
])
def test_references_to_missing_splits_and_runs_name_the_key(overlays, message):
    with pytest.raises(ConfigReferenceError) as error:
        merged(*overlays)
    assert message in str(error.value)


def test_the_first_demo_shows_table1_and_leaves_the_rest_to_demo_full():
    demo = yaml.safe_load((ROOT / "profiles" / "demo" / "workflow.yaml").read_text())
    first_run = yaml.safe_load((ROOT / "profiles" / "demo" / "first-run.yaml").read_text())
    config, _ = merged(demo, first_run)
    assert list(config["table1"]["rows"]) == [
        "BM25", "doc2query-T5", "Bi-encoder (PoolAvg)", "Bi-encoder (TCT-ColBERT)", "ColBERT (end to end)",
        "PoolAvg + BM25", "TCT-ColBERT + BM25", "PoolAvg + doc2query-T5", "TCT-ColBERT + doc2query-T5",
        "ColBERT (re-rank BM25 top-100)"]
    assert list(config["student"]["variants"]) == ["poolavg", "tct_inbatch"]
    assert config["table3"] is None and config["fusion"]["methods"] == ["eq7"]
    full, _ = merged(demo)  # profiles/demo-full: Tables 3 and 5 and the rounds' rows come back
    assert config["table1"]["rows"].items() <= full["table1"]["rows"].items()
    assert "TCT-ColBERT HN+" in full["table1"]["rows"] and full["table3"] and len(full["fusion"]["methods"]) == 6
