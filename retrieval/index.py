"""The FAISS binary index: a cache of the codes stored in SQLite, searched by Hamming distance.

IndexBinaryIDMap2(IndexBinaryFlat(bits)) with ids = SQLite image ids, persisted; searches go
through a MultiIndex built from it on first use (exact multi-index hashing over the two halves
of each code, see retrieval/multi_index.py), much faster than the flat scan on sparse codes.
Beside the index file a small JSON file records what it was built from (hash model id, count,
checksum of the ids); when the index is opened and that record disagrees with SQLite, the index
is rebuilt from the stored codes, so a crash between a database commit and an index save loses
nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path

import faiss
import numpy as np

from retrieval.multi_index import MultiIndex


def content_checksum(ids: np.ndarray, codes: np.ndarray) -> str:
    """Identity of (ids, codes) in any order: a photo whose code changed under the same id (a
    re-embedded photo) changes it too, so a saved index that missed that change is rebuilt."""
    ids = np.asarray(ids, np.int64)
    order = np.argsort(ids, kind="stable")
    digest = hashlib.sha256(ids[order].tobytes())
    digest.update(np.ascontiguousarray(np.asarray(codes, np.uint8)[order]).tobytes())
    return digest.hexdigest()


def nearest_by_distance_then_id(knn, radius, code: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest to `code` by (Hamming distance, id): every backend cuts ties at the k-th
    distance the same way, so a shortlist (and what its re-rank finds) does not depend on where
    the codes are kept. Codes are short, so ties are common; the photos at the k-th distance are
    fetched with a radius search only when some of them would fall past the cut."""
    dist, ids = knn(code, k + 1)
    if len(ids) <= k or dist[k] > dist[k - 1]:
        dist, ids = dist[:k], ids[:k]
    else:
        dist, ids = radius(code, int(dist[k - 1]))
    order = np.lexsort((ids, dist))[:k]
    return dist[order], ids[order]


class CodeIndex:
    """Hamming search over packed codes [n, bits/8] keyed by int64 ids."""

    def __init__(self, bits: int, model_id: int | None = None) -> None:
        self.bits = bits
        self.model_id = model_id
        self._faiss = faiss.IndexBinaryIDMap2(faiss.IndexBinaryFlat(bits))  # None while only searching
        self._searcher: MultiIndex | None = None  # search structure, rebuilt after any change

    @property
    def index(self) -> faiss.IndexBinaryIDMap2:
        """The updatable FAISS index. A process that only searches lets it go once the search
        structure is built (it holds the same codes and ids), so the index costs ~16 bytes a
        photo in memory, not ~70 (IDMap2 keeps a hash map of its ids); it is rebuilt from the
        search structure on the next change or save."""
        if self._faiss is None:
            assert self._searcher is not None
            self._faiss = faiss.IndexBinaryIDMap2(faiss.IndexBinaryFlat(self.bits))
            self._faiss.add_with_ids(self._searcher.codes(), self._searcher.ids.astype(np.int64))
        return self._faiss

    # --- building --------------------------------------------------------------------------

    @classmethod
    def build(cls, bits: int, model_id: int | None, ids: np.ndarray, codes: np.ndarray) -> CodeIndex:
        index = cls(bits, model_id)
        index.add(ids, codes)
        return index

    def add(self, ids: np.ndarray, codes: np.ndarray) -> None:
        """Add or replace the codes of `ids`."""
        ids = np.ascontiguousarray(ids, np.int64)
        if len(ids) == 0:
            return
        self.remove(ids)
        self.index.add_with_ids(np.ascontiguousarray(codes, np.uint8), ids)
        self._searcher = None

    def remove(self, ids: np.ndarray) -> None:
        ids = np.ascontiguousarray(ids, np.int64)
        if len(ids):
            self.index.remove_ids(faiss.IDSelectorBatch(ids))
            self._searcher = None

    @property
    def ntotal(self) -> int:
        return int(self._faiss.ntotal) if self._faiss is not None else len(self.searcher)

    def ids(self) -> np.ndarray:
        if self._faiss is None:
            return self._searcher.ids.astype(np.int64)
        return faiss.vector_to_array(self.index.id_map).astype(np.int64)

    def codes(self) -> np.ndarray:
        """Packed codes [n, bits/8], in the order of ids()."""
        if self._faiss is None:
            return self._searcher.codes()
        flat = faiss.downcast_IndexBinary(self.index.index)
        return faiss.vector_to_array(flat.xb).reshape(self.ntotal, self.bits // 8)

    def nbytes(self) -> int:
        """Bytes held in memory: the search structure, and the FAISS index while it is held
        (codes, ids and, estimated, IDMap2's hash map of the ids)."""
        searched = self.searcher.nbytes()  # first: building it lets the FAISS index go
        held = self.ntotal * (self.bits // 8 + 8 + 48) if self._faiss is not None else 0
        return held + searched

    @property
    def searcher(self) -> MultiIndex:
        if self._searcher is None:
            self._searcher = MultiIndex(self.ids(), self.codes(), self.bits)
            self._faiss = None  # the searcher holds the same codes and ids: rebuilt from it when needed
        return self._searcher

    # --- search ----------------------------------------------------------------------------

    def knn(self, code: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k nearest items to one packed code: (distances, ids), nearest first, ties by id."""
        if k <= 0:
            return np.zeros(0, np.int32), np.zeros(0, np.int64)
        return nearest_by_distance_then_id(self.searcher.knn, self.searcher.radius, code, k)

    def radius(self, code: np.ndarray, r: int) -> tuple[np.ndarray, np.ndarray]:
        """Every item within Hamming distance r of one packed code: (distances, ids), nearest first."""
        return self.searcher.radius(code, r)

    # --- persistence -----------------------------------------------------------------------

    def save(self, path: str | Path) -> None:
        """Write index and record atomically (temp files, then rename). The temp names are
        unique, so two processes saving at once (a watcher and the UI) cannot trip each other."""
        path = Path(path)
        tag = f".{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
        tmp = path.with_name(path.name + tag)
        try:
            faiss.write_index_binary(self.index, str(tmp))
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        content = content_checksum(self.ids(), self.codes())
        meta = {"bits": self.bits, "model_id": self.model_id, "count": self.ntotal, "content": content}
        meta_path = path.with_suffix(".json")
        meta_tmp = meta_path.with_name(meta_path.name + tag)
        try:
            meta_tmp.write_text(json.dumps(meta))
            os.replace(meta_tmp, meta_path)
        finally:
            meta_tmp.unlink(missing_ok=True)

    @classmethod
    def open(
        cls, path: str | Path, *, bits: int, model_id: int | None, ids: np.ndarray, codes: np.ndarray
    ) -> tuple[CodeIndex, bool]:
        """Load the saved index if it matches SQLite's (ids, codes), else rebuild it from them.

        Returns (index, rebuilt).
        """
        path = Path(path)
        expected = {"bits": bits, "model_id": model_id, "count": len(ids), "content": content_checksum(ids, codes)}
        try:
            meta = json.loads(path.with_suffix(".json").read_text())
            if meta == expected:
                index = cls(bits, model_id)
                index._faiss = faiss.read_index_binary(str(path))
                if index.ntotal == len(ids) and content_checksum(index.ids(), index.codes()) == expected["content"]:
                    return index, False
        except (OSError, ValueError, RuntimeError):
            pass  # missing, damaged or stale: rebuild below
        index = cls.build(bits, model_id, ids, codes)
        index.save(path)
        return index, True
