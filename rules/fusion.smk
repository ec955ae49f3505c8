# Hybrids (Eq. 7): sample_queries (the alpha-tuning split "tune", from train) -> tune_alpha per
# (dense model, sparse run) -> fuse per split. Runs of the "tune" split come from the same
# bm25_run / encode_queries / dense_run rules as every other split.


rule sample_queries:
    input:
        queries=f"{RES}/queries.train.tsv",
        qrels=f"{RES}/qrels.train.txt",
    output:
        queries=f"{RES}/queries.tune.tsv",
        qrels=f"{RES}/qrels.tune.txt",
    log:
        f"{LOGS}/sample_queries.log",
    benchmark:
        f"{BENCH}/sample_queries.tsv"
    params:
        n=config["fusion"]["tune_queries"],
        seed=config["fusion"]["seed"],
    threads: 1
    resources:
        mem_mb=rule_resource("sample_queries", "mem_mb", 4000),
        runtime=rule_resource("sample_queries", "runtime", 10),
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline.data.sample --queries {input.queries:q} --qrels {input.qrels:q} --n {params.n:q}"
        " --seed {params.seed:q} --out-queries {output.queries:q} --out-qrels {output.qrels:q} > {log:q} 2>&1"


rule tune_alpha:
    input:
        sparse=f"{OUT}/runs/{{sparse}}.tune.trec",
        dense=f"{OUT}/runs/{{model}}.tune.trec",
        qrels=f"{RES}/qrels.tune.txt",
    output:
        curve=f"{OUT}/fusion/{{model}}+{{sparse}}.alpha.tsv",
        choice=f"{OUT}/fusion/{{model}}+{{sparse}}.alpha.json",
    log:
        f"{LOGS}/tune_alpha.{{model}}+{{sparse}}.log",
    benchmark:
        f"{BENCH}/tune_alpha.{{model}}+{{sparse}}.tsv"
    params:
        start=config["fusion"]["grid"]["start"],
        stop=config["fusion"]["grid"]["stop"],
        step=config["fusion"]["grid"]["step"],
        measure=config["fusion"]["tune_measure"],
        options=fusion_flags(),
    threads: 1
    resources:
        mem_mb=rule_resource("tune_alpha", "mem_mb", 16000),
        runtime=rule_resource("tune_alpha", "runtime", 30),
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline.tune_alpha --sparse {input.sparse:q} --dense {input.dense:q} --qrels {input.qrels:q}"
        " --curve {output.curve:q} --choice {output.choice:q} --start {params.start:q} --stop {params.stop:q}"
        " --step {params.step:q} --measure {params.measure:q} {params.options:q} > {log:q} 2>&1"


rule fuse:
    input:
        unpack(fusion_inputs),
    output:
        run=f"{OUT}/runs/{{model}}+{{sparse}}.{{split}}.trec",
        latency=f"{OUT}/runs/{{model}}+{{sparse}}.{{split}}.latency.json",
    log:
        f"{LOGS}/fuse.{{model}}+{{sparse}}.{{split}}.log",
    benchmark:
        f"{BENCH}/fuse.{{model}}+{{sparse}}.{{split}}.tsv"
    params:
        options=fusion_options,
        hits=config["dense"]["hits"],
        latency_queries=config["dense"]["latency_queries"],
    threads: 1
    resources:
        mem_mb=rule_resource("fuse", "mem_mb", 16000),
        runtime=rule_resource("fuse", "runtime", 30),
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline.fusion --sparse {input.sparse:q} --dense {input.dense:q} --run {output.run:q}"
        " {params.options:q} --hits {params.hits:q} --latency-queries {params.latency_queries:q}"
        " --tag {wildcards.model:q}+{wildcards.sparse:q} > {log:q} 2>&1"


# Table 5: the fusion methods of fusion.methods beside Eq. 7 (pipeline.fusion_methods: trectools' semantics in
# array code). One job sweeps every method with a parameter (RRF's k, RBP's p) on the tuning split, as tune_alpha
# tunes alpha; one job per split fuses by every method. Each reads both runs once.


rule tune_fusion_methods:
    input:
        sparse=f"{OUT}/runs/{{sparse}}.tune.trec",
        dense=f"{OUT}/runs/{{model}}.tune.trec",
        qrels=f"{RES}/qrels.tune.txt",
    output:
        curves=expand(f"{OUT}/fusion/{{{{model}}}}+{{{{sparse}}}}.{{method}}.tsv", method=TUNED_FUSIONS),
        choices=expand(f"{OUT}/fusion/{{{{model}}}}+{{{{sparse}}}}.{{method}}.json", method=TUNED_FUSIONS),
    log:
        f"{LOGS}/tune_fusion_methods.{{model}}+{{sparse}}.log",
    benchmark:
        f"{BENCH}/tune_fusion_methods.{{model}}+{{sparse}}.tsv"
    params:
        methods=TUNED_FUSIONS,
        measure=config["fusion"]["tune_measure"],
        hits=config["dense"]["hits"],
    threads: 1
    resources:
        mem_mb=rule_resource("tune_fusion_methods", "mem_mb", 16000),
        runtime=rule_resource("tune_fusion_methods", "runtime", 120),
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline.fusion_methods tune --method {params.methods:q} --sparse {input.sparse:q}"
        " --dense {input.dense:q} --qrels {input.qrels:q} --measure {params.measure:q} --hits {params.hits:q}"
        " --curve {output.curves:q} --choice {output.choices:q} > {log:q} 2>&1"


rule fuse_methods:
    input:
        sparse=f"{OUT}/runs/{{sparse}}.{{split}}.trec",
        dense=f"{OUT}/runs/{{model}}.{{split}}.trec",
        choices=rules.tune_fusion_methods.output.choices,
    output:
        runs=expand(f"{OUT}/runs/{{{{model}}}}+{{{{sparse}}}}@{{method}}.{{{{split}}}}.trec", method=FUSIONS),
    log:
        f"{LOGS}/fuse_methods.{{model}}+{{sparse}}.{{split}}.log",
    benchmark:
        f"{BENCH}/fuse_methods.{{model}}+{{sparse}}.{{split}}.tsv"
    params:
        methods=FUSIONS,
        hits=config["dense"]["hits"],
    threads: 1
    resources:
        mem_mb=rule_resource("fuse_methods", "mem_mb", 16000),
        runtime=rule_resource("fuse_methods", "runtime", 60),
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline.fusion_methods fuse --method {params.methods:q} --sparse {input.sparse:q}"
        " --dense {input.dense:q} --param-file {input.choices:q} --hits {params.hits:q} --run {output.runs:q}"
        " > {log:q} 2>&1"
