"""Tags → photos: text → code → Hamming shortlist → optional re-rank by float CLIP similarity."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from retrieval.library import Library, NoHashModel


class EmptyLibrary(RuntimeError):
    """Nothing is indexed yet."""


@dataclass
class SearchResult:
    path: str
    score: float  # cosine similarity of the query text and the photo (re-ranked), else 1 − hamming/bits
    hamming: int  # Hamming distance between the query code and the photo code

    def to_dict(self) -> dict:
        return asdict(self)


def search(
    library: Library, query: str, *, k: int = 20, radius: int | None = None, rerank: bool = True, shortlist: int = 10
) -> list[SearchResult]:
    """The photos best matching `query` ("dog, beach"), best first.

    Hamming top-k·shortlist (or everything within `radius`), then, with rerank, ordered by the
    float similarity of the stored embeddings; without it, by Hamming distance alone.
    """
    query = query.strip()
    if not query:
        raise ValueError("empty query: type one or more tags, e.g. 'dog, beach'")
    if library.store.count_images("ok") == 0:
        raise EmptyLibrary("the library is empty: index a folder first (hashlens index PATH)")
    current = library.hash_model()
    if current is None:
        raise NoHashModel("no hash model yet: run `hashlens train` first")
    model_id, model = current
    vector = library.encoder.encode_texts([query])  # [1, dim]
    code = model.encode(vector, "text")  # [1, bits/8]
    index = library.index
    if radius is not None:
        distances, ids = index.radius(code[0], radius)
    else:
        d, i = index.knn(code, k * shortlist if rerank else k)
        keep = i[0] >= 0
        distances, ids = d[0][keep], i[0][keep]
    if len(ids) == 0:
        return []
    bits = model.config.bits
    if rerank:
        vectors = library.store.embeddings_of(library.encoder_name, ids)  # [n, dim]
        scores = vectors @ vector[0]
        order = np.argsort(-scores, kind="stable")
    else:
        scores = 1.0 - distances / bits
        order = np.arange(len(ids))
    if radius is None:
        order = order[:k]
    paths = library.store.paths_of(ids[order])
    return [SearchResult(p, float(scores[j]), int(distances[j])) for p, j in zip(paths, order)]
