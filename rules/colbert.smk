# The teacher as a retriever (Table 1's ColBERT rows), over its token embeddings:
# encode_tokens (scatter over shards) -> colbert_rerank: MaxSim over a first-stage run's top `depth` (the
# re-ranking row, e.g. colbert-top1000 or colbert-bm25);
# colbert_index (every token in one Faiss IVF-PQ index) -> colbert_retrieve: ColBERT v1 end to end, each
# query token's k' nearest tokens give the candidates, exact MaxSim ranks them (the run `colbert`).


rule encode_tokens:
    input:
        model=f"{RES}/models/teacher",
        collection=f"{RES}/collection.tsv",
    output:
        directory(f"{RES}/tokens/teacher/shard-{{shard}}"),
    log:
        f"{LOGS}/encode_tokens.{{shard}}.log",
    benchmark:
        f"{BENCH}/encode_tokens.{{shard}}.tsv"
    params:
        shards=config["rerank"]["shards"],
        batch_size=config["dense"]["batch_size"],
        precision=config["rerank"]["precision"],
    threads: 2
    resources:
        gpu=1,
        mem_mb=rule_resource("encode_tokens", "mem_mb", 32000),
        runtime=rule_resource("encode_tokens", "runtime", 240),
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline.dense.tokens --model {input.model:q} --collection {input.collection:q} --out {output:q}"
        " --shard {wildcards.shard:q} --shards {params.shards:q} --batch-size {params.batch_size:q} --precision {params.precision:q}"
        " > {log:q} 2>&1"


rule colbert_rerank:
    input:
        model=f"{RES}/models/teacher",
        tokens=token_shards,
        queries=f"{RES}/queries.{{split}}.tsv",
        candidates=f"{OUT}/runs/{{first}}.{{split}}.trec",
    output:
        run=f"{OUT}/runs/colbert-{{first}}.{{split}}.trec",
        latency=f"{OUT}/runs/colbert-{{first}}.{{split}}.latency.json",
    log:
        f"{LOGS}/colbert_rerank.{{first}}.{{split}}.log",
    benchmark:
        f"{BENCH}/colbert_rerank.{{first}}.{{split}}.tsv"
    params:
        depth=config["rerank"]["depth"],
        latency_queries=config["dense"]["latency_queries"],
    threads: 2
    resources:
        gpu=1,
        mem_mb=rule_resource("colbert_rerank", "mem_mb", 32000),
        runtime=rule_resource("colbert_rerank", "runtime", 240),
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline.dense.rerank --model {input.model:q} --tokens {input.tokens:q} --queries {input.queries:q}"
        " --candidates {input.candidates:q} --run {output.run:q} --depth {params.depth:q}"
        " --latency-queries {params.latency_queries:q} > {log:q} 2>&1"


rule colbert_index:
    input:
        tokens=token_shards,
    output:
        directory(f"{RES}/indexes/colbert-teacher"),
    log:
        f"{LOGS}/colbert_index.log",
    benchmark:
        f"{BENCH}/colbert_index.tsv"
    params:
        kind=config["colbert"]["index"]["kind"],
        partitions=config["colbert"]["index"]["partitions"],
        pq_m=config["colbert"]["index"]["pq_m"],
        pq_bits=config["colbert"]["index"]["pq_bits"],
        sample=config["colbert"]["index"]["sample"],
        metric=config["colbert"]["index"]["metric"],
    threads: config["colbert"]["threads"]
    resources:
        gpu=1,
        mem_mb=rule_resource("colbert_index", "mem_mb", 32000),
        runtime=rule_resource("colbert_index", "runtime", 240),
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline.dense.token_index --tokens {input.tokens:q} --out {output:q} --kind {params.kind:q}"
        " --partitions {params.partitions:q} --pq-m {params.pq_m:q} --pq-bits {params.pq_bits:q}"
        " --sample {params.sample:q} --metric {params.metric:q} --threads {threads} > {log:q} 2>&1"


rule colbert_retrieve:
    input:
        model=f"{RES}/models/teacher",
        index=f"{RES}/indexes/colbert-teacher",
        tokens=token_shards,
        queries=f"{RES}/queries.{{split}}.tsv",
    output:
        run=f"{OUT}/runs/colbert.{{split}}.trec",
        latency=f"{OUT}/runs/colbert.{{split}}.latency.json",
    log:
        f"{LOGS}/colbert_retrieve.{{split}}.log",
    benchmark:
        f"{BENCH}/colbert_retrieve.{{split}}.tsv"
    params:
        hits=config["dense"]["hits"],
        depth=config["colbert"]["search"]["depth"],
        nprobe=config["colbert"]["search"]["nprobe"],
        latency_queries=config["dense"]["latency_queries"],
    threads: config["colbert"]["threads"]
    resources:
        gpu=1,
        mem_mb=rule_resource("colbert_retrieve", "mem_mb", 32000),
        runtime=rule_resource("colbert_retrieve", "runtime", 240),
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline.dense.colbert_retrieve --model {input.model:q} --index {input.index:q}"
        " --tokens {input.tokens:q} --queries {input.queries:q} --run {output.run:q} --hits {params.hits:q}"
        " --depth {params.depth:q} --nprobe {params.nprobe:q} --latency-queries {params.latency_queries:q}"
        " --threads {threads} > {log:q} 2>&1"
