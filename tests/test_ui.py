import io
import json
import os
import shutil
import time
from pathlib import Path

import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from retrieval.config import Settings
from retrieval.ingest import index_paths
from retrieval.library import Library
from retrieval.watch import STATUS_FILE
from retrieval.xmp import read_keywords
from ui.prepare import prepare

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "ui" / "app.py")
SAMPLE = ROOT / "sample_data"


@pytest.fixture
def app_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HASHLENS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HASHLENS_ENCODER", "fake")
    import streamlit as st

    st.cache_resource.clear()
    st.cache_data.clear()
    return tmp_path / "home"


@pytest.fixture(scope="session")
def prepared_home(tmp_path_factory):
    """One library prepared as `make app` does (sample_data indexed, a model trained), once:
    each test gets a copy of its folder, as preparing takes 15 s."""
    home = tmp_path_factory.mktemp("prepared") / "home"
    library = prepare(Settings.resolve(home=home, encoder="fake"))
    assert library.store.count_images("ok") == 17 and library.hash_model() is not None
    library.store.db.close()
    return home


@pytest.fixture
def sample_app(app_home, prepared_home):
    shutil.copytree(prepared_home, app_home)
    library = prepare(Settings.resolve(encoder="fake"))  # finds the copy ready: nothing to do
    assert library.store.count_images("ok") == 17 and library.hash_model() is not None
    return library


def run_page(page: str | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120).run()
    if page:
        at.switch_page(f"views/{page}.py").run()
    assert not at.exception, at.exception
    return at


def png_bytes(colour=(200, 40, 40), size=(64, 48)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return buffer.getvalue()


def test_search_page_shows_the_tagged_photos_and_their_details(sample_app):
    at = run_page()
    assert any("DEMO ENCODER" in e.value for e in at.error)
    at.multiselect(key="tags").select("cat").run()
    assert not at.exception
    captions = [c.value for c in at.caption if "Hamming" in c.value]
    assert len(captions) == 12 and len(at.get("image")) == 12  # a grid of 12 photos with captions
    # chelsea.jpg, the one photo tagged cat, comes first and says so; the rest were found by the model
    assert captions[0].startswith("✓ tagged") and captions[0].endswith("animal, cat, pet")
    assert not any(c.startswith("✓ tagged") for c in captions[1:])
    at.slider[0].set_value(3).run()
    captions = [c.value for c in at.caption if "Hamming" in c.value]
    assert len(captions) == 3
    at.button(key="results-0").click().run()
    assert not at.exception
    assert any(m.value.startswith("**Suggested:**") for m in at.markdown)
    assert any(s.value == "Details" for s in at.subheader)
    assert len([c for c in at.caption if "Hamming" in c.value]) == 3 + 8  # results, then 8 similar photos


def test_boolean_query_and_unknown_tag_on_the_search_page(sample_app):
    at = run_page()
    at.text_input(key="boolean").input("cat AND pet").run()
    captions = [c.value for c in at.caption if "Hamming" in c.value]
    assert any(c.endswith("animal, cat, pet") for c in captions)  # the photo tagged cat and pet is found
    at.text_input(key="boolean").input("cat NOT zzqxj").run()
    assert [w.value for w in at.warning] == ["unknown tag 'zzqxj' (search --free-text looks for any text)"]


def test_annotate_page_suggests_tags_and_accepting_one_stores_it(sample_app):
    at = run_page("annotate")
    at.file_uploader(key="uploads").set_value(("red.png", png_bytes(), "image/png")).run()
    assert not at.exception
    boxes = [c for c in at.checkbox if c.key.startswith("tag-0-")]
    assert len(boxes) == 10 and all("·" in c.label for c in boxes)  # ten suggestions with scores
    chosen = boxes[0].label.split(" · ")[0]
    boxes[0].check().run()
    at.text_input(key="own-0").input("crimson").run()
    at.button(key="save-0").click().run()
    assert not at.exception and at.success, [e.value for e in at.error]
    library = Library(Settings.resolve())
    uploads = list((library.settings.home / "uploads").iterdir())
    assert len(uploads) == 1  # stored once, inside the library folder
    record = library.store.image_by_path(str(uploads[0]))
    assert set(library.store.tags_of(record["id"])) == {chosen, "crimson"}


def test_annotate_page_writes_accepted_tags_to_an_xmp_sidecar_to_download(sample_app):
    at = run_page("annotate")
    at.file_uploader(key="uploads").set_value(("red.png", png_bytes(), "image/png")).run()
    at.text_input(key="own-0").input("crimson, colours/red").run()
    at.checkbox(key="xmp-0").check().run()
    at.button(key="save-0").click().run()
    assert not at.exception and at.success, [e.value for e in at.error]
    library = Library(Settings.resolve())
    (photo,) = [p for p in (library.settings.home / "uploads").iterdir() if p.suffix == ".png"]
    assert set(read_keywords(photo.with_name(photo.name + ".xmp"))) == {"colours/red", "crimson", "red"}
    (download,) = [b for b in at.get("download_button")]
    assert "red.png.xmp" in download.proto.label


def test_annotate_page_rejects_a_broken_upload_with_one_message(sample_app):
    at = run_page("annotate")
    at.file_uploader(key="uploads").set_value(("broken.jpg", b"\xff\xd8\xff not really", "image/jpeg")).run()
    assert not at.exception
    assert len(at.error) == 2 and at.error[1].value.startswith("broken.jpg: ")  # the demo banner, then this
    assert not list((Path(sample_app.settings.home) / "uploads").glob("*.jpg"))  # nothing kept


def test_annotate_page_refuses_an_upload_over_the_size_limit(sample_app):
    at = run_page("annotate")
    too_big = b"\xff\xd8\xff" + bytes(51 * 2**20)
    at.file_uploader(key="uploads").set_value(("huge.jpg", too_big, "image/jpeg")).run()
    assert not at.exception
    assert [e.value for e in at.error[1:]] == ["huge.jpg: 51 MB is more than the 50 MB allowed"]
    assert not list((Path(sample_app.settings.home) / "uploads").glob("*"))  # never written


def test_library_page_indexes_a_folder_and_updates_the_counts(sample_app, tmp_path):
    folder = tmp_path / "more"
    folder.mkdir()
    for i in range(3):
        Image.new("RGB", (50, 40), (30 * i, 100, 200)).save(folder / f"new_{i}.png")
    (folder / "bad.jpg").write_bytes(b"nope")
    at = run_page("library")
    assert at.metric[0].value == "17"
    at.text_input(key="folder").input(str(folder)).run()
    at.button(key="index").click().run()
    assert not at.exception
    assert "added 3" in at.success[0].value and "failed 1" in at.success[0].value
    assert at.metric[0].value == "20" and at.metric[3].value == "1"


def test_library_page_says_whether_a_watcher_keeps_the_library_current(sample_app):
    at = run_page("library")
    assert any("No watcher is running" in c.value for c in at.caption)
    status = {"pid": os.getpid(), "paths": ["/photos/2026"], "started_at": time.time(), "heartbeat": time.time()}
    (sample_app.settings.home / STATUS_FILE).write_text(json.dumps(status))
    at = run_page("library")
    assert "A watcher keeps this library current: /photos/2026" in at.info[0].value


def test_library_page_groups_near_identical_photos_with_a_keeper(sample_app, tmp_path):
    copy = tmp_path / "copies" / "chelsea copy.jpg"
    copy.parent.mkdir()
    shutil.copy(SAMPLE / "chelsea.jpg", copy)  # a newer file with the same picture
    index_paths(sample_app, [copy.parent], workers=0, progress=False)
    at = run_page("library")
    at.button(key="duplicates").click().run()
    assert not at.exception
    heading = [m.value for m in at.markdown if m.value.startswith("**2 photos**")]
    assert heading == [f"**2 photos** · keep `{SAMPLE / 'chelsea.jpg'}`"], [m.value for m in at.markdown]


def test_library_page_retrains_the_model(sample_app):
    at = run_page("library")
    at.select_slider[0].set_value(32).run()
    at.button(key="train").click().run()
    assert not at.exception
    assert at.success[0].value.startswith("hash model 2:")
    assert [row for row in at.dataframe[-1].value["bits"]] == [64, 32]  # both versions listed
    assert Library(Settings.resolve()).hash_model()[1].config.bits == 32


def test_library_page_wrong_folder_is_one_clear_message(sample_app, tmp_path):
    at = run_page("library")
    at.text_input(key="folder").input(str(tmp_path / "nowhere")).run()
    at.button(key="index").click().run()
    assert not at.exception
    assert [e.value for e in at.error][-1] == f"no such file or folder: {tmp_path / 'nowhere'}"


def test_empty_library_shows_one_clear_message(app_home):
    at = run_page()
    at.text_input(key="boolean").input("cat").run()
    assert not at.exception
    assert [w.value for w in at.warning] == ["the library is empty: index a folder first (hashlens index PATH)"]


def test_evaluation_page_shows_the_benchmark_tables_and_plots(app_home):
    at = run_page("evaluation")
    assert any("Wiki" in m.value for m in at.markdown)
    assert any("current pair sampler" in m.value for m in at.markdown)  # the rerun, beside the full table
    assert len(at.get("image")) >= 3


def test_only_library_photos_are_served_and_thumbnails_are_kept_on_disk(sample_app, tmp_path):
    from ui.common import thumbnail_path

    photo = sample_app.store.paths_of([1])[0]
    thumb = thumbnail_path(sample_app, photo)
    assert thumb.is_relative_to(sample_app.settings.home / "thumbnails")
    with Image.open(thumb) as image:
        assert max(image.size) <= 320
    made = thumb.stat().st_mtime_ns
    assert thumbnail_path(sample_app, photo) == thumb and thumb.stat().st_mtime_ns == made  # made once
    outside = tmp_path / "not_indexed.png"
    Image.new("RGB", (40, 30), "blue").save(outside)
    for path in (str(outside), "/etc/passwd", photo + "/../" + Path(photo).name):
        assert thumbnail_path(sample_app, path) is None
    assert len(list((sample_app.settings.home / "thumbnails").rglob("*.jpg"))) == 1
