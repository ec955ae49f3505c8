# table1: one row per configured method (config table1.rows), TSV and Markdown.


rule table1:
    input:
        table1_inputs,
    output:
        tsv="results/table1.tsv",
        md="results/table1.md",
    log:
        f"{LOGS}/table1.log",
    benchmark:
        f"{BENCH}/table1.tsv"
    params:
        spec=table1_spec(),
        results=OUT,
    threads: 1
    resources:
        mem_mb=rule_resource("table1", "mem_mb", 1000),
        runtime=rule_resource("table1", "runtime", 5),
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline.tables --spec {params.spec:q} --results {params.results} --out {output.tsv} > {log} 2>&1"
