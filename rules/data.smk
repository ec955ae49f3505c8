# prepare_data: normalise the dataset into MS MARCO-format files.
# mine_negatives: BM25 negatives for datasets without official training triples.
# candidate_run: a first-stage run read from a file (rerank.candidates), e.g. MS MARCO's top1000.dev.


ruleorder: prepare_data > mine_negatives


rule prepare_data:
    output:
        prepared_files(),
    log:
        f"{LOGS}/prepare_data.log",
    benchmark:
        f"{BENCH}/prepare_data.tsv"
    params:
        args=prepare_arguments(),
        out=output_dir,
    threads: 1
    resources:
        mem_mb=rule_resource("prepare_data", "mem_mb", 4000),
        runtime=rule_resource("prepare_data", "runtime", 60),
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline.data.prepare {params.args:q} --out {params.out:q} > {log:q} 2>&1"


rule mine_negatives:
    input:
        run=f"{OUT}/runs/{config['negatives']['run']}.train.trec",
        qrels=f"{RES}/qrels.train.txt",
    output:
        f"{RES}/triples.train.tsv",
    log:
        f"{LOGS}/mine_negatives.log",
    benchmark:
        f"{BENCH}/mine_negatives.tsv"
    params:
        depth=config["negatives"]["depth"],
        per_positive=config["negatives"]["per_positive"],
        seed=config["negatives"]["seed"],
    threads: 1
    resources:
        mem_mb=rule_resource("mine_negatives", "mem_mb", 4000),
        runtime=rule_resource("mine_negatives", "runtime", 30),
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline.data.negatives --run {input.run:q} --qrels {input.qrels:q} --out {output:q}"
        " --depth {params.depth:q} --per-positive {params.per_positive:q} --seed {params.seed:q} > {log:q} 2>&1"


rule candidate_run:
    input:
        unpack(candidate_inputs),
        queries=f"{RES}/queries.{{split}}.tsv",
    output:
        f"{OUT}/runs/{{candidates}}.{{split}}.trec",
    log:
        f"{LOGS}/candidate_run.{{candidates}}.{{split}}.log",
    benchmark:
        f"{BENCH}/candidate_run.{{candidates}}.{{split}}.tsv"
    params:
        source=candidate_source,
        download_dir=DATASET["download_dir"],
        options=candidate_options(),
    threads: 1
    resources:
        mem_mb=rule_resource("candidate_run", "mem_mb", 8000),
        runtime=rule_resource("candidate_run", "runtime", 60),
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline.data.candidates --source {params.source:q} --queries {input.queries:q} --run {output:q}"
        " --download-dir {params.download_dir:q} --tag {wildcards.candidates:q} {params.options:q} > {log:q} 2>&1"
