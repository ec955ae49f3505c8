# Paths, config look-ups and input functions shared by the rules. No rule lives here.

import shlex
import sys
from pathlib import Path

from snakemake.logging import logger
from snakemake.settings.types import DeploymentMethod

from pipeline.data.teacher_scores import RELEASES as TEACHER_SCORE_RELEASES
from pipeline.fusion_methods import METHODS as TRECTOOLS_FUSIONS
from pipeline.workflow_config import resolve_config, run_parts

# Profiles' `null` removals, splits and measures that follow the dataset, doc2query's switch, references checked.
_left_out = resolve_config(config)
if _left_out:
    logger.info(f"left out: {'; '.join(_left_out)}")

# The rules' `python` is the interpreter running Snakemake (`.venv/bin/snakemake` works without activating the
# venv), except under --sdm conda, where each rule's environment provides it. Snakemake's own prefix is kept.
if DeploymentMethod.CONDA not in workflow.deployment_settings.deployment_method:
    shell.prefix(f"set -euo pipefail; export PATH={shlex.quote(str(Path(sys.executable).parent))}:\"$PATH\"; ")

DATASET = config["dataset"]
DS = DATASET["name"]
RES = f"resources/{DS}"
OUT = f"results/{DS}"
LOGS = f"logs/{DS}"
BENCH = f"{OUT}/benchmarks"
SPARSE_RUNS = config["bm25"]["runs"]
VARIANTS = config["student"]["variants"]
PUBLISHED = config["dense"]["published"]
CANDIDATES = config["rerank"]["candidates"]
D2Q = config["doc2query"]
DENSE_MODELS = sorted(VARIANTS) + sorted(PUBLISHED)
# EmbedDistill's asymmetric students: query encoders scored with another dense model's passages (`searches`).
QUERY_ENCODERS = {name: variant["searches"] for name, variant in VARIANTS.items() if "searches" in variant}
# The cross-encoders' model names, by scorer: BERT_CAT's head on [CLS], EmbedDistill's dual pooling.
CROSS_ENCODERS = {"cls": "cross_encoder", "dual_pooling": "cross_encoder-dual_pooling"}
FUSIONS = [method for method in config["fusion"]["methods"] if method != "eq7"]  # Table 5's (pipeline.fusion_methods)
TUNED_FUSIONS = [method for method in FUSIONS if TRECTOOLS_FUSIONS[method].parameter]
COVERAGE = config["evaluation"]["coverage"]
ROUNDS = config["negatives"]["rounds"]  # hard-negative rounds, in order
# The splits encode_queries encodes for every dense model, in one job: the dataset's but train (encoded only to
# mine a round, judged queries only: rounds.smk), and the alpha-tuning sample drawn from train (a few thousand
# queries, encoded whether or not the model is fused: one split more costs less than one job more).
QUERY_SPLITS = ([split for split in DATASET["splits"] if split != "train"]
                + (["tune"] if "train" in DATASET["splits"] else []))
# The splits whose query encoder latency a table reads (Table 1's latency column, Table 2).
TIMED_SPLITS = list(dict.fromkeys([config["evaluation"]["latency_split"],
                                   *([config["table2"]["split"]] if config["table2"] else [])]))
if "tune" in DATASET["splits"]:
    raise ValueError("'tune' is the alpha-tuning sample drawn from train; choose another split name")
_clashes = ({name for name in DENSE_MODELS if name.startswith(("colbert-", "cross_encoder-"))}  # their runs' prefixes
            | (set(VARIANTS) & set(PUBLISHED)) | (set(DENSE_MODELS) & (set(SPARSE_RUNS) | set(CANDIDATES)))
            | (set(SPARSE_RUNS) & set(CANDIDATES)) | ({"teacher", "colbert", *CROSS_ENCODERS.values()} & {*DENSE_MODELS, *SPARSE_RUNS, *CANDIDATES}))
if _clashes:
    raise ValueError("run names must be unique across bm25.runs, rerank.candidates, student.variants and "
                     f"dense.published: {_clashes}")


def one_of(names):
    """A wildcard constraint matching exactly these names; none of them: one that matches nothing (an empty
    constraint would match anything)."""
    return "|".join(sorted(names)) or "(?!)"


wildcard_constraints:
    split="[A-Za-z0-9_-]+",
    shard="[0-9]+",
    run="[A-Za-z0-9_+@-]+",
    sparse=one_of(SPARSE_RUNS),
    candidates=one_of(CANDIDATES),
    first=one_of({*SPARSE_RUNS, *CANDIDATES}),
    stem="[A-Za-z0-9._-]+",
    variant=one_of(VARIANTS),
    model=one_of(DENSE_MODELS),
    method=one_of(FUSIONS),
    retrained=one_of(name for name, settings in ROUNDS.items() if settings["teacher"] == "retrain"),


def rule_resource(rule_name, key, default):
    """A rule's mem_mb / runtime from config `resources:`, else the default."""
    return config["resources"].get(rule_name, {}).get(key, default)


def output_dir(wildcards, output):
    """Params function: the directory of a rule's first output."""
    return str(Path(output[0]).parent)


def spec_dir(wildcards, input):
    """Params function: the directory of a rule's `spec` input (the tables' spec lies in the results it reads)."""
    return str(Path(input.spec).parent)


def has_official_triples():
    if DATASET["source"] == "msmarco-passage":
        return True
    location = DATASET["location"]
    return DATASET["source"] == "msmarco-local" and Path(location, "triples.train.tsv").is_file()


def prepared_files():
    """Everything prepare_data writes for this dataset."""
    files = [f"{RES}/collection.tsv", f"{RES}/manifest.json"]
    for split in DATASET["splits"]:
        files += [f"{RES}/queries.{split}.tsv", f"{RES}/qrels.{split}.txt"]
    if has_official_triples():
        files.append(f"{RES}/triples.train.tsv")
    return files


def prepare_arguments():
    """Command-line arguments of pipeline.data.prepare for the configured source."""
    source = DATASET["source"]
    args = ["--source", source, "--splits", *DATASET["splits"], "--download-dir", DATASET["download_dir"],
            "--unknown-judged", DATASET["unknown_judged"], "--empty-text", DATASET["empty_text"]]
    if DATASET["location"]:
        args += ["--location", DATASET["location"]]
    if source == "beir":
        args += ["--name", DATASET["beir_name"] or DS]
    if source == "synthetic":
        synthetic = DATASET["synthetic"]
        args += ["--seed", synthetic["seed"], "--n-passages", synthetic["passages"], "--n-train", synthetic["train"],
                 "--n-dev", synthetic["dev"], "--n-dl", synthetic["dl"]]
    if DATASET["files"]:
        args += ["--files", *(f"{s}={f['queries']},{f['qrels']}" for s, f in DATASET["files"].items())]
    return [str(a) for a in args]


def sparse_setting(key):
    """Input function: one BM25 parameter of the sparse run named by the wildcard."""
    return lambda wildcards: SPARSE_RUNS[wildcards.sparse].get(key, {"k1": 0.9, "b": 0.4}.get(key))


def candidate_source(wildcards):
    """Params function: the official list name or file of a candidate run on a split (rerank.candidates)."""
    files = CANDIDATES[wildcards.candidates]
    if wildcards.split not in files:
        raise ValueError(f"rerank.candidates.{wildcards.candidates} has no file for split {wildcards.split!r}: "
                         "add one, or do not evaluate runs built on it there")
    return files[wildcards.split]


def candidate_inputs(wildcards):
    """Input function: a candidate file of your own is an input (Snakemake reruns when it changes)."""
    source = candidate_source(wildcards)
    return {"file": source} if Path(source).is_file() else {}


def candidate_options():
    """An MS MARCO mirror named by dataset.location serves the official candidate lists too."""
    location = DATASET["location"]
    return ["--base-url", location] if DATASET["source"] == "msmarco-passage" and location else []


def sparse_index(wildcards):
    return f"{RES}/indexes/bm25-{SPARSE_RUNS[wildcards.sparse]['collection']}"


def measures_for(wildcards):
    """The measures Tables 1 and 3 and the report need on this split (RR@10 for a split only tuned on)."""
    named = [*config["evaluation"]["columns"], *filter(None, (config["table3"], config["report"]))]
    names = [c["measure"] for c in named if c["split"] == wildcards.split]
    return list(dict.fromkeys(names)) or ["RR@10"]


def hybrid_pairs():
    """(dense model, sparse run) of every Eq. 7 hybrid in Table 1: Table 5 fuses each by every method."""
    runs = dict.fromkeys(row["run"] for row in config["table1"]["rows"].values())
    return [tuple(run_parts(run)) for run in runs if "+" in run and "@" not in run]


def table5_spec():
    pairs = hybrid_pairs()
    if not pairs:
        return None
    return {"methods": config["fusion"]["methods"], "pairs": [{"dense": d, "sparse": s} for d, s in pairs]}


def table_spec():
    """What the tables stage builds, from the config (rule table_spec writes it for the tables rule)."""
    rows = [{"name": name, **row} for name, row in config["table1"]["rows"].items()]
    return {"dataset": DS, "rows": rows, "columns": config["evaluation"]["columns"],
            "latency_split": config["evaluation"]["latency_split"],
            "show_paper": config["table1"]["show_paper"], "note": config["table1"]["note"],
            "coverage": COVERAGE if COVERAGE["splits"] else None,
            "table2": config["table2"], "table3": config["table3"],
            "table4": config["table4"], "table5": table5_spec()}


def table_outputs(section, stem):
    """The TSV and Markdown of an optional table, when config asks for it."""
    return [f"{stem}.tsv", f"{stem}.md"] if config[section] else []


def table5_outputs():
    return ["results/table5_fusion.tsv", "results/table5_fusion.md"] if hybrid_pairs() else []


def coverage_files(runs, split):
    """Judgement coverage of `runs` on `split`, when evaluation.coverage covers the split."""
    return [f"{OUT}/coverage/{run}.{split}.tsv" for run in runs] if split in COVERAGE["splits"] else []


def timed_run(run):
    """Whether a run has a latency file of its own, as all have but candidate lists read from files, a dense
    model's re-ranking (`-rerank-`) and the fusion methods beside Eq. 7 (`@`)."""
    return run not in CANDIDATES and "-rerank-" not in run and "@" not in run


def table_inputs(wildcards):
    """Metric and latency files behind Tables 1-3."""
    splits = list(dict.fromkeys(c["split"] for c in config["evaluation"]["columns"]))
    latency_split = config["evaluation"]["latency_split"]
    files = []
    for row in config["table1"]["rows"].values():
        for run in filter(None, (row["run"], row.get("compare_to"))):
            files += [f"{OUT}/metrics/{run}.{split}.tsv" for split in splits]
        if timed_run(row["run"]):
            files.append(f"{OUT}/runs/{row['run']}.{latency_split}.latency.json")
        files += [file for split in COVERAGE["splits"] for file in coverage_files([row["run"]], split)]
    for dense, sparse in hybrid_pairs():
        files += [f"{OUT}/metrics/{dense}+{sparse}@{method}.{split}.tsv" for method in FUSIONS for split in splits]
        files += [f"{OUT}/fusion/{dense}+{sparse}.{method}.json" for method in TUNED_FUSIONS]
    latency = config["table2"]
    if latency:
        split, dense, sparse = latency["split"], latency["dense"], latency["sparse"]
        files += [f"{OUT}/queries/{dense}.{split}"] + [
            f"{OUT}/runs/{run}.{split}.latency.json"
            for run in (dense, sparse, f"{dense}+{sparse}", f"colbert-{sparse}", "colbert")]
    ablation = config["table3"]
    if ablation:
        split, sparse = ablation["split"], ablation["sparse"]
        for student in ablation["conditions"].values():
            files += [f"{OUT}/metrics/{student}.{split}.tsv", f"{OUT}/metrics/{student}-rerank-{sparse}.{split}.tsv"]
    strategies = config["table4"]
    if strategies:
        for student in {*strategies["strategies"].values(), strategies["baseline"]}:
            files += [f"{OUT}/metrics/{student}.{split}.tsv" for split in splits]
            files += [f"{OUT}/training/{student}.losses.csv"] if student in VARIANTS else []
            files += [f"{OUT}/runs/{student}.{latency_split}.latency.json"] if timed_run(student) else []
            files += [f"{OUT}/queries/{student}.{latency_split}"] if student in DENSE_MODELS else []
    return files


def flag_arguments(settings):
    """{key: value} as command-line flags: --key value, or a bare --key for a true boolean."""
    args = []
    for key, value in settings.items():
        flag = f"--{key.replace('_', '-')}"
        if isinstance(value, bool):
            args += [flag] if value else []
        else:
            args += [flag, str(value)]
    return args


ROUND_LOOP = ("steps", "warmup_steps", "schedule")  # a round's own settings for the students training on it


def loop_arguments(stage, overrides=None):
    """The training-loop options of `stage` (teacher or student) as command-line arguments."""
    model = config["model"]
    args = ["--max-query-length", model["query_length"], "--max-doc-length", model["doc_length"],
            "--pool-start", model["pool_start"]]
    return [str(a) for a in args] + flag_arguments({**config[stage]["train"], **(overrides or {})})


def student_loop(wildcards):
    """Params function: student.train, with the steps, warm-up and schedule of the variant's round where it sets them."""
    variant = VARIANTS[wildcards.variant]
    settings = ROUNDS[variant["negatives"]] if "negatives" in variant else {}
    return loop_arguments("student", {key: settings[key] for key in ROUND_LOOP if key in settings})


def cross_encoder_lengths():
    """The cross-encoder's query and pair lengths as command-line arguments."""
    cross = config["cross_encoder"]
    return ["--max-query-length", str(cross["query_length"]), "--pair-length", str(cross["pair_length"])]


def cross_encoder_loop(wildcards):
    """A cross-encoder's scorer, lengths and training loop as command-line arguments."""
    dual = wildcards.cross_encoder == CROSS_ENCODERS["dual_pooling"]  # cls, the default, goes unsaid
    return (["--scorer", "dual_pooling"] if dual else []) + cross_encoder_lengths() + flag_arguments(
        config["cross_encoder"]["train"])


def cross_encoder_model(scorer="cls"):
    """The cross-encoder of a scorer: the published one named (BERT_CAT's cls only), else train_cross_encoder's."""
    published = config["cross_encoder"]["published"] if scorer == "cls" else None
    return published or f"{RES}/models/{CROSS_ENCODERS[scorer]}"


def cross_encoder_input(wildcards, scorer="cls"):
    """Input function: the trained cross-encoder of a scorer; none for a published one (read by the stage itself)."""
    model = cross_encoder_model(scorer)
    return {"cross_encoder": model} if model.startswith(f"{RES}/") else {}


def launcher(stage):
    """python, or torchrun with one process per GPU when the stage is given several."""
    gpus = training_gpus(stage)
    return "python" if gpus == 1 else f"python -m torch.distributed.run --standalone --nproc_per_node {gpus}"


def training_gpus(stage):
    """GPUs of a training rule: teacher.gpus, student.gpus, cross_encoder.gpus, or doc2query.train.gpus."""
    return D2Q["train"]["gpus"] if stage == "doc2query" else config[stage]["gpus"]


def teacher_options():
    teacher = config["teacher"]
    flags = [("--bias", teacher["bias"]), ("--unnormalized-queries", not teacher["normalize_queries"]),
             ("--inbatch", teacher["inbatch"])]
    return ["--dim", str(teacher["dim"])] + [flag for flag, on in flags if on]


def round_teacher(round_name):
    """The teacher of a hard-negative round: re-trained on its triples (HN+), else the one before it (HN)."""
    previous = "teacher"
    for name, settings in ROUNDS.items():
        if settings["teacher"] == "retrain":
            previous = f"teacher-{name}"
        if name == round_name:
            return f"{RES}/models/{previous}"
    raise ValueError(f"no hard-negative round {round_name!r}")


def previous_teacher(wildcards):
    """Input function: the teacher a re-trained round starts from, the latest one before the round."""
    names = list(ROUNDS)
    before = names[:names.index(wildcards.retrained)]
    return round_teacher(before[-1]) if before else f"{RES}/models/teacher"


def mined_triples(round_name):
    """The triples a round trains on: one file per distinct (model, depth, per_positive, seed), so rounds that
    mine alike (HN and HN+ in the paper's config) share one mine_round job."""
    mining = ROUNDS[round_name]
    return (f"{RES}/triples.mined-{mining['model']}-top{mining['depth']}-x{mining['per_positive']}"
            f"-seed{mining['seed']}.tsv")


def round_triples(wildcards):
    """Input function: the mined triples of the round a teacher is re-trained on."""
    return mined_triples(wildcards.retrained)


def dense_hits(wildcards):
    """Params function: dense.hits, or on the train split (searched only to mine rounds) the deepest round's depth
    of that model: at paper scale 0.5M queries x 1000 hits would be 500M lines for 200 used."""
    if wildcards.split != "train":
        return config["dense"]["hits"]
    depths = [settings["depth"] for settings in ROUNDS.values() if settings["model"] == wildcards.model]
    return max(depths, default=config["dense"]["hits"])


def student_teacher(wildcards):
    """The teacher a variant distils (its round's, when it names one)."""
    variant = VARIANTS[wildcards.variant]
    return round_teacher(variant["negatives"]) if "negatives" in variant else f"{RES}/models/teacher"


def student_inputs(wildcards):
    """Training data (its round's triples when the variant names one), plus the teacher when the variant distils
    it or starts from its weights."""
    variant = VARIANTS[wildcards.variant]
    triples = mined_triples(variant["negatives"]) if "negatives" in variant else f"{RES}/triples.train.tsv"
    inputs = {"triples": triples, "queries": f"{RES}/queries.train.tsv", "collection": f"{RES}/collection.tsv"}
    by_cross_encoder = variant.get("teacher") == "cross_encoder"
    online = variant["condition"] != "none" and "teacher_scores" not in variant and not by_cross_encoder
    matching = variant.get("embed_weight", 0) > 0 and not by_cross_encoder  # else from the cross-encoder
    if online or matching or student_init(wildcards) == "teacher":
        inputs["teacher"] = student_teacher(wildcards)
    if by_cross_encoder:
        inputs.update(cross_encoder_input(wildcards, variant.get("scorer", "cls")))
    if student_init(wildcards) not in ("teacher", "backbone"):
        inputs["init"] = f"{RES}/models/{student_init(wildcards)}"  # another variant: trained first
    if "teacher_scores" in variant:
        inputs["teacher_scores"] = teacher_score_file(variant)
    if variant.get("generated_ratio", 0) > 0:
        inputs["generated"] = doc2query_predictions()
    return inputs


def teacher_score_file(variant):
    """A variant's Margin-MSE score file: a release of the Margin-MSE authors (teacher_scores_download fetches it)
    or a path."""
    name = variant["teacher_scores"]
    return f"{DATASET['download_dir']}/margin-mse/{name}.tsv" if name in TEACHER_SCORE_RELEASES else name


def query_encoder_inputs(wildcards):
    """Training data, and the trained model a query encoder searches (a published one is no file input)."""
    searches = QUERY_ENCODERS[wildcards.variant]
    inputs = {"triples": f"{RES}/triples.train.tsv", "queries": f"{RES}/queries.train.tsv",
              "collection": f"{RES}/collection.tsv"}
    return inputs if searches in PUBLISHED else {**inputs, "searches": model_spec(searches)}


def query_encoder_options(wildcards):
    """pipeline.train.query_encoder's options for a query encoder: the model it searches, its backbone, its weights."""
    variant, searches = VARIANTS[wildcards.variant], QUERY_ENCODERS[wildcards.variant]
    args = ["--teacher", model_spec(searches),
            "--backbone", variant.get("backbone", config["model"]["backbone"]),
            "--embed-weight", variant.get("embed_weight", 1.0), "--teacher-tau", variant.get("teacher_tau", 1.0)]
    return [str(a) for a in args]


def student_init(wildcards):
    """Where a variant starts: its own `init`, else student.init (teacher, backbone or another variant's name)."""
    return VARIANTS[wildcards.variant].get("init", config["student"]["init"])


def student_options(wildcards):
    """Variant-specific options of pipeline.train.student."""
    student, variant, init = config["student"], VARIANTS[wildcards.variant], student_init(wildcards)
    args = ["--condition", variant["condition"], "--gamma", variant.get("gamma", student["gamma"]),
            "--teacher-tau", student["teacher_tau"], "--student-tau", student["student_tau"]]
    if init in ("teacher", "backbone"):
        args += ["--init", init]
    else:
        args += ["--init", "student", "--init-from", f"{RES}/models/{init}"]
    if "teacher" in student_inputs(wildcards):
        args += ["--teacher", student_teacher(wildcards)]
    if init == "backbone":
        args += ["--backbone", config["model"]["backbone"]]
    if student["teacher_dropout"]:
        args.append("--teacher-dropout")
    args.append("--gather" if student["gather"] else "--no-gather")  # across GPUs: one softmax over the batch
    if variant.get("embed_weight", 0) > 0:
        args += ["--embed-weight", variant["embed_weight"]]
    if "teacher_scores" in variant:
        args += ["--teacher-scores", teacher_score_file(variant), "--unscored", variant.get("unscored", "error")]
    if variant.get("teacher") == "cross_encoder":
        args += ["--cross-encoder", cross_encoder_model(variant.get("scorer", "cls"))]
    if variant.get("generated_ratio", 0) > 0:
        args += ["--generated", *doc2query_predictions(), "--generated-ratio", variant["generated_ratio"]]
    return [str(a) for a in args]


def doc2query_predictions():
    """The prediction files of the configured doc2query source, in collection order."""
    if D2Q["source"] == "download":
        return [f"{RES}/doc2query/predictions.jsonl"]
    if D2Q["source"] in ("generate", "train"):
        return [f"{RES}/doc2query/generated/shard-{i}.jsonl" for i in range(D2Q["generate"]["shards"])]
    return []


def doc2query_download_command():
    """Module and options fetching the configured release: the md5-verified zip or the Hugging Face jsonl parts."""
    download = D2Q["download"]
    if download["release"] == "zip":
        # Only the samples the expansion appends are converted (at least one: every passage gets a record).
        args = ["pipeline.doc2query.release", "--md5", download["md5"], "--samples", max(D2Q["n_queries"], 1)]
        args += [a for url in download["urls"] for a in ("--url", url)]
    else:
        args = ["pipeline.doc2query.predictions", "--base-url", download["base_url"]]
        args += [a for part in download["parts"] for a in ("--part", part["name"], part["md5"] or "none")]
    return [str(a) for a in args]


def doc2query_model(wildcards):
    """Input function: the model trained here (a published checkpoint is no file input)."""
    return [f"{RES}/models/doc2query"] if D2Q["source"] == "train" else []


def doc2query_model_spec():
    return f"{RES}/models/doc2query" if D2Q["source"] == "train" else D2Q["model"]


def doc2query_train_options():
    train = D2Q["train"]
    args = ["--init", train["init"], "--max-source-length", D2Q["generate"]["max_source_length"],
            "--max-target-length", D2Q["generate"]["max_target_length"]]
    if train["init"] == "scratch":
        args += ["--tokenizer", config["model"]["backbone"]]
        args += [a for key, value in train["size"].items() for a in (f"--{key.replace('_', '-')}", value)]
    return [str(a) for a in args + flag_arguments(train["loop"])]


def doc2query_generate_options():
    generate = D2Q["generate"]
    args = ["--shards", generate["shards"], "--n-samples", generate["samples"], "--top-k", generate["top_k"],
            "--batch-size", generate["batch_size"], "--max-source-length", generate["max_source_length"],
            "--max-target-length", generate["max_target_length"], "--seed", generate["seed"],
            "--precision", generate["precision"]]
    return [str(a) for a in args]


def dense_model(wildcards):
    """Input function: the trained student's directory (published checkpoints are no file input)."""
    return [] if wildcards.model in PUBLISHED else [f"{RES}/models/{wildcards.model}"]


def model_spec(name):
    """A dense model as stage modules take it: a published checkpoint's Hub id, else the trained directory."""
    return PUBLISHED.get(name, f"{RES}/models/{name}")


def dense_model_spec(wildcards):
    return model_spec(wildcards.model)


def passages_model(model):
    """The dense model whose passage vectors score `model`'s queries: itself, or the one a query encoder searches."""
    return QUERY_ENCODERS.get(model, model)


def corpus_shards(wildcards):
    model = passages_model(wildcards.model)
    return [f"{RES}/embeddings/{model}/shard-{i}" for i in range(config["dense"]["shards"])]


def dense_index(wildcards):
    """Input function: the index a model's queries search (a query encoder's: the model it searches)."""
    return f"{RES}/indexes/dense-{passages_model(wildcards.model)}"


def token_shards(wildcards):
    return [f"{RES}/tokens/teacher/shard-{i}" for i in range(config["rerank"]["shards"])]


def index_options(with_kind=True):
    index = {key: value for key, value in config["dense"]["index"].items() if with_kind or key != "kind"}
    return [str(a) for key, value in index.items() for a in (f"--{key.replace('_', '-')}", value)]


def search_options():
    """dense_run's device flags (pipeline.dense.search)."""
    search = config["dense"]["search"]
    args = ["--device", search["device"], "--search-shards", str(search["slices"])]
    args += ["--gpu-memory-mb", str(search["gpu_memory_mb"])] if search["gpu_memory_mb"] else []
    return args + (["--fp16"] if search["fp16"] else [])


def index_comparisons():
    """compare_indexes outputs: approximate kinds against flat, per dense model, on one split."""
    compare = config["dense"]["compare"]
    if not compare["kinds"]:
        return []
    models = compare["models"] or [model for model in DENSE_MODELS if model not in QUERY_ENCODERS]
    return [f"{OUT}/indexes/{model}.{compare['split']}.tsv" for model in models]


def alpha_setting(wildcards):
    return config["fusion"]["alpha"].get(wildcards.sparse, "tuned")


def fusion_inputs(wildcards):
    """Both runs of the split, and the tuned alpha when the sparse run's alpha is tuned."""
    inputs = {"sparse": f"{OUT}/runs/{wildcards.sparse}.{wildcards.split}.trec",
              "dense": f"{OUT}/runs/{wildcards.model}.{wildcards.split}.trec"}
    if alpha_setting(wildcards) == "tuned":
        inputs["alpha"] = f"{OUT}/fusion/{wildcards.model}+{wildcards.sparse}.alpha.json"
    return inputs


def fusion_flags():
    """pyserini's fusion variants, when switched on in config."""
    switches = (("--normalization", config["fusion"]["normalization"]),
                ("--weight-on-dense", config["fusion"]["weight_on_dense"]))
    return [flag for flag, on in switches if on]


def fusion_options(wildcards):
    alpha = alpha_setting(wildcards)
    args = (["--alpha-file", f"{OUT}/fusion/{wildcards.model}+{wildcards.sparse}.alpha.json"] if alpha == "tuned"
            else ["--alpha", str(alpha)])
    return args + fusion_flags()


def report_coverage():
    """Coverage of the report's two per-query runs, which marks their thinly judged queries."""
    settings = config["report"]
    return coverage_files(settings["scatter"], settings["split"]) if settings else []


def report_setting(key):
    """The report's scatter, split or measure (None when a profile switches the report off)."""
    return config["report"][key] if config["report"] else None


def dataset_results(wildcards):
    """Params function: results/<dataset>, where the report finds runs, metrics and curves."""
    return OUT


def training_curves():
    """Loss logs of the teacher and of every trained student (published checkpoints have none)."""
    if "train" not in DATASET["splits"]:
        return []
    extra = ["doc2query"] if D2Q["source"] == "train" else []
    used = {variant["negatives"] for variant in VARIANTS.values() if "negatives" in variant}
    extra += [f"teacher-{name}" for name, settings in ROUNDS.items()
              if settings["teacher"] == "retrain" and name in used]
    return [f"{OUT}/training/{name}.losses.csv" for name in [*teacher_if_used(), *VARIANTS, *extra]]


def teacher_if_used():
    """["teacher"] when something needs it (students, ColBERT rows, Table 2's ColBERT stages); a config of
    published checkpoints alone trains nothing."""
    reranks = any(row["run"] == "colbert" or row["run"].startswith("colbert-")
                  for row in config["table1"]["rows"].values()) or config["table2"]
    return ["teacher"] if VARIANTS or reranks else []


def all_targets():
    targets = ["results/table1.tsv", "results/table1.md"]
    targets += ["results/report.html"] if config["report"] else []
    targets += ["results/table2_latency.tsv"] if config["table2"] else []
    targets += ["results/table3_ablation.tsv"] if config["table3"] else []
    targets += ["results/table4_distillation.tsv"] if config["table4"] else []
    targets += index_comparisons()
    if "train" in DATASET["splits"]:
        targets.append(f"{RES}/triples.train.tsv")
        targets += [f"{RES}/models/{variant}" for variant in VARIANTS]
    return targets
