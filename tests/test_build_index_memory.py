"""build_index's lean path (ids kept as docid lines, vectors through a small buffer) writes what adding every
shard's vectors to a flat index writes, and reading ids as lines refuses what reading them as a list refuses."""

import json

import faiss
import numpy as np
import pytest

from pipeline.dense.index import _blocks, build_index
from pipeline.formats import InputFormatError, write_id_text
from pipeline.shards import (
    EMBEDDINGS_FILE,
    IDS_FILE,
    MANIFEST_FILE,
    files_record,
    ids_checksum,
    lines_checksum,
    open_shard,
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
            "count": hi - lo, "ids_checksum": ids_checksum(pids[lo:hi]), "shard": shard, "shards": len(BOUNDS) - 1,
            "files": files_record(out, [EMBEDDINGS_FILE])}))
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


def test_truncated_shard_is_refused_by_path_before_anything_is_read(tmp_path):
    directories, _, _ = make_shards(tmp_path, "float16")
    path = directories[3] / EMBEDDINGS_FILE
    path.write_bytes(path.read_bytes()[:-100])  # was: "mmap length is greater than file size", naming no file
    with pytest.raises(InputFormatError, match="truncated") as err:
        build_index(directories, tmp_path / "collection.tsv", tmp_path / "index")
    assert str(path) in str(err.value)
    assert not (tmp_path / "index").exists()


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_shard_damaged_at_the_same_size_is_refused_by_its_checksum(tmp_path, kind):
    """Half of emb.npy zeroed: size, shape and ids as recorded, so only the checksum, hashed as the vectors
    stream into the index, can tell; the build stops naming the file and writes nothing."""
    directories, _, _ = make_shards(tmp_path, "float32")
    path = directories[1] / EMBEDDINGS_FILE
    data = bytearray(path.read_bytes())
    data[len(data) // 2:] = bytes(len(data) - len(data) // 2)
    path.write_bytes(bytes(data))
    with pytest.raises(InputFormatError, match="blake2b checksum") as err:
        build_index(directories, tmp_path / "collection.tsv", tmp_path / "index", kind=kind, hnsw_m=8,
                    ef_construction=16)
    assert str(path) in str(err.value)
    assert not (tmp_path / "index").exists()


def test_shard_without_a_file_record_is_refused(tmp_path):
    directories, _, _ = make_shards(tmp_path, "float16")
    manifest = json.loads((directories[0] / MANIFEST_FILE).read_text())
    del manifest["files"]  # as written before manifests recorded their files
    (directories[0] / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(InputFormatError, match="encode it again") as err:
        build_index(directories, tmp_path / "collection.tsv", tmp_path / "index")
    assert str(directories[0] / EMBEDDINGS_FILE) in str(err.value)


@pytest.mark.parametrize("name", [MANIFEST_FILE, IDS_FILE, EMBEDDINGS_FILE])
def test_unreadable_shard_files_are_refused_naming_the_file(tmp_path, name):
    """Garbage in any file of a shard is an InputFormatError naming it, which encode_corpus answers by encoding
    the shard again (it catches only InputFormatError)."""
    directories, _, _ = make_shards(tmp_path, "float16")
    (directories[1] / name).write_bytes(b"\x93NUMPY garbage" if name == EMBEDDINGS_FILE else b"garbage")
    with pytest.raises(InputFormatError) as err:
        open_shard(directories[1])
    assert str(directories[1] / name) in str(err.value)
