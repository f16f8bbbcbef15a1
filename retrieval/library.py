"""The one door to a photo library: the store, the code index, the encoder and the hash model.

Opening a Library is cheap: the encoder (a CLIP model) loads on first use, and the index opens
(or is rebuilt from SQLite) on first use, so `hashlens stats` never loads a model.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np

from models.checkpoint import model_from_bytes, model_to_bytes
from models.clip import Encoder, encoder_name, is_demo, make_encoder, resolve_precision
from models.sparsehash import SparseHash
from retrieval.config import Settings
from retrieval.embedding_store import MilvusEmbeddings, SqliteEmbeddings, move_embeddings
from retrieval.index import CodeIndex
from retrieval.ranking import relaxed_codes
from retrieval.store import Store


class NoHashModel(RuntimeError):
    """The library has no hash model for its encoder yet."""


class Library:
    def __init__(
        self, settings: Settings, *, encoder: Encoder | None = None, vocabulary: list[str] | None = None
    ) -> None:
        self.store = Store(settings.database_path)
        # The encoder: as asked, else the one this library was built with, else CLIP's default.
        # Embeddings from different encoders never mix, so the choice is remembered.
        stored = self.store.get_meta("encoder")
        if settings.encoder is None:
            settings = settings.with_encoder(stored or "openclip", self.store.get_meta("weights"))
        if stored != settings.encoder:
            with self.store.transaction():
                self.store.set_meta("encoder", settings.encoder)
                self.store.set_meta("weights", settings.weights)
        # The backend, like the encoder: as asked, else the one the library was built with.
        backend = settings.backend or self.store.get_meta("backend") or "sqlite"
        milvus_uri = settings.milvus_uri or self.store.get_meta("milvus_uri") or settings.default_milvus_uri
        if backend == "milvus":
            from retrieval.milvus_index import require_milvus

            require_milvus()
        if (backend, milvus_uri) != (self.store.get_meta("backend"), self.store.get_meta("milvus_uri")):
            with self.store.transaction():
                self.store.set_meta("backend", backend)
                self.store.set_meta("milvus_uri", milvus_uri)
                if self.store.get_meta("library_id") is None:  # names its collections on a shared server
                    self.store.set_meta("library_id", uuid.uuid4().hex[:12])
        settings = replace(settings, backend=backend, milvus_uri=milvus_uri)
        self.settings = settings
        self._encoder = encoder
        self._vocabulary = vocabulary  # tags known without being in the library (None: the shipped list)
        self._index: CodeIndex | None = None
        self._model: tuple[int, SparseHash] | None = None
        self._metrics: tuple[int, dict] | None = None  # (model id, its metrics)
        self._tag_table: tuple[tuple, tuple] | None = None  # (model id, tag names) -> tag_table()
        self._seen_version: int | None = None  # the store's data_version when the index was last checked
        self._index_version: tuple | None = None  # codes_version() the index was loaded at
        self._embedding_store = None
        self._milvus_clients: dict[str, object] = {}  # by URI

    @classmethod
    def open(cls, home: str | Path | None = None, **options) -> Library:
        return cls(Settings.resolve(home=home, **options))

    # --- components, loaded on demand ------------------------------------------------------

    @property
    def encoder_name(self) -> str:
        if self._encoder is not None:
            return self._encoder.name
        s = self.settings
        return encoder_name(s.encoder, s.model, s.weights)

    @property
    def is_demo(self) -> bool:
        """True when the encoder has random (or fake) weights: results say nothing about content."""
        return self._encoder.is_demo if self._encoder is not None else is_demo(self.settings.encoder)

    @property
    def encoder(self) -> Encoder:
        if self._encoder is None:
            s = self.settings
            self._encoder = make_encoder(
                s.encoder, model=s.model, weights=s.weights, batch_size=s.batch_size, precision=s.precision
            )
        return self._encoder

    @property
    def precision(self) -> str:
        """The precision the encoder runs (or will run) in, `auto` resolved; known without loading it."""
        if self._encoder is not None:
            return getattr(self._encoder, "precision", "fp32")
        return "fp32" if self.settings.encoder == "fake" else resolve_precision(self.settings.precision)

    @property
    def vocabulary(self) -> list[str]:
        """Tags a user may search for and be suggested beyond the library's own."""
        if self._vocabulary is None:
            from retrieval.vocabulary import shipped_vocabulary

            return shipped_vocabulary()
        return self._vocabulary

    def _milvus(self, uri: str | None = None):
        """One Milvus client per URI for the life of the library (the backend's, by default)."""
        from retrieval.milvus_index import MilvusClient, require_milvus

        require_milvus()
        uri = uri or self.settings.milvus_uri
        if uri not in self._milvus_clients:
            self._milvus_clients[uri] = MilvusClient(uri)
        return self._milvus_clients[uri]

    @property
    def embedding_store(self):
        """Where the photos' embeddings are kept: SQLite, or Milvus on the Milvus backend
        (retrieval/embedding_store.py). A library whose backend changed has them moved first."""
        if self._embedding_store is None:
            key = f"embeddings_in:{self.encoder_name}"
            wanted = "sqlite" if self.settings.backend == "sqlite" else f"milvus {self.settings.milvus_uri}"
            kept = self.store.get_meta(key) or "sqlite"
            here = self._embeddings_at(wanted)
            if kept != wanted:
                move_embeddings(self.store, self.encoder_name, self._embeddings_at(kept), here)
                with self.store.transaction():
                    self.store.set_meta(key, wanted)
            self._embedding_store = here
        return self._embedding_store

    def _embeddings_at(self, place: str):
        """The embedding store at `place`: "sqlite", or "milvus URI"."""
        where, _, uri = place.partition(" ")
        if where == "milvus":
            library_id = self.store.get_meta("library_id")
            return MilvusEmbeddings(self.store, self.encoder_name, self._milvus(uri), library_id=library_id)
        return SqliteEmbeddings(self.store, self.encoder_name)

    def hash_model(self) -> tuple[int, SparseHash] | None:
        """(model id, model) of the newest hash model for this library's encoder, or None."""
        model_id = self.store.current_model_id(self.encoder_name)
        if model_id is None:
            return None
        if self._model is None or self._model[0] != model_id:
            row = self.store.model_row(model_id)
            model, _ = model_from_bytes(row["weights"], origin=f"hash model {model_id}")
            self._model = (model_id, model)
        return self._model

    @property
    def index(self) -> CodeIndex | None:
        """The code index of the current hash model, checked against SQLite (None: no model)."""
        current = self.hash_model()
        if current is None:
            return None
        model_id, model = current
        version = self.store.data_version()
        if self._index is not None and self._index.model_id == model_id and version != self._seen_version:
            # Another process committed something (a watcher indexing new photos): reload the
            # index if that changed this model's codes. One cheap query, and only then.
            if self.store.codes_version(model_id) != self._index_version:
                self._index = None
        self._seen_version = version
        if self._index is None or self._index.model_id != model_id:
            self._index_version = self.store.codes_version(model_id)  # before the codes are read
            self._index = self._open_index(model_id, model.config.bits)
        if self.settings.backend == "milvus":
            self._sync_records(self._index)
        return self._index

    def _open_index(self, model_id: int, bits: int, ids: np.ndarray | None = None, codes: np.ndarray | None = None):
        """The code index of the library's backend, checked against SQLite's (ids, codes), read
        here unless given. A Milvus collection noted as holding this very version of the codes
        (`_codes_note`) is taken as it is: a process starts without reading every code of a
        large library twice."""
        if self.settings.backend == "milvus":
            from retrieval.milvus_index import MilvusCodeIndex

            options = dict(
                client=self._milvus(),
                library_id=self.store.get_meta("library_id"),
                bits=bits,
                model_id=model_id,
                dim=self.embedding_store.dim() or self.encoder.dim,
                embeddings_of=self.embedding_store.of,
                records_of=self.store.records_of,
            )
            version, note = self._index_version, self._codes_note(model_id)
            if ids is None and self.store.get_meta(note) == json.dumps(version):
                index = MilvusCodeIndex.existing(self.settings.milvus_uri, rows=version[0], **options)
                if index is not None:
                    return index
            seq = self.store.record_seq()  # before the rows are read: a change made meanwhile is synced next time
            if ids is None:
                ids, codes = self.store.codes(model_id)
            index, rebuilt = MilvusCodeIndex.open(self.settings.milvus_uri, ids=ids, codes=codes, **options)
            with self.store.transaction():
                self.store.set_meta(note, json.dumps(version))
                if rebuilt:
                    self.store.set_meta(f"records_synced:{index.name}", str(seq))
            return index
        if ids is None:
            ids, codes = self.store.codes(model_id)
        index, _ = CodeIndex.open(self.settings.index_path, bits=bits, model_id=model_id, ids=ids, codes=codes)
        return index

    def _codes_note(self, model_id: int) -> str:
        """The meta key noting which version of a model's codes (Store.codes_version) its Milvus
        collection is known to hold."""
        from retrieval.milvus_index import collection_name

        return (
            f"codes_in_milvus:{self.settings.milvus_uri}:{collection_name(self.store.get_meta('library_id'), model_id)}"
        )

    @contextmanager
    def changing_codes(self):
        """A SQLite transaction that changes the current model's codes; the index updates that
        mirror it are queued with the function this yields and run after the commit.

        Crash safety on Milvus: the note that lets the next process trust the collection
        (`_open_index`) moves to the new version only if it named the version this transaction
        started from and every queued update ran. A process that dies between its commit and
        its updates leaves the note behind the codes, and nobody moves it on from there: the
        next process to open the index checks the whole collection against SQLite."""
        current = self.hash_model()
        # Versions are counted only where a note is kept: a count over the codes table per
        # batch would slow the default backend's index runs on a large library.
        noted = current is not None and self.settings.backend == "milvus"
        if current is not None:
            self.index  # noqa: B018 - opened (and checked) before the change, not by a queued update
        steps: list = []
        with self.store.transaction():
            before = self.store.codes_version(current[0]) if noted else None
            trusted = noted and self.store.get_meta(self._codes_note(current[0])) == json.dumps(before)
            yield steps.append
            after = self.store.codes_version(current[0]) if noted else None
        for step in steps:
            step()
        if not noted:
            return
        if self._index_version == before and self._index is not None and self._index.model_id == current[0]:
            self._index_version = after  # this process's index holds the change: no reload for it
        if trusted:
            with self.store.transaction():
                self.store.set_meta(self._codes_note(current[0]), json.dumps(after))

    def _sync_records(self, index) -> None:
        """Upsert into Milvus the rows of photos whose tags or path changed since the last sync
        (by this process or another: SQLite's triggers number every change)."""
        key = f"records_synced:{index.name}"
        seq, synced = self.store.record_seq(), int(self.store.get_meta(key) or 0)
        if seq <= synced:
            return
        changed = np.array(self.store.coded_changed_since(index.model_id, synced), np.int64)
        if len(changed):
            index.add(changed, self.store.codes_of(index.model_id, changed))
        with self.store.transaction():
            self.store.set_meta(key, str(seq))

    def photos_tagged(self, tags: list[str]) -> set[int]:
        """Ids of the live photos that carry every one of `tags`, from the library's backend."""
        if not tags:
            return set()
        if self.settings.backend == "milvus" and self.index is not None:
            return self.index.tagged_with(tags)
        return set.intersection(*(set(self.store.images_tagged(t)) for t in tags))

    def tag_table(self) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
        """(names, text embeddings, packed codes, relaxed codes) of the tag vocabulary under the
        current model.

        Kept in memory until the model or the library's tags change: every tag suggestion needs
        it, and reading 2,700 cached rows from SQLite each time costs tens of milliseconds.
        """
        from retrieval.vocabulary import TagVocabulary

        vocabulary = TagVocabulary(self)
        names = vocabulary.names()
        key = (self.hash_model()[0], tuple(names))
        if self._tag_table is None or self._tag_table[0] != key:
            vectors = vocabulary.vectors(names)
            relaxed = relaxed_codes(self.hash_model()[1], vectors, "text")
            self._tag_table = (key, (names, vectors, vocabulary.codes(names), relaxed))
        return self._tag_table[1]

    def model_metrics(self) -> dict:
        """What training recorded about the current hash model ({} when there is none): its
        ranking weights, learned tags and calibration, read on every search, so kept in memory."""
        current = self.hash_model()
        if current is None:
            return {}
        if self._metrics is None or self._metrics[0] != current[0]:
            row = self.store.current_model(self.encoder_name)
            self._metrics = (row["id"], json.loads(row["metrics"]))
        return self._metrics[1]

    def set_model_metrics(self, model_id: int, metrics: dict) -> None:
        with self.store.transaction():
            self.store.set_model_metrics(model_id, metrics)
        self._metrics = None

    def install_model(self, model: SparseHash, *, metrics: dict | None = None) -> int:
        """Make `model` the current hash model: store it, recompute every photo's code from the
        stored embeddings (no photo is decoded again, and they are read in batches) and rebuild
        the index. Returns its id."""
        id_parts, code_parts = [np.zeros(0, np.int64)], [np.zeros((0, model.config.bits // 8), np.uint8)]
        with self.store.transaction():
            model_id = self.store.add_model(
                encoder=self.encoder_name,
                bits=model.config.bits,
                config=model.config.to_dict(),
                metrics=metrics or {},
                weights=model_to_bytes(model),
            )
            for batch_ids, vectors in self.embedding_store.batches():
                id_parts.append(batch_ids)
                code_parts.append(model.encode(vectors, "image"))
                self.store.put_codes(model_id, batch_ids, code_parts[-1])
        ids, codes = np.concatenate(id_parts), np.concatenate(code_parts)
        self._model = (model_id, model)
        self._index = None
        self._index_version = self.store.codes_version(model_id)  # those codes, just committed
        self._index = self._open_index(model_id, model.config.bits, ids, codes)
        self.save_index()
        return model_id

    def save_index(self) -> None:
        if self._index is not None:
            self._index.save(self.settings.index_path)

    def warm_up(self) -> None:
        """Get ready to answer searches fast: open the index, build its search tables, and read the
        embeddings once so that re-ranking finds their pages in memory (a long-lived process,
        such as the app, calls this once; the first searches are otherwise several times slower)."""
        index = self.index
        if index is not None:
            index.knn(np.zeros(index.bits // 8, np.uint8), 1)  # search tables built and compiled on first use
        if self.embedding_store.where == "sqlite":
            self.store.db.execute("select sum(length(vector)) from embeddings where encoder = ?", [self.encoder_name])

    def similarities(self, ids: np.ndarray, vector: np.ndarray) -> np.ndarray:
        """Cosine similarity of the stored embeddings of `ids` to one unit vector [dim].

        einsum rather than `@`: for a few hundred rows and up, numpy's `@` wakes OpenBLAS's
        threads, which then spin on the cores the CLIP encoder needs next (measured: the next
        text encoding 31 → 97 ms on 2 cores)."""
        index = self._index if self.settings.backend == "milvus" else None  # Milvus holds the re-rank vectors
        vectors = index.embeddings_of(ids) if index is not None else self.embedding_store.of(ids)
        return np.einsum("ij,j->i", vectors, vector)

    def embed_photo(self, photo: str | Path) -> tuple[int | None, np.ndarray]:
        """(library id or None, embedding [dim]) of a photo; decoded only when not in the library."""
        from retrieval.imageio import ImageDecodeError, decode_image

        path = Path(photo).expanduser().resolve()
        record = self.store.image_by_path(str(path))
        if record is not None and record["status"] == "ok":
            return record["id"], self.embedding_store.of([record["id"]])[0]
        try:
            decoded = decode_image(path, target=self.encoder.image_size)
        except ImageDecodeError as e:
            raise ImageDecodeError(f"{photo}: {e}") from e
        return None, self.encoder.encode_images([decoded.image])[0]

    # --- facts -----------------------------------------------------------------------------

    def stats(self) -> dict:
        store = self.store
        photos = store.count_images("ok")
        formats = Counter(r[0] for r in store.db.execute("select format from images where status = 'ok'"))
        index = self.index
        on_disk = self.settings.index_path if self.settings.backend == "sqlite" else None
        index_bytes = on_disk.stat().st_size if index is not None and on_disk and on_disk.exists() else 0
        current = store.current_model(self.encoder_name)
        models = [
            {"id": r["id"], "encoder": r["encoder"], "bits": r["bits"], "created_at": r["created_at"]}
            for r in store.db["hash_models"].rows_where(select="id, encoder, bits, created_at", order_by="id")
        ]
        return {
            "photos": photos,
            "formats": dict(formats),
            "failed": store.failures(),
            "skipped_special": store.passed_over(),  # FIFOs, sockets, devices, folders named like photos
            "tags": store.count_tags(),
            "encoder": self.encoder_name,
            "demo_encoder": self.is_demo,
            "precision": self.precision,
            "backend": self.settings.backend,
            "embeddings_in": self.embedding_store.where,
            "hash_model": current["id"] if current else None,
            "indexed": index.ntotal if index is not None else 0,
            "index_bytes": index_bytes,
            "index_memory_bytes": index.nbytes() if index is not None else 0,
            "bytes_per_photo": index_bytes / photos if photos and index_bytes else 0.0,
            "database_bytes": self.settings.database_path.stat().st_size,
            "models": models,
        }

    def embeddings(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids [n], float32 vectors [n, dim]) of every photo, all in memory (small libraries, tests)."""
        batches = list(self.embedding_store.batches())
        if not batches:
            return np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
        return np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])
