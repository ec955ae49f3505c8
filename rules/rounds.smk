# Hard-negative rounds (TCT-ColBERT v2's HN and HN+; config negatives.rounds): mine_round samples negatives
# from a dense model's own run over the train queries (dense_run on the train split, its depth the round's);
# train_round_teacher re-trains the teacher on them from the previous teacher's weights (teacher: retrain);
# a student naming the round (student.variants.<name>.negatives) trains on them with the round's teacher.


rule mine_round:
    input:
        run=round_run,
        qrels=f"{RES}/qrels.train.txt",
    output:
        triples=f"{RES}/triples.{{round}}.tsv",
        manifest=f"{RES}/triples.{{round}}.manifest.json",
    log:
        f"{LOGS}/mine_round.{{round}}.log",
    benchmark:
        f"{BENCH}/mine_round.{{round}}.tsv"
    params:
        depth=lambda wildcards: ROUNDS[wildcards.round]["depth"],
        per_positive=lambda wildcards: ROUNDS[wildcards.round]["per_positive"],
        seed=lambda wildcards: ROUNDS[wildcards.round]["seed"],
        source=lambda wildcards: ROUNDS[wildcards.round]["model"],
    threads: 1
    resources:
        mem_mb=rule_resource("mine_round", "mem_mb", 8000),
        runtime=rule_resource("mine_round", "runtime", 60),
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline.data.negatives --run {input.run:q} --qrels {input.qrels:q} --out {output.triples:q}"
        " --manifest {output.manifest:q} --source {params.source:q} --depth {params.depth:q}"
        " --per-positive {params.per_positive:q} --seed {params.seed:q} > {log:q} 2>&1"


rule train_round_teacher:
    input:
        init=previous_teacher,
        triples=f"{RES}/triples.{{retrained}}.tsv",
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
