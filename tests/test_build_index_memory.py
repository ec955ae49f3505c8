"""build_index's lean path (ids kept as docid lines, vectors through a small buffer) writes what adding every
shard's vectors to a flat index writes, and reading ids as lines refuses what reading them as a list refuses."""

import json

import faiss
import numpy as np
import pytest

from pipeline.dense.index import _blocks, build_index
from pipeline.io import (
    EMBEDDINGS_FILE,
    IDS_FILE,
    MANIFEST_FILE,
    InputFormatError,
    ids_checksum,
    lines_checksum,
    open_shard,
    write_id_text,
    write_ids,
)

DIMS = 24
BOUNDS = [0, 1, 2500, 2500, 5003]  # one row, many rows, an empty shard; FLAT_BLOCK does not divide them


def make_shards(root, dtype):
    """Shards of seeded vectors partitioning a collection whose pids are partly non-ASCII."""
    pids = [f"dé{i}" if i % 3 else f"p{i}" for i in range(BOUNDS[-1])]
    write_id_text(root / "collection.tsv", [(pid, "text") for pid in pids])
    directories, vectors = [], []
    for shard in range(len(BOUNDS) - 1):
        lo, hi = BOUNDS[shard], BOUNDS[shard + 1]
        out = root / dtype / f"shard-{shard}"
        out.mkdir(parents=True)
        rows = np.random.default_rng(shard).normal(size=(hi - lo, DIMS)).astype(dtype)
        np.save(out / EMBEDDINGS_FILE, rows)
        write_ids(out / IDS_FILE, pids[lo:hi])
        (out / MANIFEST_FILE).write_text(json.dumps({
            "model": "m", "model_fingerprint": "m", "pooling": "mean", "dims": DIMS, "dtype": dtype,
            "count": hi - lo, "ids_checksum": ids_checksum(pids[lo:hi]), "shard": shard, "shards": len(BOUNDS) - 1}))
        directories.append(out)
        vectors.append(rows)
    return directories, pids, np.concatenate(vectors).astype(np.float32)


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_flat_index_and_docid_are_those_of_adding_every_shard(tmp_path, dtype):
    directories, pids, vectors = make_shards(tmp_path, dtype)
    manifest = build_index(directories[::-1], tmp_path / "collection.tsv", tmp_path / "index")  # any order given
    reference = faiss.IndexFlatIP(DIMS)
    reference.add(vectors)
    assert (tmp_path / "index" / "index").read_bytes() == faiss.serialize_index(reference).tobytes()
    assert (tmp_path / "index" / "docid").read_bytes() == "".join(f"{pid}\n" for pid in pids).encode("utf-8")
    assert manifest["count"] == len(pids) and manifest["ids_checksum"] == ids_checksum(pids)


def test_shard_ids_as_lines_read_and_refuse_as_the_list(tmp_path):
    directories, _, _ = make_shards(tmp_path, "float16")
    for directory in directories:
        vectors, ids, manifest = open_shard(directory)
        lean_vectors, lines, lean_manifest = open_shard(directory, ids_as_lines=True)
        assert np.array_equal(lean_vectors, vectors) and lean_manifest == manifest
        assert lines == "".join(f"{pid}\n" for pid in ids).encode("utf-8")
        assert lines_checksum([lines[:3], lines[3:]]) == ids_checksum(ids)
    write_ids(directories[2] / IDS_FILE, ["p1", "dé2"])
    with pytest.raises(InputFormatError) as expected:
        open_shard(directories[2])
    with pytest.raises(InputFormatError) as lean:
        open_shard(directories[2], ids_as_lines=True)
    assert str(lean.value) == str(expected.value)


def test_collection_with_a_repeated_pid_is_still_refused(tmp_path):
    directories, pids, _ = make_shards(tmp_path, "float32")
    write_id_text(tmp_path / "collection.tsv", [(pid, "text") for pid in [*pids[:10], pids[3], *pids[11:]]])
    with pytest.raises(InputFormatError, match="line 11: expected a unique pid"):
        build_index(directories, tmp_path / "collection.tsv", tmp_path / "index")
    assert not (tmp_path / "index").exists()


def test_blocks_refuse_a_file_shorter_than_its_header(tmp_path):
    path = tmp_path / EMBEDDINGS_FILE
    np.save(path, np.ones((10, DIMS), dtype=np.float16))
    path.write_bytes(path.read_bytes()[:-DIMS * 2])  # the last row cut off
    with pytest.raises(InputFormatError, match="10 rows of 24 float16"):
        list(_blocks(path, 4))
