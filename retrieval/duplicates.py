"""Near-identical photos (copies, re-encodes, resizes, small crops, bursts), grouped.

Candidates are photos whose codes lie within a small Hamming radius of each other (the index
answers that for every photo); a candidate pair counts only when the CLIP cosine of the two
embeddings confirms it, as codes are coarse on purpose (photos of one subject share them).
Groups are the connected pairs; each gets a suggested keeper: the largest resolution, then the
oldest (EXIF date taken, else file time), then the path.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np

from retrieval.library import Library

RADIUS = 2  # Hamming radius within which two photos are candidates
MIN_COSINE = 0.95  # CLIP cosine from which a candidate pair is the same picture
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


def find_duplicates(library: Library, *, radius: int = RADIUS, min_cosine: float = MIN_COSINE) -> list[DuplicateGroup]:
    """Groups of near-identical photos, largest first (then by keeper path)."""
    from retrieval.search import require_searchable

    require_searchable(library)
    ids, vectors = library.embeddings()
    row_of = {int(i): r for r, i in enumerate(ids)}
    index = library.index  # its codes are the stored ones (checked when it opens): not read again
    code_ids, codes = index.ids(), index.codes()
    parent = list(range(len(ids)))

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
        for other in rows[cosine >= min_cosine].tolist():
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
