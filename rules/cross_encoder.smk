# The cross-encoder (config cross_encoder): BERT_CAT, Margin-MSE's teacher.
# train_cross_encoder: trained on the triples (models/cross_encoder), unless cross_encoder.published names one;
# needed by the students with `teacher: cross_encoder` and by the runs cross_encoder-<first stage>. With
# `scorer: dual_pooling`, a student learns from EmbedDistill's dual-pooling scorer instead, trained alike
# (models/cross_encoder-dual_pooling).
# cross_encoder_rerank: it re-scores a first-stage run's top `depth` (rerank.depth), e.g. cross_encoder-bm25
# (Table 4's reference row: the teacher ranking on its own).


rule train_cross_encoder:
    input:
        triples=f"{RES}/triples.train.tsv",
        queries=f"{RES}/queries.train.tsv",
        collection=f"{RES}/collection.tsv",
    output:
        model=directory(f"{RES}/models/{{cross_encoder}}"),
        losses=f"{OUT}/training/{{cross_encoder}}.losses.csv",
    wildcard_constraints:
        cross_encoder=one_of(CROSS_ENCODERS.values()),
    log:
        f"{LOGS}/train_cross_encoder.{{cross_encoder}}.log",
    benchmark:
        f"{BENCH}/train_cross_encoder.{{cross_encoder}}.tsv"
    params:
        launcher=launcher("cross_encoder"),
        backbone=config["model"]["backbone"],
        checkpoints=f"{RES}/checkpoints/{{cross_encoder}}",
        loop=cross_encoder_loop,
    threads: 4
    resources:
        gpu=config["cross_encoder"]["gpus"],
        mem_mb=rule_resource("train_cross_encoder", "mem_mb", 32000),
        runtime=rule_resource("train_cross_encoder", "runtime", 2880),
    conda:
        "../envs/pipeline.yaml"
    shell:
        "{params.launcher} -m pipeline.train.cross_encoder --backbone {params.backbone:q} --triples {input.triples:q}"
        " --queries {input.queries:q} --collection {input.collection:q} --out {output.model:q}"
        " --checkpoints {params.checkpoints:q} --losses {output.losses:q} {params.loop:q} > {log:q} 2>&1"


rule cross_encoder_rerank:
    input:
        unpack(cross_encoder_input),
        queries=f"{RES}/queries.{{split}}.tsv",
        collection=f"{RES}/collection.tsv",
        candidates=f"{OUT}/runs/{{first}}.{{split}}.trec",
    output:
        run=f"{OUT}/runs/cross_encoder-{{first}}.{{split}}.trec",
        latency=f"{OUT}/runs/cross_encoder-{{first}}.{{split}}.latency.json",
    log:
        f"{LOGS}/cross_encoder_rerank.{{first}}.{{split}}.log",
    benchmark:
        f"{BENCH}/cross_encoder_rerank.{{first}}.{{split}}.tsv"
    params:
        model=cross_encoder_model(),
        lengths=cross_encoder_lengths(),
        depth=config["rerank"]["depth"],
        batch_size=config["cross_encoder"]["rerank"]["batch_size"],
        precision=config["cross_encoder"]["rerank"]["precision"],
        latency_queries=config["dense"]["latency_queries"],
    threads: 2
    resources:
        gpu=1,
        mem_mb=rule_resource("cross_encoder_rerank", "mem_mb", 16000),
        runtime=rule_resource("cross_encoder_rerank", "runtime", 720),
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline.cross_encoder_rerank --model {params.model:q} {params.lengths:q}"
        " --queries {input.queries:q} --collection {input.collection:q} --candidates {input.candidates:q}"
        " --run {output.run:q} --depth {params.depth:q} --batch-size {params.batch_size:q}"
        " --precision {params.precision:q} --latency-queries {params.latency_queries:q}"
        " --tag cross_encoder-{wildcards.first:q} > {log:q} 2>&1"
