"""The SQLite store, the library's source of truth (sqlite-utils).

WAL journal, a busy timeout, one writer at a time. The schema is versioned by numbered
migrations (m001_…), applied in order and recorded in the `migrations` table.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypedDict

import numpy as np
import sqlite_utils

TAG_SOURCES = ("user", "sidecar", "xmp", "iptc", "xmp_sidecar", "accepted")
EXPORTED_SOURCES = ("user", "sidecar", "accepted")  # what the user gave hashlens: written back as XMP


class StoreError(RuntimeError):
    """The database cannot be opened or is not a hashlens library."""


class NewImage(TypedDict):
    path: str
    size: int
    mtime: float
    content_hash: str | None
    width: int | None
    height: int | None
    taken_at: str | None
    format: str | None
    status: str  # "ok" or "failed"
    error: str | None
    phash: str | None  # perceptual hash (imageio.perceptual_hash), for near-identical photos


class ImageRecord(NewImage):
    id: int


def m001_create_tables(db: sqlite_utils.Database) -> None:
    db["images"].create(
        {
            "id": int,
            "path": str,
            "size": int,
            "mtime": float,
            "content_hash": str,
            "width": int,
            "height": int,
            "taken_at": str,
            "format": str,
            "status": str,
            "error": str,
            "indexed_at": float,
        },
        pk="id",
    )
    db["images"].create_index(["path"], unique=True)
    db["images"].create_index(["content_hash"])
    db["tags"].create({"id": int, "name": str}, pk="id")
    db["tags"].create_index(["name"], unique=True)
    db["image_tags"].create(
        {"image_id": int, "tag_id": int, "source": str, "score": float},
        pk=("image_id", "tag_id", "source"),
        foreign_keys=[("image_id", "images", "id"), ("tag_id", "tags", "id")],
    )
    db["embeddings"].create(
        {"image_id": int, "encoder": str, "vector": bytes},
        pk=("image_id", "encoder"),
        foreign_keys=[("image_id", "images", "id")],
    )
    db["hash_models"].create(
        {"id": int, "encoder": str, "bits": int, "created_at": float, "config": str, "metrics": str, "weights": bytes},
        pk="id",
    )
    db["codes"].create(
        {"image_id": int, "model_id": int, "code": bytes},
        pk=("image_id", "model_id"),
        foreign_keys=[("image_id", "images", "id"), ("model_id", "hash_models", "id")],
    )
    db["index_runs"].create(
        {
            "id": int,
            "started_at": float,
            "finished_at": float,
            "paths": str,
            "status": str,
            "added": int,
            "updated": int,
            "moved": int,
            "removed": int,
            "failed": int,
            "skipped": int,
        },
        pk="id",
    )


def m002_create_meta(db: sqlite_utils.Database) -> None:
    db["meta"].create({"key": str, "value": str}, pk="key")  # library-wide settings, e.g. its encoder


def m003_create_tag_cache(db: sqlite_utils.Database) -> None:
    # Tag text embeddings per encoder and tag codes per hash model, keyed by tag text: the shipped
    # vocabulary's tags are cached here before any photo carries them.
    db["tag_embeddings"].create({"tag": str, "encoder": str, "vector": bytes}, pk=("tag", "encoder"))
    db["tag_codes"].create({"tag": str, "model_id": int, "code": bytes}, pk=("tag", "model_id"))


def m004_create_passed_over(db: sqlite_utils.Database) -> None:
    # Entries named like photos that are none (FIFOs, sockets, devices, folders): what the last
    # scan of their folder passed over without opening them, with the reason.
    db["passed_over"].create({"path": str, "reason": str, "seen_at": float}, pk="path")


def m005_create_xmp_sidecars(db: sqlite_utils.Database) -> None:
    # The XMP sidecars each photo's `xmp_sidecar` tags were read from, and their mtimes then: an
    # index run rereads them only when one changed, even when the photo did not.
    db["xmp_sidecars"].create({"image_id": int, "path": str, "mtime": float}, pk=("image_id", "path"))


def m006_add_perceptual_hash(db: sqlite_utils.Database) -> None:
    # Photos indexed before this get theirs when `hashlens duplicates` first needs it.
    db["images"].add_column("phash", str)


def m007_track_record_changes(db: sqlite_utils.Database) -> None:
    # A photo's record_seq rises whenever its tags or its path change (triggers, so that every
    # writer is covered, in any process): a Milvus collection that mirrors paths and tags
    # upserts only the photos whose record_seq passed the one it last synced.
    db["images"].add_column("record_seq", int, not_null_default=0)
    db["images"].create_index(["record_seq"])
    bump = "update images set record_seq = (select max(record_seq) from images) + 1 where id = {}"
    for name, event, photo in (
        ("tags_added", "insert on image_tags", "new.image_id"),
        ("tags_removed", "delete on image_tags", "old.image_id"),
        ("tags_changed", "update on image_tags", "new.image_id"),
        ("photo_moved", "update of path on images", "new.id"),
    ):
        db.execute(f"create trigger record_{name} after {event} begin {bump.format(photo)}; end")


MIGRATIONS = [
    m001_create_tables,
    m002_create_meta,
    m003_create_tag_cache,
    m004_create_passed_over,
    m005_create_xmp_sidecars,
    m006_add_perceptual_hash,
    m007_track_record_changes,
]


# Embeddings read at a time where every photo's is needed (training, new codes): 40 MB of
# 512-dim vectors; a multiple of SparseHash.encode's 4096 rows, so codes are computed in the
# blocks one call over all photos would use.
EMBEDDING_BATCH = 5 * 4096


def _chunks(ids: list[int], size: int = 10_000):
    """`ids` in slices short enough for one statement (SQLite caps its number of parameters)."""
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


class Store:
    """Typed access to the library database. Writes happen inside `transaction()`."""

    def __init__(self, path: str | Path | None = None, *, memory: bool = False) -> None:
        try:
            if memory:
                self.db = sqlite_utils.Database(memory=True)
            else:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                # The UI calls from several threads; SQLite serialises writers itself.
                self.db = sqlite_utils.Database(sqlite3.connect(str(path), check_same_thread=False))
                self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA busy_timeout=10000")
            # Re-ranking reads hundreds of random embedding rows per query: memory-map the file and
            # keep a larger page cache, so a warm process reads them from memory, not via read().
            self.db.execute("PRAGMA mmap_size=17179869184")
            self.db.execute("PRAGMA cache_size=-65536")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except Exception as e:  # sqlite3.DatabaseError for a file that is not a database
            raise StoreError(f"cannot open the library database {path}: {e}") from e

    def _migrate(self) -> None:
        if "migrations" not in self.db.table_names():
            self.db["migrations"].create({"name": str, "applied_at": float}, pk="name")
        done = {row["name"] for row in self.db["migrations"].rows}
        for migration in MIGRATIONS:
            if migration.__name__ not in done:
                with self.db.atomic():
                    migration(self.db)
                    self.db["migrations"].insert({"name": migration.__name__, "applied_at": time.time()})

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Everything inside commits together or not at all (a kill mid-way leaves none of it)."""
        with self.db.atomic():
            yield

    # --- library settings ------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        rows = list(self.db["meta"].rows_where("key = ?", [key]))
        return rows[0]["value"] if rows else None

    def set_meta(self, key: str, value: str) -> None:
        self.db["meta"].upsert({"key": key, "value": value}, pk="key")

    # --- images ----------------------------------------------------------------------------

    def image_by_path(self, path: str) -> ImageRecord | None:
        rows = list(self.db["images"].rows_where("path = ?", [path]))
        return rows[0] if rows else None

    def images_under(self, roots: Iterable[str]) -> dict[str, ImageRecord]:
        """Images whose path is one of `roots` or inside one of them, by path."""
        out = {}
        for root in roots:
            prefix = root.rstrip("/") + "/"
            for row in self.db["images"].rows_where("path = ? or substr(path, 1, ?) = ?", [root, len(prefix), prefix]):
                out[row["path"]] = row
        return out

    def upsert_image(self, image: NewImage) -> int:
        """Insert or update by path; returns the row id (kept when the path already exists)."""
        existing = self.image_by_path(image["path"])
        row = dict(image, indexed_at=time.time())
        if existing:
            self.db["images"].update(existing["id"], row)
            return existing["id"]
        return self.db["images"].insert(row).last_pk

    def set_phash(self, image_id: int, phash: str) -> None:
        self.db["images"].update(image_id, {"phash": phash})

    def move_image(self, image_id: int, new_path: str, size: int, mtime: float) -> None:
        self.db["images"].update(image_id, {"path": new_path, "size": size, "mtime": mtime})

    def remove_images_data(self, ids: list[int]) -> None:
        """Forget the embeddings, codes and tags of images (kept: the image rows)."""
        for chunk in _chunks(ids):
            for table in ("image_tags", "embeddings", "codes", "xmp_sidecars"):
                self.db[table].delete_where(f"image_id in ({','.join('?' * len(chunk))})", chunk)

    def remove_images(self, ids: list[int]) -> None:
        self.remove_images_data(ids)
        for chunk in _chunks(ids):
            self.db["images"].delete_where(f"id in ({','.join('?' * len(chunk))})", chunk)

    def has_images(self, status: str = "ok") -> bool:
        """Cheaper than count_images() > 0: stops at the first row (a search asks every time)."""
        return bool(self.db.execute("select exists(select 1 from images where status = ?)", [status]).fetchone()[0])

    def count_images(self, status: str = "ok") -> int:
        return self.db["images"].count_where("status = ?", [status])

    def set_passed_over(self, roots: Iterable[str], entries: dict[str, str]) -> None:
        """Replace what was passed over under `roots` with `entries` {path: reason}."""
        for root in roots:
            prefix = root.rstrip("/") + "/"
            self.db["passed_over"].delete_where("path = ? or substr(path, 1, ?) = ?", [root, len(prefix), prefix])
        now = time.time()
        self.db["passed_over"].insert_all(
            ({"path": p, "reason": r, "seen_at": now} for p, r in entries.items()), replace=True
        )

    def passed_over(self) -> list[dict]:
        return [{"path": r["path"], "reason": r["reason"]} for r in self.db["passed_over"].rows_where(order_by="path")]

    def failures(self) -> list[dict]:
        return [{"path": r["path"], "reason": r["error"]} for r in self.db["images"].rows_where("status = 'failed'")]

    # --- tags ------------------------------------------------------------------------------

    def tag_id(self, name: str) -> int:
        name = name.strip()
        row = list(self.db["tags"].rows_where("name = ?", [name]))
        return row[0]["id"] if row else self.db["tags"].insert({"name": name}).last_pk

    def set_tags(self, image_id: int, tags: Iterable[str], source: str, score: float = 1.0) -> None:
        """Replace this image's tags from `source` with `tags` (unchanged ones are not rewritten:
        every index run with a tags file sets them all again)."""
        if source not in TAG_SOURCES:
            raise ValueError(f"unknown tag source {source!r}")
        wanted = [t for t in dict.fromkeys(t.strip() for t in tags) if t]
        sql = (
            "select t.name, it.score from image_tags it join tags t on t.id = it.tag_id "
            "where it.image_id = ? and it.source = ?"
        )
        if dict(self.db.execute(sql, [image_id, source]).fetchall()) == dict.fromkeys(wanted, score):
            return
        self.db["image_tags"].delete_where("image_id = ? and source = ?", [image_id, source])
        rows = [{"image_id": image_id, "tag_id": self.tag_id(t), "source": source, "score": score} for t in wanted]
        self.db["image_tags"].insert_all(rows, replace=True)

    def xmp_sidecars(self) -> dict[int, dict[str, float]]:
        """image id -> {path: mtime} of the sidecars its `xmp_sidecar` tags were read from."""
        out: dict[int, dict[str, float]] = {}
        for r in self.db["xmp_sidecars"].rows:
            out.setdefault(r["image_id"], {})[r["path"]] = r["mtime"]
        return out

    def set_xmp_sidecars(self, image_id: int, sidecars: dict[str, float]) -> None:
        """Record the sidecars {path: mtime} read for an image (empty: it has none any more)."""
        self.db["xmp_sidecars"].delete_where("image_id = ?", [image_id])
        rows = [{"image_id": image_id, "path": p, "mtime": m} for p, m in sidecars.items()]
        self.db["xmp_sidecars"].insert_all(rows, replace=True)

    def exported_tags(self, image_id: int | None = None) -> dict[int, list[str]]:
        """image id -> the tags the user gave it (own, tags file, accepted), for XMP write-back:
        of every image, or of `image_id` only."""
        marks = ",".join("?" * len(EXPORTED_SOURCES))
        only = "" if image_id is None else " and it.image_id = ?"
        sql = (
            "select it.image_id, t.name from image_tags it join tags t on t.id = it.tag_id "
            f"where it.source in ({marks}){only} order by it.image_id, t.name"
        )
        params = list(EXPORTED_SOURCES) + ([] if image_id is None else [image_id])
        out: dict[int, list[str]] = {}
        for image_id, name in self.db.execute(sql, params):
            if name not in out.setdefault(image_id, []):
                out[image_id].append(name)
        return out

    def refresh_file(self, image_id: int, size: int, mtime: float, content_hash: str) -> None:
        """The photo's file changed by hashlens' own hand (metadata only): its pixels did not."""
        self.db["images"].update(image_id, {"size": size, "mtime": mtime, "content_hash": content_hash})

    def tags_of(self, image_id: int, *, source: str | None = None) -> list[str]:
        """The image's tags, sorted: from every source, or from `source` only."""
        sql = "select distinct t.name from image_tags it join tags t on t.id = it.tag_id where it.image_id = ?"
        params: list = [image_id]
        if source is not None:
            sql += " and it.source = ?"
            params.append(source)
        return [r[0] for r in self.db.execute(sql + " order by 1", params).fetchall()]

    def tag_names(self) -> list[str]:
        """Every tag some photo carries, sorted."""
        sql = "select distinct t.name from image_tags it join tags t on t.id = it.tag_id order by 1"
        return [r[0] for r in self.db.execute(sql)]

    def tags_by_image(self) -> dict[int, list[str]]:
        """Image id -> its tags (any source), sorted."""
        out: dict[int, list[str]] = {}
        sql = "select distinct it.image_id, t.name from image_tags it join tags t on t.id = it.tag_id order by 2"
        for image_id, name in self.db.execute(sql):
            out.setdefault(image_id, []).append(name)
        return out

    def cached_tag_vectors(self, encoder: str, tags: list[str]) -> dict[str, np.ndarray]:
        rows = self.db.execute("select tag, vector from tag_embeddings where encoder = ?", [encoder]).fetchall()
        wanted = set(tags)
        return {t: np.frombuffer(v, np.float16).astype(np.float32) for t, v in rows if t in wanted}

    def put_tag_vectors(self, encoder: str, tags: list[str], vectors: np.ndarray) -> None:
        rows = (
            {"tag": t, "encoder": encoder, "vector": np.asarray(v, np.float16).tobytes()} for t, v in zip(tags, vectors)
        )
        self.db["tag_embeddings"].insert_all(rows, replace=True)

    def cached_tag_codes(self, model_id: int) -> dict[str, bytes]:
        return dict(self.db.execute("select tag, code from tag_codes where model_id = ?", [model_id]).fetchall())

    def put_tag_codes(self, model_id: int, tags: list[str], codes: np.ndarray) -> None:
        rows = ({"tag": t, "model_id": model_id, "code": bytes(c)} for t, c in zip(tags, codes))
        self.db["tag_codes"].insert_all(rows, replace=True)

    def images_tagged(self, tag: str) -> list[int]:
        """Ids of live images carrying `tag` (any source)."""
        sql = (
            "select distinct it.image_id from image_tags it join tags t on t.id = it.tag_id "
            "join images i on i.id = it.image_id where t.name = ? and i.status = 'ok'"
        )
        return [r[0] for r in self.db.execute(sql, [tag])]

    def record_seq(self) -> int:
        """The newest change to any photo's tags or path (see m007_track_record_changes)."""
        return self.db.execute("select coalesce(max(record_seq), 0) from images").fetchone()[0]

    def coded_changed_since(self, model_id: int, seq: int) -> list[int]:
        """Live photos with a code under `model_id` whose tags or path changed after `seq`."""
        sql = (
            "select i.id from images i join codes c on c.image_id = i.id and c.model_id = ? "
            "where i.record_seq > ? and i.status = 'ok' order by i.id"
        )
        return [r[0] for r in self.db.execute(sql, [model_id, seq])]

    def records_of(self, ids: Iterable[int]) -> tuple[list[str], list[list[str]]]:
        """(paths, tag lists) of `ids`, in that order: each photo's tags from every source, once."""
        ids = [int(i) for i in ids]
        tags: dict[int, list[str]] = {i: [] for i in ids}
        sql = (
            "select distinct it.image_id, t.name from image_tags it join tags t on t.id = it.tag_id "
            "where it.image_id in ({}) order by it.image_id, t.name"
        )
        for chunk in _chunks(ids):
            for image_id, name in self.db.execute(sql.format(",".join("?" * len(chunk))), chunk):
                tags[image_id].append(name)
        return self.paths_of(ids), [tags[i] for i in ids]

    def count_tags(self) -> int:
        return self.db.execute("select count(distinct tag_id) from image_tags").fetchone()[0]

    # --- embeddings and codes --------------------------------------------------------------

    def put_embeddings(self, encoder: str, ids: Iterable[int], vectors: np.ndarray | None) -> None:
        """Store the float16 embeddings of `ids`; with `vectors` None, only the fact that they
        have one, held elsewhere (an empty vector: the Milvus backend keeps the vectors)."""
        blobs = itertools.repeat(b"") if vectors is None else (v.tobytes() for v in np.asarray(vectors, np.float16))
        rows = ({"image_id": int(i), "encoder": encoder, "vector": b} for i, b in zip(ids, blobs))
        self.db["embeddings"].insert_all(rows, replace=True)

    def embedded_ids(self, encoder: str) -> set[int]:
        """Ids of the images that have an embedding from `encoder`."""
        return {r[0] for r in self.db.execute("select image_id from embeddings where encoder = ?", [encoder])}

    def count_embeddings(self, encoder: str) -> int:
        return self.db.execute("select count(*) from embeddings where encoder = ?", [encoder]).fetchone()[0]

    def embedding_rows(
        self, encoder: str, *, size: int | None = None, held: str | None = None
    ) -> Iterator[list[tuple[int, bytes]]]:
        """Every (id, float16 blob) of `encoder`'s embeddings, `size` rows at a time in id order:
        a library of any size is read with one batch in memory (keyset paging on the primary key).
        `held`: "here" for the rows whose vector SQLite holds, "elsewhere" for the others."""
        last, size = -1, size or EMBEDDING_BATCH
        where = {None: "", "here": "and length(vector) > 0", "elsewhere": "and length(vector) = 0"}[held]
        sql = f"select image_id, vector from embeddings where encoder = ? and image_id > ? {where} "
        sql += "order by image_id limit ?"
        while rows := self.db.execute(sql, [encoder, last, size]).fetchall():
            yield rows
            last = rows[-1][0]

    def embedded_id_batches(self, encoder: str, *, size: int | None = None) -> Iterator[np.ndarray]:
        """Ids of `encoder`'s embeddings, `size` at a time in id order, without their vectors."""
        last, size = -1, size or EMBEDDING_BATCH
        sql = "select image_id from embeddings where encoder = ? and image_id > ? order by image_id limit ?"
        while rows := self.db.execute(sql, [encoder, last, size]).fetchall():
            yield np.array([r[0] for r in rows], np.int64)
            last = int(rows[-1][0])

    def embedding_batches(self, encoder: str, *, size: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids [b], float32 vectors [b, dim]) of every embedding from `encoder`, in batches (see embedding_rows)."""
        for rows in self.embedding_rows(encoder, size=size):
            ids = np.array([r[0] for r in rows], np.int64)
            yield ids, np.stack([np.frombuffer(r[1], np.float16) for r in rows]).astype(np.float32)

    def _by_ids(self, sql: str, params: list, ids: list[int]) -> dict:
        """Rows (id, value) of `sql` whose `{ids}` placeholder is filled in chunks (SQLite caps
        the number of parameters of one statement)."""
        out = {}
        for chunk in _chunks(ids):
            out.update(self.db.execute(sql.format(ids=",".join("?" * len(chunk))), [*params, *chunk]).fetchall())
        return out

    def embedding_dim(self, encoder: str) -> int | None:
        """Length of the encoder's stored embeddings (None before the first)."""
        row = self.db.execute("select length(vector) from embeddings where encoder = ? limit 1", [encoder]).fetchone()
        return row[0] // 2 if row else None  # float16

    def embeddings_of(self, encoder: str, ids: np.ndarray) -> np.ndarray:
        """float32 vectors [n, dim] of `ids`, in that order."""
        ids = [int(i) for i in ids]
        sql = "select image_id, vector from embeddings where encoder = ? and image_id in ({ids})"
        rows = self._by_ids(sql, [encoder], ids)
        return np.stack([np.frombuffer(rows[i], np.float16) for i in ids]).astype(np.float32)

    def paths_of(self, ids: Iterable[int]) -> list[str]:
        ids = [int(i) for i in ids]
        rows = self._by_ids("select id, path from images where id in ({ids})", [], ids)
        return [rows[i] for i in ids]

    def current_model_id(self, encoder: str) -> int | None:
        """The newest hash model's id, without reading its weights and metrics (every query asks)."""
        row = self.db.execute("select max(id) from hash_models where encoder = ?", [encoder]).fetchone()
        return row[0] if row else None

    def model_row(self, model_id: int) -> dict:
        return next(self.db["hash_models"].rows_where("id = ?", [model_id]))

    def current_model(self, encoder: str) -> dict | None:
        rows = list(self.db["hash_models"].rows_where("encoder = ?", [encoder], order_by="id desc", limit=1))
        return rows[0] if rows else None

    def add_model(self, *, encoder: str, bits: int, config: dict, metrics: dict, weights: bytes) -> int:
        return (
            self.db["hash_models"]
            .insert(
                {
                    "encoder": encoder,
                    "bits": bits,
                    "created_at": time.time(),
                    "config": json.dumps(config),
                    "metrics": json.dumps(metrics),
                    "weights": weights,
                }
            )
            .last_pk
        )

    def set_model_metrics(self, model_id: int, metrics: dict) -> None:
        self.db["hash_models"].update(model_id, {"metrics": json.dumps(metrics)})

    def put_codes(self, model_id: int, ids: Iterable[int], codes: np.ndarray) -> None:
        self.db["codes"].insert_all(
            ({"image_id": int(i), "model_id": model_id, "code": bytes(c)} for i, c in zip(ids, codes)), replace=True
        )

    def data_version(self) -> int:
        """Changes whenever another connection (another process: a watcher) commits a change."""
        return self.db.execute("pragma data_version").fetchone()[0]

    def codes_version(self, model_id: int) -> tuple[int, int]:
        """(count, newest row) of a model's codes: changes when a code is added, replaced or removed."""
        sql = "select count(*), max(rowid) from codes where model_id = ?"
        return tuple(self.db.execute(sql, [model_id]).fetchone())

    def codes(self, model_id: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids [n], packed codes [n, bytes]) of live images under `model_id`, by id."""
        rows = self.db.execute(
            "select c.image_id, c.code from codes c join images i on i.id = c.image_id "
            "where c.model_id = ? and i.status = 'ok' order by c.image_id",
            [model_id],
        ).fetchall()
        if not rows:
            return np.zeros(0, np.int64), np.zeros((0, 0), np.uint8)
        return np.array([r[0] for r in rows], np.int64), np.stack([np.frombuffer(r[1], np.uint8) for r in rows])

    def codes_of(self, model_id: int, ids: np.ndarray) -> np.ndarray:
        """Packed codes [n, bytes] of `ids` under `model_id`, in that order."""
        ids = [int(i) for i in ids]
        rows = self._by_ids(
            "select image_id, code from codes where model_id = ? and image_id in ({ids})", [model_id], ids
        )
        return np.stack([np.frombuffer(rows[i], np.uint8) for i in ids])

    # --- index runs ------------------------------------------------------------------------

    def start_run(self, paths: list[str]) -> int:
        return (
            self.db["index_runs"]
            .insert({"started_at": time.time(), "paths": json.dumps(paths), "status": "running"})
            .last_pk
        )

    def finish_run(self, run_id: int, status: str, counts: dict) -> None:
        self.db["index_runs"].update(run_id, dict(counts, finished_at=time.time(), status=status))

    def integrity_ok(self) -> bool:
        return self.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
