"""Indexing photo folders: scan, skip what is unchanged, recognise moves, decode in parallel,
embed, hash, commit in batches, remove what is gone.

Crash safety: every batch (photos, embeddings, codes, tags) is one SQLite transaction, and the
FAISS index is checked against SQLite when opened, so a run killed at any moment resumes where
it stopped: committed photos are unchanged files on the next run, the rest is simply redone.
"""

from __future__ import annotations

import csv
import json
import multiprocessing
import os
import stat
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from retrieval.imageio import EXTENSIONS, DecodedImage, content_hash, decode_job, lower_priority
from retrieval.library import Library
from retrieval.store import NewImage
from retrieval.xmp import XmpError, read_keywords, sidecar_candidates

SMALL_RUN = 16  # photos to decode below which no worker processes are started (a watcher's batch)


class IngestError(RuntimeError):
    """The run cannot start (a path that does not exist, an unreadable tags file)."""


@dataclass
class IngestSummary:
    added: int = 0
    updated: int = 0
    moved: int = 0
    removed: int = 0
    failed: int = 0
    skipped: int = 0  # unchanged since the last run
    embedded: int = 0  # photos that went through the encoder
    elapsed: float = 0.0
    failures: list[dict] = field(default_factory=list)  # {"path", "reason"} of this run
    needs_model: bool = False  # photos were embedded but there is no hash model to code them
    tags_unmatched: list[str] = field(default_factory=list)  # tags-file paths that are no library photo
    passed_over: list[dict] = field(default_factory=list)  # {"path", "reason"}: named like photos, none
    sidecars_read: int = 0  # XMP sidecars (re)read because they are new or changed
    sidecar_problems: list[dict] = field(default_factory=list)  # {"path", "reason"}: sidecars left unread

    def to_dict(self) -> dict:
        return asdict(self)


def path_key(path: str) -> str:
    """The path as stored: file names that are not valid UTF-8 keep their bytes as \\x escapes."""
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:
        return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def special_kind(mode: int) -> str | None:
    """What a file that is no regular file is ("a named pipe (FIFO)", …), from its stat mode."""
    kinds = (
        (stat.S_ISFIFO, "a named pipe (FIFO)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISDIR, "a folder"),
    )
    return next((f"{what} named like a photo, not a photo file" for test, what in kinds if test(mode)), None)


@dataclass
class Scan:
    found: dict[str, tuple[str, int, float]]  # key -> (real path, size, mtime) of each photo file
    problems: dict[str, str]  # key -> why it cannot be read (recorded as failed photos)
    passed_over: dict[str, str]  # key -> why it is no photo though named like one (never opened)
    sidecars: dict[str, float] = field(default_factory=dict)  # real path -> mtime of each XMP sidecar


def scan(roots: list[Path]) -> Scan:
    """Photos under `roots`, found by name and stat alone: nothing is opened here, so a FIFO
    named like a photo cannot make the scan wait forever."""
    found: dict[str, tuple[str, int, float]] = {}
    problems: dict[str, str] = {}
    passed_over: dict[str, str] = {}
    sidecars: dict[str, float] = {}

    def consider(path: str) -> None:
        suffix = Path(path).suffix.lower()
        if suffix == ".xmp":
            try:
                st = os.stat(path)
                if stat.S_ISREG(st.st_mode):
                    sidecars[path] = st.st_mtime
            except OSError:
                pass  # an unreadable sidecar is as good as none
            return
        if suffix not in EXTENSIONS:
            return
        try:
            st = os.stat(path)  # follows links: a link to /dev/urandom is a character device
        except OSError as e:
            problems[path_key(path)] = "symbolic link loop" if e.errno == 40 else f"cannot read: {e.strerror}"
            return
        if stat.S_ISREG(st.st_mode):
            found[path_key(path)] = (path, st.st_size, st.st_mtime)
        else:
            passed_over[path_key(path)] = special_kind(st.st_mode) or "not a regular file"

    def walk_error(e: OSError) -> None:
        problems[path_key(e.filename)] = f"cannot read folder: {e.strerror}"

    for root in roots:
        if not root.is_dir():
            consider(str(root))
            for candidate in sidecar_candidates(root):  # a single photo: its sidecar too
                if candidate.exists():
                    consider(str(candidate))
            continue
        for folder, dirs, files in os.walk(root, onerror=walk_error, followlinks=False):
            dirs.sort()
            for name in dirs:  # looked into all the same: its photos are indexed
                if Path(name).suffix.lower() in EXTENSIONS:
                    passed_over[path_key(os.path.join(folder, name))] = special_kind(stat.S_IFDIR)
            for name in sorted(files):
                consider(os.path.join(folder, name))
    return Scan(found, problems, passed_over, sidecars)


def read_sidecar(path: str | Path) -> dict[str, list[str]]:
    """Tags file: CSV with columns path,tags (tags separated by ';' or ',') or JSON {path: [tags]}.

    Relative paths are relative to the tags file's folder.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise IngestError(f"cannot read tags file {path}: {e}") from e
    base = path.resolve().parent
    entries: dict[str, list[str]] = {}
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise IngestError(f"tags file {path} is not valid JSON: {e}") from e
        if not isinstance(data, dict):
            raise IngestError(f"tags file {path} must map paths to lists of tags")
        items = [(k, v if isinstance(v, list) else str(v).replace(";", ",").split(",")) for k, v in data.items()]
    else:
        rows = list(csv.DictReader(text.splitlines()))
        if rows and not {"path", "tags"} <= set(rows[0]):
            raise IngestError(f"tags file {path} needs a header line 'path,tags'")
        items = [(r["path"], (r["tags"] or "").replace(";", ",").split(",")) for r in rows]
    for name, tags in items:
        entries[str((base / name).resolve())] = [t.strip() for t in tags if str(t).strip()]
    return entries


def decoded_stream(
    jobs: list[tuple[str, str | None]], *, workers: int, target: int, max_pixels: int, window: int
) -> Iterator[tuple[str, tuple[DecodedImage | None, str | None, str | None]]]:
    """Decode (path, content hash or None) jobs in worker processes, in order, with at most
    `window` photos in flight.

    A worker that dies (a decoder crash, the OOM killer) breaks the whole pool. Then a fresh
    pool retries the photos that were in flight one at a time, so a photo that kills its worker
    again is recorded as failed and the run goes on.
    """
    if workers <= 0:
        for path, digest in jobs:
            yield path, decode_job(path, target, max_pixels, digest)
        return
    context = multiprocessing.get_context("spawn")  # fork would copy torch's threads into the workers

    def new_pool() -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=workers, mp_context=context, initializer=lower_priority, initargs=(os.getpid(),)
        )

    pool = new_pool()
    pending: deque = deque()
    try:
        for index in range(len(jobs) + window):
            if index < len(jobs):
                try:
                    path, digest = jobs[index]
                    future = pool.submit(decode_job, path, target, max_pixels, digest)
                except BrokenProcessPool:
                    future = None  # the pool broke already: retried below
                pending.append((jobs[index], future))
            if not pending or (len(pending) < window and index < len(jobs)):
                continue
            job, future = pending.popleft()
            try:
                result = future.result() if future is not None else None
            except BrokenProcessPool:
                result = None
            if result is not None:
                yield job[0], result
                continue
            retry = [job] + [j for j, _ in pending]
            pending.clear()
            pool.shutdown(cancel_futures=True)
            pool = new_pool()
            for path, digest in retry:
                try:
                    result = pool.submit(decode_job, path, target, max_pixels, digest).result()
                except BrokenProcessPool:
                    pool.shutdown(cancel_futures=True)
                    pool = new_pool()
                    result = (None, "the decoder process crashed on this file", digest)
                yield path, result
    finally:
        pool.shutdown(cancel_futures=True)


def index_paths(
    library: Library,
    paths: list[str | Path],
    *,
    tags_file: str | Path | None = None,
    batch_size: int = 64,
    workers: int | None = None,
    progress: bool = True,
    on_progress: Callable[[int, int, float], None] | None = None,
    embedder: Callable | None = None,
) -> IngestSummary:
    """Bring the library up to date with the photos under `paths`.

    progress: a tqdm bar on stderr; on_progress(done, total, photos per second): for the UI.
    embedder(jobs, target, max_pixels): decode and embed elsewhere (Ray, retrieval/ray_ingest.py):
    yields (path, (decoded without pixels or None, error, content hash), vector or None) for
    every (path, content hash or None) job, in any order. The plan (what is new, moved, gone)
    and every commit stay here, so the crash safety is the same.
    """
    start = time.perf_counter()
    roots = []
    for p in paths:
        root = Path(p).expanduser().resolve()
        if not root.exists():
            raise IngestError(f"no such file or folder: {p}")
        roots.append(root)
    sidecar = read_sidecar(tags_file) if tags_file else {}
    store, summary = library.store, IngestSummary()
    run_id = store.start_run([str(r) for r in roots])

    scanned = scan(roots)
    found, problems = scanned.found, scanned.problems
    summary.passed_over = [{"path": k, "reason": r} for k, r in scanned.passed_over.items()]
    with store.transaction():
        store.set_passed_over([str(r) for r in roots], scanned.passed_over)
    known = store.images_under(str(r) for r in roots)
    embedded = store.embedded_ids(library.encoder_name)  # a photo unchanged since another encoder is redone
    todo = [
        k
        for k, (_, size, mtime) in found.items()
        if k not in known
        or (known[k]["size"], known[k]["mtime"]) != (size, mtime)
        or (known[k]["status"] == "ok" and known[k]["id"] not in embedded)
    ]
    summary.skipped = len(found) - len(todo)
    missing = {k: rec for k, rec in known.items() if k not in found and k not in problems}

    # Moves: a new path whose content hash equals that of a vanished photo keeps its embedding.
    digests: dict[str, str] = {}  # new paths hashed here, so their decoders need not hash again
    if missing:
        by_hash = {rec["content_hash"]: rec for rec in missing.values() if rec["status"] == "ok"}
        for key in [k for k in todo if k not in known]:
            real, size, mtime = found[key]
            try:
                digest = digests[key] = content_hash(real, size)
            except OSError:
                continue
            rec = by_hash.pop(digest, None)
            if rec is not None:
                with store.transaction():
                    store.move_image(rec["id"], key, size, mtime)
                del missing[rec["path"]]
                todo.remove(key)
                summary.moved += 1
    if missing:
        gone = np.array([rec["id"] for rec in missing.values()])
        with library.changing_codes() as after_commit:
            store.remove_images(gone.tolist())
            after_commit(lambda: _mirror_removal(library, gone))
        summary.removed = len(gone)

    for key, reason in problems.items():  # unreadable entries found by the scan
        _record_failure(library, key, 0, 0.0, reason, summary)

    current = library.hash_model()
    summary.needs_model = current is None and bool(todo)
    if workers is None:  # starting decoder processes costs more than decoding a few photos here
        workers = 0 if len(todo) < SMALL_RUN else min(4, os.cpu_count() or 1)
    target = library.encoder.image_size if todo else 224
    jobs = [(found[k][0], digests.get(k)) for k in todo]
    max_pixels = int(library.settings.max_megapixels * 1e6)
    if embedder is not None:
        source = stream = embedder(jobs, target, max_pixels)
    else:
        source = decoded_stream(
            jobs,
            workers=workers,
            target=target,
            max_pixels=max_pixels,
            window=batch_size + 2 * workers,  # the next batch decodes while the encoder runs this one
        )
        stream = ((path, result, None) for path, result in source)
    key_of = {found[k][0]: k for k in todo}
    bar = tqdm(total=len(todo), unit="photo", disable=not progress or not todo, desc="indexing")
    batch: list[tuple[str, DecodedImage, str, np.ndarray | None]] = []
    done = batches = 0
    try:
        for real, (decoded, error, digest), vector in stream:
            key = key_of[real]
            _, size, mtime = found[key]
            if decoded is None:
                _record_failure(library, key, size, mtime, error, summary, digest)
            else:
                batch.append((key, decoded, digest, vector))
            if len(batch) >= min(batch_size, 8 << batches):  # 8, 16, 32, …: the encoder starts early
                _commit_batch(library, batch, found, known, sidecar, current, summary)
                batch, batches = [], batches + 1
            bar.update(1)
            bar.set_postfix_str(f"failed {summary.failed}")
            done += 1  # not bar.n: a disabled tqdm bar does not count
            if on_progress is not None:
                on_progress(done, len(todo), done / max(time.perf_counter() - start, 1e-9))
        _commit_batch(library, batch, found, known, sidecar, current, summary)
        summary.tags_unmatched = _apply_sidecar(library, sidecar)
        _read_xmp_sidecars(library, [str(r) for r in roots], scanned, summary)
        library.save_index()
        status = "done"
    except BaseException:
        status = "interrupted"
        raise
    finally:
        # Shut the decoders down here, not whenever the generator is collected: a Ctrl-C that
        # lands in a collector's finaliser is swallowed.
        for generator in (stream, source):
            if hasattr(generator, "close"):
                generator.close()
        bar.close()
        summary.elapsed = time.perf_counter() - start
        counts = {k: getattr(summary, k) for k in ("added", "updated", "moved", "removed", "failed", "skipped")}
        store.finish_run(run_id, status, counts)
    return summary


def _record_failure(library, key, size, mtime, reason, summary, digest=None) -> None:
    record: NewImage = {
        "path": key,
        "size": size,
        "mtime": mtime,
        "content_hash": digest,
        "width": None,
        "height": None,
        "taken_at": None,
        "format": None,
        "status": "failed",
        "error": reason,
        "phash": None,
    }
    with library.changing_codes() as after_commit:
        image_id = library.store.upsert_image(record)
        library.store.remove_images_data([image_id])
        after_commit(lambda: _mirror_removal(library, np.array([image_id])))
    summary.failed += 1
    summary.failures.append({"path": key, "reason": reason})


def _mirror_removal(library, ids: np.ndarray) -> None:
    """After SQLite forgot photos: their vectors and codes out of the backend too."""
    library.embedding_store.forget(ids)
    if library.index is not None:
        library.index.remove(ids)


def _commit_batch(library, batch, found, known, sidecar, current, summary) -> None:
    if not batch:
        return
    if all(v is not None for *_, v in batch):  # embedded where it was decoded
        vectors = np.stack([v for *_, v in batch])
    else:
        vectors = library.encoder.encode_images([d.image for _, d, _, _ in batch])  # [b, dim]
    codes = current[1].encode(vectors, "image") if current else None
    store, ids = library.store, []
    with library.changing_codes() as after_commit:
        for key, decoded, digest, _ in batch:
            _, size, mtime = found[key]
            image_id = store.upsert_image(
                {
                    "path": key,
                    "size": size,
                    "mtime": mtime,
                    "content_hash": digest,
                    "width": decoded.width,
                    "height": decoded.height,
                    "taken_at": decoded.taken_at,
                    "format": decoded.format,
                    "status": "ok",
                    "error": None,
                    "phash": decoded.phash,
                }
            )
            if decoded.xmp_keywords:
                store.set_tags(image_id, decoded.xmp_keywords, "xmp")
            if decoded.iptc_keywords:
                store.set_tags(image_id, decoded.iptc_keywords, "iptc")
            ids.append(image_id)
            if key in known:
                summary.updated += 1
            else:
                summary.added += 1
        library.embedding_store.put(np.array(ids), vectors)  # Milvus: written before this commit
        if codes is not None:
            store.put_codes(current[0], ids, codes)
            after_commit(lambda: library.index.add(np.array(ids), codes))
    summary.embedded += len(batch)


def _read_xmp_sidecars(library, roots: list[str], scanned: Scan, summary: IngestSummary) -> None:
    """Tags from the XMP sidecars next to the photos (`xmp_sidecar` tags, from both namings when
    both exist), reread only where a sidecar appeared, changed or went away since the last run.
    A sidecar that cannot be parsed is reported and its photo keeps the tags it had."""
    store = library.store
    seen = store.xmp_sidecars()
    records = store.images_under(roots)
    changes = []
    for key, (real, _, _) in scanned.found.items():
        record = records.get(key)
        if record is None or record["status"] != "ok":
            continue
        state = {str(c): scanned.sidecars[str(c)] for c in sidecar_candidates(real) if str(c) in scanned.sidecars}
        if state == seen.get(record["id"], {}):
            continue
        try:
            tags = [t for sidecar in state for t in read_keywords(sidecar)]
        except XmpError as e:
            summary.sidecar_problems.append({"path": real, "reason": str(e)})
            continue
        changes.append((record["id"], state, tags))
    with store.transaction():
        for image_id, state, tags in changes:
            store.set_tags(image_id, tags, "xmp_sidecar")
            store.set_xmp_sidecars(image_id, state)
    summary.sidecars_read = sum(len(state) for _, state, _ in changes)


def _apply_sidecar(library, sidecar: dict[str, list[str]]) -> list[str]:
    """Store the tags file's tags on its photos; returns the paths it names that are no photo of
    the library (a misspelt name, or paths relative to somewhere else than the tags file)."""
    unmatched = []
    with library.store.transaction():
        for path, tags in sidecar.items():
            rec = library.store.image_by_path(path_key(path))
            if rec is not None:
                library.store.set_tags(rec["id"], tags, "sidecar")
            else:
                unmatched.append(path)
    return unmatched
