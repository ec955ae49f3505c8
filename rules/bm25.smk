# BM25 with Anserini through pyserini: one index per collection file, one run per (sparse run, split).


rule bm25_index:
    input:
        f"{RES}/{{stem}}.tsv",
    output:
        directory(f"{RES}/indexes/bm25-{{stem}}"),
    log:
        f"{LOGS}/bm25_index.{{stem}}.log",
    benchmark:
        f"{BENCH}/bm25_index.{{stem}}.tsv"
    params:
        max_heap=config["bm25"]["max_heap"],
    threads: config["bm25"]["threads"]
    resources:
        mem_mb=rule_resource("bm25_index", "mem_mb", 8000),
        runtime=rule_resource("bm25_index", "runtime", 60),
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline.sparse.index --collection {input:q} --index {output:q}"
        " --threads {threads} --max-heap {params.max_heap:q} > {log:q} 2>&1"


rule bm25_run:
    input:
        index=sparse_index,
        queries=f"{RES}/queries.{{split}}.tsv",
    output:
        run=f"{OUT}/runs/{{sparse}}.{{split}}.trec",
        latency=f"{OUT}/runs/{{sparse}}.{{split}}.latency.json",
    log:
        f"{LOGS}/bm25_run.{{sparse}}.{{split}}.log",
    benchmark:
        f"{BENCH}/bm25_run.{{sparse}}.{{split}}.tsv"
    params:
        k1=sparse_setting("k1"),
        b=sparse_setting("b"),
        hits=config["bm25"]["hits"],
        latency_queries=config["bm25"]["latency_queries"],
        remove_query=["--remove-query"] if config["bm25"]["remove_query"] else [],
        max_heap=config["bm25"]["max_heap"],
    threads: config["bm25"]["threads"]
    resources:
        mem_mb=rule_resource("bm25_run", "mem_mb", 8000),
        runtime=rule_resource("bm25_run", "runtime", 60),
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline.sparse.search --index {input.index:q} --queries {input.queries:q} --run {output.run:q}"
        " --k1 {params.k1:q} --b {params.b:q} --hits {params.hits:q} --threads {threads} {params.remove_query:q}"
        " --latency-queries {params.latency_queries:q} --max-heap {params.max_heap:q} --tag {wildcards.sparse:q}"
        " > {log:q} 2>&1"
