"""The same library on both backends: codes searched by FAISS beside SQLite, or in Milvus
(milvus-lite here, the `scale` extra that make test installs). Same answers, same commands."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from bench.synthetic import AlignedConcepts, AlignedEncoder, fill_library, synthetic_photo
from models.sparsehash import SparseHash, SparseHashConfig
from retrieval.cli import main
from retrieval.config import Settings
from retrieval.index import CodeIndex
from retrieval.library import Library
from retrieval.search import search, similar
from retrieval.vocabulary import shipped_vocabulary

pytest.importorskip("pymilvus", reason="the scale extra (make test installs it)")
from retrieval.milvus_index import MilvusCodeIndex  # noqa: E402

BACKENDS = ("sqlite", "milvus")
REPO = Path(__file__).resolve().parents[1]


def sparse_codes(rng, n: int, bits: int) -> np.ndarray:
    """Codes like a sparse model's: few ones, many photos sharing one (ties in Hamming distance)."""
    protos = rng.random((n // 6, bits)) < 6 / bits
    rows = protos[rng.integers(0, len(protos), n)] ^ (rng.random((n, bits)) < 1 / bits)
    return np.packbits(rows, axis=1)


def test_milvus_index_answers_as_the_faiss_index_does(tmp_path):
    rng = np.random.default_rng(0)
    ids = rng.permutation(5000)[:1200].astype(np.int64) + 1
    codes = sparse_codes(rng, len(ids), 64)
    vectors = {int(i): rng.standard_normal(16).astype(np.float32) for i in ids}
    faiss_index = CodeIndex.build(64, 1, ids, codes)

    def open_milvus():  # against SQLite's codes, which stay `codes` throughout
        return MilvusCodeIndex.open(
            str(tmp_path / "milvus.db"),
            library_id="t",
            bits=64,
            model_id=1,
            dim=16,
            ids=ids,
            codes=codes,
            embeddings_of=lambda part: np.stack([vectors[int(i)] for i in part]),
            records_of=lambda part: ([f"/photo/{i}.jpg" for i in part], [[f"tag {i % 3}"] for i in part]),
        )

    milvus, rebuilt = open_milvus()
    assert rebuilt and milvus.ntotal == len(ids)
    for q in range(20):
        query = codes[q * 37]
        for r in (0, 3, 8):
            d_f, i_f = faiss_index.radius(query, r)
            d_m, i_m = milvus.radius(query, r)
            assert sorted(zip(d_f.tolist(), i_f.tolist())) == list(zip(d_m.tolist(), i_m.tolist()))
        for k in (1, 10, 100):
            d_f, i_f = faiss_index.knn(query, k)
            d_m, i_m = milvus.knn(query, k)
            assert (d_f.tolist(), i_f.tolist()) == (d_m.tolist(), i_m.tolist())  # exact, ties by id
    assert np.allclose(milvus.embeddings_of(ids[:5]), np.stack([vectors[int(i)] for i in ids[:5]]), atol=1e-2)

    milvus.remove(ids[:10])
    changed = codes[10:12] ^ np.uint8(0xFF)
    milvus.add(ids[10:12], changed)
    assert milvus.ntotal == len(ids) - 10
    assert milvus.radius(changed[0], 0)[1].tolist()[:1] in ([int(ids[10])], [int(ids[11])])
    # Reopened against SQLite's (unchanged) codes: it disagrees, so it is rebuilt from them.
    again, rebuilt = open_milvus()
    assert rebuilt and again.ntotal == len(ids)
    assert not open_milvus()[1]


@pytest.fixture(scope="module")
def synthetic_home(tmp_path_factory) -> tuple[Path, AlignedConcepts]:
    """A library of 1,000 synthetic photos, half tagged, with a hash model: large enough that
    the re-rank shortlist (k·50) does not cover it for k = 10."""
    home = tmp_path_factory.mktemp("synthetic") / "home"
    concepts = AlignedConcepts(shipped_vocabulary()[:30], dim=32, seed=3, image_noise=0.8)
    library = Library(Settings.resolve(home=home, encoder="fake"), encoder=AlignedEncoder(concepts))
    vectors, labels = concepts.photos(1000, seed=4)
    fill_library(library, vectors, labels, tagged=np.arange(1000) < 500)
    torch.manual_seed(0)
    model = SparseHash(SparseHashConfig(image_dim=32, text_dim=32, bits=64, tau_init=0.0)).eval()
    library.install_model(model)
    library.store.db.close()
    return home, concepts


@pytest.fixture(params=BACKENDS)
def library_on(request, synthetic_home, tmp_path) -> Library:
    home, concepts = synthetic_home
    copy = tmp_path / "home"
    shutil.copytree(home, copy)
    settings = Settings.resolve(home=copy, backend=request.param, milvus_uri=str(tmp_path / "milvus.db"))
    return Library(settings, encoder=AlignedEncoder(concepts))


def ranking(results) -> list:
    return [(r.path, r.tagged, round(r.score, 4)) for r in results]


def answers(library: Library, concepts: AlignedConcepts) -> list:
    out = []
    for query in concepts.names[:8] + [f"{concepts.names[0]}, {concepts.names[1]}"]:
        for rerank in (True, False):
            out.append(ranking(search(library, query, k=10, rerank=rerank)))
        out.append(sorted(r.path for r in search(library, query, k=10, radius=6)))
    for photo in ("/synthetic/photo_0000001.jpg", "/synthetic/photo_0000300.jpg"):
        out.append(ranking(similar(library, photo, k=10)))
    return out


def test_both_backends_give_the_same_top_results(library_on, synthetic_home, tmp_path):
    home, concepts = synthetic_home
    stats = library_on.stats()
    assert stats["backend"] == stats["embeddings_in"] == library_on.settings.backend
    assert library_on.index.ntotal == 1000
    shutil.copytree(home, tmp_path / "reference")
    reference = Library(Settings.resolve(home=tmp_path / "reference", backend="sqlite"), encoder=library_on._encoder)
    assert answers(library_on, concepts) == answers(reference, concepts)


def stored_vector_bytes(library: Library) -> int:
    sql = "select coalesce(sum(length(vector)), 0) from embeddings where encoder = ?"
    return library.store.db.execute(sql, [library.encoder_name]).fetchone()[0]


def test_on_the_milvus_backend_the_embeddings_live_in_milvus_and_move_back(synthetic_home, tmp_path):
    """Opened on Milvus, a SQLite library's vectors move into Milvus (SQLite keeps which photos
    have one); opened on SQLite again, they come back, bit for bit; a move cut short goes on."""
    from retrieval.embedding_store import MilvusEmbeddings, SqliteEmbeddings, move_embeddings

    home, concepts = synthetic_home
    shutil.copytree(home, tmp_path / "home")
    encoder, uri = AlignedEncoder(concepts), str(tmp_path / "milvus.db")
    on_sqlite = Library(Settings.resolve(home=tmp_path / "home"), encoder=encoder)
    ids, vectors = on_sqlite.embeddings()
    assert stored_vector_bytes(on_sqlite) == 1000 * 32 * 2

    on_milvus = Library(Settings.resolve(home=tmp_path / "home", backend="milvus", milvus_uri=uri), encoder=encoder)
    assert on_milvus.embedding_store.where == "milvus" and stored_vector_bytes(on_milvus) == 0
    assert on_milvus.embedding_store.count() == 1000 and on_milvus.embedding_store.dim() == 32
    moved_ids, moved = on_milvus.embeddings()
    assert np.array_equal(moved_ids, ids) and np.array_equal(moved, vectors)
    assert np.array_equal(on_milvus.embedding_store.of(ids[[5, 1, 700]]), vectors[[5, 1, 700]])
    collection = on_milvus.embedding_store.name
    on_milvus.store.db.close()

    back = Library(Settings.resolve(home=tmp_path / "home", backend="sqlite"), encoder=encoder)
    assert back.embedding_store.where == "sqlite" and stored_vector_bytes(back) == 1000 * 32 * 2
    assert np.array_equal(back.embeddings()[1], vectors)
    assert not back._milvus(uri).has_collection(collection)  # dropped once empty

    # Cut short after two batches of 100, then run again: every vector once, in Milvus.
    store, name = back.store, back.encoder_name
    target = MilvusEmbeddings(store, name, back._milvus(uri), library_id="cut")
    calls = {"n": 0}
    real_put = target.put

    def failing_put(part_ids, part_vectors):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        real_put(part_ids, part_vectors)

    target.put = failing_put
    with pytest.raises(KeyboardInterrupt):
        move_embeddings(store, name, SqliteEmbeddings(store, name), target, size=100)
    assert stored_vector_bytes(back) == 800 * 32 * 2  # the first 200 are in Milvus
    target.put = real_put
    assert move_embeddings(store, name, SqliteEmbeddings(store, name), target, size=100) == 800
    assert stored_vector_bytes(back) == 0 and target.count() == 1000
    assert target.client.query(target.name, filter="", output_fields=["count(*)"])[0]["count(*)"] == 1000
    assert np.array_equal(np.concatenate([v for _, v in target.batches(size=300)]), vectors)


def test_milvus_rows_keep_the_photos_records_in_step_with_sqlite(synthetic_home, tmp_path):
    """Each Milvus row holds its photo's path and tags; a tag set here, a tag written by another
    connection (a watcher's) and a move all reach Milvus, and "which photos carry this tag"
    is answered there."""
    import sqlite3

    home, concepts = synthetic_home
    shutil.copytree(home, tmp_path / "home")
    settings = Settings.resolve(home=tmp_path / "home", backend="milvus", milvus_uri=str(tmp_path / "milvus.db"))
    library = Library(settings, encoder=AlignedEncoder(concepts))
    index, store = library.index, library.store
    ids = index.ids()

    def in_step() -> bool:
        paths, tags = store.records_of(ids)
        library.index  # noqa: B018 - the sync runs when the index is reached
        return index.records(ids) == {int(i): (p, t) for i, p, t in zip(ids, paths, tags)}

    assert in_step() and len(ids) == 1000
    first_tag = concepts.names[0]
    assert library.photos_tagged([first_tag]) == set(store.images_tagged(first_tag)) != set()
    with store.transaction():
        store.set_tags(1, ["box 17"], "user")  # photo 1 is tagged: this replaces its own tags
        store.move_image(2, "/synthetic/moved/photo_0000002.jpg", 1, 0.0)
    with sqlite3.connect(settings.database_path) as other:  # another process's write
        tag_id = other.execute("insert into tags (name) values ('grandma''s porch') returning id").fetchone()[0]
        sql = "insert into image_tags (image_id, tag_id, source, score) values (700, ?, 'accepted', 1)"
        other.execute(sql, [tag_id])
    assert library.photos_tagged(["box 17"]) == {1} and library.photos_tagged(["grandma's porch"]) == {700}
    assert index.records([2])[2][0] == "/synthetic/moved/photo_0000002.jpg"
    assert in_step()
    pair = [first_tag, concepts.names[1]]
    both = set(store.images_tagged(pair[0])) & set(store.images_tagged(pair[1]))
    assert library.photos_tagged(pair) == both


def test_the_library_remembers_its_backend(tmp_path):
    Library(Settings.resolve(home=tmp_path, encoder="fake", backend="milvus", milvus_uri=str(tmp_path / "m.db")))
    again = Library(Settings.resolve(home=tmp_path))
    assert (again.settings.backend, again.settings.milvus_uri) == ("milvus", str(tmp_path / "m.db"))


@pytest.fixture(scope="module")
def milvus_cli_home(tmp_path_factory) -> tuple[Path, Path]:
    """A library made as a large one would be: `hashlens --backend milvus index --ray` (a
    process of its own, as Ray starts workers), then trained; 24 photos tagged red or blue."""
    root = tmp_path_factory.mktemp("milvus_cli")
    photos = root / "photos"
    photos.mkdir()
    lines = ["path,tags"]
    for i in range(24):
        synthetic_photo(i, (96, 72)).save(photos / f"p{i:02d}.jpg")
        lines.append(f"p{i:02d}.jpg,{'red' if i % 2 else 'blue'}")
    (photos / "tags.csv").write_text("\n".join(lines))
    pytest.importorskip("ray", reason="the scale extra (make test installs it)")
    home, uri, tags = root / "home", str(root / "codes.db"), str(photos / "tags.csv")
    command = [sys.executable, "-m", "retrieval.cli", "--home", str(home), "--encoder", "fake", "--backend", "milvus"]
    command += ["--milvus-uri", uri, "index", "--ray", "--actors", "1", str(photos), "--tags", tags, "--json"]
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONWARNINGS="ignore")
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout)["embedded"] == 24
    cli(home, "train", "--bits", "32")
    return home, photos


def cli(home: Path, *args: str):
    result = CliRunner().invoke(main, ["--home", str(home), *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def test_cli_on_a_milvus_library(milvus_cli_home):
    home, photos = milvus_cli_home
    stats = json.loads(cli(home, "stats", "--json").stdout)
    assert (stats["backend"], stats["photos"], stats["indexed"]) == ("milvus", 24, 24)  # remembered; codes in Milvus
    assert stats["embeddings_in"] == "milvus"
    sql = "select count(*), sum(length(vector)) from embeddings"
    assert Library(Settings.resolve(home=home)).store.db.execute(sql).fetchone() == (24, 0)  # vectors: Milvus only
    found = json.loads(cli(home, "search", "red", "-k", "5", "--json").stdout)
    assert len(found) == 5 and all(r["tagged"] for r in found)
    assert len(json.loads(cli(home, "similar", str(photos / "p00.jpg"), "-k", "3", "--json").stdout)) == 3
    assert json.loads(cli(home, "tag", str(photos / "p01.jpg"), "--json").stdout)


def test_search_page_on_a_milvus_library(milvus_cli_home, monkeypatch):
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    home, _ = milvus_cli_home
    monkeypatch.setenv("HASHLENS_HOME", str(home))
    st.cache_resource.clear()
    at = AppTest.from_file(str(REPO / "ui" / "app.py"), default_timeout=120).run()
    at.text_input(key="boolean").input("red").run()
    assert not at.exception, at.exception
    captions = [c.value for c in at.caption if "Hamming" in c.value]
    assert len(captions) == 12 and all(c.startswith("✓ tagged") for c in captions)  # the 12 red photos
    st.cache_resource.clear()


def test_a_milvus_library_opens_without_reading_every_code_unless_a_crash_left_them_apart(tmp_path, monkeypatch):
    """Each process opening a Milvus library trusts the collection the library noted as holding
    its current codes, through index runs that add and remove photos; a code SQLite committed
    but Milvus never got (a crash between the two) makes the next process check every code."""
    from retrieval.store import Store

    photos, home = tmp_path / "photos", tmp_path / "home"
    photos.mkdir()
    for i in range(12):
        synthetic_photo(i, (96, 72)).save(photos / f"p{i:02d}.jpg")
    cli(home, "--encoder", "fake", "--backend", "milvus", "--milvus-uri", str(tmp_path / "m.db"), "index", str(photos))
    cli(home, "train", "--bits", "32")
    reads, original = [], Store.codes
    monkeypatch.setattr(Store, "codes", lambda self, model_id: reads.append(model_id) or original(self, model_id))
    synthetic_photo(40, (96, 72)).save(photos / "new.jpg")
    (photos / "p00.jpg").unlink()
    summary = json.loads(cli(home, "index", str(photos), "--json").stdout)
    assert (summary["added"], summary["removed"]) == (1, 1)
    library = Library(Settings.resolve(home=home))
    vectors = library.embedding_store
    count = vectors.client.query(vectors.name, filter="", output_fields=["count(*)"])[0]["count(*)"]
    assert count == vectors.count() == 12  # the gone photo's vector left Milvus too
    library.store.db.close()
    assert json.loads(cli(home, "stats", "--json").stdout)["indexed"] == 12
    assert len(json.loads(cli(home, "similar", str(photos / "p03.jpg"), "-k", "3", "--json").stdout)) == 3
    assert reads == []  # four processes' worth of opening, not one full read

    library = Library(Settings.resolve(home=home))
    model_id, victim = library.hash_model()[0], int(library.store.image_by_path(str(photos / "p05.jpg"))["id"])
    flipped = library.store.codes_of(model_id, [victim]) ^ np.uint8(0xFF)
    with library.store.transaction():  # committed to SQLite, then the process died
        library.store.put_codes(model_id, [victim], flipped)
    library.store.db.close()
    again = Library(Settings.resolve(home=home))
    assert victim in again.index.radius(flipped[0], 0)[1].tolist() and reads == [model_id]
    assert json.loads(cli(home, "stats", "--json").stdout)["indexed"] == 12 and reads == [model_id]


def test_without_the_extra_the_milvus_backend_says_how_to_get_it(tmp_path, monkeypatch):
    import retrieval.milvus_index as milvus_index

    monkeypatch.setattr(milvus_index, "MilvusClient", None)
    result = CliRunner().invoke(main, ["--home", str(tmp_path), "--encoder", "fake", "--backend", "milvus", "stats"])
    assert result.exit_code != 0 and "pip install 'hashlens[scale]'" in result.output
