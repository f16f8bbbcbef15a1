import shutil
from pathlib import Path

import numpy as np
import pytest

from models.clip import FakeEncoder
from retrieval.config import Settings
from retrieval.ingest import index_paths
from retrieval.library import Library
from retrieval.train import NothingToTrain, library_training_data, train_library
from retrieval.vocabulary import TagVocabulary, shipped_vocabulary

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"


def library_at(home: Path) -> Library:
    return Library(Settings.resolve(home=home, encoder="fake"), encoder=FakeEncoder())


def test_train_installs_a_model_codes_every_photo_and_rebuilds_the_index(tmp_path):
    photos = tmp_path / "photos"
    shutil.copytree(SAMPLE, photos)
    library = library_at(tmp_path / "home")
    index_paths(library, [photos], tags_file=photos / "tags.csv", workers=0, progress=False)
    shutil.rmtree(photos)  # training works from the stored embeddings: no photo is decoded again
    metrics = train_library(library, bits=32)
    model_id, model = library.hash_model()
    assert metrics["model_id"] == model_id and metrics["tagged"] == 17 and model.config.bits == 32
    ids, codes = library.store.codes(model_id)
    assert len(ids) == 17 and codes.shape == (17, 4)
    assert sorted(library.index.ids().tolist()) == sorted(ids.tolist())
    # codes in SQLite are what the model gives for the stored embeddings
    _, vectors = library.embeddings()
    assert np.array_equal(codes, model.encode(vectors, "image"))
    # a reopened library finds the same model and index
    again = library_at(tmp_path / "home")
    assert again.hash_model()[0] == model_id and again.index.ntotal == 17


def test_untagged_photos_get_clip_stand_ins(tmp_path):
    photos = tmp_path / "photos"
    shutil.copytree(SAMPLE, photos)
    library = library_at(tmp_path / "home")
    index_paths(library, [photos], workers=0, progress=False)  # no tags at all
    images, texts, labels, facts = library_training_data(library)
    assert facts["tagged"] == 0 and facts["vocabulary"] >= 1
    # every photo: its zero-shot tag from the shipped vocabulary, and its neighbour cluster
    assert np.all(labels.sum(1) == 2)
    cluster_columns = labels[:, facts["vocabulary"] :]
    assert np.all(cluster_columns.sum(1) == 1)
    zero_shot = [
        shipped_vocabulary()[int(np.argmax(TagVocabulary(library).vectors(shipped_vocabulary()) @ x))] for x in images
    ]
    expected = library.encoder.encode_texts(zero_shot)
    assert np.allclose(texts, expected, atol=1e-6)
    train_library(library, bits=16)
    assert library.index.ntotal == 17


def test_too_few_photos_is_one_clear_error(tmp_path):
    with pytest.raises(NothingToTrain, match="index at least"):
        train_library(library_at(tmp_path))
