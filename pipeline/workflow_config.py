"""The merged config as the rules read it: the profile semantics a JSON schema cannot express.

Snakemake merges a profile's config over config.yaml key by key, so an overlay can add and change but
not take away. `resolve_config` runs once, after schema validation, and gives an overlay these rules:

- `null` removes what is inherited: a whole table (`table2`, `table3`, `table4`), the `report`, or one
  entry of `bm25.runs`, `student.variants`, `dense.published` or `table1.rows`;
- settings left out follow the dataset: the split of Tables 2 and 3, of the report, of Table 1's
  latency column and of the index comparison is the first split of `evaluation.columns`; the measure of
  Table 3 and of the report is the first measure of Table 1; alpha is tuned on RR@10 on MS MARCO (the
  paper's choice) and on Table 1's first measure on any other dataset;
- `doc2query.source: none` leaves out everything built on the expansion: the sparse runs indexing it,
  the students trained on generated queries, and the table rows, strategies and conditions using them;
- every split and run a table names must exist, or the error says which key to change.
"""

from __future__ import annotations

import re

from pipeline.config_check import ConfigError

REMOVABLE_ENTRIES = (("bm25", "runs"), ("student", "variants"), ("dense", "published"), ("table1", "rows"))


class ConfigReferenceError(ConfigError):
    """A setting names a split or run that the rest of the config does not define."""


def resolve_config(config: dict) -> list[str]:
    """Apply removals, dataset-following defaults and the doc2query switch to `config` in place, then check
    every cross-reference. Returns one note per thing left out because doc2query is switched off."""
    for section, key in REMOVABLE_ENTRIES:
        config[section][key] = {name: entry for name, entry in config[section][key].items() if entry is not None}
    notes = _without_doc2query(config) if config["doc2query"]["source"] == "none" else []
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
    notes = list(removed.values())

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
    """The sparse runs and dense models a run name is built from: `tct+bm25` -> [tct, bm25]."""
    return re.split(r"\+|-rerank-", run.removeprefix("colbert-"))


def known_runs(config: dict) -> set[str]:
    """Every run the workflow can produce: sparse runs, dense models, their hybrids, the ColBERT
    re-ranking of each sparse run, and each dense model re-ranking each sparse run."""
    sparse = set(config["bm25"]["runs"])
    dense = set(config["student"]["variants"]) | set(config["dense"]["published"])
    derived = {f"colbert-{s}" for s in sparse}
    derived |= {f"{d}{joiner}{s}" for d in dense for s in sparse for joiner in ("+", "-rerank-")}
    return sparse | dense | derived


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
    for key, split in named_splits:
        if split not in splits:
            raise ConfigReferenceError(f"{key} is {split!r}, not one of dataset.splits {splits}: change {key}")

    known = known_runs(config)
    for key, run, fix in _named_runs(config):
        if run not in known:
            raise ConfigReferenceError(f"{key} names run {run!r}, which {_why_unknown(config, run)}: {fix}")


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
    defined = set(config["bm25"]["runs"]) | set(config["student"]["variants"]) | set(config["dense"]["published"])
    missing = [part for part in run_parts(run) if part not in defined]
    if not missing:
        return ("no rule produces (runs are <sparse>, <dense>, <dense>+<sparse>, colbert-<sparse>, "
                "<dense>-rerank-<sparse>)")
    where = "is not defined in bm25.runs, student.variants or dense.published"
    what = "" if missing == [run] else f"uses {', '.join(map(repr, missing))}, which "
    return f"{what}{where} (removed by a profile's null, or by doc2query.source none)"
