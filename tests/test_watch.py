"""hashlens watch: while it runs, the library becomes what `hashlens index` would make of the
folder; killed and restarted, nothing is lost or counted twice; Ctrl-C stops it cleanly."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bench.synthetic import synthetic_photo
from retrieval.ingest import index_paths
from retrieval.watch import STATUS_FILE, watcher_status
from retrieval.xmp import write_keywords
from tests.test_ingest import REPO, open_library, random_model

FIELDS = ("status", "content", "tags", "embedding", "code")


def library_state(home: Path) -> dict:
    """Everything `index` decides, by path: status, content, tags by source, embedding, code;
    read in one transaction, so a watcher committing meanwhile cannot tear the picture."""
    library = open_library(home)
    store = library.store
    store.db.execute("begin")
    try:
        model_id = library.hash_model()[0]
        embeddings = {r["image_id"]: r["vector"] for r in store.db["embeddings"].rows}
        codes = {r["image_id"]: r["code"] for r in store.db["codes"].rows_where("model_id = ?", [model_id])}
        state = {}
        for r in store.db["images"].rows:
            sources = store.db.execute("select distinct source from image_tags where image_id = ?", [r["id"]])
            tags = [(s, store.tags_of(r["id"], source=s)) for (s,) in sorted(sources.fetchall())]
            state[r["path"]] = (r["status"], r["content_hash"], tags, embeddings.get(r["id"]), codes.get(r["id"]))
        index_ids = sorted(library.index.ids().tolist())
    finally:
        store.db.execute("rollback")
    assert index_ids == sorted(codes), "the search index and the stored codes disagree"
    return state


def same_field(field: str, a, b) -> bool:
    if field == "embedding" and a is not None and b is not None:
        # Equal up to float rounding: a matrix product's last bit depends on the batch it was in.
        return np.allclose(np.frombuffer(a, np.float16), np.frombuffer(b, np.float16), atol=2e-3)
    return a == b


def same(state: dict, wanted: dict) -> bool:
    return state.keys() == wanted.keys() and all(
        same_field(f, a, b) for p in wanted for f, a, b in zip(FIELDS, state[p], wanted[p])
    )


def reference_state(folder: Path, home: Path) -> dict:
    """What a plain `hashlens index` of `folder` makes, in a fresh library with the same model."""
    shutil.rmtree(home, ignore_errors=True)
    library = open_library(home)
    library.install_model(random_model())
    index_paths(library, [folder], workers=0, progress=False)
    return library_state(home)


def wait_for_state(home: Path, wanted: dict, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    state = None
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the watcher exited"
        state = library_state(home)
        if same(state, wanted):
            return
        time.sleep(0.2)
    missing = sorted(set(wanted) ^ set(state or {}))
    differ = {
        p: [field for field, a, b in zip(FIELDS, state[p], wanted[p]) if not same_field(field, a, b)]
        for p in wanted
        if p in (state or {}) and not same({p: state[p]}, {p: wanted[p]})
    }
    raise AssertionError(f"library never matched `index`: paths {missing}, differing {differ}")


def start_watcher(home: Path, folder: Path, log: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    command = [sys.executable, "-m", "retrieval.cli", "--home", str(home), "--encoder", "fake"]
    command += ["watch", str(folder), "--debounce", "0.3"]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=log.open("a"))
    deadline = time.monotonic() + 30
    while watcher_status(home) is None or watcher_status(home)["pid"] != proc.pid:
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)
    return proc


def photo(folder: Path, name: str, seed: int) -> Path:
    path = folder / name
    synthetic_photo(seed, (96, 72)).save(path, quality=90)
    return path


def test_watch_keeps_the_library_equal_to_what_index_makes(tmp_path):
    folder, home, log = tmp_path / "photos", tmp_path / "home", tmp_path / "watch.log"
    folder.mkdir()
    for i in range(6):
        photo(folder, f"p{i}.jpg", i)
    library = open_library(home)
    library.install_model(random_model())  # new photos get codes as they come
    del library
    proc = start_watcher(home, folder, log)
    try:
        wait_for_state(home, reference_state(folder, tmp_path / "ref"), proc)  # the catch-up run

        photo(folder, "new.jpg", 10)  # appears
        staged = photo(tmp_path, "staged.jpg", 11)
        shutil.move(staged, folder / "copied.jpg")  # moved in from elsewhere
        photo(folder, "p0.jpg", 12)  # changes
        os.rename(folder / "p1.jpg", folder / "renamed.jpg")  # renamed
        (folder / "p2.jpg").unlink()  # disappears
        (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff not a photo")  # recorded as failed
        write_keywords(folder / "p3.jpg.xmp", ["garden"])  # a keyword from another tool
        album = tmp_path / "album"
        album.mkdir()
        photo(album, "a.jpg", 13)
        shutil.move(album, folder / "album")  # a whole folder moved in: one event for the folder
        wait_for_state(home, reference_state(folder, tmp_path / "ref"), proc)
        assert watcher_status(home)["paths"] == [str(folder)]
    finally:
        proc.kill()
        proc.wait()

    # Killed: what happens meanwhile is caught up by the next watcher, nothing twice.
    photo(folder, "while_down.jpg", 20)
    (folder / "renamed.jpg").unlink()
    proc = start_watcher(home, folder, log)
    try:
        for i in range(40):  # a burst, the watcher killed while it indexes it
            photo(folder, f"burst{i:02d}.jpg", 100 + i)
        time.sleep(0.6)
        proc.kill()
        proc.wait()
        proc = start_watcher(home, folder, log)
        wanted = reference_state(folder, tmp_path / "ref")
        wait_for_state(home, wanted, proc)
        ok = [p for p, s in wanted.items() if s[0] == "ok"]
        assert len(ok) == len(list(folder.rglob("*.jpg"))) - 1  # every photo once; broken.jpg failed

        proc.send_signal(signal.SIGINT)  # Ctrl-C
        assert proc.wait(timeout=20) == 0
    finally:
        proc.kill()
        proc.wait()
    assert "watch: stopped" in log.read_text()
    assert not (home / STATUS_FILE).exists() and watcher_status(home) is None
    lines = [line for line in log.read_text().splitlines() if line.startswith("watch: ")]
    assert any("added" in line and "removed" in line for line in lines)  # a line per batch


def test_a_second_watcher_on_the_same_library_is_refused(tmp_path):
    folder, home, log = tmp_path / "photos", tmp_path / "home", tmp_path / "watch.log"
    folder.mkdir()
    photo(folder, "p.jpg", 0)
    first = start_watcher(home, folder, log)
    try:
        env = dict(os.environ, PYTHONPATH=str(REPO))
        second = subprocess.run(
            [sys.executable, "-m", "retrieval.cli", "--home", str(home), "--encoder", "fake", "watch", str(folder)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode != 0
        assert f"a watcher (process {first.pid}) already keeps this library current" in second.stderr
        first.terminate()  # a service manager's stop: as clean as Ctrl-C
        assert first.wait(timeout=20) == 0
    finally:
        first.kill()
        first.wait()
    assert watcher_status(home) is None


def test_a_stale_status_file_means_no_watcher(tmp_path):
    (tmp_path / STATUS_FILE).write_text('{"pid": 999999999, "paths": [], "started_at": 0, "heartbeat": 0}')
    assert watcher_status(tmp_path) is None
    now = time.time()
    (tmp_path / STATUS_FILE).write_text(f'{{"pid": {os.getpid()}, "paths": ["/x"], "started_at": 0, "heartbeat": 0}}')
    assert watcher_status(tmp_path) is None  # alive, but its heartbeat stopped long ago
    (tmp_path / STATUS_FILE).write_text(
        f'{{"pid": {os.getpid()}, "paths": ["/x"], "started_at": 0, "heartbeat": {now}}}'
    )
    assert watcher_status(tmp_path)["paths"] == ["/x"]


def test_a_library_open_elsewhere_sees_what_another_process_indexed(tmp_path):
    """The UI keeps its library open; a watcher's new photos must reach its searches."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(3):
        photo(folder, f"p{i}.jpg", i)
    ui = open_library(tmp_path / "home")
    ui.install_model(random_model())
    index_paths(ui, [folder], workers=0, progress=False)
    assert ui.index.ntotal == 3
    photo(folder, "p0.jpg", 50)  # changed: same id, new code
    photo(folder, "p3.jpg", 3)
    watcher = open_library(tmp_path / "home")  # its own connection, as another process has
    index_paths(watcher, [folder], workers=0, progress=False)
    ids, codes = watcher.store.codes(watcher.hash_model()[0])
    assert ui.index.ntotal == 4
    assert np.array_equal(ui.index.codes()[np.argsort(ui.index.ids())], codes[np.argsort(ids)])
