"""The Margin-MSE authors' teacher scores for the MS MARCO train triples, downloaded and verified.

    python -m pipeline.data.teacher_scores --release bert_cat_ensemble \
        --out resources/downloads/margin-mse/bert_cat_ensemble_msmarcopassage_train_scores_ids.tsv

Hofstätter et al. (2020) released, on Zenodo (record 4068216), the scores of their BERT_CAT teachers for the
official MS MARCO train triples, one line per triple: `pos_score<TAB>neg_score<TAB>qid<TAB>pos_pid<TAB>neg_pid`.
A student reads them with `teacher_scores` (pipeline.train.batches matches them to its triples by id). The
download resumes when cut and is checked against the md5 below; then every line is checked, so a damaged file
stops here, naming its line, rather than in the middle of training.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from pipeline.cli import run_stage
from pipeline.formats import InputFormatError, iter_teacher_scores

log = logging.getLogger(__name__)

ZENODO = "https://zenodo.org/record/4068216/files/"
# name: (file, md5). The ensemble (BERT-Base, BERT-Large and ALBERT-Large, their mean) is the teacher of the
# paper's best students; its md5 is the one other tools that download it check. BERT-Base alone is T1.
RELEASES = {
    "bert_cat_ensemble": ("bert_cat_ensemble_msmarcopassage_train_scores_ids.tsv", "4d99696386f96a7f1631076bcc53ac3c"),
    "bertbase_cat": ("bertbase_cat_msmarcopassage_train_scores_ids.tsv", "a2575af08a19b47c2041e67c9efcd917"),
}


def fetch_teacher_scores(release: str, out: Path, base_url: str = ZENODO, progress: bool = True) -> int:
    """Download `release` to `out` (resumable, md5-verified), check every line; returns the number of triples."""
    if release not in RELEASES:
        raise ValueError(f"unknown teacher score release {release!r}; choose from {sorted(RELEASES)}")
    # Imported here: the workflow reads RELEASES when it parses the Snakefile, without the HTTP stack.
    from pipeline.download import download

    name, md5 = RELEASES[release]
    download(f"{base_url}{name}?download=1", Path(out), md5, progress=progress)
    count = sum(1 for _ in iter_teacher_scores(out))
    if not count:
        raise InputFormatError(out, None, "at least one scored triple")
    return count


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--release", choices=sorted(RELEASES), required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--base-url", default=ZENODO)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    count = fetch_teacher_scores(args.release, args.out, args.base_url)
    log.info("%s: %d scored triples", args.out, count)


if __name__ == "__main__":
    run_stage(main)
