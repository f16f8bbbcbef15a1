"""The code index in Milvus, for libraries past one machine's FAISS index: the same interface as
`CodeIndex` (add, remove, knn, radius, ids, codes), one collection per hash model holding each
photo's code (BINARY_VECTOR, HAMMING), its embedding (FLOAT16_VECTOR) for the re-rank, and its
record: path (VARCHAR) and tags (ARRAY of VARCHAR), which answer "which photos carry these
tags" (`tagged_with`) and let other Milvus clients filter by tag.

The URI is a milvus-lite file (one process, BIN_FLAT: exact) or a server (`http://host:19530`,
BIN_IVF_FLAT). SQLite stays the library's record of photos, tags and codes; the collection is
checked against it when opened and rebuilt when they disagree, as the FAISS file is (or, when
the library noted that it holds the current codes, taken as it is: `existing`), and the Library
upserts the rows of photos whose tags or path changed since it last synced.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

import numpy as np

from retrieval.index import content_checksum, nearest_by_distance_then_id

try:  # the optional extra: pip install 'hashlens[scale]'
    from pymilvus import DataType, MilvusClient
except ImportError:  # pragma: no cover - depends on the extra
    MilvusClient = None

INSERT_BATCH = 2_000  # rows per insert call
MAX_RESULTS = 16_384  # Milvus' cap on results per search (topk, and a range search's limit)
MAX_PATH = 4096  # bytes of a path (Linux's PATH_MAX)
MAX_TAGS = 1024  # tags a row holds (Milvus arrays have a fixed capacity; more are left out here)
MAX_TAG = 512  # bytes of one tag
RECORD_FIELDS = ("path", "tags")
ID_WINDOW = 8_192  # ids per query when every row is read: fewer rows than a query may return


class MilvusUnavailable(RuntimeError):
    """--backend milvus without the `scale` extra installed."""


def require_milvus() -> None:
    if MilvusClient is None:
        raise MilvusUnavailable(
            "the Milvus backend needs the scale extra: pip install 'hashlens[scale]' (pymilvus, milvus-lite)"
        )


def collection_name(library_id: str, model_id: int) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", f"hashlens_{library_id}_model{model_id}")


def loaded_fields(client, name: str) -> dict[str, dict] | None:
    """A collection's fields (Milvus' descriptions, by name), the collection loaded for search;
    None when there is no such collection."""
    if not client.has_collection(name):
        return None
    fields = {f["name"]: f for f in client.describe_collection(name)["fields"]}
    client.load_collection(name)
    return fields


class MilvusCodeIndex:
    def __init__(
        self,
        client,
        name: str,
        bits: int,
        model_id: int | None,
        dim: int,
        embeddings_of: Callable[[np.ndarray], np.ndarray],
        records_of: Callable[[np.ndarray], tuple[list[str], list[list[str]]]],
    ) -> None:
        self.client, self.name, self.bits, self.model_id, self.dim = client, name, bits, model_id, dim
        self._embeddings_of = embeddings_of  # the stored embeddings of ids, for the re-rank field
        self._records_of = records_of  # the stored (paths, tag lists) of ids

    # --- building --------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        uri: str,
        *,
        library_id: str,
        bits: int,
        model_id: int,
        dim: int,
        ids: np.ndarray,
        codes: np.ndarray,
        embeddings_of: Callable[[np.ndarray], np.ndarray],
        records_of: Callable[[np.ndarray], tuple[list[str], list[list[str]]]],
        client=None,
    ) -> tuple[MilvusCodeIndex, bool]:
        """The model's collection if it holds SQLite's (ids, codes), else rebuilt from them.
        Returns (index, rebuilt). `client`: one already connected to `uri`."""
        require_milvus()
        client = client or MilvusClient(uri)
        index = cls(client, collection_name(library_id, model_id), bits, model_id, dim, embeddings_of, records_of)
        if (fields := loaded_fields(client, index.name)) is not None:
            same = index.ntotal == len(ids) and content_checksum(index.ids(), index.codes()) == content_checksum(
                ids, codes
            )
            if same and set(RECORD_FIELDS) <= fields.keys():  # a collection made before records were kept: rebuilt
                return index, False
            client.drop_collection(index.name)
        index._create(server=not uri.endswith(".db"))
        index.add(ids, codes)
        return index, True

    @classmethod
    def existing(
        cls,
        uri: str,
        *,
        rows: int,
        library_id: str,
        bits: int,
        model_id: int,
        dim: int,
        embeddings_of: Callable[[np.ndarray], np.ndarray],
        records_of: Callable[[np.ndarray], tuple[list[str], list[list[str]]]],
        client=None,
    ) -> MilvusCodeIndex | None:
        """The model's collection as it is, without reading its rows (the library noted that it
        holds SQLite's codes), if it exists with a record per photo and `rows` rows; else None."""
        require_milvus()
        client = client or MilvusClient(uri)
        index = cls(client, collection_name(library_id, model_id), bits, model_id, dim, embeddings_of, records_of)
        fields = loaded_fields(client, index.name)
        return index if fields is not None and set(RECORD_FIELDS) <= fields.keys() and index.ntotal == rows else None

    def _create(self, *, server: bool) -> None:
        schema = MilvusClient.create_schema(auto_id=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("code", DataType.BINARY_VECTOR, dim=self.bits)
        schema.add_field("embedding", DataType.FLOAT16_VECTOR, dim=self.dim)
        schema.add_field("path", DataType.VARCHAR, max_length=MAX_PATH)
        schema.add_field(
            "tags", DataType.ARRAY, element_type=DataType.VARCHAR, max_capacity=MAX_TAGS, max_length=MAX_TAG
        )
        params = self.client.prepare_index_params()
        if server:
            params.add_index("code", index_type="BIN_IVF_FLAT", metric_type="HAMMING", params={"nlist": 1024})
            # Tag filters without a scan. milvus-lite refuses scalar indexes ("invalid parameter"):
            # there a tag on 1% of 1M photos costs about 256 ms (bench scale).
            params.add_index("tags", index_type="INVERTED")
        else:
            params.add_index("code", index_type="BIN_FLAT", metric_type="HAMMING")
        params.add_index("embedding", index_type="FLAT", metric_type="IP")
        self.client.create_collection(self.name, schema=schema, index_params=params)
        self.client.load_collection(self.name)

    def add(self, ids: np.ndarray, codes: np.ndarray) -> None:
        """Add or replace the rows of `ids`: codes, and the re-rank embeddings and records read
        from the library (an upsert replaces a whole row, so a changed record is added again)."""
        ids = np.asarray(ids, np.int64)
        codes = np.ascontiguousarray(codes, np.uint8)
        for start in range(0, len(ids), INSERT_BATCH):
            part = ids[start : start + INSERT_BATCH]
            vectors = np.asarray(self._embeddings_of(part), np.float16)
            paths, tags = self._records_of(part)
            rows = [
                {"id": int(i), "code": c.tobytes(), "embedding": v, "path": _clip(p, MAX_PATH), "tags": _tags(t)}
                for i, c, v, p, t in zip(part, codes[start : start + INSERT_BATCH], vectors, paths, tags)
            ]
            self.client.upsert(self.name, rows)

    def remove(self, ids: np.ndarray) -> None:
        ids = [int(i) for i in np.asarray(ids, np.int64)]
        for start in range(0, len(ids), INSERT_BATCH):
            self.client.delete(self.name, ids=ids[start : start + INSERT_BATCH])

    def save(self, path=None) -> None:
        """Milvus persists every change itself: nothing to write."""

    # --- contents --------------------------------------------------------------------------

    @property
    def ntotal(self) -> int:
        return self._count("")

    # With an ARRAY field in the collection, pymilvus 2.5.18 cannot read an empty query answer
    # from milvus-lite 2.5.1 ("Unsupported data type: 0"), and so fails query_iterator, which
    # ends on one. Rows are therefore read by windows of ids, each counted before it is read.

    def _count(self, where: str) -> int:
        return int(self.client.query(self.name, filter=where, output_fields=["count(*)"])[0]["count(*)"])

    def _id_ceiling(self) -> int:
        """A power of two above every id in the collection (a few counts)."""
        bound = 1
        while self._count(f"id >= {bound}"):
            bound *= 2
        return bound

    def _rows(self, fields: list[str], condition: str = "") -> list[dict]:
        """Every row (matching `condition`): in one query when they are fewer than a query may
        return, else by windows of ids (SQLite's, dense from 1, so the windows are few)."""
        total = self._count(condition)
        if total == 0:
            return []
        if total < MAX_RESULTS:
            return self.client.query(self.name, filter=condition, output_fields=fields, limit=total)
        rows = []
        for low in range(0, self._id_ceiling(), ID_WINDOW):
            where = f"id >= {low} and id < {low + ID_WINDOW}" + (f" and ({condition})" if condition else "")
            if self._count(where):
                rows.extend(self.client.query(self.name, filter=where, output_fields=fields, limit=ID_WINDOW))
        return rows

    def _ids_and_codes(self) -> tuple[np.ndarray, np.ndarray]:
        rows = sorted(self._rows(["id", "code"]), key=lambda r: r["id"])
        ids = np.array([r["id"] for r in rows], np.int64)
        codes = np.array([np.frombuffer(_binary(r["code"]), np.uint8) for r in rows], np.uint8)
        return ids, codes.reshape(len(ids), self.bits // 8)

    def ids(self) -> np.ndarray:
        return self._ids_and_codes()[0]

    def codes(self) -> np.ndarray:
        """Packed codes [n, bits/8], in the order of ids()."""
        return self._ids_and_codes()[1]

    def nbytes(self) -> int:
        """Bytes this process holds for searching: none, Milvus holds the codes."""
        return 0

    def embeddings_of(self, ids: np.ndarray) -> np.ndarray:
        """The re-rank embeddings of `ids` [n, dim], in that order."""
        ids = [int(i) for i in ids]
        rows = {r["id"]: r["embedding"] for r in self.client.get(self.name, ids=ids, output_fields=["embedding"])}
        return np.array([np.frombuffer(_binary(rows[i]), np.float16) for i in ids], np.float32)

    def records(self, ids: np.ndarray) -> dict[int, tuple[str, list[str]]]:
        """id -> (path, tags) as the collection holds them."""
        rows = self.client.get(self.name, ids=[int(i) for i in ids], output_fields=list(RECORD_FIELDS))
        return {int(r["id"]): (r["path"], list(r["tags"])) for r in rows}

    def tagged_with(self, tags: list[str]) -> set[int]:
        """Ids of the photos that carry every one of `tags` (a filtered query, no vector search)."""
        # A literal list, not filter_params: milvus-lite 2.5.1 fails on templated filters.
        wanted = json.dumps([_clip(t, MAX_TAG) for t in tags], ensure_ascii=False)
        return {int(r["id"]) for r in self._rows(["id"], f"array_contains_all(tags, {wanted})")}

    # --- search ----------------------------------------------------------------------------

    def _search(self, code: np.ndarray, limit: int, radius: int | None) -> tuple[np.ndarray, np.ndarray]:
        params: dict = {"metric_type": "HAMMING"}
        if radius is not None:
            params["params"] = {"radius": radius + 1, "range_filter": 0}  # distance in [0, radius]
        hits = self.client.search(
            self.name,
            [np.ascontiguousarray(code, np.uint8).tobytes()],
            anns_field="code",
            limit=limit,
            search_params=params,
        )[0]
        found = sorted((int(h["distance"]), int(h["id"])) for h in hits)  # ties by id
        return np.array([d for d, _ in found], np.int32), np.array([i for _, i in found], np.int64)

    def knn(self, code: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k nearest photos to one packed code: (distances, ids), nearest first, ties by id
        as in the FAISS backend."""
        k = min(k, MAX_RESULTS - 1)
        if k <= 0:
            return np.zeros(0, np.int32), np.zeros(0, np.int64)
        return nearest_by_distance_then_id(lambda c, n: self._search(c, n, None), self.radius, code, k)

    def radius(self, code: np.ndarray, r: int) -> tuple[np.ndarray, np.ndarray]:
        """Every photo within Hamming distance r (at most MAX_RESULTS), nearest first."""
        if r < 0:
            return np.zeros(0, np.int32), np.zeros(0, np.int64)
        return self._search(code, MAX_RESULTS, r)


def _binary(value) -> bytes:
    """A BINARY/FLOAT16 vector as Milvus returns it: bytes, or a list holding them."""
    return value[0] if isinstance(value, list) else bytes(value)


def _clip(text: str, limit: int) -> str:
    """`text` cut to at most `limit` bytes of UTF-8 (at a character boundary)."""
    return text.encode()[:limit].decode(errors="ignore")


def _tags(tags: list[str]) -> list[str]:
    return [_clip(t, MAX_TAG) for t in tags[:MAX_TAGS]]
