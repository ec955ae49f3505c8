"""generate_queries: predicted queries for one shard of a collection, by top-k sampling from a seq2seq model.

    python -m pipeline.doc2query.generate --model resources/D/models/doc2query --collection resources/D/collection.tsv \
        --out resources/D/doc2query/generated --shard 0 --shards 4 --n-samples 40 --top-k 10

Shard i holds lines [i * N / n, (i + 1) * N / n) of the collection (as in encode_corpus) and is
written to `<out>/shard-<i>.jsonl` in the official predictions format, in collection order, with
`<out>/shard-<i>.manifest.json` (settings, count, seconds, passages/s). Give the shards, in shard
order, to `pipeline.doc2query.expand --predictions` (or merge them with
`pipeline.doc2query.predictions --merge`).

Sampling is reproducible: batch b of shard i samples after seeding torch with (seed, i, b), so a
rerun, or a resumed run, writes the same queries. Batches are appended to
`shard-<i>.jsonl.partial` as they complete; a killed run resumes after the last complete batch
(settings in `shard-<i>.jsonl.partial.json`; different settings start the shard afresh) and the
shard is renamed into place when done. A complete shard with the same settings is kept.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.modeling_outputs import BaseModelOutput

from pipeline import precision as amp_precision
from pipeline.cli import run_stage
from pipeline.dense.runtime import model_fingerprint
from pipeline.doc2query.model import encode_sources, load_seq2seq
from pipeline.durable import atomic_output
from pipeline.formats import clean_text, format_prediction, read_collection_shard
from pipeline.shards import ids_checksum

log = logging.getLogger(__name__)


def shard_path(out: Path, shard: int) -> Path:
    return Path(out) / f"shard-{shard}.jsonl"


def batch_seed(seed: int, shard: int, batch: int) -> int:
    """A well-mixed seed for one batch, independent of how many batches ran before it in this process."""
    return int(np.random.SeedSequence([seed, shard, batch]).generate_state(1)[0])


def sample_queries(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, passages: list[str], n_samples: int,
                   top_k: int, max_source_length: int, max_target_length: int,
                   precision: str = "fp32") -> list[list[str]]:
    """`n_samples` queries per passage by pure top-k sampling (docTTTTTquery: k = 10, 64 target tokens).

    Our own decoding loop rather than `generate()`: that one samples with a multinomial over the
    whole vocabulary at every step, which was 7x slower on CPU than sampling among the top k logits
    (the same distribution). At most `max_target_length` tokens per query, eos included, as in training.
    """
    tokens = encode_sources(tokenizer, passages, max_source_length).to(model.device)
    config = model.config
    with amp_precision.autocast(model.device, precision):
        encoded = model.get_encoder()(**tokens).last_hidden_state
        # Each passage's encoding once per sample, the rows of a passage adjacent.
        encoder_outputs = BaseModelOutput(last_hidden_state=encoded.repeat_interleave(n_samples, dim=0))
        mask = tokens["attention_mask"].repeat_interleave(n_samples, dim=0)
        current = torch.full((mask.shape[0], 1), config.decoder_start_token_id, device=model.device)
        finished = torch.zeros(mask.shape[0], dtype=torch.bool, device=model.device)
        cache, steps = None, []
        for _ in range(max_target_length):
            output = model(encoder_outputs=encoder_outputs, attention_mask=mask, decoder_input_ids=current,
                           past_key_values=cache, use_cache=True)
            cache = output.past_key_values
            logits, candidates = output.logits[:, -1].float().topk(top_k, dim=-1)
            current = candidates.gather(1, torch.multinomial(logits.softmax(dim=-1), 1))
            current = current.masked_fill(finished.unsqueeze(1), config.pad_token_id)
            steps.append(current)
            finished |= current.squeeze(1) == config.eos_token_id
            if finished.all():
                break
    decoded = [clean_text(text) for text in tokenizer.batch_decode(torch.cat(steps, dim=1), skip_special_tokens=True)]
    return [decoded[i * n_samples:(i + 1) * n_samples] for i in range(len(passages))]


def _resume(partial: Path, settings_file: Path, settings: dict, ids: list[str], batch_size: int) -> int:
    """Passages already done in `partial`: its complete batches whose ids match, the rest cut off."""
    if not (partial.is_file() and settings_file.is_file()) or json.loads(settings_file.read_text()) != settings:
        if partial.is_file():
            log.warning("%s was written with other settings: starting the shard afresh", partial)
        partial.write_bytes(b"")
        settings_file.write_text(json.dumps(settings, indent=2) + "\n")
        return 0
    done = kept = offset = kept_offset = 0
    with open(partial, "rb") as handle:
        for raw in handle:
            try:
                if not raw.endswith(b"\n") or done >= len(ids) or json.loads(raw)["id"] != ids[done]:
                    break
            except (ValueError, KeyError, TypeError):
                break  # a line cut by the kill
            done, offset = done + 1, offset + len(raw)
            if done % batch_size == 0 or done == len(ids):
                kept, kept_offset = done, offset
    with open(partial, "r+b") as handle:
        handle.truncate(kept_offset)
    return kept


def generate_queries(model: str, collection: Path, out: Path, shard: int = 0, shards: int = 1, n_samples: int = 40,
                     top_k: int = 10, max_source_length: int = 512, max_target_length: int = 64, batch_size: int = 8,
                     seed: int = 13, precision: str = "auto") -> dict:
    """Write `n_samples` predicted queries for each passage of shard `shard` of `shards`; returns the manifest."""
    if n_samples < 1 or top_k < 1 or batch_size < 1:
        raise ValueError("n_samples, top_k and batch_size must be positive")
    ids, texts = read_collection_shard(collection, shard, shards)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    # The resolved precision, not the request: samples drawn in bf16 differ from fp32 ones, so a shard resumed
    # on other hardware must not mix the two.
    resolved = amp_precision.resolve_and_log(precision, device, "generate_doc2query")
    settings = {"model_fingerprint": model_fingerprint(model), "shard": shard, "shards": shards, "count": len(ids),
                "ids_checksum": ids_checksum(ids), "n_samples": n_samples, "top_k": top_k,
                "max_source_length": max_source_length, "max_target_length": max_target_length,
                "batch_size": batch_size, "seed": seed, "precision": resolved}
    final = shard_path(out, shard)
    manifest_path = final.with_name(f"shard-{shard}.manifest.json")
    if final.is_file() and manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("settings") == settings:
            log.info("%s is complete with these settings: kept", final)
            return manifest
    seq2seq, tokenizer = load_seq2seq(model)  # before touching anything: an unavailable model leaves no trace
    final.parent.mkdir(parents=True, exist_ok=True)
    partial = final.with_name(final.name + ".partial")
    settings_file = final.with_name(final.name + ".partial.json")
    done = _resume(partial, settings_file, settings, ids, batch_size)
    if done:
        log.info("resuming %s after %d of %d passages", partial, done, len(ids))
    started, generated = time.perf_counter(), len(ids) - done
    if generated:
        seq2seq.to(device).eval()
        with open(partial, "ab") as handle, torch.inference_mode():
            for start in tqdm(range(done, len(ids), batch_size), desc=f"doc2query shard {shard}", unit="batch",
                              initial=done // batch_size, total=math.ceil(len(ids) / batch_size), mininterval=5):
                torch.manual_seed(batch_seed(seed, shard, start // batch_size))
                queries = sample_queries(seq2seq, tokenizer, texts[start:start + batch_size], n_samples, top_k,
                                         max_source_length, max_target_length, resolved)
                lines = map(format_prediction, ids[start:start + batch_size], queries)
                handle.write("".join(lines).encode("utf-8"))
                handle.flush()
                os.fsync(handle.fileno())  # what the partial file holds survives a kill
    seconds = time.perf_counter() - started
    manifest = {"model": model, "settings": settings, "count": len(ids), "generated_this_run": generated,
                "seconds": round(seconds, 3), **amp_precision.describe(resolved),
                "passages_per_second": round(generated / seconds, 3) if generated and seconds else None}
    with atomic_output(manifest_path) as handle:
        json.dump(manifest, handle, indent=2)
        handle.write("\n")
    os.replace(partial, final)
    settings_file.unlink()
    log.info("shard %d/%d: %d passages x %d queries (top-%d, <= %d tokens) in %.1f s: %s passages/s", shard, shards,
             generated, n_samples, top_k, max_target_length, seconds, manifest["passages_per_second"])
    return manifest


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True,
                        help="seq2seq directory or Hub id (castorini/doc2query-t5-base-msmarco)")
    parser.add_argument("--collection", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="directory of shard-<i>.jsonl files")
    parser.add_argument("--shard", type=int, default=0)
    parser.add_argument("--shards", type=int, default=1)
    parser.add_argument("--n-samples", type=int, default=40, help="queries sampled per passage")
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--max-source-length", type=int, default=512, help="passage tokens")
    parser.add_argument("--max-target-length", type=int, default=64, help="query tokens, eos included")
    parser.add_argument("--batch-size", type=int, default=8, help="passages per generate() call")
    parser.add_argument("--seed", type=int, default=13)
    amp_precision.add_precision_argument(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    generate_queries(args.model, args.collection, args.out, args.shard, args.shards, args.n_samples, args.top_k,
                     args.max_source_length, args.max_target_length, args.batch_size, args.seed, args.precision)


if __name__ == "__main__":
    run_stage(main)
