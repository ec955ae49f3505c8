# doc2query-T5 expansion (config doc2query.source):
#   download: castorini's published predictions (doc2query.download.release: the md5-verified zip, or the
#             Hugging Face jsonl) -> expand_collection
#   generate: generate_doc2query (scatter over shards, a seq2seq checkpoint) -> expand_collection
#   train:    train_doc2query -> generate_doc2query -> expand_collection
# The expanded collection is indexed and searched by bm25_index / bm25_run (a bm25.runs entry names it).


rule doc2query_download:
    output:
        f"{RES}/doc2query/predictions.jsonl",
    log:
        f"{LOGS}/doc2query_download.log",
    benchmark:
        f"{BENCH}/doc2query_download.tsv"
    params:
        download_dir=f"{DATASET['download_dir']}/doc2query",
        command=doc2query_download_command(),
    threads: 1
    resources:
        mem_mb=rule_resource("doc2query_download", "mem_mb", 2000),
        runtime=rule_resource("doc2query_download", "runtime", 240),
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m {params.command:q} --download-dir {params.download_dir:q} --out {output:q} > {log:q} 2>&1"


# Checkpoints under checkpoints/doc2query are resumed only when made from the same collection, queries,
# qrels, init model and settings (a content fingerprint; see rules/train.smk); otherwise the job stops,
# or with doc2query.train.loop.resume: discard starts afresh.
rule train_doc2query:
    input:
        collection=f"{RES}/collection.tsv",
        queries=f"{RES}/queries.train.tsv",
        qrels=f"{RES}/qrels.train.txt",
    output:
        model=directory(f"{RES}/models/doc2query"),
        losses=f"{OUT}/training/doc2query.losses.csv",
    log:
        f"{LOGS}/train_doc2query.log",
    benchmark:
        f"{BENCH}/train_doc2query.tsv"
    params:
        checkpoints=f"{RES}/checkpoints/doc2query",
        options=doc2query_train_options(),
        launcher=launcher("doc2query"),
    threads: 4
    resources:
        gpu=training_gpus("doc2query"),
        mem_mb=rule_resource("train_doc2query", "mem_mb", 32000),
        runtime=rule_resource("train_doc2query", "runtime", 720),
    conda:
        "../envs/pipeline.yaml"
    shell:
        "{params.launcher} -m pipeline.doc2query.train --collection {input.collection:q} --queries {input.queries:q}"
        " --qrels {input.qrels:q} --out {output.model:q} --checkpoints {params.checkpoints:q} --losses {output.losses:q}"
        " {params.options:q} > {log:q} 2>&1"


rule generate_doc2query:
    input:
        model=doc2query_model,
        collection=f"{RES}/collection.tsv",
    output:
        queries=f"{RES}/doc2query/generated/shard-{{shard}}.jsonl",
        manifest=f"{RES}/doc2query/generated/shard-{{shard}}.manifest.json",
    log:
        f"{LOGS}/generate_doc2query.{{shard}}.log",
    benchmark:
        f"{BENCH}/generate_doc2query.{{shard}}.tsv"
    params:
        model=doc2query_model_spec(),
        out=output_dir,
        options=doc2query_generate_options(),
    threads: 2
    resources:
        gpu=1,
        mem_mb=rule_resource("generate_doc2query", "mem_mb", 16000),
        runtime=rule_resource("generate_doc2query", "runtime", 720),
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline.doc2query.generate --model {params.model:q} --collection {input.collection:q}"
        " --out {params.out:q} --shard {wildcards.shard:q} {params.options:q} > {log:q} 2>&1"


rule expand_collection:
    input:
        collection=f"{RES}/collection.tsv",
        predictions=doc2query_predictions(),
    output:
        collection=f"{RES}/{config['doc2query']['collection']}.tsv",
        counts=f"{OUT}/doc2query/expansion.json",
    log:
        f"{LOGS}/expand_collection.log",
    benchmark:
        f"{BENCH}/expand_collection.tsv"
    params:
        n_queries=config["doc2query"]["n_queries"],
        unknown=config["doc2query"]["unknown"],
        # The published releases cover every MS MARCO passage: a passage without predictions is a mismatch.
        missing="error" if config["doc2query"]["source"] == "download" else "keep",
    threads: 1
    resources:
        mem_mb=rule_resource("expand_collection", "mem_mb", 8000),
        runtime=rule_resource("expand_collection", "runtime", 120),
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline.doc2query.expand --collection {input.collection:q} --predictions {input.predictions:q}"
        " --out {output.collection:q} --n-queries {params.n_queries:q} --unknown {params.unknown:q} --missing {params.missing:q}"
        " --counts {output.counts:q} > {log:q} 2>&1"
