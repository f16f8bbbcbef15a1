"""The FAISS binary index: a cache of the codes stored in SQLite, searched by Hamming distance.

IndexBinaryIDMap2(IndexBinaryFlat(bits)) with ids = SQLite image ids. Beside the index file a
small JSON file records what it was built from (hash model id, count, checksum of the ids);
when the index is opened and that record disagrees with SQLite, the index is rebuilt from the
stored codes, so a crash between a database commit and an index save loses nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import faiss
import numpy as np


def ids_checksum(ids: np.ndarray) -> str:
    return hashlib.sha256(np.sort(np.asarray(ids, np.int64)).tobytes()).hexdigest()


class CodeIndex:
    """Hamming search over packed codes [n, bits/8] keyed by int64 ids."""

    def __init__(self, bits: int, model_id: int | None = None) -> None:
        self.bits = bits
        self.model_id = model_id
        self.index = faiss.IndexBinaryIDMap2(faiss.IndexBinaryFlat(bits))

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

    def remove(self, ids: np.ndarray) -> None:
        ids = np.ascontiguousarray(ids, np.int64)
        if len(ids):
            self.index.remove_ids(faiss.IDSelectorBatch(ids))

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def ids(self) -> np.ndarray:
        return faiss.vector_to_array(self.index.id_map).astype(np.int64)

    def nbytes(self) -> int:
        """Bytes held in memory: the codes and their ids."""
        return self.ntotal * (self.bits // 8 + 8)

    # --- search ----------------------------------------------------------------------------

    def knn(self, codes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(distances [q, k], ids [q, k]); id -1 where fewer than k items exist."""
        k = max(1, min(k, self.ntotal)) if self.ntotal else 1
        return self.index.search(np.ascontiguousarray(codes, np.uint8), k)

    def radius(self, code: np.ndarray, r: int) -> tuple[np.ndarray, np.ndarray]:
        """Every item within Hamming distance r of one code: (distances, ids), nearest first."""
        lims, dist, ids = self.index.range_search(np.ascontiguousarray(code, np.uint8).reshape(1, -1), r + 1)
        order = np.argsort(dist, kind="stable")
        return dist[order].astype(np.int32), ids[order]

    # --- persistence -----------------------------------------------------------------------

    def save(self, path: str | Path) -> None:
        """Write index and record atomically (temp files, then rename)."""
        path = Path(path)
        tmp = path.with_suffix(path.suffix + ".tmp")
        faiss.write_index_binary(self.index, str(tmp))
        os.replace(tmp, path)
        meta = {"bits": self.bits, "model_id": self.model_id, "count": self.ntotal, "ids": ids_checksum(self.ids())}
        meta_tmp = path.with_suffix(".json.tmp")
        meta_tmp.write_text(json.dumps(meta))
        os.replace(meta_tmp, path.with_suffix(".json"))

    @classmethod
    def open(
        cls, path: str | Path, *, bits: int, model_id: int | None, ids: np.ndarray, codes: np.ndarray
    ) -> tuple[CodeIndex, bool]:
        """Load the saved index if it matches SQLite's (ids, codes), else rebuild it from them.

        Returns (index, rebuilt).
        """
        path = Path(path)
        expected = {"bits": bits, "model_id": model_id, "count": len(ids), "ids": ids_checksum(ids)}
        try:
            meta = json.loads(path.with_suffix(".json").read_text())
            if meta == expected:
                index = cls(bits, model_id)
                index.index = faiss.read_index_binary(str(path))
                if index.ntotal == len(ids) and index.ids_checksum_matches(ids):
                    return index, False
        except (OSError, ValueError, RuntimeError):
            pass  # missing, damaged or stale: rebuild below
        index = cls.build(bits, model_id, ids, codes)
        index.save(path)
        return index, True

    def ids_checksum_matches(self, ids: np.ndarray) -> bool:
        return ids_checksum(self.ids()) == ids_checksum(ids)
