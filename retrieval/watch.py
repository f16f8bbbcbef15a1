"""A watched folder: the library kept current as photos appear, change, move and disappear.

watchdog reports file events; they are gathered until the folders have been quiet for a moment
(a copy in progress sends many), then the folders they touched are indexed by the same
`index_paths` as `hashlens index`, so a watcher has its crash safety and bad-file handling: a
watcher killed at any moment loses nothing, and the next one catches up with what changed while
none ran. The watcher announces itself in the library folder (`watcher.json`, with a heartbeat)
so the Library page can say whether one is running, and so that a second one is refused.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from watchdog.events import (
    EVENT_TYPE_CLOSED,
    EVENT_TYPE_CREATED,
    EVENT_TYPE_DELETED,
    EVENT_TYPE_MODIFIED,
    EVENT_TYPE_MOVED,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

from retrieval.imageio import EXTENSIONS
from retrieval.ingest import IngestError, IngestSummary, index_paths
from retrieval.library import Library

DEBOUNCE_SECONDS = 2.0  # quiet time after the last event before a batch is indexed
MAX_WAIT_SECONDS = 30.0  # a batch is indexed at the latest this long after its first event
HEARTBEAT_SECONDS = 5.0  # how often watcher.json is refreshed; 3 missed beats: not running
STATUS_FILE = "watcher.json"
# Reads (opened, closed without writing) are left out: the watcher's own decoder reads photos.
CHANGES = {EVENT_TYPE_CREATED, EVENT_TYPE_MODIFIED, EVENT_TYPE_DELETED, EVENT_TYPE_MOVED, EVENT_TYPE_CLOSED}
WATCHED_SUFFIXES = EXTENSIONS | {".xmp"}


class WatchError(RuntimeError):
    """The watcher cannot start (a folder that does not exist, another watcher running)."""


def watcher_status(home: str | Path) -> dict | None:
    """{pid, paths, started_at, heartbeat} of the watcher running on the library at `home`, or
    None when none is (no status file, or its process is gone, or its heartbeat stopped)."""
    path = Path(home) / STATUS_FILE
    try:
        status = json.loads(path.read_text(encoding="utf-8"))
        os.kill(int(status["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if time.time() - float(status.get("heartbeat", 0)) > 3 * HEARTBEAT_SECONDS:
        return None
    return status


class _Changes(FileSystemEventHandler):
    """Folders touched by events, gathered for the next batch (watchdog calls from its thread)."""

    def __init__(self, roots: list[Path]) -> None:
        self.roots = roots
        self.lock = threading.Lock()
        self.folders: set[Path] = set()
        self.events = 0
        self.first = self.last = 0.0

    def _touched(self, path: str, is_directory: bool) -> Path | None:
        p = Path(os.fsdecode(path))
        if not is_directory and p.suffix.lower() not in WATCHED_SUFFIXES:
            return None  # the library's own database, editors' temporary files, ...
        return p if is_directory else p.parent

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type not in CHANGES:
            return
        if event.is_directory and event.event_type in (EVENT_TYPE_MODIFIED, EVENT_TYPE_CLOSED):
            return  # a folder's own mtime: its files' events say what changed
        paths = [event.src_path] + ([event.dest_path] if event.event_type == EVENT_TYPE_MOVED else [])
        touched = [t for t in (self._touched(p, event.is_directory) for p in paths) if t is not None]
        if not touched:
            return
        with self.lock:
            now = time.monotonic()
            self.first = self.first or now
            self.last = now
            self.events += 1
            self.folders.update(touched)

    def take(self, debounce: float) -> tuple[list[Path], int] | None:
        """The folders of a batch that is ready (quiet for `debounce`, or waiting too long)."""
        with self.lock:
            now = time.monotonic()
            if not self.folders or (now - self.last < debounce and now - self.first < MAX_WAIT_SECONDS):
                return None
            folders, events = self.folders, self.events
            self.folders, self.events, self.first = set(), 0, 0.0
        return self._roots_of(folders), events

    def put_back(self, folders: list[Path]) -> None:
        with self.lock:
            self.folders.update(folders)
            self.first = self.first or time.monotonic()
            self.last = time.monotonic()

    def _roots_of(self, folders: set[Path]) -> list[Path]:
        """The smallest set of existing folders, inside the watched roots, that covers `folders`
        (a deleted folder is covered by its nearest existing parent)."""
        covered = set()
        for folder in folders:
            root = next((r for r in self.roots if folder == r or r in folder.parents), None)
            if root is None:
                continue
            while folder != root and not folder.is_dir():
                folder = folder.parent
            covered.add(folder)
        return sorted(f for f in covered if not any(p in covered for p in f.parents))


@dataclass
class Batch:
    folders: list[Path]
    events: int
    summary: IngestSummary | None  # None when the batch failed (`error` says why)
    error: str | None = None

    def line(self) -> str:
        where = ", ".join(str(f) for f in self.folders[:3]) + (" …" if len(self.folders) > 3 else "")
        if self.summary is None:
            return f"watch: {self.events} changes in {where}: not indexed ({self.error}); retrying"
        s = self.summary
        return (
            f"watch: {self.events} changes in {where}: added {s.added}, updated {s.updated}, moved {s.moved}, "
            f"removed {s.removed}, failed {s.failed}, sidecars {s.sidecars_read} in {s.elapsed:.1f} s"
        )


def watch(
    library: Library,
    paths: list[str | Path],
    *,
    tags_file: str | Path | None = None,
    workers: int | None = None,
    debounce: float = DEBOUNCE_SECONDS,
    on_batch: Callable[[Batch], None] = lambda batch: None,
    stop: threading.Event | None = None,
) -> None:
    """Keep `library` current with the photos under `paths` until `stop` is set (or Ctrl-C).

    The first batch is a full `index` of `paths`: it catches up with whatever changed while no
    watcher ran (or what a killed one left undone).
    """
    roots = []
    for p in paths:
        root = Path(p).expanduser().resolve()
        if not root.is_dir():
            raise WatchError(f"not a folder: {p} (hashlens watch watches folders)")
        roots.append(root)
    running = watcher_status(library.settings.home)
    if running is not None and running["pid"] != os.getpid():
        raise WatchError(f"a watcher (process {running['pid']}) already keeps this library current")
    stop = stop or threading.Event()
    changes = _Changes(roots)
    observer = Observer()
    for root in roots:
        observer.schedule(changes, str(root), recursive=True)
    observer.start()  # before the catch-up run, so nothing that changes during it is missed
    status_path = library.settings.home / STATUS_FILE
    status = {"pid": os.getpid(), "paths": [str(r) for r in roots], "started_at": time.time()}

    def beat() -> None:
        status["heartbeat"] = time.time()
        temporary = status_path.with_suffix(".tmp")
        temporary.write_text(json.dumps(status), encoding="utf-8")
        os.replace(temporary, status_path)

    def index(folders: list[Path], events: int) -> None:
        try:
            summary = index_paths(library, folders, tags_file=tags_file, workers=workers, progress=False)
            on_batch(Batch(folders, events, summary))
        except (IngestError, OSError, ValueError, RuntimeError) as e:  # e.g. the database busy: try again
            changes.put_back(folders)
            on_batch(Batch(folders, events, None, str(e)))

    try:
        beat()
        index(roots, 0)
        last_beat = time.monotonic()
        while not stop.wait(0.2):
            ready = changes.take(debounce)
            if ready is not None:
                index(*ready)
            if time.monotonic() - last_beat >= HEARTBEAT_SECONDS:
                beat()
                last_beat = time.monotonic()
            if not observer.is_alive():
                raise WatchError("the file watcher stopped (the folder was removed or unmounted?)")
    finally:
        observer.stop()
        observer.join(timeout=5)
        current = watcher_status(library.settings.home)
        if current is None or current["pid"] == os.getpid():
            status_path.unlink(missing_ok=True)
