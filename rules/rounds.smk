# Hard-negative rounds (TCT-ColBERT v2's HN and HN+; config negatives.rounds): encode_train_queries encodes the
# judged train queries of the model a round mines with; mine_round samples negatives from that model's own run
# over them (dense_run on the train split, its depth the round's), one job per distinct (model, depth,
# per_positive, seed), shared by the rounds naming the same;
# train_round_teacher re-trains the teacher on them from the previous teacher's weights (teacher: retrain);
# a student naming the round (student.variants.<name>.negatives) trains on them with the round's teacher.


rule encode_train_queries:
    input:
        model=dense_model,
        queries=f"{RES}/queries.train.tsv",
        qrels=f"{RES}/qrels.train.txt",
    output:
        directory(f"{OUT}/queries/{{model}}.train"),
    log:
        f"{LOGS}/encode_train_queries.{{model}}.log",
    benchmark:
        f"{BENCH}/encode_train_queries.{{model}}.tsv"
    params:
        model=dense_model_spec,
        precision=config["dense"]["precision"],
    threads: 1
    resources:
        gpu=1,
        mem_mb=rule_resource("encode_queries", "mem_mb", 8000),
        runtime=rule_resource("encode_queries", "runtime", 60),
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline.dense.queries --model {params.model:q} --queries {input.queries:q} --out {output:q}"
        " --judged {input.qrels:q} --precision {params.precision:q} --latency-queries 0 > {log:q} 2>&1"


rule mine_round:
    input:
        run=f"{OUT}/runs/{{model}}.train.trec",
        qrels=f"{RES}/qrels.train.txt",
    output:
        triples=f"{RES}/triples.mined-{{model}}-top{{depth}}-x{{per_positive}}-seed{{seed}}.tsv",
        manifest=f"{RES}/triples.mined-{{model}}-top{{depth}}-x{{per_positive}}-seed{{seed}}.manifest.json",
    log:
        f"{LOGS}/mine_round.{{model}}-top{{depth}}-x{{per_positive}}-seed{{seed}}.log",
    benchmark:
        f"{BENCH}/mine_round.{{model}}-top{{depth}}-x{{per_positive}}-seed{{seed}}.tsv"
    wildcard_constraints:
        depth=r"\d+",
        per_positive=r"\d+",
        seed=r"\d+",
    threads: 1
    resources:
        mem_mb=rule_resource("mine_round", "mem_mb", 8000),
        runtime=rule_resource("mine_round", "runtime", 60),
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline.data.negatives --run {input.run:q} --qrels {input.qrels:q} --out {output.triples:q}"
        " --manifest {output.manifest:q} --source {wildcards.model:q} --depth {wildcards.depth:q}"
        " --per-positive {wildcards.per_positive:q} --seed {wildcards.seed:q} > {log:q} 2>&1"


rule train_round_teacher:
    input:
        init=previous_teacher,
        triples=round_triples,
        queries=f"{RES}/queries.train.tsv",
        collection=f"{RES}/collection.tsv",
    output:
        model=directory(f"{RES}/models/teacher-{{retrained}}"),
        losses=f"{OUT}/training/teacher-{{retrained}}.losses.csv",
    log:
        f"{LOGS}/train_round_teacher.{{retrained}}.log",
    benchmark:
        f"{BENCH}/train_round_teacher.{{retrained}}.tsv"
    params:
        launcher=launcher("teacher"),
        checkpoints=lambda wildcards: f"{RES}/checkpoints/teacher-{wildcards.retrained}",
        loop=loop_arguments("teacher"),
        options=teacher_options(),
    threads: 4
    resources:
        gpu=config["teacher"]["gpus"],
        mem_mb=rule_resource("train_teacher", "mem_mb", 32000),
        runtime=rule_resource("train_teacher", "runtime", 2880),
    conda:
        "../envs/pipeline.yaml"
    shell:
        "{params.launcher} -m pipeline.train.teacher --init-from {input.init:q} --triples {input.triples:q}"
        " --queries {input.queries:q} --collection {input.collection:q} --out {output.model:q}"
        " --checkpoints {params.checkpoints:q} --losses {output.losses:q} {params.loop:q} {params.options:q}"
        " > {log:q} 2>&1"
