"""The merged config as the rules read it: the profile semantics a JSON schema cannot express.

Snakemake merges a profile's config over config.yaml key by key, so an overlay can add and change but
not take away. `resolve_config` runs once, after schema validation, and gives an overlay these rules:

- `null` removes what is inherited: a whole table (`table2`, `table3`, `table4`), the `report`, or one
  entry of `bm25.runs`, `student.variants`, `dense.published`, `rerank.candidates`, `table1.rows`,
  `table3.conditions` or `table4.strategies`;
- settings left out follow the dataset: the split of Tables 2 and 3, of the report, of Table 1's
  latency column and of the index comparison is the first split of `evaluation.columns`; the measure of
  Table 3 and of the report is the first measure of Table 1; alpha is tuned on RR@10 on MS MARCO (the
  paper's choice) and on Table 1's first measure on any other dataset; judgement coverage
  (`evaluation.coverage.splits: auto`) is shown for Table 1's splits named dl* (TREC DL's pooled judgements);
- `doc2query.source: none` leaves out everything built on the expansion: the sparse runs indexing it,
  the students trained on generated queries, and the table rows, strategies and conditions using them;
- a hard-negative round's depth, per_positive and seed left out are those of `negatives`;
- on a dataset other than msmarco-passage, the candidate lists naming MS MARCO's official files go, with
  the rows re-ranking them; Table 3 then re-ranks the first sparse run;
- every split and run a table names must exist, or the error says which key to change; a run re-ranking
  a candidate list of `rerank.candidates` needs that list for every split it is evaluated on.
"""

from __future__ import annotations

import re

from pipeline.config_check import ConfigError
from pipeline.data.candidates import OFFICIAL

REMOVABLE_ENTRIES = (("bm25", "runs"), ("student", "variants"), ("dense", "published"), ("rerank", "candidates"),
                     ("negatives", "rounds"), ("table1", "rows"), ("table3", "conditions"), ("table4", "strategies"))
ROUND_DEFAULTS = ("depth", "per_positive", "seed")  # a round's settings left out are negatives.<setting>


class ConfigReferenceError(ConfigError):
    """A setting names a split or run that the rest of the config does not define."""


def resolve_config(config: dict) -> list[str]:
    """Apply removals, dataset-following defaults and the doc2query switch to `config` in place, then check
    every cross-reference. Returns one note per thing left out (doc2query switched off, MS MARCO's official
    candidate lists on another dataset), each saying why."""
    for section, key in REMOVABLE_ENTRIES:
        if config[section] is not None:
            config[section][key] = {name: entry for name, entry in config[section][key].items() if entry is not None}
    notes = _without_doc2query(config) if config["doc2query"]["source"] == "none" else []
    if config["dataset"]["source"] != "msmarco-passage":
        notes += _without_official_candidates(config)
    _follow_dataset(config)
    check_references(config)
    return notes


def first_column(config: dict) -> dict:
    return config["evaluation"]["columns"][0]


def _follow_dataset(config: dict) -> None:
    split, measure = first_column(config)["split"], first_column(config)["measure"]
    config["evaluation"]["latency_split"] = config["evaluation"]["latency_split"] or split
    config["dense"]["compare"]["split"] = config["dense"]["compare"]["split"] or split
    for section in ("table2", "table3", "report"):
        if config[section] is not None:
            config[section]["split"] = config[section].get("split") or split
    for section in ("table3", "report"):
        if config[section] is not None:
            config[section]["measure"] = config[section].get("measure") or measure
    if config["report"] is not None and "scatter" not in config["report"]:
        config["report"]["scatter"] = _default_scatter(config)
    paper_dataset = config["dataset"]["source"] == "msmarco-passage"
    config["fusion"]["tune_measure"] = config["fusion"]["tune_measure"] or ("RR@10" if paper_dataset else measure)
    negatives = config["negatives"]
    for settings in negatives["rounds"].values():
        settings.update({key: settings.get(key, negatives[key]) for key in ROUND_DEFAULTS})
        settings.setdefault("teacher", "keep")
    coverage = config["evaluation"]["coverage"]
    if coverage["splits"] == "auto":
        coverage["splits"] = [split for split in table1_splits(config) if split.startswith("dl")]


def table1_splits(config: dict) -> list[str]:
    """The splits of Table 1's columns, in order."""
    return list(dict.fromkeys(column["split"] for column in config["evaluation"]["columns"]))


def _default_scatter(config: dict) -> list[str]:
    """The report's per-query figure: Table 2's sparse run against its dense model (BM25 against TCT-ColBERT in
    the paper's config), else Table 1's first two rows."""
    if config["table2"] is not None:
        return [config["table2"]["sparse"], config["table2"]["dense"]]
    runs = list(dict.fromkeys(row["run"] for row in config["table1"]["rows"].values()))
    return (runs * 2)[:2]


def _without_doc2query(config: dict) -> list[str]:
    """Remove what needs doc2query's expansion; one note per removed thing."""
    expansion = config["doc2query"]["collection"]
    runs, variants = config["bm25"]["runs"], config["student"]["variants"]
    removed = {name: f"bm25.runs.{name} (indexes {expansion})"
               for name, run in runs.items() if run["collection"] == expansion}
    removed |= {name: f"student.variants.{name} (trains on generated queries)"
                for name, variant in variants.items() if variant.get("generated_ratio", 0) > 0}
    for name in removed:
        runs.pop(name, None)
        variants.pop(name, None)
    return [f"doc2query.source is none: {note}" for note in [*removed.values(), *_remove_users(config, removed)]]


def _without_official_candidates(config: dict) -> list[str]:
    """On a dataset other than MS MARCO passage, remove the candidate lists naming MS MARCO's official files
    (inherited from config.yaml) and what re-ranks them; one note per removed thing."""
    candidates = config["rerank"]["candidates"]
    removed = {name: f"rerank.candidates.{name}" for name, files in candidates.items()
               if set(files.values()) <= set(OFFICIAL)}
    for name in removed:
        del candidates[name]
    notes = [*removed.values(), *_remove_users(config, removed)]
    table3 = config["table3"]
    if table3 is not None and table3["sparse"] in removed and config["bm25"]["runs"]:
        table3["sparse"] = next(iter(config["bm25"]["runs"]))
        notes.append(f"table3.sparse is now {table3['sparse']}")
    return [f"MS MARCO's official candidate lists are not {config['dataset']['name']}'s: {note}" for note in notes]


def _remove_users(config: dict, removed: dict) -> list[str]:
    """Remove the Table 1 rows, Table 3 conditions and Table 4 strategies built on a removed run; their notes."""
    notes = []

    def uses_removed(*named: str | None) -> bool:
        return any(part in removed for run in named if run for part in run_parts(run))

    rows = config["table1"]["rows"]
    for name in [name for name, row in rows.items() if uses_removed(row["run"], row.get("compare_to"))]:
        del rows[name]
        notes.append(f"table1.rows.{name!r}")
    for section, key in (("table3", "conditions"), ("table4", "strategies")):
        if config[section] is not None:
            entries = config[section][key]
            for label in [label for label, run in entries.items() if uses_removed(run)]:
                del entries[label]
                notes.append(f"{section}.{key}.{label!r}")
    return notes


def run_parts(run: str) -> list[str]:
    """The sparse runs and dense models a run name is built from: `tct+bm25` and `tct+bm25@rrf` -> [tct, bm25]."""
    return re.split(r"\+|-rerank-", re.sub(r"^(colbert|cross_encoder)-", "", run).partition("@")[0])


def first_stage_runs(config: dict) -> set[str]:
    """Runs a model can re-rank: the sparse runs and the candidate lists read from files."""
    return set(config["bm25"]["runs"]) | set(config["rerank"]["candidates"])


def dense_models(config: dict) -> set[str]:
    """The dense models: the student variants and the published checkpoints."""
    return set(config["student"]["variants"]) | set(config["dense"]["published"])


def known_runs(config: dict) -> set[str]:
    """Every run the workflow can produce: sparse runs, candidate lists, dense models, their hybrids with
    sparse runs (Eq. 7's `<dense>+<sparse>`, another fusion method's `<dense>+<sparse>@<method>`), ColBERT end
    to end (`colbert`), its and the cross-encoder's re-ranking of each first-stage run, and each dense model
    re-ranking each."""
    sparse, first = set(config["bm25"]["runs"]), first_stage_runs(config)
    dense = dense_models(config)
    hybrids = {f"{d}+{s}" for d in dense for s in sparse}
    methods = [method for method in config["fusion"]["methods"] if method != "eq7"]
    derived = hybrids | {f"{h}@{m}" for h in hybrids for m in methods}
    derived |= {f"{reranker}-{s}" for reranker in ("colbert", "cross_encoder", *(f"{d}-rerank" for d in dense))
                for s in first}
    return first | dense | derived | {"colbert"}


def check_references(config: dict) -> None:
    """Every split and run named by evaluation, the tables, the report and negative mining must exist."""
    splits = config["dataset"]["splits"]
    named_splits = [(f"evaluation.columns[{i}].split", column["split"])
                    for i, column in enumerate(config["evaluation"]["columns"])]
    named_splits += [("evaluation.latency_split", config["evaluation"]["latency_split"])]
    if config["dense"]["compare"]["kinds"]:
        named_splits.append(("dense.compare.split", config["dense"]["compare"]["split"]))
    named_splits += [(f"{section}.split", config[section]["split"])
                     for section in ("table2", "table3", "report") if config[section] is not None]
    named_splits += [("evaluation.coverage.splits", split) for split in config["evaluation"]["coverage"]["splits"]]
    for key, split in named_splits:
        if split not in splits:
            raise ConfigReferenceError(f"{key} is {split!r}, not one of dataset.splits {splits}: change {key}")

    dense = dense_models(config)
    for model in config["dense"]["compare"]["models"]:
        if model not in dense:
            raise ConfigReferenceError(f"dense.compare.models names {model!r}, not a dense model of student.variants "
                                       f"or dense.published: change it, or leave the list empty to compare every one")
    known = known_runs(config)
    for key, run, fix in _named_runs(config):
        if run not in known:
            raise ConfigReferenceError(f"{key} names run {run!r}, which {_why_unknown(config, run)}: {fix}")
    _check_candidate_splits(config)
    _check_rounds(config)
    _check_inits(config)
    _check_cross_encoder_students(config)
    _check_query_encoders(config)


def _check_query_encoders(config: dict) -> None:
    """An asymmetric student searches a dense model that encodes its own passages, and learns from it alone."""
    variants = config["student"]["variants"]
    dense = dense_models(config)
    for variant, settings in variants.items():
        if "searches" not in settings:
            continue
        key, searched = f"student.variants.{variant}", settings["searches"]
        if searched not in dense or "searches" in variants.get(searched, {}):
            raise ConfigReferenceError(f"{key}.searches is {searched!r}, not a dense model of student.variants or "
                                       "dense.published that encodes its own passages: name one")
        clashing = [name for name in ("teacher", "teacher_scores", "negatives", "init", "generated_ratio")
                    if name in settings]
        if settings["condition"] != "inbatch" or clashing:
            raise ConfigReferenceError(f"{key} searches {searched}, from which it learns alone (condition inbatch, its "
                                       f"in-batch scores): remove {', '.join(clashing) or 'the other condition'}")


def _check_cross_encoder_students(config: dict) -> None:
    """A student taught by the cross-encoder learns each query's own pair from it, and only from it; embedding
    matching from it needs the dual-pooling scorer, and only a cross-encoder's student names a scorer."""
    for variant, settings in config["student"]["variants"].items():
        if settings.get("teacher") != "cross_encoder":
            continue
        key = f"student.variants.{variant}"
        if settings["condition"] not in ("triplet", "margin_mse"):
            raise ConfigReferenceError(f"{key}.condition is {settings['condition']!r}: the cross-encoder scores each "
                                       "query's own pair only; use margin_mse (or triplet)")
        clashing = [name for name in ("teacher_scores", "generated_ratio") if settings.get(name)]
        if clashing:
            raise ConfigReferenceError(f"{key} sets {clashing[0]} beside teacher: cross_encoder; the cross-encoder "
                                       "scores every pair itself: remove one of them")
        if settings.get("embed_weight", 0) > 0 and settings.get("scorer") != "dual_pooling":
            raise ConfigReferenceError(f"{key}.embed_weight: embedding matching from the cross-encoder needs its "
                                       "dual-pooling scorer: set scorer: dual_pooling, or remove embed_weight")
    for variant, settings in config["student"]["variants"].items():
        if "scorer" in settings and settings.get("teacher") != "cross_encoder":
            raise ConfigReferenceError(f"student.variants.{variant}.scorer is the cross-encoder's: set "
                                       "teacher: cross_encoder, or remove it")


def _check_inits(config: dict) -> None:
    """A variant's `init` is teacher, backbone, or another variant, and following inits never comes back to
    where it started (the DAG would have a cycle)."""
    variants = config["student"]["variants"]
    for variant in variants:
        seen = [variant]
        init = variants[variant].get("init")
        while init not in (None, "teacher", "backbone"):
            if init not in variants:
                raise ConfigReferenceError(
                    f"student.variants.{seen[-1]}.init is {init!r}: not teacher, backbone or a variant of "
                    f"student.variants {sorted(variants)}: change it, or remove the variant with `{seen[-1]}: null`")
            if init in seen:
                circle = " -> ".join([*seen, init])
                raise ConfigReferenceError(f"student.variants.{variant}: init goes round in a circle ({circle}): "
                                           "start one of them from teacher or backbone")
            seen.append(init)
            init = variants[init].get("init")


def _check_rounds(config: dict) -> None:
    """Each student naming a round names one, which mines with a dense model on the train split, and not with the
    student itself (a cycle). A round no student names is never built and not checked: a config of published
    checkpoints alone keeps config.yaml's rounds."""
    rounds, variants = config["negatives"]["rounds"], config["student"]["variants"]
    dense = dense_models(config)
    named = {settings["negatives"] for settings in variants.values() if "negatives" in settings}
    for name, settings in rounds.items():
        if name in named and settings["model"] not in dense:
            raise ConfigReferenceError(
                f"negatives.rounds.{name}.model is {settings['model']!r}, not a model of student.variants or "
                f"dense.published: change it, or remove the round with `{name}: null`")
    used = {variant: settings["negatives"] for variant, settings in variants.items() if "negatives" in settings}
    for variant, round_name in used.items():
        if round_name not in rounds:
            raise ConfigReferenceError(
                f"student.variants.{variant}.negatives is {round_name!r}, not a round of negatives.rounds "
                f"{sorted(rounds)}: add the round, or remove the variant with `{variant}: null`")
        if rounds[round_name]["model"] == variant:
            raise ConfigReferenceError(f"student.variants.{variant} trains on round {round_name!r}, which mines "
                                       f"with {variant} itself: name an earlier model in negatives.rounds.{round_name}")
    if used and "train" not in config["dataset"]["splits"]:
        raise ConfigReferenceError(f"hard-negative rounds mine the train split, which dataset.splits lacks: remove "
                                   f"the students naming a round ({', '.join(sorted(used))})")


def _check_candidate_splits(config: dict) -> None:
    """A candidate list must have a file for every split a table evaluates a run built on it."""
    candidates = config["rerank"]["candidates"]
    splits = list(dict.fromkeys([*table1_splits(config), *config["evaluation"]["coverage"]["splits"]]))
    uses = [(f"table1.rows.{name!r}", run, split) for name, row in config["table1"]["rows"].items()
            for run in filter(None, (row["run"], row.get("compare_to"))) for split in splits]
    if config["table3"] is not None:
        uses.append(("table3.sparse", config["table3"]["sparse"], config["table3"]["split"]))
    for key, run, split in uses:
        for part in run_parts(run):
            if part in candidates and split not in candidates[part]:
                raise ConfigReferenceError(
                    f"{key} uses candidate list {part!r} on split {split!r}, which rerank.candidates.{part} has "
                    f"no file for: add one, or change {key}")


def _named_runs(config: dict) -> list[tuple[str, str, str]]:
    """(key, run, how to fix) for every run a setting names."""
    named = []
    for name, row in config["table1"]["rows"].items():
        fix = f"change it, or remove the row with `{name!r}: null` under table1.rows"
        named += [(f"table1.rows.{name!r}.{field}", row[field], fix)
                  for field in ("run", "compare_to") if field in row]
    if config["table2"] is not None:
        named += [(f"table2.{field}", config["table2"][field], "change it, or switch Table 2 off with `table2: null`")
                  for field in ("dense", "sparse")]
    if config["table3"] is not None:
        fix = "change it, or switch Table 3 off with `table3: null`"
        named.append(("table3.sparse", config["table3"]["sparse"], fix))
        named += [(f"table3.conditions.{label}", run, fix) for label, run in config["table3"]["conditions"].items()]
    if config["table4"] is not None:
        fix = "change it, or switch Table 4 off with `table4: null`"
        named.append(("table4.baseline", config["table4"]["baseline"], fix))
        named += [(f"table4.strategies.{label!r}", run, fix) for label, run in config["table4"]["strategies"].items()]
    if config["report"] is not None:
        named += [(f"report.scatter[{i}]", run, "change it, or switch the report off with `report: null`")
                  for i, run in enumerate(config["report"]["scatter"])]
    if "train" in config["dataset"]["splits"] and config["dataset"]["source"] != "msmarco-passage":
        named.append(("negatives.run", config["negatives"]["run"], "name a sparse run of bm25.runs"))
    return named


def _why_unknown(config: dict, run: str) -> str:
    """A short reason: the sparse run or dense model the name is built from is not defined."""
    defined = first_stage_runs(config) | dense_models(config)
    missing = [part for part in run_parts(run) if part not in defined]
    if not missing:
        return ("no rule produces (runs are <sparse>, <candidates>, <dense>, <dense>+<sparse>, "
                "<dense>+<sparse>@<method of fusion.methods>, colbert-<first stage>, cross_encoder-<first stage>, "
                "<dense>-rerank-<first stage>, where a first stage is a sparse run or a candidate list)")
    where = "is not defined in bm25.runs, rerank.candidates, student.variants or dense.published"
    what = "" if missing == [run] else f"uses {', '.join(map(repr, missing))}, which "
    return f"{what}{where} (removed by a profile's null, or by doc2query.source none)"
