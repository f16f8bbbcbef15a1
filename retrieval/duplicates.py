"""Near-identical photos (copies, re-encodes, resizes, small crops, bursts), grouped.

Candidates are photos whose codes lie within a small Hamming radius of each other (the index
answers that for every photo); a candidate pair counts only when the CLIP cosine of the two
embeddings and their perceptual hashes (pHash, from the pixels) both confirm it: codes are
coarse on purpose (photos of one subject share them), and CLIP's cosine alone is high for two
framings of one subject too, where pHash tells a copy from another shot.
Groups are the connected pairs; each gets a suggested keeper: the largest resolution, then the
oldest (EXIF date taken, else file time), then the path.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np

from retrieval.config import DUPLICATE_MAX_PHASH_DISTANCE as MAX_PHASH_DISTANCE
from retrieval.config import DUPLICATE_MIN_COSINE as MIN_COSINE
from retrieval.config import DUPLICATE_RADIUS as RADIUS
from retrieval.imageio import ImageDecodeError, decode_image, perceptual_hash, phash_distance
from retrieval.library import Library

MAX_CANDIDATES = 5000  # candidates looked at per photo (a code shared by a whole class stops here)


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


def find_duplicates(
    library: Library,
    *,
    radius: int = RADIUS,
    min_cosine: float = MIN_COSINE,
    max_phash_distance: int = MAX_PHASH_DISTANCE,
) -> list[DuplicateGroup]:
    """Groups of near-identical photos, largest first (then by keeper path)."""
    from retrieval.search import require_searchable

    require_searchable(library)
    ids, vectors = library.embeddings()
    row_of = {int(i): r for r, i in enumerate(ids)}
    index = library.index  # its codes are the stored ones (checked when it opens): not read again
    code_ids, codes = index.ids(), index.codes()
    parent = list(range(len(ids)))
    phashes = _phashes(library)

    def root(r: int) -> int:
        while parent[r] != r:
            parent[r] = parent[parent[r]]
            r = parent[r]
        return r

    for image_id, code in zip(code_ids.tolist(), codes):
        if image_id not in row_of:
            continue
        _, near = index.radius(code, radius)
        near = [j for j in near[:MAX_CANDIDATES].tolist() if j > image_id and j in row_of]  # each pair once
        if not near:
            continue
        me, rows = row_of[image_id], np.array([row_of[j] for j in near])
        cosine = np.einsum("ij,j->i", vectors[rows], vectors[me])  # not `@`: see Library.similarities
        mine = _phash_of(library, image_id, phashes)
        for other in rows[cosine >= min_cosine].tolist():
            theirs = _phash_of(library, int(ids[other]), phashes)
            if mine is not None and theirs is not None and phash_distance(mine, theirs) > max_phash_distance:
                continue
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
