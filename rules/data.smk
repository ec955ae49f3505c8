# prepare_data: normalise the dataset into MS MARCO-format files.
# mine_negatives: BM25 negatives for datasets without official training triples.


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
