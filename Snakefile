# TCT-ColBERT pipeline: ColBERT teacher -> tightly-coupled distillation -> Faiss -> hybrids -> Table 1.
# Paper scale:  snakemake results/table1.tsv --cores 8 --resources gpu=1
# Offline demo: snakemake --profile profiles/demo

from pathlib import Path

from snakemake.logging import logger
from snakemake.utils import min_version, validate

from pipeline.config_check import check_config
from pipeline.workflow_locks import forget_owner, record_owner, release_stale_locks

min_version("9.0")

SNAKEMAKE_DIR = Path(".snakemake")
# After a kill -9 the same command runs again: the dead run's lock is released (pipeline/workflow_locks.py).
if workflow.is_main_process and (released := release_stale_locks(SNAKEMAKE_DIR)):
    logger.warning(released)


configfile: "config.yaml"


# check_config names the bad key, its value, the expectation and the config file setting it in a few lines,
# where validate dumps the whole schema and config; validate, once it passes, fills in the schema defaults.
# Merge order: configfile: above, then --configfile (a profile's configfile: too), then --config.
check_config(
    config,
    Path(workflow.basedir) / "schemas/config.schema.yaml",
    [f for f in workflow.configfiles if f not in workflow.config_settings.configfiles]
    + workflow.config_settings.configfiles,
    command_line=workflow.config_settings.config,
)
validate(config, "schemas/config.schema.yaml")


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/bm25.smk"
include: "rules/doc2query.smk"
include: "rules/train.smk"
include: "rules/cross_encoder.smk"
include: "rules/rounds.smk"
include: "rules/dense.smk"
include: "rules/colbert.smk"
include: "rules/fusion.smk"
include: "rules/evaluate.smk"
include: "rules/tables.smk"


# Downloads need the internet and tables are tiny: both stay on the submit host under a cluster executor.
localrules:
    all,
    prepare_data,
    doc2query_download,
    teacher_scores_download,
    table_spec,
    tables,
    report,


rule all:
    input:
        all_targets(),
    default_target: True


onstart:
    record_owner(SNAKEMAKE_DIR)


onsuccess:
    forget_owner(SNAKEMAKE_DIR)


onerror:
    forget_owner(SNAKEMAKE_DIR)
