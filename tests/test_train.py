from dataclasses import replace

import numpy as np
import pytest
import torch

from models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from models.sparsehash import SparseHashConfig
from retrieval.evaluate import evaluate_codes
from retrieval.train import PairSampler, TrainConfig, train_sparsehash

FAST = TrainConfig(max_epochs=20, eval_every=5, batch_size=64, threads=1)


def config(images, texts, **kw):
    return SparseHashConfig(image_dim=images.shape[1], text_dim=texts.shape[1], bits=16, **kw)


def test_pair_sampler_is_balanced_and_correct(pairs):
    _, _, labels = pairs
    sampler = PairSampler(labels, torch.Generator().manual_seed(0), per_anchor=2)
    left, right, similar = sampler.pairs(torch.arange(100))
    assert similar.sum() == (1 - similar).sum() == 200  # as many similar as dissimilar
    shares = (labels[left.numpy()] * labels[right.numpy()]).sum(1) > 0
    assert np.array_equal(shares, similar.numpy() == 1)


def test_same_seed_gives_same_codes(pairs):
    images, texts, labels = pairs
    a = train_sparsehash(images, texts, labels, config(images, texts), FAST).model
    b = train_sparsehash(images, texts, labels, config(images, texts), FAST).model
    assert np.array_equal(a.encode(images, "image"), b.encode(images, "image"))
    assert np.array_equal(a.encode(texts, "text"), b.encode(texts, "text"))
    c = train_sparsehash(
        images, texts, labels, config(images, texts), TrainConfig(**{**FAST.__dict__, "seed": 1})
    ).model
    assert not np.array_equal(a.encode(images, "image"), c.encode(images, "image"))


def test_two_threads_train_the_same_weights_as_one(pairs):
    # Big steps (many pairs of 64-bit codes) put the indexing backward on several threads,
    # where unordered atomic adds once made runs of one seed drift apart.
    images, texts, labels = pairs
    cfg = SparseHashConfig(image_dim=images.shape[1], text_dim=texts.shape[1], bits=64)
    run = TrainConfig(max_epochs=6, batch_size=400, pairs_per_anchor=8, threads=2)
    states = [train_sparsehash(images, texts, labels, cfg, run, epochs=6).model.state_dict() for _ in range(3)]
    states.append(train_sparsehash(images, texts, labels, cfg, replace(run, threads=1), epochs=6).model.state_dict())
    for state in states[1:]:
        assert all(torch.equal(state[k], states[0][k]) for k in state)
    assert not torch.are_deterministic_algorithms_enabled()  # the global switch is restored


def test_training_learns_cross_modal_codes(pairs):
    images, texts, labels = pairs
    result = train_sparsehash(images, texts, labels, config(images, texts), FAST)
    model = result.model
    report = evaluate_codes(model.encode(texts, "text"), model.encode(images, "image"), labels, labels, 16)
    assert report.map_all > 0.8  # four well-separated clusters: chance is about 0.25
    assert result.val_map is not None and result.history
    assert report.mean_ones_database < 8  # sparse: most bits off


def test_fixed_epochs_uses_every_item_without_validation(pairs):
    images, texts, labels = pairs
    result = train_sparsehash(images, texts, labels, config(images, texts), FAST, epochs=3)
    assert result.epochs == 3 and result.val_map is None and result.history == []


def test_explicit_validation_split_drives_early_stopping(pairs):
    images, texts, labels = pairs
    fit, val = slice(0, 150), slice(150, None)
    result = train_sparsehash(
        images[fit],
        texts[fit],
        labels[fit],
        config(images, texts),
        FAST,
        validation=(images[val], texts[val], labels[val]),
    )
    assert result.history and result.val_map == max((h["val_i2t"] + h["val_t2i"]) / 2 for h in result.history)
    # the given items are the validation set: scoring them again gives the recorded best value
    best = next(h for h in result.history if h["epoch"] == result.epochs)
    again = evaluate_codes(
        result.model.encode(texts[val], "text"), result.model.encode(images[fit], "image"), labels[val], labels[fit], 16
    )
    assert again.map_all == pytest.approx(best["val_t2i"])


def test_checkpoint_round_trip(tmp_path, pairs):
    images, texts, labels = pairs
    model = train_sparsehash(images, texts, labels, config(images, texts), FAST, epochs=2).model
    path = tmp_path / "model.safetensors"
    save_checkpoint(model, path, extra={"note": "test"})
    loaded, extra = load_checkpoint(path)
    assert extra == {"note": "test"}
    assert loaded.config == model.config
    assert np.array_equal(loaded.encode(images, "image"), model.encode(images, "image"))
    assert np.array_equal(loaded.encode(texts, "text"), model.encode(texts, "text"))


def test_checkpoint_errors_are_specific(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        load_checkpoint(bad)
