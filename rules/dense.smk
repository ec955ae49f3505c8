# Dense retrieval: encode_corpus (scatter over shards) -> build_index (gather) -> encode_queries (one job
# per model, every split but train, which rounds.smk encodes for mining) -> dense_run; dense_rerank: a student re-scoring a first-stage run's top `depth` (Table 3).
# The teacher's own retrieval (ColBERT rows) lives in colbert.smk.


rule encode_corpus:
    input:
        model=dense_model,
        collection=f"{RES}/collection.tsv",
    output:
        directory(f"{RES}/embeddings/{{model}}/shard-{{shard}}"),
    log:
        f"{LOGS}/encode_corpus.{{model}}.{{shard}}.log",
    benchmark:
        f"{BENCH}/encode_corpus.{{model}}.{{shard}}.tsv"
    params:
        model=dense_model_spec,
        shards=config["dense"]["shards"],
        dtype=config["dense"]["dtype"],
        batch_size=config["dense"]["batch_size"],
        precision=config["dense"]["precision"],
    threads: 2
    resources:
        gpu=1,
        mem_mb=rule_resource("encode_corpus", "mem_mb", 16000),
        runtime=rule_resource("encode_corpus", "runtime", 240),
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline.dense.encode --model {params.model:q} --collection {input.collection:q} --out {output:q}"
        " --shard {wildcards.shard:q} --shards {params.shards:q} --dtype {params.dtype:q} --batch-size {params.batch_size:q}"
        " --precision {params.precision:q} > {log:q} 2>&1"


rule build_index:
    input:
        shards=corpus_shards,
        collection=f"{RES}/collection.tsv",
    output:
        directory(f"{RES}/indexes/dense-{{model}}"),
    log:
        f"{LOGS}/build_index.{{model}}.log",
    benchmark:
        f"{BENCH}/build_index.{{model}}.tsv"
    params:
        options=index_options(),
    threads: 2
    resources:
        mem_mb=rule_resource("build_index", "mem_mb", 32000),
        runtime=rule_resource("build_index", "runtime", 120),
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline.dense.index --shards {input.shards:q} --collection {input.collection:q} --out {output:q}"
        " {params.options:q} > {log:q} 2>&1"


rule compare_indexes:
    input:
        shards=corpus_shards,
        collection=f"{RES}/collection.tsv",
        queries=f"{OUT}/queries/{{model}}.{{split}}",
    output:
        f"{OUT}/indexes/{{model}}.{{split}}.tsv",
    log:
        f"{LOGS}/compare_indexes.{{model}}.{{split}}.log",
    benchmark:
        f"{BENCH}/compare_indexes.{{model}}.{{split}}.tsv"
    params:
        kinds=config["dense"]["compare"]["kinds"],
        k=config["dense"]["compare"]["k"],
        options=index_options(with_kind=False),
        latency_queries=config["dense"]["latency_queries"],
    threads: config["dense"]["threads"]
    resources:
        mem_mb=rule_resource("compare_indexes", "mem_mb", 32000),
        runtime=rule_resource("compare_indexes", "runtime", 240),
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline.dense.compare_indexes --shards {input.shards:q} --collection {input.collection:q}"
        " --queries {input.queries:q} --out {output:q} --kinds {params.kinds:q} --k {params.k:q} --threads {threads}"
        " --latency-queries {params.latency_queries:q} {params.options:q} > {log:q} 2>&1"


rule encode_queries:
    input:
        model=dense_model,
        queries=[f"{RES}/queries.{split}.tsv" for split in QUERY_SPLITS],
    output:
        [directory(f"{OUT}/queries/{{model}}.{split}") for split in QUERY_SPLITS],
    log:
        f"{LOGS}/encode_queries.{{model}}.log",
    benchmark:
        f"{BENCH}/encode_queries.{{model}}.tsv"
    params:
        model=dense_model_spec,
        precision=config["dense"]["precision"],
        latency_queries=config["dense"]["latency_queries"],
        timed=[f"{RES}/queries.{split}.tsv" for split in TIMED_SPLITS],
    threads: 1
    resources:
        gpu=1,
        mem_mb=rule_resource("encode_queries", "mem_mb", 8000),
        runtime=rule_resource("encode_queries", "runtime", 60),
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline.dense.queries --model {params.model:q} --queries {input.queries:q} --out {output:q}"
        " --precision {params.precision:q} --latency-queries {params.latency_queries:q} --timed {params.timed:q}"
        " > {log:q} 2>&1"


rule dense_run:
    input:
        index=dense_index,
        queries=f"{OUT}/queries/{{model}}.{{split}}",
    output:
        run=f"{OUT}/runs/{{model}}.{{split}}.trec",
        latency=f"{OUT}/runs/{{model}}.{{split}}.latency.json",
    log:
        f"{LOGS}/dense_run.{{model}}.{{split}}.log",
    benchmark:
        f"{BENCH}/dense_run.{{model}}.{{split}}.tsv"
    params:
        hits=dense_hits,
        latency_queries=config["dense"]["latency_queries"],
        device=search_options(),
    threads: config["dense"]["threads"]
    resources:
        gpu=0 if config["dense"]["search"]["device"] == "cpu" else 1,
        mem_mb=rule_resource("dense_run", "mem_mb", 32000),
        runtime=rule_resource("dense_run", "runtime", 120),
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline.dense.search --index {input.index:q} --queries {input.queries:q} --run {output.run:q}"
        " --hits {params.hits:q} --threads {threads} --latency-queries {params.latency_queries:q}"
        " {params.device:q} --tag {wildcards.model:q} > {log:q} 2>&1"


rule dense_rerank:
    input:
        shards=corpus_shards,
        queries=f"{OUT}/queries/{{model}}.{{split}}",
        candidates=f"{OUT}/runs/{{first}}.{{split}}.trec",
    output:
        f"{OUT}/runs/{{model}}-rerank-{{first}}.{{split}}.trec",
    log:
        f"{LOGS}/dense_rerank.{{model}}.{{first}}.{{split}}.log",
    benchmark:
        f"{BENCH}/dense_rerank.{{model}}.{{first}}.{{split}}.tsv"
    params:
        depth=config["rerank"]["depth"],
    threads: 1
    resources:
        mem_mb=rule_resource("dense_rerank", "mem_mb", 32000),
        runtime=rule_resource("dense_rerank", "runtime", 60),
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline.dense.rescore --shards {input.shards:q} --queries {input.queries:q}"
        " --candidates {input.candidates:q} --run {output:q} --depth {params.depth:q}"
        " --tag {wildcards.model:q}-rerank-{wildcards.first:q} > {log:q} 2>&1"
