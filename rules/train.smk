# train_teacher: ColBERT v1 on the training triples.
# teacher_scores_download: the Margin-MSE authors' released teacher scores, for students naming a release.
# train_student: tightly-coupled distillation into the PoolAvg bi-encoder, one model per variant
# train_query_encoder: EmbedDistill's asymmetric students (variants with `searches`), one per variant
# (config student.variants: poolavg = no distillation, tct_triplet, tct_inbatch).
# Checkpoints live outside the outputs, so a killed or preempted job resumes where it stopped.
# Snakemake never cleans them, not on --forcerun either: inside the job a rerun after a kill and a rerun
# after changed inputs look alike, and deleting the directory would lose the first. The training stage tells
# them apart instead: each checkpoint records a content fingerprint of the inputs (triples, queries,
# collection, backbone or teacher, teacher scores, generated queries) and of the settings. Matching
# checkpoints are resumed (bit-identical to an uninterrupted run, so a --forcerun with unchanged inputs
# rebuilds the same model); others stop the job with a message naming the changed input, or with
# <stage>.train.resume: discard are deleted and training starts from step 0.


rule train_teacher:
    input:
        triples=f"{RES}/triples.train.tsv",
        queries=f"{RES}/queries.train.tsv",
        collection=f"{RES}/collection.tsv",
    output:
        model=directory(f"{RES}/models/teacher"),
        losses=f"{OUT}/training/teacher.losses.csv",
    log:
        f"{LOGS}/train_teacher.log",
    benchmark:
        f"{BENCH}/train_teacher.tsv"
    params:
        launcher=launcher("teacher"),
        backbone=config["model"]["backbone"],
        checkpoints=f"{RES}/checkpoints/teacher",
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
        "{params.launcher} -m pipeline.train.teacher --backbone {params.backbone:q} --triples {input.triples:q}"
        " --queries {input.queries:q} --collection {input.collection:q} --out {output.model:q}"
        " --checkpoints {params.checkpoints:q} --losses {output.losses:q} {params.loop:q} {params.options:q}"
        " > {log:q} 2>&1"


rule teacher_scores_download:
    output:
        f"{DATASET['download_dir']}/margin-mse/{{release}}.tsv",
    log:
        f"{LOGS}/teacher_scores_download.{{release}}.log",
    benchmark:
        f"{BENCH}/teacher_scores_download.{{release}}.tsv"
    wildcard_constraints:
        release="|".join(TEACHER_SCORE_RELEASES),
    threads: 1
    resources:
        mem_mb=rule_resource("teacher_scores_download", "mem_mb", 2000),
        runtime=rule_resource("teacher_scores_download", "runtime", 240),
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline.data.teacher_scores --release {wildcards.release:q} --out {output:q} > {log:q} 2>&1"


rule train_student:
    input:
        unpack(student_inputs),
    output:
        model=directory(f"{RES}/models/{{variant}}"),
        losses=f"{OUT}/training/{{variant}}.losses.csv",
    wildcard_constraints:
        variant=one_of(set(VARIANTS) - set(QUERY_ENCODERS)),  # query encoders: train_query_encoder
    log:
        f"{LOGS}/train_student.{{variant}}.log",
    benchmark:
        f"{BENCH}/train_student.{{variant}}.tsv"
    params:
        launcher=launcher("student"),
        checkpoints=lambda wildcards: f"{RES}/checkpoints/{wildcards.variant}",
        loop=student_loop,
        options=student_options,
    threads: 4
    resources:
        gpu=config["student"]["gpus"],
        mem_mb=rule_resource("train_student", "mem_mb", 32000),
        runtime=rule_resource("train_student", "runtime", 2880),
    conda:
        "../envs/pipeline.yaml"
    shell:
        "{params.launcher} -m pipeline.train.student --triples {input.triples:q} --queries {input.queries:q}"
        " --collection {input.collection:q} --out {output.model:q} --checkpoints {params.checkpoints:q}"
        " --losses {output.losses:q} {params.loop:q} {params.options:q} > {log:q} 2>&1"


rule train_query_encoder:
    input:
        unpack(query_encoder_inputs),
    output:
        model=directory(f"{RES}/models/{{variant}}"),
        losses=f"{OUT}/training/{{variant}}.losses.csv",
    wildcard_constraints:
        variant=one_of(QUERY_ENCODERS),
    log:
        f"{LOGS}/train_query_encoder.{{variant}}.log",
    benchmark:
        f"{BENCH}/train_query_encoder.{{variant}}.tsv"
    params:
        launcher=launcher("student"),
        checkpoints=lambda wildcards: f"{RES}/checkpoints/{wildcards.variant}",
        loop=student_loop,
        options=query_encoder_options,
    threads: 4
    resources:
        gpu=config["student"]["gpus"],
        mem_mb=rule_resource("train_query_encoder", "mem_mb", 32000),
        runtime=rule_resource("train_query_encoder", "runtime", 2880),
    conda:
        "../envs/pipeline.yaml"
    shell:
        "{params.launcher} -m pipeline.train.query_encoder --triples {input.triples:q} --queries {input.queries:q}"
        " --collection {input.collection:q} --out {output.model:q} --checkpoints {params.checkpoints:q}"
        " --losses {output.losses:q} {params.loop:q} {params.options:q} > {log:q} 2>&1"
