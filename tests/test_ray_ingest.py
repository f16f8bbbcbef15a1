"""hashlens index --ray: the same library as a plain index, bad files recorded, a rerun that
embeds nothing, and a driver killed midway that a rerun completes."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bench.synthetic import synthetic_photo
from retrieval.config import Settings
from retrieval.ingest import index_paths
from retrieval.library import Library

pytest.importorskip("ray", reason="the scale extra (make test installs it)")

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_data"


def hashlens(home: Path, *args: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONWARNINGS="ignore")
    command = [sys.executable, "-m", "retrieval.cli", "--home", str(home), "--encoder", "fake", *args]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def state(home: Path) -> dict:
    """path -> (status, content hash, embedding) of every photo, and nothing twice."""
    library = Library(Settings.resolve(home=home))
    rows = list(library.store.db["images"].rows)
    assert len({r["path"] for r in rows}) == len(rows)
    vectors = {r["image_id"]: np.frombuffer(r["vector"], np.float16) for r in library.store.db["embeddings"].rows}
    return {r["path"]: (r["status"], r["content_hash"], vectors.get(r["id"])) for r in rows}


def same(a: dict, b: dict) -> bool:
    def equal(x, y):
        return (x is None and y is None) or (x is not None and y is not None and np.allclose(x, y, atol=2e-3))

    return a.keys() == b.keys() and all(a[p][:2] == b[p][:2] and equal(a[p][2], b[p][2]) for p in a)


def reference(folder: Path, home: Path) -> dict:
    index_paths(Library(Settings.resolve(home=home, encoder="fake")), [folder], workers=0, progress=False)
    return state(home)


def test_ray_index_makes_the_library_a_plain_index_makes(tmp_path):
    folder = tmp_path / "photos"
    shutil.copytree(SAMPLE, folder)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff not a photo")
    proc = hashlens(tmp_path / "home", "index", "--ray", "--actors", "2", str(folder), "--json")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0
    summary = json.loads(out)
    assert summary["added"] == 17 and summary["failed"] == 1 and summary["embedded"] == 17
    assert "not an image" in summary["failures"][0]["reason"]
    assert same(state(tmp_path / "home"), reference(folder, tmp_path / "ref"))

    proc = hashlens(tmp_path / "home", "index", "--ray", str(folder), "--json")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0 and json.loads(out)["embedded"] == 0  # nothing new: Ray not even started


def test_a_killed_ray_run_is_completed_by_the_next(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(160):
        synthetic_photo(i, (320, 240)).save(folder / f"p{i:03d}.jpg", quality=85)
    home = tmp_path / "home"
    proc = hashlens(home, "index", "--ray", "--actors", "2", str(folder))
    database = home / "library.db"
    deadline = time.monotonic() + 240
    import sqlite3

    while time.monotonic() < deadline and proc.poll() is None:  # until the first batches are in
        try:
            with sqlite3.connect(database) as conn:
                if conn.execute("select count(*) from images").fetchone()[0] >= 8:
                    break
        except sqlite3.OperationalError:
            pass
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    committed = len(state(home))
    assert 8 <= committed < 160
    proc = hashlens(home, "index", "--ray", "--actors", "2", str(folder), "--json")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0
    assert json.loads(out)["added"] == 160 - committed
    assert same(state(home), reference(folder, tmp_path / "ref"))


def test_bench_scale_at_toy_size(tmp_path):
    """`hashlens bench scale` end to end, small: every figure the interface names, Ray's rates
    for 1 and 2 actors, and Milvus answering with the FAISS backend's distances."""
    proc = hashlens(
        tmp_path / "home",
        "bench",
        "scale",
        "--out",
        str(tmp_path / "out"),
        "--codes",
        "3000",
        "--queries",
        "20",
        "--photos",
        "12",
        "--embedding-rows",
        "300",
    )
    proc.communicate(timeout=600)
    assert proc.returncode == 0
    result = json.loads((tmp_path / "out" / "scale_bench.json").read_text())
    assert set(result["ray_photos_per_s"]) == {"1", "2"} and all(v > 0 for v in result["ray_photos_per_s"].values())
    assert result["single_process_photos_per_s"] > 0 and result["codes"] == 3000
    assert result["milvus_top10_ms_p50"] > 0 and result["faiss_top10_ms_p50"] > 0
    assert result["same_top10_distances"] == 1.0 and result["milvus_tagged_with_ms_p50"] > 0
    assert result["embedding_rows"] == 300 and result["milvus_embedding_move_rows_per_s"] > 0
    assert result["sqlite_embedding_read_rows_per_s"] > 0 and result["milvus_embedding_read_rows_per_s"] > 0
