"""`hashlens bench scale`: the Milvus backend against the FAISS one, same codes, same queries.

Codes drawn like a sparse model's (few ones, many photos sharing one); the queries are codes of
photos in the collection. Both answer the exact top 10 (milvus-lite's BIN_FLAT, the library's
multi-index over FAISS codes), timed one query at a time; Milvus' insert rate is reported too.
Ingest: the same generated photos indexed into fresh libraries by a plain `hashlens index` and
by `index --ray` with 1 and 2 encoder actors, one after the other in the same run; photos per
second of the whole run, Ray's start-up included (what the user waits for).
Embeddings: a library of 512-dim float16 embeddings in SQLite is opened on the Milvus backend,
which moves them into milvus-lite (timed: the insert rate), and both are read back in batches as
training reads them (timed: rows per second from each).
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from retrieval.index import CodeIndex
from retrieval.milvus_index import MilvusCodeIndex

BITS = 64
DIM = 8  # re-rank vectors kept tiny: the codes are what is timed


def sparse_codes(rng: np.random.Generator, n: int, bits: int = BITS) -> np.ndarray:
    protos = rng.random((max(1, n // 8), bits)) < 6 / bits
    rows = protos[rng.integers(0, len(protos), n)] ^ (rng.random((n, bits)) < 0.5 / bits)
    return np.packbits(rows, axis=1)


def _p50_ms(search, queries: np.ndarray) -> float:
    search(queries[0])  # warm: tables built, collection loaded
    times = []
    for q in queries:
        start = time.perf_counter()
        search(q)
        times.append((time.perf_counter() - start) * 1000)
    return float(np.median(times))


def ingest_rates(out: Path, *, photos: int, encoder: str, log) -> dict:
    """Photos per second of a plain index and of Ray ingests with 1 and 2 actors."""
    from bench.synthetic import make_photo_folder
    from retrieval.config import Settings
    from retrieval.ingest import index_paths
    from retrieval.library import Library
    from retrieval.ray_ingest import index_with_ray

    folder = out / "photos"
    shutil.rmtree(folder, ignore_errors=True)
    make_photo_folder(folder, photos, size=(1600, 1200))

    def fresh(name: str) -> Library:
        shutil.rmtree(out / name, ignore_errors=True)
        return Library(Settings.resolve(home=out / name, encoder=encoder))

    summary = index_paths(fresh("single"), [folder], progress=False)
    rates = {"single_process_photos_per_s": summary.embedded / summary.elapsed, "ray_photos_per_s": {}}
    log(f"index: {rates['single_process_photos_per_s']:.2f} photos/s")
    for actors in (1, 2):
        summary = index_with_ray(fresh(f"ray{actors}"), [folder], actors=actors, progress=False)
        rates["ray_photos_per_s"][str(actors)] = summary.embedded / summary.elapsed
        log(f"index --ray --actors {actors}: {rates['ray_photos_per_s'][str(actors)]:.2f} photos/s")
    return rates


def embedding_rates(out: Path, *, rows: int, dim: int = 512, log) -> dict:
    """Rows per second: embeddings moved from SQLite into milvus-lite, and read in training's
    batches from each."""
    from bench.synthetic import fill_library
    from retrieval.config import Settings
    from retrieval.library import Library

    home, uri = out / "embeddings", out / "embeddings_milvus.db"
    shutil.rmtree(home, ignore_errors=True)
    shutil.rmtree(uri, ignore_errors=True)
    uri.unlink(missing_ok=True)
    vectors = np.random.default_rng(1).standard_normal((rows, dim)).astype(np.float32)
    on_sqlite = Library(Settings.resolve(home=home, encoder="fake"))
    fill_library(on_sqlite, vectors / np.linalg.norm(vectors, axis=1, keepdims=True))

    def read_rate(library) -> float:
        start = time.perf_counter()
        read = sum(len(ids) for ids, _ in library.embedding_store.batches())
        assert read == rows
        return rows / (time.perf_counter() - start)

    rates = {"embedding_rows": rows, "sqlite_embedding_read_rows_per_s": read_rate(on_sqlite)}
    on_sqlite.store.db.close()
    on_milvus = Library(Settings.resolve(home=home, encoder="fake", backend="milvus", milvus_uri=str(uri)))
    start = time.perf_counter()
    assert on_milvus.embedding_store.where == "milvus"  # opening it moves the embeddings
    rates["milvus_embedding_move_rows_per_s"] = rows / (time.perf_counter() - start)
    rates["milvus_embedding_read_rows_per_s"] = read_rate(on_milvus)
    log(
        f"embeddings ({rows:,} x {dim}): moved into milvus-lite at {rates['milvus_embedding_move_rows_per_s']:,.0f} "
        f"rows/s; training reads {rates['sqlite_embedding_read_rows_per_s']:,.0f} rows/s from SQLite, "
        f"{rates['milvus_embedding_read_rows_per_s']:,.0f} from milvus-lite"
    )
    on_milvus.store.db.close()
    return rates


def run_scale_bench(
    out: str | Path,
    *,
    codes: int = 1_000_000,
    queries: int = 200,
    photos: int = 160,
    embedding_rows: int = 20_000,
    encoder: str = "random",
    log=None,
) -> dict:
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rates = ingest_rates(out, photos=photos, encoder=encoder, log=log)
    rates.update(embedding_rates(out, rows=embedding_rows, log=log))
    rng = np.random.default_rng(0)
    ids = np.arange(1, codes + 1, dtype=np.int64)
    packed = sparse_codes(rng, codes)
    asked = packed[rng.integers(0, codes, queries)]
    faiss_index = CodeIndex.build(BITS, 1, ids, packed)
    faiss_ms = _p50_ms(lambda q: faiss_index.knn(q, 10), asked)
    log(f"faiss: top-10 p50 {faiss_ms:.3f} ms over {codes:,} codes")

    uri = out / "milvus.db"
    shutil.rmtree(uri, ignore_errors=True)
    uri.unlink(missing_ok=True)
    zeros = np.zeros((1, DIM), np.float32)
    start = time.perf_counter()
    milvus, _ = MilvusCodeIndex.open(
        str(uri),
        library_id="bench",
        bits=BITS,
        model_id=1,
        dim=DIM,
        ids=ids,
        codes=packed,
        embeddings_of=lambda part: np.repeat(zeros, len(part), axis=0),
        records_of=lambda part: ([f"/bench/photo_{i:07d}.jpg" for i in part], [[f"tag {i % 100}"] for i in part]),
    )
    insert_s = time.perf_counter() - start
    log(f"milvus-lite: {codes:,} codes inserted in {insert_s:.1f} s")
    milvus_ms = _p50_ms(lambda q: milvus.knn(q, 10), asked)
    same = sum(faiss_index.knn(q, 10)[0].tolist() == milvus.knn(q, 10)[0].tolist() for q in asked[:50]) / min(
        50, len(asked)
    )
    log(f"milvus-lite: top-10 p50 {milvus_ms:.3f} ms; same top-10 distances for {same:.0%} of queries")
    # "Which photos carry this tag" (the tagged photos a search puts first): each tag here is on
    # 1% of the photos.
    tag_ms = _p50_ms(lambda t: milvus.tagged_with([f"tag {int(t)}"]), np.arange(min(queries, 20)))
    log(f"milvus-lite: photos carrying a tag (1% of the library) p50 {tag_ms:.1f} ms")
    result = {
        "codes": codes,
        "bits": BITS,
        "queries": len(asked),
        "faiss_top10_ms_p50": faiss_ms,
        "milvus_top10_ms_p50": milvus_ms,
        "milvus_insert_codes_per_s": codes / insert_s,
        "milvus_tagged_with_ms_p50": tag_ms,
        "same_top10_distances": same,
        "milvus": "milvus-lite (BIN_FLAT)",
        "photos": photos,
        "encoder": encoder,
        **rates,
    }
    (out / "scale_bench.json").write_text(json.dumps(result, indent=1))
    return result
