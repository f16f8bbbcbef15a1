"""Near-identical photos (copies, re-encodes, resizes, small crops and rotations, bursts), grouped.

Candidates are photos whose codes lie within a small Hamming radius of each other (the index
answers that for every photo) or that are among each other's nearest by CLIP cosine; a
candidate needs a CLIP cosine above a threshold, which rules out unrelated pictures but not
two framings of one subject. A candidate pair is then confirmed from the pixels: at once when
their perceptual hashes (pHash, kept from indexing) all but agree; otherwise by their local
features (retrieval/picture_match.py: does each photo cover most of the other?), which survive
the crops and rotations that move a pHash by up to 26 of its 64 bits; and for pictures too flat
for features, by a looser pHash distance.
Groups are the connected pairs; each gets a suggested keeper: the largest resolution, then the
oldest (EXIF date taken, else file time), then the path.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from retrieval.config import DUPLICATE_MAX_PHASH_DISTANCE as MAX_PHASH_DISTANCE
from retrieval.config import DUPLICATE_MIN_COSINE as MIN_COSINE
from retrieval.config import DUPLICATE_NEIGHBOURS as NEIGHBOURS
from retrieval.config import DUPLICATE_RADIUS as RADIUS
from retrieval.config import DUPLICATE_SAME_PHASH as SAME_PHASH
from retrieval.imageio import ImageDecodeError, decode_image, perceptual_hash, phash_distance
from retrieval.library import Library
from retrieval.picture_match import SIDE, Features, features, same_picture

MAX_CANDIDATES = 5000  # candidates looked at per photo (a code shared by a whole class stops here)


def clip_neighbours(vectors: np.ndarray, k: int, *, chunk: int = 4096) -> np.ndarray:
    """Rows [n, k] of each row's k nearest other rows by inner product (cosine: the embeddings
    are unit vectors), −1 where the library has fewer; exact (FAISS, flat)."""
    import faiss

    n = len(vectors)
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(np.ascontiguousarray(vectors, np.float32))
    out = np.full((n, k), -1, np.int64)
    for start in range(0, n, chunk):
        _, found = index.search(np.ascontiguousarray(vectors[start : start + chunk], np.float32), min(k + 1, n))
        for r, row in enumerate(found, start):
            others = row[(row != r) & (row >= 0)][:k]
            out[r, : len(others)] = others
    return out


@dataclass
class DuplicateGroup:
    keeper: str  # the photo to keep
    photos: list[str]  # every photo of the group, the keeper first

    def to_dict(self) -> dict:
        return {"keeper": self.keeper, "photos": self.photos}


def _keeper_order(record: dict) -> tuple:
    """Sort key: largest resolution first, then the oldest, then the path."""
    pixels = (record["width"] or 0) * (record["height"] or 0)
    when = record["taken_at"] or datetime.fromtimestamp(record["mtime"] or 0).isoformat()
    return (-pixels, when, record["path"])


def _phashes(library: Library) -> dict[int, str | None]:
    rows = library.store.db.execute("select id, phash from images where status = 'ok'")
    return dict(rows.fetchall())


def _phash_of(library: Library, image_id: int, known: dict[int, str | None]) -> str | None:
    """The photo's pHash; photos indexed before hashlens kept one get it now, once."""
    if known.get(image_id) is None:
        try:
            path = library.store.paths_of([image_id])[0]  # decoded as index decodes, so the hashes compare
            known[image_id] = perceptual_hash(decode_image(path, target=library.encoder.image_size).image)
        except ImageDecodeError:
            return None  # gone or damaged since it was indexed: CLIP's cosine decides alone
        with library.store.transaction():
            library.store.set_phash(image_id, known[image_id])
    return known[image_id]


@functools.lru_cache(maxsize=1024)  # about 40 kB each: a second run in the same process (the app) decodes nothing
def _file_features(path: str, size: int, mtime: float) -> Features | None:
    """Local features of the photo at `path` as it was when indexed with that size and mtime."""
    try:
        return features(decode_image(path, target=SIDE).image)
    except ImageDecodeError:
        return None  # gone or damaged since it was indexed


def forget_features() -> None:
    """Drop the features kept from earlier runs (a benchmark timing a first run)."""
    _file_features.cache_clear()


class _Pixels:
    """What confirms a candidate pair, read from the photos once per run: pHashes (kept in the
    library; photos indexed before hashlens kept one get theirs now) and local features."""

    def __init__(self, library: Library) -> None:
        self.library = library
        self.phashes = _phashes(library)
        self.features: dict[int, Features | None] = {}

    def features_of(self, image_id: int) -> Features | None:
        if image_id not in self.features:
            row = self.library.store.db.execute("select path, size, mtime from images where id = ?", [image_id])
            self.features[image_id] = _file_features(*row.fetchone())
        return self.features[image_id]

    def same_picture(self, a: int, b: int, max_phash_distance: int) -> bool:
        ha, hb = _phash_of(self.library, a, self.phashes), _phash_of(self.library, b, self.phashes)
        distance = phash_distance(ha, hb) if ha is not None and hb is not None else None
        if distance is not None and distance <= SAME_PHASH:
            return True
        fa, fb = self.features_of(a), self.features_of(b)
        verdict = same_picture(fa, fb) if fa is not None and fb is not None else None
        if verdict is not None:
            return verdict
        return distance is None or distance <= max_phash_distance  # too flat for features (or unreadable)


def find_duplicates(
    library: Library,
    *,
    radius: int = RADIUS,
    min_cosine: float = MIN_COSINE,
    max_phash_distance: int = MAX_PHASH_DISTANCE,
    neighbours: int = NEIGHBOURS,
) -> list[DuplicateGroup]:
    """Groups of near-identical photos, largest first (then by keeper path). Candidates: the
    photos within `radius` of a photo's code and its `neighbours` nearest by CLIP cosine."""
    from retrieval.search import require_searchable

    require_searchable(library)
    ids, vectors = library.embeddings()
    row_of = {int(i): r for r, i in enumerate(ids)}
    index = library.index  # its codes are the stored ones (checked when it opens): not read again
    code_ids, codes = index.ids(), index.codes()
    parent = list(range(len(ids)))
    pixels = _Pixels(library)

    def root(r: int) -> int:
        while parent[r] != r:
            parent[r] = parent[parent[r]]
            r = parent[r]
        return r

    nearest = clip_neighbours(vectors, neighbours) if neighbours else np.full((len(ids), 1), -1, np.int64)
    for image_id, code in zip(code_ids.tolist(), codes):
        if image_id not in row_of:
            continue
        me = row_of[image_id]
        _, near = index.radius(code, radius)
        rows = {row_of[j] for j in near[:MAX_CANDIDATES].tolist() if j in row_of}
        rows = np.array(sorted((rows | set(nearest[me].tolist())) - {me, -1}), np.int64)
        if not len(rows):
            continue
        cosine = np.einsum("ij,j->i", vectors[rows], vectors[me])  # not `@`: see Library.similarities
        for other in rows[cosine >= min_cosine].tolist():
            if root(other) != root(me) and pixels.same_picture(image_id, int(ids[other]), max_phash_distance):
                parent[root(other)] = root(me)

    members: dict[int, list[int]] = {}
    for r in range(len(ids)):
        members.setdefault(root(r), []).append(int(ids[r]))
    records = {
        rec["id"]: rec
        for rec in library.store.db["images"].rows_where(
            "status = 'ok'", select="id, path, width, height, taken_at, mtime"
        )
    }
    groups = []
    for group in members.values():
        if len(group) < 2:
            continue
        ordered = sorted((records[i] for i in group if i in records), key=_keeper_order)
        groups.append(DuplicateGroup(ordered[0]["path"], [r["path"] for r in ordered]))
    return sorted(groups, key=lambda g: (-len(g.photos), g.keeper))
