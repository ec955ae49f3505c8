# train_teacher: ColBERT v1 on the training triples.
# train_student: tightly-coupled distillation into the PoolAvg bi-encoder, one model per variant
# (config student.variants: poolavg = no distillation, tct_triplet, tct_inbatch).
# Checkpoints live outside the outputs, so a killed or preempted job resumes where it stopped.


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
        "{params.launcher} -m pipeline.train.teacher --backbone {params.backbone:q} --triples {input.triples}"
        " --queries {input.queries} --collection {input.collection} --out {output.model}"
        " --checkpoints {params.checkpoints} --losses {output.losses} {params.loop:q} {params.options:q}"
        " > {log} 2>&1"


rule train_student:
    input:
        unpack(student_inputs),
    output:
        model=directory(f"{RES}/models/{{variant}}"),
        losses=f"{OUT}/training/{{variant}}.losses.csv",
    log:
        f"{LOGS}/train_student.{{variant}}.log",
    benchmark:
        f"{BENCH}/train_student.{{variant}}.tsv"
    params:
        launcher=launcher("student"),
        checkpoints=lambda wildcards: f"{RES}/checkpoints/{wildcards.variant}",
        loop=loop_arguments("student"),
        options=student_options,
    threads: 4
    resources:
        gpu=config["student"]["gpus"],
        mem_mb=rule_resource("train_student", "mem_mb", 32000),
        runtime=rule_resource("train_student", "runtime", 2880),
    conda:
        "../envs/pipeline.yaml"
    shell:
        "{params.launcher} -m pipeline.train.student --triples {input.triples} --queries {input.queries}"
        " --collection {input.collection} --out {output.model} --checkpoints {params.checkpoints}"
        " --losses {output.losses} {params.loop:q} {params.options:q} > {log} 2>&1"
