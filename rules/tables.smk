# tables: Table 1 (config table1.rows), Table 2 (latency per stage), Table 3 (distillation
# conditions), Table 4 (distillation strategies), Table 5 (fusion methods), each as TSV and Markdown.


rule table_spec:
    output:
        f"{OUT}/table_spec.json",
    log:
        f"{LOGS}/table_spec.log",
    benchmark:
        f"{BENCH}/table_spec.tsv"
    params:
        value=table_spec(),
    threads: 1
    resources:
        mem_mb=rule_resource("tables", "mem_mb", 2000),
        runtime=rule_resource("tables", "runtime", 10),
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/write_json.py"


rule tables:
    input:
        table_inputs,
        spec=rules.table_spec.output[0],
    output:
        tsv="results/table1.tsv",
        md="results/table1.md",
        latency=table_outputs("table2", "results/table2_latency"),
        ablation=table_outputs("table3", "results/table3_ablation"),
        strategies=table_outputs("table4", "results/table4_distillation"),
        fusion_methods=table5_outputs(),
    log:
        f"{LOGS}/tables.log",
    benchmark:
        f"{BENCH}/tables.tsv"
    params:
        results=spec_dir,
        out_dir=output_dir,
    threads: 1
    resources:
        mem_mb=rule_resource("tables", "mem_mb", 2000),
        runtime=rule_resource("tables", "runtime", 10),
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline.tables --spec {input.spec:q} --results {params.results:q} --out-dir {params.out_dir:q}"
        " > {log:q} 2>&1"


rule report:
    input:
        tables=rules.tables.output,
        losses=training_curves(),
        indexes=index_comparisons(),
        coverage=report_coverage(),
    output:
        report="results/report.html",
        figures=directory("results/figures"),
    log:
        f"{LOGS}/report.log",
    benchmark:
        f"{BENCH}/report.tsv"
    params:
        results=dataset_results,
        tables=output_dir,
        scatter=report_setting("scatter"),
        split=report_setting("split"),
        measure=report_setting("measure"),
    threads: 1
    resources:
        mem_mb=rule_resource("report", "mem_mb", 4000),
        runtime=rule_resource("report", "runtime", 10),
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline.report --results {params.results:q} --tables {params.tables:q} --out {output.report:q}"
        " --scatter {params.scatter:q} --split {params.split:q} --measure {params.measure:q} > {log:q} 2>&1"
