"""Tags → photos: text → code → Hamming shortlist → optional re-rank by float CLIP similarity."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from retrieval.imageio import ImageDecodeError, decode_image
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
    _require_searchable(library)
    vector = library.encoder.encode_texts([query])  # [1, dim]
    return _rank(library, vector, "text", k=k, radius=radius, rerank=rerank, shortlist=shortlist)


def similar(
    library: Library, photo: str | Path, *, k: int = 20, radius: int | None = None, rerank: bool = True
) -> list[SearchResult]:
    """Photos like `photo` (in the library or not), best first; the photo itself is left out."""
    _require_searchable(library)
    path = Path(photo).expanduser().resolve()
    record = library.store.image_by_path(str(path))
    if record is not None and record["status"] == "ok":
        vector = library.store.embeddings_of(library.encoder_name, [record["id"]])
    else:  # not in the library: decode it now
        try:
            decoded = decode_image(path, target=library.encoder.image_size)
        except ImageDecodeError as e:
            raise ImageDecodeError(f"{photo}: {e}") from e
        vector = library.encoder.encode_images([decoded.image])
    results = _rank(library, vector, "image", k=k + 1, radius=radius, rerank=rerank, shortlist=10)
    return (
        [r for r in results if r.path != str(path)][:k]
        if radius is None
        else [r for r in results if r.path != str(path)]
    )


def _require_searchable(library: Library) -> None:
    if library.store.count_images("ok") == 0:
        raise EmptyLibrary("the library is empty: index a folder first (hashlens index PATH)")
    if library.hash_model() is None:
        raise NoHashModel("no hash model yet: run `hashlens train` first")


def _rank(library, vector, modality, *, k, radius, rerank, shortlist) -> list[SearchResult]:
    """Hamming shortlist for one query embedding [1, dim], then the optional float re-rank."""
    model_id, model = library.hash_model()
    code = model.encode(vector, modality)  # [1, bits/8]
    index = library.index
    if radius is not None:
        distances, ids = index.radius(code[0], radius)
    else:
        distances, ids = index.knn(code[0], k * shortlist if rerank else k)
    if len(ids) == 0:
        return []
    if rerank:
        scores = library.store.embeddings_of(library.encoder_name, ids) @ vector[0]
        order = np.argsort(-scores, kind="stable")
    else:
        scores = 1.0 - distances / model.config.bits
        order = np.arange(len(ids))
    if radius is None:
        order = order[:k]
    paths = library.store.paths_of(ids[order])
    return [SearchResult(p, float(scores[j]), int(distances[j])) for p, j in zip(paths, order)]
