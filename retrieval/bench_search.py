"""`hashlens bench search`: search latency at 1M and 10M photos, and end to end in a warm library.

Everything is measured in the same run, on one thread: hashlens' bucket index over 64-bit codes
from a model trained on synthetic clustered (aligned) embeddings, FAISS IndexBinaryFlat on the
same codes, FAISS IndexBinaryHash / IndexBinaryMultiHash radius search on the same codes, and
FAISS IndexFlatIP on the 512-d float vectors. 10M float vectors (20 GB) do not fit this
machine's memory at once, so IndexFlatIP at 10M is timed shard by shard (1M each) on the same
queries and the shard times of each query are added: the same work a single 10M scan does.
"""

from __future__ import annotations

import json
import sys
import time
from functools import partial
from pathlib import Path

import faiss
import numpy as np

from models.sparsehash import SparseHash, SparseHashConfig
from retrieval.buckets import BucketIndex
from retrieval.synthetic import AlignedConcepts
from retrieval.train import TrainConfig, train_sparsehash

SHARD = 1_000_000
CONCEPTS = 200  # distinct tags in the synthetic libraries; photos carry one to three
IMAGE_NOISE = 0.5  # noise norm against the unit-norm concept mixture of each photo
TRAIN_PHOTOS = 4000  # the hash model's training set


def concept_names(count: int) -> list[str]:
    from retrieval.vocabulary import shipped_vocabulary

    return shipped_vocabulary()[:count]


def train_aligned_model(concepts: AlignedConcepts, *, bits: int, photos: int, seed: int) -> tuple[SparseHash, float]:
    """A hash model trained on `photos` aligned photos and their tag lists; (model, seconds)."""
    images, labels = concepts.photos(photos, seed=seed)
    texts = np.stack([concepts.text(", ".join(np.array(concepts.names)[row])) for row in labels])
    config = SparseHashConfig(image_dim=concepts.dim, text_dim=concepts.dim, bits=bits, margin=0.375 * bits)
    result = train_sparsehash(images, texts, labels.astype(np.float32), config, TrainConfig(seed=seed))
    return result.model, result.seconds


def _top10(index, q: np.ndarray):
    return index.search(q[None], 10)


def _timed(fn, queries) -> np.ndarray:
    """Milliseconds of fn(query) for each query."""
    out = []
    for q in queries:
        start = time.perf_counter()
        fn(q)
        out.append((time.perf_counter() - start) * 1e3)
    return np.array(out)


def _summary(ms: np.ndarray) -> dict:
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)), "queries": len(ms)}


def scale_run(
    model: SparseHash, concepts: AlignedConcepts, items: int, *, queries: int, float_queries: int, log
) -> dict:
    """Latency of each search method over `items` photos (generated shard by shard)."""
    bits = model.config.bits
    names = np.array(concepts.names)
    rng = np.random.default_rng(7)
    texts = [", ".join(rng.choice(names, size=int(rng.integers(1, 3)), replace=False)) for _ in range(queries)]
    text_vectors = np.stack([concepts.text(t) for t in texts])
    query_codes = model.encode(text_vectors, "text")
    codes = np.zeros((items, bits // 8), np.uint8)
    flat_ip_ms = np.zeros(float_queries)
    start = time.perf_counter()
    for shard_start in range(0, items, SHARD):
        n = min(SHARD, items - shard_start)
        vectors, _ = concepts.photos(n, seed=1000 + shard_start // SHARD)
        codes[shard_start : shard_start + n] = model.encode(vectors, "image")
        float_index = faiss.IndexFlatIP(concepts.dim)
        float_index.add(vectors)
        del vectors
        flat_ip_ms += _timed(partial(_top10, float_index), text_vectors[:float_queries])
        del float_index
        log(f"  {shard_start + n:,} photos generated and encoded ({time.perf_counter() - start:.0f} s)")
    ids = np.arange(items, dtype=np.int64)

    build = time.perf_counter()
    buckets = BucketIndex(ids, codes, bits)
    build_seconds = time.perf_counter() - build
    flat = faiss.IndexBinaryFlat(bits)
    flat.add(codes)
    hashed = faiss.IndexBinaryHash(bits, 16)
    hashed.nflip = 2  # exact for radius ≤ 2: a neighbour differs in at most 2 of the hashed bits
    hashed.add(codes)
    multi = faiss.IndexBinaryMultiHash(bits, 4, 16)  # 4 tables of 16 bits: exact for radius ≤ 3
    multi.nflip = 0
    multi.add(codes)

    exact = all(
        np.array_equal(buckets.knn(q, 10)[0], flat.search(q[None], 10)[0][0].astype(np.int32)) for q in query_codes[:50]
    )
    result = {
        "items": items,
        "bits": bits,
        "distinct_codes": buckets.distinct_codes,
        "mean_ones": float(np.unpackbits(codes[:100_000], axis=1).sum(1).mean()),
        "bucket_build_seconds": build_seconds,
        "hashlens_top10": _summary(_timed(lambda q: buckets.knn(q, 10), query_codes)),
        "hashlens_top10_exact": exact,
        "hashlens_radius2": _summary(_timed(lambda q: buckets.radius(q, 2), query_codes)),
        "binary_flat_top10": _summary(_timed(lambda q: flat.search(q[None], 10), query_codes[:200])),
        "binary_hash_radius2": _summary(_timed(lambda q: hashed.range_search(q[None], 3), query_codes[:200])),
        "binary_multihash_radius2": _summary(_timed(lambda q: multi.range_search(q[None], 3), query_codes[:200])),
        "float_flat_ip_top10": _summary(flat_ip_ms),
        "float_flat_ip_note": "timed shard by shard (1M each), summed per query" if items > SHARD else "",
        "bytes_per_item": {
            "hashlens": buckets.nbytes() / items,
            "binary_flat": bits / 8,
            "float_flat_ip": 4 * concepts.dim,
        },
        "mean_radius2_results": float(np.mean([len(buckets.radius(q, 2)[1]) for q in query_codes[:100]])),
    }
    result["speedup_vs_flat_ip"] = result["float_flat_ip_top10"]["p50_ms"] / result["hashlens_top10"]["p50_ms"]
    return result


def end_to_end(model: SparseHash, concepts: AlignedConcepts, out: Path, *, photos: int, queries: int, log) -> dict:
    """Library.search in a warm process over `photos` stored photos, text encoder included."""
    from retrieval.config import Settings
    from retrieval.library import Library

    home = out / "e2e_library"
    library = Library(Settings.resolve(home=home, encoder="random"))
    if library.store.count_images("ok") != photos:
        log(f"  building a library of {photos:,} synthetic photos in {home}")
        vectors, _ = concepts.photos(photos, seed=99)
        name = library.encoder_name
        with library.store.transaction():
            db = library.store.db
            for table in ("codes", "embeddings", "image_tags", "images"):
                db[table].delete_where()
            db["images"].insert_all(
                {"id": i + 1, "path": f"/synthetic/photo_{i:07d}.jpg", "size": 1, "mtime": 0.0, "status": "ok"}
                for i in range(photos)
            )
            db["embeddings"].insert_all(
                {"image_id": i + 1, "encoder": name, "vector": vectors[i].astype(np.float16).tobytes()}
                for i in range(photos)
            )
    from retrieval.search import search

    start = time.perf_counter()
    library.install_model(model, metrics={"source": "bench search"})
    install_seconds = time.perf_counter() - start
    rng = np.random.default_rng(3)
    texts = [", ".join(rng.choice(concepts.names, size=int(rng.integers(1, 3)), replace=False)) for _ in range(queries)]
    for t in texts[:3]:  # warm up: the encoder loads, the index opens
        search(library, t, k=20)
    rerank = _timed(lambda t: search(library, t, k=20), texts)
    plain = _timed(lambda t: search(library, t, k=20, rerank=False), texts)
    encode = _timed(lambda t: library.encoder.encode_texts([t]), texts)
    return {
        "photos": photos,
        "encoder": library.encoder_name,
        "install_model_seconds": install_seconds,
        "search_rerank": _summary(rerank),
        "search_no_rerank": _summary(plain),
        "text_encoder_alone": _summary(encode),
    }


def run_search_bench(
    out: str | Path, *, sizes=(1_000_000, 10_000_000), e2e_photos: int = 100_000, queries: int = 1000, log=None
) -> dict:
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    faiss.omp_set_num_threads(1)  # single-query latency on one thread, as the issue measures it
    concepts = AlignedConcepts(concept_names(CONCEPTS), seed=0, image_noise=IMAGE_NOISE)
    model, seconds = train_aligned_model(concepts, bits=64, photos=TRAIN_PHOTOS, seed=0)
    log(f"hash model trained on {TRAIN_PHOTOS:,} synthetic photos in {seconds:.1f} s")
    result = {"train_seconds": seconds, "scale": [], "threads": 1}
    for items in sizes:
        log(f"{items:,} photos")
        result["scale"].append(scale_run(model, concepts, items, queries=queries, float_queries=20, log=log))
    log(f"end to end, {e2e_photos:,} photos")
    import torch

    torch.set_num_threads(2)
    result["end_to_end"] = end_to_end(model, concepts, out, photos=e2e_photos, queries=30, log=log)
    (out / "search_bench.json").write_text(json.dumps(result, indent=1))
    print(markdown(result))
    return result


def markdown(result: dict) -> str:
    lines = [
        "| photos | hashlens top-10 p50 / p99 | IndexBinaryFlat top-10 p50 | IndexFlatIP top-10 p50 | speed-up vs "
        "IndexFlatIP | IndexBinaryHash r≤2 p50 | IndexBinaryMultiHash r≤2 p50 | hashlens r≤2 p50 | bytes/photo | "
        "distinct codes |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in result["scale"]:
        lines.append(
            f"| {s['items']:,} | {s['hashlens_top10']['p50_ms']:.3f} / {s['hashlens_top10']['p99_ms']:.3f} ms "
            f"| {s['binary_flat_top10']['p50_ms']:.2f} ms | {s['float_flat_ip_top10']['p50_ms']:.0f} ms "
            f"| {s['speedup_vs_flat_ip']:.0f}× | {s['binary_hash_radius2']['p50_ms']:.2f} ms "
            f"| {s['binary_multihash_radius2']['p50_ms']:.2f} ms | {s['hashlens_radius2']['p50_ms']:.2f} ms "
            f"| {s['bytes_per_item']['hashlens']:.1f} | {s['distinct_codes']:,} |"
        )
    e = result["end_to_end"]
    lines += [
        "",
        f"End to end, {e['photos']:,} photos, warm `Library.search` with the text encoder ({e['encoder']}): "
        f"p50 {e['search_rerank']['p50_ms']:.1f} ms (p99 {e['search_rerank']['p99_ms']:.1f}) with re-rank, "
        f"{e['search_no_rerank']['p50_ms']:.1f} ms without; the text encoder alone "
        f"{e['text_encoder_alone']['p50_ms']:.1f} ms.",
    ]
    return "\n".join(lines)
