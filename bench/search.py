"""`hashlens bench search`: search latency at 1M and 10M photos, and end to end in a warm library.

Everything is measured in the same run, on one thread: hashlens' multi-index over 64-bit codes
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

from bench.synthetic import AlignedConcepts, AlignedEncoder, fill_library
from models.sparsehash import SparseHash, SparseHashConfig
from retrieval.config import SHORTLIST
from retrieval.multi_index import MultiIndex
from retrieval.train import TrainConfig, train_sparsehash

SHARD = 1_000_000
CONCEPTS = 200  # distinct tags in the synthetic libraries; photos carry one to three
IMAGE_NOISE = 1.0  # noise norm against the unit-norm concept mixture of each photo
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
    searcher = MultiIndex(ids, codes, bits)
    build_seconds = time.perf_counter() - build
    searcher.knn(query_codes[0], 10)  # compiled (or read from numba's cache) before timing
    flat = faiss.IndexBinaryFlat(bits)
    flat.add(codes)
    hashed = faiss.IndexBinaryHash(bits, 16)
    hashed.nflip = 2  # exact for radius ≤ 2: a neighbour differs in at most 2 of the hashed bits
    hashed.add(codes)
    multi = faiss.IndexBinaryMultiHash(bits, 4, 16)  # 4 tables of 16 bits: exact for radius ≤ 3
    multi.nflip = 0
    multi.add(codes)

    exact = all(
        np.array_equal(searcher.knn(q, 10)[0], flat.search(q[None], 10)[0][0].astype(np.int32))
        for q in query_codes[:200]
    )
    result = {
        "items": items,
        "bits": bits,
        "distinct_codes": len(np.unique(codes.view("<u8") if bits == 64 else codes, axis=0)),
        "mean_ones": float(np.unpackbits(codes[:100_000], axis=1).sum(1).mean()),
        "index_build_seconds": build_seconds,
        "hashlens_table_levels": searcher.levels,
        "hashlens_top10": _summary(_timed(lambda q: searcher.knn(q, 10), query_codes)),
        "hashlens_top10_exact": exact,
        "hashlens_radius2": _summary(_timed(lambda q: searcher.radius(q, 2), query_codes)),
        "binary_flat_top10": _summary(_timed(lambda q: flat.search(q[None], 10), query_codes[:200])),
        "binary_hash_radius2": _summary(_timed(lambda q: hashed.range_search(q[None], 3), query_codes[:200])),
        "binary_multihash_radius2": _summary(_timed(lambda q: multi.range_search(q[None], 3), query_codes[:200])),
        "float_flat_ip_top10": _summary(flat_ip_ms),
        "float_flat_ip_note": "timed shard by shard (1M each), summed per query" if items > SHARD else "",
        "bytes_per_item": {
            "hashlens": searcher.nbytes() / items,
            "binary_flat": bits / 8,
            "float_flat_ip": 4 * concepts.dim,
        },
        "mean_radius2_results": float(np.mean([len(searcher.radius(q, 2)[1]) for q in query_codes[:100]])),
    }
    result["speedup_vs_flat_ip"] = result["float_flat_ip_top10"]["p50_ms"] / result["hashlens_top10"]["p50_ms"]
    return result


def end_to_end(model: SparseHash, concepts: AlignedConcepts, out: Path, *, photos: int, queries: int, log) -> dict:
    """Library.search in a warm process over `photos` stored photos, text encoder included."""
    from retrieval.config import Settings
    from retrieval.library import Library

    home = out / "e2e_library"
    library = Library(Settings.resolve(home=home, encoder="random"))
    if len(library.store.embedded_ids(library.encoder_name)) != photos:  # built before, by this encoder
        log(f"  building a library of {photos:,} synthetic photos in {home}")
        fill_library(library, concepts.photos(photos, seed=99)[0])
    from retrieval.search import search

    start = time.perf_counter()
    library.install_model(model, metrics={"source": "bench search"})
    install_seconds = time.perf_counter() - start
    rng = np.random.default_rng(3)
    texts = [", ".join(rng.choice(concepts.names, size=int(rng.integers(1, 3)), replace=False)) for _ in range(queries)]
    # as `hashlens train` leaves a library: every vocabulary tag's text vector cached (its tag
    # suggestions use them all), so a query of vocabulary tags never runs the text tower
    from retrieval.vocabulary import TagVocabulary

    TagVocabulary(library).vectors(library.vocabulary)
    library.warm_up()  # as the app does when it opens the library
    for t in texts[:3]:  # warm up: the encoder loads
        search(library, t, k=20)
    rerank = _timed(lambda t: search(library, t, k=20), texts)
    rerank_20 = _timed(lambda t: search(library, t, k=20, shortlist=20), texts)
    plain = _timed(lambda t: search(library, t, k=20, rerank=False), texts)
    # the same words as free text ("a photo of dog, beach"): no cached tag vector, the text tower runs
    free = _timed(lambda t: search(library, f"a photo of {t}", k=20, free_text=True), texts)
    encode = _timed(lambda t: library.encoder.encode_texts([t]), texts)
    return {
        "photos": photos,
        "encoder": library.encoder_name,
        "install_model_seconds": install_seconds,
        "search_rerank": _summary(rerank),
        "shortlist": SHORTLIST,
        "search_rerank_shortlist_20": _summary(rerank_20),
        "search_no_rerank": _summary(plain),
        "search_free_text": _summary(free),
        "text_encoder_alone": _summary(encode),
        "precision": library.precision,
    }


def _ap(rel: np.ndarray, total: int) -> float:
    """AP@k of one ranked 0/1 list of length k, over min(k, relevant photos in the library):
    a search that misses relevant photos is charged for them."""
    hits = np.cumsum(rel)
    return float((rel * hits / np.arange(1, len(rel) + 1)).sum() / max(1, min(len(rel), total)))


def quality_run(out: Path, *, photos: int, ks=(20, 100), log) -> tuple[dict, object]:
    """Search and tagging quality on a library of aligned synthetic photos, half of them tagged.

    Float CLIP search is meaningful here (image and text embeddings are aligned), so hashing
    with and without re-rank is compared with it; tag suggestions are judged on the untagged
    half, whose right tags are known but were never shown to training or calibration: all of
    them, as the middle score bins hold only a few percent of the suggestions and need thousands
    of photos to be measured to a few points.
    """
    from retrieval.annotate import calibration_error, calibration_table, current_calibration, suggest_for_vector
    from retrieval.config import Settings
    from retrieval.library import Library
    from retrieval.search import search
    from retrieval.train import train_library

    concepts = AlignedConcepts(concept_names(CONCEPTS), seed=0, image_noise=IMAGE_NOISE)
    library = Library(Settings.resolve(home=out / "quality_library", encoder="fake"), encoder=AlignedEncoder(concepts))
    vectors, labels = concepts.photos(photos, seed=5)
    tagged = np.arange(photos) < photos // 2
    fill_library(library, vectors, labels, tagged=tagged)
    metrics = train_library(library, bits=64)
    log(f"  trained on {metrics['photos']:,} photos in {metrics['train_seconds']:.1f} s")

    def row_of(path: str) -> int:
        return int(path.rsplit("_", 1)[1].split(".")[0]) - 1

    methods = ("float", "hash_rerank", "hash_rerank_shortlist_20", "hash_only")
    maps = {k: {m: [] for m in methods} for k in ks}
    precision = {k: {m: [] for m in methods} for k in ks}
    for c, name in enumerate(concepts.names):
        relevant = labels[:, c]
        for k in ks:
            float_top = np.argsort(-(vectors @ concepts.text(name)), kind="stable")[:k]
            ranked = {
                "float": relevant[float_top],
                "hash_rerank": relevant[[row_of(r.path) for r in search(library, name, k=k)]],
                "hash_rerank_shortlist_20": relevant[
                    [row_of(r.path) for r in search(library, name, k=k, shortlist=20)]
                ],
                "hash_only": relevant[[row_of(r.path) for r in search(library, name, k=k, rerank=False)]],
            }
            for method, rel in ranked.items():
                maps[k][method].append(_ap(rel.astype(float), int(relevant.sum())))
                precision[k][method].append(float(rel.mean()))
    untagged = np.flatnonzero(~tagged)
    scores, right, p5, r5 = [], [], [], []
    names = np.array(concepts.names)
    for row in untagged:
        truth = set(names[labels[row]])
        suggestions = suggest_for_vector(library, vectors[row], k=10, exclude_id=int(row) + 1)
        hits = np.array([s.tag in truth for s in suggestions], float)
        scores += [s.score for s in suggestions]
        right += hits.tolist()
        p5.append(hits[:5].sum() / 5)
        r5.append(hits[:5].sum() / len(truth))
    calibration = current_calibration(library)
    scores, right = np.array(scores), np.array(right)
    untagged_table = calibration_table(scores, right)
    middle = (scores >= 0.1) & (scores < 0.9)  # where the few uncertain suggestions fall
    near_08 = (scores >= 0.7) & (scores < 0.9)
    result = {
        "photos": photos,
        "concepts": CONCEPTS,
        "search": [
            {
                "k": k,
                "map_at_k": {m: float(np.mean(v)) for m, v in maps[k].items()},
                "precision_at_k": {m: float(np.mean(v)) for m, v in precision[k].items()},
                "rerank_vs_float": float(np.mean(maps[k]["hash_rerank"]) / np.mean(maps[k]["float"])),
            }
            for k in ks
        ],
        "tag_precision_at_5": float(np.mean(p5)),
        "tag_recall_at_5": float(np.mean(r5)),
        "tag_precision_at_5_ceiling": float(np.mean([min(labels[r].sum(), 5) / 5 for r in untagged])),
        "tag_photos": len(untagged),
        "calibration_held_out": calibration.table,
        "calibration_held_out_error": calibration_error(calibration.table),
        "calibration_untagged": untagged_table,
        "calibration_untagged_error": calibration_error(untagged_table),
        "calibration_untagged_error_middle": calibration_error(calibration_table(scores[middle], right[middle])),
        "calibration_untagged_error_middle_chance": calibration_noise(scores[middle]),
        "scored_07_to_09": {
            "suggestions": int(near_08.sum()),
            "mean_score": float(scores[near_08].mean()) if near_08.any() else None,
            "right": float(right[near_08].mean()) if near_08.any() else None,
        },
        "held_out_photos": calibration.photos,
    }
    return result, library


def run_search_bench(
    out: str | Path,
    *,
    sizes=(1_000_000, 10_000_000),
    e2e_photos: int = 100_000,
    quality_photos: int = 10_000,
    queries: int = 1000,
    train_photos: int = TRAIN_PHOTOS,
    log=None,
) -> dict:
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    faiss.omp_set_num_threads(1)  # single-query latency on one thread, as the issue measures it
    concepts = AlignedConcepts(concept_names(CONCEPTS), seed=0, image_noise=IMAGE_NOISE)
    model, seconds = train_aligned_model(concepts, bits=64, photos=train_photos, seed=0)
    log(f"hash model trained on {train_photos:,} synthetic photos in {seconds:.1f} s")
    result = {"train_seconds": seconds, "scale": [], "threads": 1}
    for items in sizes:
        log(f"{items:,} photos")
        result["scale"].append(scale_run(model, concepts, items, queries=queries, float_queries=20, log=log))
    log(f"end to end, {e2e_photos:,} photos")
    import torch

    torch.set_num_threads(2)
    result["end_to_end"] = end_to_end(model, concepts, out, photos=e2e_photos, queries=30, log=log)
    log(f"search and tagging quality, {quality_photos:,} aligned photos")
    result["quality"], quality_library = quality_run(out, photos=quality_photos, log=log)
    log(f"re-rank quality with a 1M library's shortlist, {e2e_photos:,} photos")
    result["shortlist_quality"] = shortlist_quality(out, quality_library, concepts, photos=e2e_photos, log=log)
    (out / "search_bench.json").write_text(json.dumps(result, indent=1))
    (out / "search_bench.md").write_text(markdown(result) + "\n")
    print(markdown(result))
    return result


def shortlist_quality(out: Path, quality_library, concepts: AlignedConcepts, *, photos: int, log) -> dict:
    """Re-rank quality when the shortlist is as small a share of the library as a 1M library's.

    The quality library is small enough that its default shortlist (SHORTLIST·k photos) holds a
    large share of it, so its re-rank is nearly a float search of everything. Here the model
    trained there, with its ranking weights, is installed in a library of `photos` untagged
    photos (their right tags known), and each tag's top k is measured with the default
    shortlist and with the shortlist a 1M library would re-rank, SHORTLIST·k·photos/1M."""
    from retrieval.config import Settings
    from retrieval.library import Library
    from retrieval.search import search

    library = Library(
        Settings.resolve(home=out / "shortlist_library", encoder="fake"), encoder=AlignedEncoder(concepts)
    )
    vectors, labels = concepts.photos(photos, seed=99)
    if len(library.store.embedded_ids(library.encoder_name)) != photos:  # built before, by this encoder
        log(f"  building a library of {photos:,} untagged synthetic photos")
        fill_library(library, vectors)
    _, model = quality_library.hash_model()
    library.install_model(model, metrics=quality_library.model_metrics())
    scaled = max(1, round(SHORTLIST * photos / 1_000_000))

    def row_of(path: str) -> int:
        return int(path.rsplit("_", 1)[1].split(".")[0]) - 1

    names = concepts.names
    for name in names[:3]:  # warm up
        search(library, name, k=20)
    timed = _timed(lambda name: search(library, name, k=20), names)  # fused ranking, learned tags
    rows = []
    for k in (20, 100):
        ranked = {m: [] for m in ("float", "default", "shortlist_1m", "hash_only")}
        for c, name in enumerate(concepts.names):
            relevant = labels[:, c]
            total = int(relevant.sum())
            top = np.argsort(-(vectors @ concepts.text(name)), kind="stable")[:k]
            found = {
                "float": top,
                "default": [row_of(r.path) for r in search(library, name, k=k)],
                "shortlist_1m": [row_of(r.path) for r in search(library, name, k=k, shortlist=scaled)],
                "hash_only": [row_of(r.path) for r in search(library, name, k=k, rerank=False)],
            }
            for method, found_rows in found.items():
                ranked[method].append(_ap(relevant[found_rows].astype(float), total))
        maps = {m: float(np.mean(v)) for m, v in ranked.items()}
        rows.append(
            {
                "k": k,
                "map_at_k": maps,
                "default_vs_float": maps["default"] / maps["float"],
                "shortlist_1m_vs_float": maps["shortlist_1m"] / maps["float"],
                "default_shortlist_share": min(1.0, SHORTLIST * k / photos),
                "shortlist_1m_share": min(1.0, scaled * k / photos),
            }
        )
    fusion = library.model_metrics().get("fusion", {})
    return {
        "photos": photos,
        "shortlist": SHORTLIST,
        "shortlist_1m": scaled,
        "text_weight": fusion.get("text_weight"),
        "search_top20": _summary(timed),
        "search": rows,
    }


def calibration_noise(scores: np.ndarray, *, draws: int = 500, seed: int = 0) -> dict:
    """How far off a perfectly calibrated scorer with these very scores would look: each
    suggestion drawn right with probability its score, the same binned error measured, `draws`
    times. A bin of 60 suggestions scored 0.5 is off by about 0.05 by chance alone, so a gap
    near this floor says nothing about the scores."""
    from retrieval.annotate import calibration_error, calibration_table

    rng = np.random.default_rng(seed)
    errors = [calibration_error(calibration_table(scores, rng.random(len(scores)) < scores)) for _ in range(draws)]
    return {"median": float(np.median(errors)), "p95": float(np.quantile(errors, 0.95)), "draws": draws}


def _band_line(band: dict) -> str:
    if not band["suggestions"]:
        return "No suggestion scored 0.7–0.9."
    return (
        f"Scored 0.7–0.9: {band['suggestions']:,} suggestions, mean score {band['mean_score']:.2f}, "
        f"{band['right']:.0%} right."
    )


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
        f"End to end, {e['photos']:,} photos, warm `Library.search` of vocabulary tags ({e['encoder']}, "
        f"{e.get('precision', 'fp32')}; a tag's text vector is cached): "
        f"p50 {e['search_rerank']['p50_ms']:.1f} ms (p99 {e['search_rerank']['p99_ms']:.1f}) with re-rank of "
        f"{e['shortlist']}·k candidates, {e['search_rerank_shortlist_20']['p50_ms']:.1f} ms with 20·k, "
        f"{e['search_no_rerank']['p50_ms']:.1f} ms without re-rank; the same words as free text "
        f"(the text tower runs) {e['search_free_text']['p50_ms']:.1f} ms; the text encoder alone "
        f"{e['text_encoder_alone']['p50_ms']:.1f} ms.",
    ]
    sq = result.get("shortlist_quality")
    if sq:
        lines += [
            "",
            f"Re-rank with a 1M library's shortlist: the quality model installed in {sq['photos']:,} untagged "
            f"photos; shortlist {sq['shortlist']}·k (default) against {sq['shortlist_1m']}·k, the share of the "
            f"library a 1M library re-ranks (mAP@k). The ranking weight on CLIP is {sq['text_weight']}; a "
            f"top-20 search of one learned tag there takes {sq['search_top20']['p50_ms']:.1f} ms p50 "
            f"({sq['search_top20']['p99_ms']:.1f} ms p99; cached tag vectors, no text tower):",
            "",
            "| k | float CLIP | default shortlist (share of library) | 1M shortlist (share) | hashing only |",
            "|---|---|---|---|---|",
        ]
        for s in sq["search"]:
            m = s["map_at_k"]
            lines.append(
                f"| {s['k']} | {m['float']:.3f} | {m['default']:.3f} ({s['default_vs_float']:.1%} of float; "
                f"{s['default_shortlist_share']:.1%}) | {m['shortlist_1m']:.3f} ({s['shortlist_1m_vs_float']:.1%}; "
                f"{s['shortlist_1m_share']:.2%}) | {m['hash_only']:.3f} |"
            )
    q = result.get("quality")
    if q:
        lines += [
            "",
            f"Quality on {q['photos']:,} aligned synthetic photos ({q['concepts']} tags, half tagged), "
            "one query per tag; AP@k over min(k, relevant photos):",
            "",
            f"| k | float CLIP mAP@k | hashing + re-rank (default shortlist {SHORTLIST}·k) | re-rank, shortlist 20·k "
            "| hashing only "
            "| precision@k float / re-rank / only |",
            "|---|---|---|---|---|---|",
        ]
        for s in q["search"]:
            m, p = s["map_at_k"], s["precision_at_k"]
            lines.append(
                f"| {s['k']} | {m['float']:.3f} | {m['hash_rerank']:.3f} ({s['rerank_vs_float']:.1%} of float) "
                f"| {m['hash_rerank_shortlist_20']:.3f} | {m['hash_only']:.3f} "
                f"| {p['float']:.3f} / {p['hash_rerank']:.3f} / {p['hash_only']:.3f} |"
            )
        lines += [
            "",
            f"Tag suggestions on untagged photos: precision@5 {q['tag_precision_at_5']:.3f} (ceiling "
            f"{q['tag_precision_at_5_ceiling']:.3f}: photos carry 1–3 tags), recall@5 {q['tag_recall_at_5']:.3f}.",
            "",
            f"Calibration: the top-10 suggestions for each of {q['tag_photos']:,} untagged photos; "
            f"expected calibration error {q['calibration_untagged_error']:.3f} "
            f"({q['calibration_held_out_error']:.3f} out of fold on the "
            f"{q['held_out_photos']:,} tagged photos held out at training). Between 0.1 and 0.9 "
            f"the scores are off by {q['calibration_untagged_error_middle']:.3f} on average (weighted by suggestions); "
            f"a perfectly calibrated scorer with the same scores would be off by "
            f"{q['calibration_untagged_error_middle_chance']['median']:.3f} by chance alone (95% of draws: below "
            f"{q['calibration_untagged_error_middle_chance']['p95']:.3f}). "
            f"{_band_line(q['scored_07_to_09'])}",
            "",
            "| score bin | suggestions | mean score | right (untagged photos) |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {r['bin']} | {r['suggestions']:,} | {r['mean_score']:.2f} | {r['right']:.2f} |"
            for r in q["calibration_untagged"]
        ]
    return "\n".join(lines)
