# evaluate: trec_eval measures (through pytrec_eval) per query and mean, for any run and split; coverage:
# how much of a run the judgements cover (Judged@k, RBP + residual; pipeline.coverage) on evaluation.coverage.splits.


rule evaluate:
    input:
        run=f"{OUT}/runs/{{run}}.{{split}}.trec",
        qrels=f"{RES}/qrels.{{split}}.txt",
    output:
        f"{OUT}/metrics/{{run}}.{{split}}.tsv",
    log:
        f"{LOGS}/evaluate.{{run}}.{{split}}.log",
    benchmark:
        f"{BENCH}/evaluate.{{run}}.{{split}}.tsv"
    params:
        measures=measures_for,
    threads: 1
    resources:
        mem_mb=rule_resource("evaluate", "mem_mb", 4000),
        runtime=rule_resource("evaluate", "runtime", 10),
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline.evaluate --run {input.run:q} --qrels {input.qrels:q} --measures {params.measures:q}"
        " --out {output:q} > {log:q} 2>&1"


rule coverage:
    input:
        run=f"{OUT}/runs/{{run}}.{{split}}.trec",
        qrels=f"{RES}/qrels.{{split}}.txt",
    output:
        f"{OUT}/coverage/{{run}}.{{split}}.tsv",
    log:
        f"{LOGS}/coverage.{{run}}.{{split}}.log",
    benchmark:
        f"{BENCH}/coverage.{{run}}.{{split}}.tsv"
    params:
        depth=config["evaluation"]["coverage"]["depth"],
        p=config["evaluation"]["coverage"]["p"],
    threads: 1
    resources:
        mem_mb=rule_resource("coverage", "mem_mb", 4000),
        runtime=rule_resource("coverage", "runtime", 10),
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline.coverage --run {input.run:q} --qrels {input.qrels:q} --judged-depth {params.depth:q}"
        " --p {params.p:q} --out {output:q} > {log:q} 2>&1"
