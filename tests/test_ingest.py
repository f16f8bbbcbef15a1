import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.synthetic import synthetic_photo, write_photo
from models.clip import FakeEncoder
from models.sparsehash import SparseHash, SparseHashConfig
from retrieval.config import Settings
from retrieval.imageio import content_hash, decode_image
from retrieval.ingest import IngestError, index_paths
from retrieval.library import Library

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_data"


def open_library(home: Path) -> Library:
    return Library(Settings.resolve(home=home, encoder="fake"), encoder=FakeEncoder())


def random_model(seed: int = 0) -> SparseHash:
    import torch

    torch.manual_seed(seed)
    model = SparseHash(SparseHashConfig(image_dim=FakeEncoder.dim, text_dim=FakeEncoder.dim, bits=32, tau_init=0.0))
    return model.eval()


def test_index_sample_data_with_tags(tmp_path):
    library = open_library(tmp_path / "home")
    summary = index_paths(library, [SAMPLE], tags_file=SAMPLE / "tags.csv", workers=0, progress=False)
    assert summary.added == 17 and summary.failed == 0
    stats = library.stats()
    assert stats["photos"] == 17 and stats["failed"] == []
    cat = library.store.image_by_path(str(SAMPLE / "chelsea.jpg"))
    assert library.store.tags_of(cat["id"]) == ["animal", "cat", "pet"]
    assert summary.needs_model  # no hash model yet: the CLI says how to get one
    assert summary.tags_unmatched == []


def test_photos_are_embedded_again_for_another_encoder(tmp_path):
    """Unchanged files are skipped only when they have an embedding from the library's encoder:
    switching encoders (or a renamed embedding space) embeds them again instead of leaving the
    library without vectors."""
    from tests.conftest import ColourEncoder

    first = open_library(tmp_path / "home")
    assert index_paths(first, [SAMPLE], workers=0, progress=False).embedded == 17
    assert index_paths(first, [SAMPLE], workers=0, progress=False).embedded == 0  # nothing changed
    other = Library(Settings.resolve(home=tmp_path / "home", encoder="fake"), encoder=ColourEncoder())
    summary = index_paths(other, [SAMPLE], workers=0, progress=False)
    assert summary.embedded == 17 and len(other.embeddings()[0]) == 17
    assert index_paths(other, [SAMPLE], workers=0, progress=False).embedded == 0


def test_tags_file_paths_that_are_no_photo_are_reported(tmp_path):
    from click.testing import CliRunner

    from retrieval.cli import main

    tags = tmp_path / "tags.csv"  # relative paths from the wrong folder: none names a photo
    tags.write_text("path,tags\nchelsea.jpg,cat\nbrick.jpg,brick\n")
    home = ["--home", str(tmp_path / "home"), "--encoder", "fake"]
    result = CliRunner().invoke(main, [*home, "index", str(SAMPLE), "--workers", "0", "--tags", str(tags), "--json"])
    assert result.exit_code == 0
    summary = json.loads(result.stdout)
    assert sorted(summary["tags_unmatched"]) == [str(tmp_path / "brick.jpg"), str(tmp_path / "chelsea.jpg")]
    assert "2 of its paths are no photo in the library" in result.stderr


def test_rerun_renames_changes_and_deletions(tmp_path):
    photos = tmp_path / "photos"
    shutil.copytree(SAMPLE, photos)
    library = open_library(tmp_path / "home")
    index_paths(library, [photos], workers=0, progress=False)
    library.install_model(random_model())

    again = index_paths(library, [photos], workers=0, progress=False)
    assert (again.skipped, again.embedded, again.added) == (17, 0, 0)

    (photos / "sub").mkdir()
    for name in ("coffee.jpg", "rocket.jpg", "horse.png"):
        (photos / name).rename(photos / "sub" / f"renamed_{name}")
    (photos / "brick.jpg").unlink()
    synthetic_photo(5, (300, 200)).save(photos / "chelsea.jpg")  # changed content
    synthetic_photo(6, (320, 240)).save(photos / "new.jpg")  # hashed by the move check, not a move
    summary = index_paths(library, [photos], workers=0, progress=False)
    assert (summary.moved, summary.removed, summary.updated, summary.added, summary.embedded) == (3, 1, 1, 1, 2)
    assert library.store.image_by_path(str(photos / "new.jpg"))["content_hash"] == content_hash(photos / "new.jpg")
    assert library.store.image_by_path(str(photos / "sub" / "renamed_coffee.jpg")) is not None
    assert library.store.image_by_path(str(photos / "coffee.jpg")) is None
    ids, _ = library.store.codes(library.hash_model()[0])
    assert sorted(library.index.ids()) == sorted(ids) and len(ids) == 17


def test_missing_path_is_one_clear_error(tmp_path):
    with pytest.raises(IngestError, match="no such file or folder"):
        index_paths(open_library(tmp_path), [tmp_path / "nope"], workers=0, progress=False)


def make_bad_folder(folder: Path) -> dict[str, str]:
    """Good and bad files side by side; returns {bad file name: expected words in its reason}."""
    folder.mkdir()
    good = synthetic_photo(1, (320, 240))
    good.save(folder / "good.jpg")
    good.save(folder / "good.webp")
    good.save(folder / "good.tiff")
    good.save(folder / "good.bmp")
    (folder / "empty.jpg").write_bytes(b"")
    data = (folder / "good.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    good.save(folder / "full.png")
    png = (folder / "full.png").read_bytes()
    (folder / "truncated.png").write_bytes(png[: len(png) // 2])
    (folder / "full.png").unlink()
    (folder / "notes.jpg").write_text("this is not a photo")
    Image.new("1", (30000, 30000)).save(folder / "huge.png")
    good.convert("CMYK").save(folder / "cmyk.jpg")
    Image.fromarray((np.arange(240 * 320).reshape(240, 320) * 7 % 65535).astype(np.uint16)).save(folder / "deep16.png")
    palette = Image.new("P", (64, 64), 0)
    palette.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    palette.paste(1, (0, 0, 32, 64))
    palette.save(folder / "palette.png", transparency=0)
    frames = [Image.new("RGB", (64, 64), c) for c in ("red", "green", "blue")]
    frames[0].save(folder / "animated.gif", save_all=True, append_images=frames[1:])
    # stored sideways (top half red, bottom blue once turned) with EXIF orientation 6 = rotate 90° clockwise
    upright = Image.new("RGB", (200, 300), "blue")
    upright.paste((255, 0, 0), (0, 0, 200, 150))
    write_photo(folder / "rotated.jpg", upright.transpose(Image.Transpose.ROTATE_90), orientation=6)
    locked = folder / "locked.jpg"
    good.save(locked)
    locked.chmod(0)
    os.symlink(folder / "loop.jpg", folder / "loop.jpg")
    weird = os.fsencode(str(folder)) + b"/caf\xe9.jpg"  # Latin-1 byte: not UTF-8
    with open(weird, "wb") as f:
        f.write(data)
    bad = {
        "empty.jpg": "not an image",
        "truncated.jpg": "damaged",
        "truncated.png": "damaged",
        "notes.jpg": "not an image",
        "huge.png": "megapixels",
        "loop.jpg": "link loop",
    }
    if os.geteuid() != 0:  # root reads everything
        bad["locked.jpg"] = "permission denied"
    return bad


def test_bad_files_are_recorded_and_never_stop_the_run(tmp_path):
    folder = tmp_path / "mixed"
    bad = make_bad_folder(folder)
    library = open_library(tmp_path / "home")
    summary = index_paths(library, [folder], workers=2, progress=False)
    failed = {Path(f["path"]).name: f["reason"] for f in library.stats()["failed"]}
    assert set(failed) == set(bad)
    for name, words in bad.items():
        assert words in failed[name], (name, failed[name])
    good = {
        "good.jpg",
        "good.webp",
        "good.tiff",
        "good.bmp",
        "cmyk.jpg",
        "deep16.png",
        "palette.png",
        "animated.gif",
        "rotated.jpg",
        "locked.jpg",
        "caf\\xe9.jpg",
    } - set(bad)
    indexed = {Path(r["path"]).name for r in library.store.db["images"].rows_where("status = 'ok'")}
    assert indexed == good
    assert summary.failed == len(bad)
    rotated = library.store.image_by_path(str(folder.resolve() / "rotated.jpg"))
    assert (rotated["width"], rotated["height"]) == (200, 300)  # upright: portrait
    pixels = decode_image(folder / "rotated.jpg").image
    assert pixels.getpixel((pixels.width // 2, 5))[0] > 200  # red on top
    assert pixels.getpixel((pixels.width // 2, pixels.height - 5))[2] > 200  # blue at the bottom


KILLER = """
import sys
from retrieval.cli import run
if __name__ == "__main__":  # decoding workers are spawned and re-import this file
    sys.argv = ["hashlens", "--home", sys.argv[1], "--encoder", "fake", "index", sys.argv[2], "--workers", "1"]
    run()
"""


def children_of(pid: int) -> list[int]:
    """Processes whose parent is `pid` (read from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == str(pid):
            found.append(int(stat.parent.name))
    return found


def running(pid: int) -> bool:
    """True while `pid` runs (a zombie waiting for init to reap it has stopped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_until(database: Path, proc: subprocess.Popen, *, runs: int, photos: int, timeout: float = 60.0) -> None:
    """Poll the library until `runs` index runs have started and `photos` photos are committed."""
    import sqlite3

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with sqlite3.connect(database) as conn:
                started = conn.execute("select count(*) from index_runs").fetchone()[0]
                committed = conn.execute("select count(*) from images").fetchone()[0]
            if started >= runs and committed >= photos:
                return
        except sqlite3.OperationalError:
            pass
        time.sleep(0.01)


def test_sigkill_at_random_moments_loses_nothing(tmp_path):
    total, batch = 600, 64  # the CLI commits 64 photos at a time
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(total):
        synthetic_photo(i, (640, 480)).save(photos / f"p{i:03d}.jpg", quality=85)
    home = tmp_path / "home"
    library = open_library(home)
    library.install_model(random_model())
    del library
    script = tmp_path / "run_index.py"
    script.write_text(KILLER)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    rng = np.random.default_rng(0)
    committed = 0
    orphans: set[int] = set()
    for run in range(1, 6):
        proc = subprocess.Popen(
            [sys.executable, str(script), str(home), str(photos)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        # A random moment of progress that leaves at least two batches to do, so the kill lands
        # mid-run: while scanning (target = what is already committed), decoding or committing.
        target = int(rng.integers(committed, max(committed + 1, total - 2 * batch)))
        wait_until(home / "library.db", proc, runs=run, photos=target)
        time.sleep(rng.uniform(0.0, 0.1))
        workers = children_of(proc.pid)
        proc.kill()
        proc.wait()
        orphans.update(workers)
        committed = open_library(home).store.count_images("ok")
    done = subprocess.run(
        [sys.executable, str(script), str(home), str(photos)], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert orphans, "no decoder worker was running at any kill"
    deadline = time.monotonic() + 10
    while any(running(pid) for pid in orphans) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in orphans if running(pid)], "decoder workers outlived the killed run"
    library = open_library(home)
    assert library.store.integrity_ok()
    rows = list(library.store.db["images"].rows)
    assert len(rows) == total and len({r["path"] for r in rows}) == total
    assert all(r["status"] == "ok" for r in rows)
    ids, _ = library.store.codes(library.hash_model()[0])
    assert sorted(library.index.ids().tolist()) == sorted(ids.tolist()) == sorted(r["id"] for r in rows)
    runs = [r["status"] for r in library.store.db["index_runs"].rows]
    assert runs.count("done") >= 1
    assert runs.count("running") == 5, runs  # every kill landed mid-run (a killed run stays "running")
    assert runs[-1] == "done"


def test_a_decoder_worker_killed_mid_run_loses_nothing(tmp_path):
    """A dead worker breaks the process pool; the run retries what was in flight and goes on."""
    import signal

    from bench.synthetic import make_photo_folder

    folder = tmp_path / "photos"
    make_photo_folder(folder, 40, size=(160, 120))
    library = open_library(tmp_path)
    killed = []

    def kill_a_worker(done, total, rate):
        workers = [pid for pid in children_of(os.getpid()) if pid not in killed]
        if done >= 5 and workers and not killed:
            os.kill(workers[-1], signal.SIGKILL)
            killed.append(workers[-1])

    summary = index_paths(library, [folder], workers=2, progress=False, on_progress=kill_a_worker)
    assert killed, "no worker was running to kill"
    assert summary.added == 40 and summary.failed == 0
    assert library.store.count_images("ok") == 40


def test_special_files_named_like_photos_are_passed_over_unopened_and_reported(tmp_path):
    import socket

    from click.testing import CliRunner

    from retrieval.cli import main

    folder = tmp_path / "odd"
    folder.mkdir()
    synthetic_photo(1, (320, 240)).save(folder / "good.jpg")
    os.mkfifo(folder / "pipe.jpg")  # opening it would wait forever for a writer
    os.symlink("/dev/urandom", folder / "noise.jpg")  # reading it would never end
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(folder / "sock.png"))
    album = folder / "album.jpg"  # a folder named like a photo: its photos count, it does not
    album.mkdir()
    synthetic_photo(2, (320, 240)).save(album / "inside.jpg")
    library = open_library(tmp_path / "home")
    try:
        summary = index_paths(library, [folder], workers=0, progress=False)
    finally:
        server.close()
    assert summary.added == 2 and summary.failed == 0
    reasons = {Path(e["path"]).name: e["reason"] for e in summary.passed_over}
    assert set(reasons) == {"pipe.jpg", "noise.jpg", "sock.png", "album.jpg"}
    assert "named pipe" in reasons["pipe.jpg"] and "character device" in reasons["noise.jpg"]
    assert "socket" in reasons["sock.png"] and "folder" in reasons["album.jpg"]
    stats = json.loads(
        CliRunner().invoke(main, ["--home", str(tmp_path / "home"), "stats", "--json"], catch_exceptions=False).stdout
    )
    assert {Path(e["path"]).name for e in stats["skipped_special"]} == set(reasons)
    (folder / "pipe.jpg").unlink()  # gone on the next run, gone from the report
    index_paths(library, [folder], workers=0, progress=False)
    assert {Path(e["path"]).name for e in library.stats()["skipped_special"]} == {"noise.jpg", "sock.png", "album.jpg"}
