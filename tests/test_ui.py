from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from retrieval.config import Settings
from ui.prepare import prepare

APP = str(Path(__file__).resolve().parents[1] / "ui" / "app.py")


@pytest.fixture
def app_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HASHLENS_HOME", str(tmp_path / "home"))
    import streamlit as st

    st.cache_resource.clear()
    return tmp_path / "home"


def test_search_page_shows_a_grid_of_photos(app_home):
    library = prepare(Settings.resolve(encoder="fake"))  # sample_data indexed and a model trained
    assert library.store.count_images("ok") == 17 and library.hash_model() is not None
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    assert any("DEMO ENCODER" in e.value for e in at.error)
    at.text_input[0].input("space").run()
    assert not at.exception
    assert len(at.get("image")) == 12 and len(at.caption) >= 12  # a grid of 12 photos with captions
    assert sum("Hamming" in c.value for c in at.caption) == 12


def test_empty_library_shows_one_clear_message(app_home):
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.text_input[0].input("cat").run()
    assert not at.exception
    assert [w.value for w in at.warning] == ["the library is empty: index a folder first (hashlens index PATH)"]
