"""Where a library keeps its photos' CLIP embeddings (float16), by backend.

- `SqliteEmbeddings`: in SQLite's `embeddings` table, beside everything else (the default backend).
- `MilvusEmbeddings`: in a Milvus collection of the library (`id`, `embedding` FLOAT16_VECTOR),
  for libraries whose vectors outgrow one SQLite file (10⁸ photos are about 100 GB of them).
  SQLite keeps only *which* photos have one (a row with an empty vector), written in the same
  transaction as the photo, after the vector is in Milvus. Every read is driven by SQLite's
  ids, so a vector left in Milvus by a crash before that commit is never read (and the next
  vector given that id replaces it).

Both answer the same questions: `put` (inside the caller's SQLite transaction), `of` (vectors of
ids, in that order), `batches` (all of them, in id order, a batch at a time: training and new
codes never hold a whole library), `count`, `dim`, `forget`. `move_embeddings` carries a
library's vectors from one to the other when its backend changes, resumably.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from typing import Protocol

import numpy as np

from retrieval.store import Store

# Ids per Milvus get. Large answers are slow on milvus-lite 2.5.1: bench scale read 512-dim
# float16 rows at 103 a second in gets of 8,192 ids, and at 9,307 in gets of 256.
MILVUS_READ = 256
MILVUS_WRITE = 2_000  # rows per Milvus upsert or delete call


class EmbeddingStore(Protocol):
    def put(self, ids: np.ndarray, vectors: np.ndarray) -> None: ...
    def of(self, ids: np.ndarray) -> np.ndarray: ...
    def batches(self, size: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]: ...
    def count(self) -> int: ...
    def dim(self) -> int | None: ...
    def forget(self, ids: np.ndarray) -> None: ...


class SqliteEmbeddings:
    """One encoder's embeddings in the library's SQLite file."""

    where = "sqlite"

    def __init__(self, store: Store, encoder: str) -> None:
        self.store, self.encoder = store, encoder

    def put(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self.store.put_embeddings(self.encoder, ids, vectors)

    def of(self, ids: np.ndarray) -> np.ndarray:
        """float32 vectors [n, dim] of `ids`, in that order."""
        return self.store.embeddings_of(self.encoder, ids)

    def batches(self, size: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        return self.store.embedding_batches(self.encoder, size=size)

    def count(self) -> int:
        return self.store.count_embeddings(self.encoder)

    def dim(self) -> int | None:
        return self.store.embedding_dim(self.encoder)

    def forget(self, ids: np.ndarray) -> None:
        """Nothing to do: the rows went with the photos' data (Store.remove_images_data)."""


class MilvusEmbeddings:
    """One encoder's embeddings in a Milvus collection; SQLite records which photos have one."""

    where = "milvus"

    def __init__(self, store: Store, encoder: str, client, *, library_id: str) -> None:
        self.store, self.encoder, self.client = store, encoder, client
        digest = hashlib.sha1(encoder.encode()).hexdigest()[:10]  # encoder names hold ':' and '/'
        self.name = re.sub(r"[^A-Za-z0-9_]", "_", f"hashlens_{library_id}_embeddings_{digest}")
        self._dim: int | None = None

    def _ready(self, dim: int | None = None) -> bool:
        """True when the collection exists (created for vectors of `dim` when given)."""
        if self._dim is not None:
            return True
        from retrieval.milvus_index import DataType, MilvusClient, loaded_fields

        if (fields := loaded_fields(self.client, self.name)) is not None:
            self._dim = int(fields["embedding"]["params"]["dim"])
            return True
        if dim is None:
            return False
        schema = MilvusClient.create_schema(auto_id=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("embedding", DataType.FLOAT16_VECTOR, dim=dim)
        params = self.client.prepare_index_params()
        params.add_index("embedding", index_type="FLAT", metric_type="IP")  # Milvus loads only indexed vectors
        self.client.create_collection(self.name, schema=schema, index_params=params)
        self.client.load_collection(self.name)
        self._dim = dim
        return True

    def put(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Vectors into Milvus, then the fact into SQLite (the caller's transaction commits it)."""
        ids = np.asarray(ids, np.int64)
        if not len(ids):
            return
        vectors = np.asarray(vectors, np.float16)
        self._ready(vectors.shape[1])
        for start in range(0, len(ids), MILVUS_WRITE):
            part = slice(start, start + MILVUS_WRITE)
            rows = [{"id": int(i), "embedding": v} for i, v in zip(ids[part], vectors[part])]
            self.client.upsert(self.name, rows)
        self.store.put_embeddings(self.encoder, ids, None)

    def of(self, ids: np.ndarray) -> np.ndarray:
        """float32 vectors [n, dim] of `ids`, in that order."""
        from retrieval.milvus_index import _binary

        ids = [int(i) for i in ids]
        if not self._ready():
            if ids:
                raise KeyError(f"no embedding in Milvus for photo {ids[0]}")
            return np.zeros((0, 0), np.float32)
        found = {}
        for start in range(0, len(ids), MILVUS_READ):
            part = ids[start : start + MILVUS_READ]
            for row in self.client.get(self.name, ids=part, output_fields=["embedding"]):
                found[int(row["id"])] = row["embedding"]
        missing = [i for i in ids if i not in found]
        if missing:
            raise KeyError(f"no embedding in Milvus for photo {missing[0]} ({len(missing)} missing)")
        out = np.zeros((len(ids), self._dim), np.float32)
        for row, i in enumerate(ids):
            out[row] = np.frombuffer(_binary(found[i]), np.float16)
        return out

    def batches(self, size: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Every embedding in id order: SQLite's ids a batch at a time, their vectors from Milvus."""
        for ids in self.store.embedded_id_batches(self.encoder, size=size):
            yield ids, self.of(ids)

    def count(self) -> int:
        return self.store.count_embeddings(self.encoder)

    def dim(self) -> int | None:
        return self._dim if self._ready() else None

    def forget(self, ids: np.ndarray) -> None:
        """Drop the vectors of photos gone from the library (SQLite forgot them already)."""
        ids = [int(i) for i in np.asarray(ids, np.int64)]
        if ids and self._ready():
            for start in range(0, len(ids), MILVUS_WRITE):
                self.client.delete(self.name, ids=ids[start : start + MILVUS_WRITE])


def move_embeddings(store: Store, encoder: str, source, target, *, size: int | None = None) -> int:
    """Carry `encoder`'s embeddings from `source` to `target` (the library's backend changed),
    one batch per SQLite transaction: an interrupted move goes on where it stopped, as each
    SQLite row says where its vector is (an empty one: in Milvus). Returns the rows moved."""
    held = "elsewhere" if source.where == "milvus" else "here"
    moved = 0
    for rows in store.embedding_rows(encoder, size=size, held=held):  # a fresh query per batch
        ids = np.array([r[0] for r in rows], np.int64)
        if source.where == "milvus":
            vectors = source.of(ids)
        else:
            vectors = np.stack([np.frombuffer(r[1], np.float16) for r in rows])
        with store.transaction():
            target.put(ids, vectors)
        moved += len(ids)
    if source.where == "milvus" and source.client.has_collection(source.name):
        source.client.drop_collection(source.name)
    return moved
