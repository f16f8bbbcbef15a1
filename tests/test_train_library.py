import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models.clip import FakeEncoder
from retrieval.config import Settings
from retrieval.ingest import index_paths
from retrieval.library import Library
from retrieval.supervision import NothingToTrain, library_training_data
from retrieval.train import train_library
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
    # nothing new: the model stays (training is deterministic, it would come out the same)
    unchanged = train_library(again, bits=32)
    assert unchanged["unchanged"] is True and again.hash_model()[0] == model_id
    forced = train_library(again, bits=32, force=True)
    assert forced["model_id"] != model_id and "unchanged" not in forced
    _, retrained = again.hash_model()
    assert np.array_equal(retrained.encode(vectors, "image"), codes)  # the same model, as promised
    # a new tag, or other bits, is something new
    again.store.set_tags(int(ids[0]), ["a brand new tag"], "user")
    assert "unchanged" not in train_library(again, bits=32)


def test_a_library_without_tags_trains_on_clip_stand_ins(tmp_path):
    photos = tmp_path / "photos"
    shutil.copytree(SAMPLE, photos)
    library = library_at(tmp_path / "home")
    index_paths(library, [photos], workers=0, progress=False)  # no tags at all
    data = library_training_data(library)
    assert data.facts["tagged"] == 0 and data.facts["vocabulary"] >= 1 and data.tags == []
    # every photo: its zero-shot tag from the shipped vocabulary, and its neighbour cluster
    assert np.all(data.labels.sum(1) == 2) and data.has_image.all() and data.has_text.all()
    cluster_columns = data.labels[:, data.facts["vocabulary"] :]
    assert np.all(cluster_columns.sum(1) == 1)
    vectors = TagVocabulary(library).vectors(shipped_vocabulary())
    zero_shot = [shipped_vocabulary()[int(np.argmax(vectors @ x))] for x in data.images]
    assert np.allclose(data.texts, TagVocabulary(library).vectors(zero_shot))
    train_library(library, bits=16)
    assert library.index.ntotal == 17


def colour_photos(folder: Path) -> Path:
    """24 red or blue pictures, the first 12 tagged with their colour and a shape."""
    folder.mkdir()
    lines = ["path,tags"]
    for i in range(24):
        colour = ("red", "blue")[i % 2]
        Image.new("RGB", (40, 30), ((220, 30, 30), (30, 40, 220))[i % 2]).save(folder / f"{colour}_{i}.png")
        if i < 12:
            lines.append(f"{colour}_{i}.png,{colour};{'circle' if i % 4 < 2 else 'square'}")
    (folder / "tags.csv").write_text("\n".join(lines))
    return folder


def test_training_items_of_a_tagged_library(tmp_path):
    """Tagged photos with their tag list, each tag of a multi-tag photo on its own (text only),
    untagged photos image-only with the teacher's confident tags, hidden photos as untagged."""
    photos = colour_photos(tmp_path / "photos")
    library = library_at(tmp_path / "home")
    index_paths(library, [photos], tags_file=photos / "tags.csv", workers=0, progress=False)
    data = library_training_data(library)
    assert data.tags == ["blue", "circle", "red", "square"] and data.facts["tagged"] == 12
    paired = data.has_image & data.has_text
    text_only = ~data.has_image & data.has_text
    image_only = data.has_image & ~data.has_text
    assert paired.sum() == 12 and text_only.sum() == 24  # two tags on each tagged photo
    assert np.all(data.labels[text_only].sum(1) == 1)  # a tag on its own is labelled with itself
    red = data.tags.index("red")
    vocabulary = TagVocabulary(library)
    assert np.allclose(data.texts[text_only & (data.labels[:, red] == 1)], vocabulary.vectors(["red"]))
    # the untagged photos are single colours the teacher tells apart at once: red or blue, never both
    guessed = data.labels[image_only]
    assert data.facts["guessed"] == image_only.sum() > 0
    assert data.facts["teacher_precision"] >= 0.95 and data.facts["teacher_threshold"] is not None  # in the metrics
    assert np.all(guessed[:, [red, data.tags.index("blue")]].sum(1) == 1)
    hidden_ids = set(library.store.tags_by_image())
    assert library_training_data(library, hidden=hidden_ids).facts["tagged"] == 0


def test_too_few_photos_is_one_clear_error(tmp_path):
    with pytest.raises(NothingToTrain, match="index at least"):
        train_library(library_at(tmp_path))


def test_training_reads_the_library_in_batches_and_samples_the_untagged_photos(tmp_path, monkeypatch):
    """A library larger than training needs: every tagged photo and a seeded sample of about
    MAX_UNTAGGED untagged ones are read, in batches; no step reads all embeddings at once; every
    photo still gets its code."""
    import retrieval.store
    import retrieval.supervision
    import retrieval.train
    from bench.synthetic import AlignedConcepts, AlignedEncoder, fill_library
    from retrieval.store import Store
    from retrieval.supervision import in_sample

    concepts = AlignedConcepts(shipped_vocabulary()[:6], dim=32, seed=1, image_noise=0.5)
    library = Library(Settings.resolve(home=tmp_path / "home", encoder="fake"), encoder=AlignedEncoder(concepts))
    vectors, labels = concepts.photos(900, seed=2)
    fill_library(library, vectors, labels, tagged=np.arange(900) % 9 == 0)  # 100 tagged
    monkeypatch.setattr(retrieval.supervision, "MAX_UNTAGGED", 200)
    monkeypatch.setattr(retrieval.store, "EMBEDDING_BATCH", 64)
    batches, by_id = [], []  # vectors read in passes over the library, and by id
    original, original_of = Store.embedding_rows, Store.embeddings_of

    def counted(self, encoder, *, size=None, held=None):
        for rows in original(self, encoder, size=size, held=held):
            batches.append(len(rows))
            yield rows

    def counted_of(self, encoder, ids):
        by_id.append(len(ids))
        return original_of(self, encoder, ids)

    def everything(self):
        raise AssertionError("read every embedding at once")

    samples = []  # (photos a call of training_photos returned, vectors it read)
    sample = retrieval.supervision.training_photos

    def counted_sample(*args):
        before = sum(by_id)
        ids, images = sample(*args)
        samples.append((len(ids), sum(by_id) - before))
        return ids, images

    monkeypatch.setattr(Store, "embedding_rows", counted)
    monkeypatch.setattr(Store, "embeddings_of", counted_of)
    monkeypatch.setattr(Library, "embeddings", everything)
    monkeypatch.setattr(retrieval.supervision, "training_photos", counted_sample)
    monkeypatch.setattr(retrieval.train, "training_photos", counted_sample)
    metrics = train_library(library, bits=32)
    assert metrics["photos"] == 900 and 100 + 150 <= metrics["read"] <= 100 + 250  # tagged + ~200 sampled
    # The fingerprint and the two trainings' data read the sample's vectors alone, by id and in
    # batches; the only passes over the whole library give every photo its code (each training).
    assert len(samples) == 3 and all(read == photos <= 350 for photos, read in samples)
    assert max(by_id) <= 64 and max(batches) == 64 and sum(batches) == 2 * 900
    model_id, _ = library.hash_model()
    assert len(library.store.codes(model_id)[0]) == 900 and library.index.ntotal == 900

    # The sample is a function of the photo and the seed, not of how the ids are batched.
    ids = np.arange(1, 100_001, dtype=np.int64)
    kept = in_sample(ids, 0.25, seed=0)
    assert abs(kept.mean() - 0.25) < 0.01
    assert np.array_equal(kept, np.concatenate([in_sample(part, 0.25, seed=0) for part in np.array_split(ids, 7)]))
    assert not np.array_equal(kept, in_sample(ids, 0.25, seed=1)) and in_sample(ids, 1.0, seed=0).all()


def test_teacher_guesses_from_the_score_its_guesses_were_right_95_percent_of_the_time():
    import retrieval.supervision as supervision
    from bench.synthetic import AlignedConcepts

    concepts = AlignedConcepts([f"tag{i}" for i in range(200)], seed=0, image_noise=1.0)
    vectors, labels = concepts.photos(6000, seed=1)  # photos carrying 1-3 of 200 tags
    labels = np.asarray(labels, bool)
    tagged = np.arange(6000) < 3000
    rows, columns, facts = supervision.teacher_guesses(vectors[tagged], labels[tagged], vectors[~tagged])
    right = labels[~tagged][rows, columns]
    assert facts["teacher_precision"] >= supervision.TEACHER_PRECISION
    assert right.mean() >= supervision.TEACHER_PRECISION - 0.02  # as right on the untagged photos as measured
    found = right.sum() / labels[~tagged].sum()
    assert found > 0.75  # and most of their tags found
    # a photo's tags share a least-squares score, so a fixed 0.5 finds far fewer of them
    fixed = supervision.ridge_probes(vectors[tagged], labels[tagged])(vectors[~tagged]) >= 0.5
    assert facts["teacher_threshold"] < 0.5 and (fixed & labels[~tagged]).sum() / labels[~tagged].sum() < found - 0.1
    # tags that have nothing to do with the pictures: no score is reliable, nothing is guessed
    noise = np.random.default_rng(2).random(labels.shape) < labels.mean()
    rows, columns, facts = supervision.teacher_guesses(vectors[tagged], noise[tagged], vectors[~tagged])
    assert len(rows) == 0 and facts["teacher_threshold"] is None


def test_train_says_how_many_untagged_photos_trained_on_guessed_tags(tmp_path):
    from click.testing import CliRunner

    from retrieval.cli import main

    photos = colour_photos(tmp_path / "photos")
    home = ["--home", str(tmp_path / "home"), "--encoder", "fake"]
    runner = CliRunner()
    indexed = runner.invoke(main, [*home, "index", str(photos), "--workers", "0", "--tags", str(photos / "tags.csv")])
    assert indexed.exit_code == 0, indexed.output
    trained = runner.invoke(main, [*home, "train", "--bits", "32"])
    assert trained.exit_code == 0, trained.output
    assert "(12 tagged, 12 untagged trained on guessed tags)" in trained.output
