"""Training the coupled SparseHash networks: balanced pair sampling, Adam, early stopping.

Deterministic under a seed (one torch generator drives initialisation, dropout and sampling;
torch's deterministic kernels are on while training, see `deterministic_kernels`), fast on two
cores (the networks are small: a few linear layers), and early-stopped on the validation mAP of
a split carved out of the training items.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from models.bits import hamming_distances
from models.sparsehash import SparseHash, SparseHashConfig
from retrieval.evaluate import hamming_map, radius_precision_recall, relevance
from retrieval.ranking import Fusion, choose_weight, learned_similarity, relaxed_codes, spreads
from retrieval.supervision import TrainingData, library_training_data, training_photos

MIN_VALIDATION = 20  # items a validation split needs to say anything about early stopping


@dataclass
class TrainConfig:
    max_epochs: int = 200  # upper bound on passes over the training items
    batch_size: int = 256  # anchors per step
    pairs_per_anchor: int = 4  # similar partners per anchor, and as many dissimilar ones
    lr: float = 3e-3  # Adam learning rate
    weight_decay: float = 1e-4  # decoupled weight decay (AdamW)
    eval_every: int = 5  # epochs between validation checks
    patience: int = 6  # validation checks without improvement before stopping
    min_steps: int = 0  # optimiser steps before early stopping may stop (a small library makes one an epoch)
    val_fraction: float = 0.2  # share of the training items held out for early stopping
    seed: int = 0  # seeds initialisation, dropout, sampling and the validation split
    threads: int = 2  # torch CPU threads


@dataclass
class TrainResult:
    model: SparseHash
    epochs: int  # epochs of the returned weights (best validation epoch when validating)
    val_map: float | None  # mean of image→text and text→image validation mAP@all
    seconds: float  # wall time of the whole run
    history: list[dict] = field(default_factory=list)  # one record per validation check


def multi_hot(labels: np.ndarray) -> np.ndarray:
    """Class indices [n] or multi-hot [n, c] -> float32 multi-hot [n, c]."""
    labels = np.asarray(labels)
    if labels.ndim == 1:
        out = np.zeros((len(labels), int(labels.max()) + 1), np.float32)
        out[np.arange(len(labels)), labels] = 1
        return out
    return labels.astype(np.float32)


class PairSampler:
    """For each anchor, partners that share a label (s=1) and as many that share none (s=0).

    Balanced by construction: every batch holds as many similar as dissimilar pairs, whatever
    the class sizes. A similar partner is a random member of one of the anchor's labels; a
    dissimilar one is the first of a few uniform draws that shares no label with the anchor.
    Anchors without labels get no similar partner; draws that all share a label are dropped.
    """

    draws = 16  # uniform candidates tried per dissimilar partner

    def __init__(self, labels: np.ndarray, generator: torch.Generator, *, per_anchor: int = 1) -> None:
        # Labels as each item's list of label ids (padded), not the multi-hot matrix: a library
        # with thousands of tags would gather megabytes of zeros per step (it was 3/4 of the time).
        self.generator = generator
        self.per_anchor = per_anchor
        hot = multi_hot(labels)
        item, label = np.nonzero(hot)  # row-major: grouped by item, labels ascending
        n = len(hot)
        self.n = n
        per_item = np.bincount(item, minlength=n)
        self.item_count = torch.as_tensor(per_item)
        width = max(1, int(per_item.max()) if len(per_item) else 1)
        padded = np.full((n, width), -1, np.int64)  # item -> its label ids, -1 after the last
        padded[item, np.arange(len(item)) - np.repeat(np.cumsum(per_item) - per_item, per_item)] = label
        self.item_labels = torch.as_tensor(padded)
        order = np.argsort(label, kind="stable")
        self.members = torch.as_tensor(item[order])  # items grouped by label
        counts = np.bincount(label, minlength=hot.shape[1])
        self.count = torch.as_tensor(counts)
        self.offset = torch.as_tensor(np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64))

    def _uniform(self, n: int) -> torch.Tensor:
        return torch.rand(n, generator=self.generator)

    def pairs(self, anchors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """anchors [b] -> (left [p], right [p], similar [p]) with p <= 2·b·per_anchor."""
        anchors = anchors.repeat(self.per_anchor)
        b = len(anchors)
        labelled = self.item_count[anchors] > 0
        # similar: a random label of the anchor, then a random member of that label
        owners = anchors[labelled]
        which = (self._uniform(len(owners)) * self.item_count[owners]).long()
        label = self.item_labels[owners, which]
        pick = (self._uniform(len(label)) * self.count[label]).long()
        positive = self.members[self.offset[label] + pick]
        # dissimilar: the first of several uniform draws that shares no label
        candidates = (self._uniform(b * self.draws) * self.n).long().view(b, self.draws)
        mine, theirs = self.item_labels[anchors], self.item_labels[candidates]  # [b, w], [b, draws, w]
        shares = torch.zeros(b, self.draws, dtype=torch.bool)
        for slot in range(mine.shape[1]):  # one of the anchor's labels at a time: [b, draws, w] at most
            label_here = mine[:, slot, None, None]
            shares |= ((theirs == label_here) & (label_here >= 0)).any(2)
        ok = ~shares
        found = ok.any(1)
        negative = candidates[torch.arange(b), ok.float().argmax(1)][found]
        left = torch.cat([owners, anchors[found]])
        right = torch.cat([positive, negative])
        similar = torch.cat([torch.ones(len(positive)), torch.zeros(len(negative))])
        return left, right, similar


def split_validation(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (fit, validation) of a seeded random split."""
    order = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * fraction))
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def validation_map(
    model: SparseHash,
    query: tuple[np.ndarray, ...],
    database: tuple[np.ndarray, ...],
) -> tuple[float, float]:
    """(image→text, text→image) mAP@all of validation queries against the fit items.

    Each tuple is (images, texts, labels) or (images, texts, labels, has_image, has_text): only
    items that have the side a direction needs take part; a direction with none scores nan."""
    (qi, qt, ql, q_img, q_txt), (di, dt, dl, d_img, d_txt) = (_with_sides(*query), _with_sides(*database))

    def direction(q_feats, q_side, q_mask, d_feats, d_side, d_mask) -> float:
        if not q_mask.any() or not d_mask.any():
            return float("nan")
        distances = hamming_distances(model.encode(q_feats[q_mask], q_side), model.encode(d_feats[d_mask], d_side))
        return hamming_map(distances, relevance(ql[q_mask], dl[d_mask]))

    return direction(qi, "image", q_img, dt, "text", d_txt), direction(qt, "text", q_txt, di, "image", d_img)


def _with_sides(images, texts, labels, has_image=None, has_text=None) -> tuple[np.ndarray, ...]:
    n = len(images)
    has_image = np.ones(n, bool) if has_image is None else np.asarray(has_image, bool)
    has_text = np.ones(n, bool) if has_text is None else np.asarray(has_text, bool)
    return images, texts, labels, has_image, has_text


@contextlib.contextmanager
def deterministic_kernels():
    """torch's deterministic algorithms for the duration. Without them, on more than one
    thread the backward of indexing (`h[left]`, an index_put_ that accumulates) adds with
    atomics in whatever order the threads arrive, so two runs of one seed drift apart (on the
    Wiki features: validation mAP 0.446 to 0.464 across seven runs of one setting)."""
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)


@deterministic_kernels()
def train_sparsehash(
    images: np.ndarray,
    texts: np.ndarray,
    labels: np.ndarray,
    model_config: SparseHashConfig,
    train_config: TrainConfig,
    *,
    epochs: int | None = None,
    validation: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    sides: tuple[np.ndarray, np.ndarray] | None = None,
    on_progress=None,
) -> TrainResult:
    """Train on paired (image, text, labels) items.

    With epochs=None, a validation split is held out and training stops early on its mAP; the
    returned model has the best validation weights (with fewer than MIN_VALIDATION items to
    hold out, every item trains for max_epochs instead). `validation` = (images, texts, labels)
    gives that split explicitly instead (then every given item trains; used where features
    were fitted on the training items alone, so validation items must stay out of them). With
    epochs=N, every item is used for exactly N epochs (the way to retrain on all data once N is
    known). `sides` = (has_image, has_text), bool [n] each: items that lack one side (a photo
    without tags, a tag on its own) take part only in the comparisons they can; their missing
    features are ignored.
    """
    start = time.perf_counter()
    torch.set_num_threads(train_config.threads)
    generator = torch.Generator().manual_seed(train_config.seed)
    torch.manual_seed(train_config.seed)  # dropout draws from the global generator
    images = np.asarray(images, np.float32)
    texts = np.asarray(texts, np.float32)
    labels = multi_hot(labels)
    _, _, _, has_image, has_text = _with_sides(images, texts, labels, *(sides or ()))

    if epochs is None and validation is None and len(images) * train_config.val_fraction < MIN_VALIDATION:
        # too few items to tell one epoch from another: train them all, for min_steps at least
        epochs = max(train_config.max_epochs, -(-train_config.min_steps // -(-len(images) // train_config.batch_size)))
    if epochs is not None:  # a fixed run on every item
        validation = None
    elif validation is None:  # hold out a split of the items
        fit, val = split_validation(len(images), train_config.val_fraction, train_config.seed)
        validation = (images[val], texts[val], labels[val], has_image[val], has_text[val])
        images, texts, labels, has_image, has_text = (a[fit] for a in (images, texts, labels, has_image, has_text))
    else:
        v_images, v_texts, v_labels = validation
        validation = (np.asarray(v_images, np.float32), np.asarray(v_texts, np.float32), multi_hot(v_labels))
    max_epochs = train_config.max_epochs if epochs is None else epochs

    model = SparseHash(model_config)
    xi, xt = torch.as_tensor(images), torch.as_tensor(texts)
    model.image.fit_input(xi[torch.as_tensor(has_image)])
    model.text.fit_input(xt[torch.as_tensor(has_text)])
    with torch.no_grad():  # once, not every step (the encoders' input standardisation is fixed now)
        xi, xt = model.image.standardise(xi), model.text.standardise(xt)
    image_side, text_side = torch.as_tensor(has_image), torch.as_tensor(has_text)
    sampler = PairSampler(labels, generator, per_anchor=train_config.pairs_per_anchor)
    optimiser = torch.optim.AdamW(model.parameters(), lr=train_config.lr, weight_decay=train_config.weight_decay)

    best_state, best_score, best_epoch, stale = None, -1.0, max_epochs, 0
    history: list[dict] = []
    n, steps = len(images), 0
    for epoch in range(1, max_epochs + 1):
        if on_progress is not None:  # (epoch, most epochs): early stopping may end sooner
            on_progress(epoch, max_epochs)
        model.train()
        for anchors in torch.randperm(n, generator=generator).split(train_config.batch_size):
            left, right, similar = sampler.pairs(anchors)
            # encode each item of the step once, then compare codes by index
            items, index = torch.unique(torch.cat([left, right]), return_inverse=True)
            left, right = index[: len(left)], index[len(left) :]
            loss = model.loss(
                xi[items], xt[items], left, right, similar, image_side[items], text_side[items], standardised=True
            )
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            steps += 1
        if validation is not None and (epoch % train_config.eval_every == 0 or epoch == max_epochs):
            i2t, t2i = validation_map(model, validation, (images, texts, labels, has_image, has_text))
            score = float(np.nanmean([i2t, t2i]))
            history.append({"epoch": epoch, "loss": float(loss.detach()), "val_i2t": i2t, "val_t2i": t2i})
            if score > best_score:
                best_state, best_score, best_epoch, stale = copy.deepcopy(model.state_dict()), score, epoch, 0
            else:
                stale += 1
                if stale >= train_config.patience and steps >= train_config.min_steps:
                    break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return TrainResult(
        model=model,
        epochs=best_epoch if validation is not None else max_epochs,
        val_map=best_score if validation is not None else None,
        seconds=time.perf_counter() - start,
        history=history,
    )


def match_radius(model: SparseHash, data: TrainingData, *, seed: int = 0, queries: int = 300) -> int:
    """The Hamming radius whose text→image ball has the best F1 on the training data: how far
    a photo may be from a tag's code and still count as carrying it (boolean queries)."""
    texts = np.flatnonzero(data.has_text)
    rows = np.random.default_rng(seed).permutation(texts)[:queries]
    images = data.has_image
    distances = hamming_distances(model.encode(data.texts[rows], "text"), model.encode(data.images[images], "image"))
    relevant = relevance(data.labels[rows], data.labels[images])
    precision, recall = radius_precision_recall(distances, relevant, model.config.bits // 4)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return int(np.argmax(f1))


HELD_OUT_SHARE = 0.2  # of the tagged photos, their tags hidden from training to choose and calibrate scores
HELD_OUT_MAX = 2000  # held-out photos at most (calibration cost grows with them)
MIN_HELD_OUT = 10  # held-out photos needed to fit the fusion weights and the tag calibration


def fit_fusion(library, model: SparseHash, held_out: list[int], truth: dict[int, set[str]], tags: list[str]) -> Fusion:
    """Choose the default ranking's weights (retrieval/ranking.py) on held-out tagged photos:
    each learned tag ranks the held-out photos (relevant: those carrying it); half of the
    held-out photos rank the other half (relevant: sharing a tag)."""
    if len(held_out) < MIN_HELD_OUT or not tags:
        return Fusion()
    (learned, cosine), (image_learned, image_cosine) = _similarities(library, model, held_out, tags)
    carries = np.array([[t in truth[i] for i in held_out] for t in tags])  # [tags, held-out]
    text_weight, text_table, (text_learned, text_cosine) = choose_weight(learned, cosine, carries)
    half = len(held_out) // 2
    share = np.array(
        [[bool(truth[held_out[q]] & truth[held_out[o]]) for o in range(half, len(held_out))] for q in range(half)]
    )
    image_weight, image_table, (image_spread, image_cos_spread) = choose_weight(image_learned, image_cosine, share)
    table = [
        {"weight": t["weight"], "tag_map": t["map"], "photo_map": i["map"]} for t, i in zip(text_table, image_table)
    ]
    return Fusion(
        text_weight=text_weight,
        image_weight=image_weight,
        learned_spread=text_learned,
        cosine_spread=text_cosine,
        image_learned_spread=image_spread,
        image_cosine_spread=image_cos_spread,
        fitted=True,
        photos=len(held_out),
        table=table,
    )


def _similarities(library, model: SparseHash, photo_ids: list[int], tags: list[str]):
    """((learned, cosine) [tags, photos] of the tags to the photos, (learned, cosine) of the first
    half of the photos to the second half)."""
    from retrieval.vocabulary import TagVocabulary

    vectors = library.embedding_store.of(photo_ids)  # [p, dim]
    photos = relaxed_codes(model, vectors, "image")
    tag_vectors = TagVocabulary(library).vectors(tags)
    text = (learned_similarity(relaxed_codes(model, tag_vectors, "text"), photos), tag_vectors @ vectors.T)
    half = len(photo_ids) // 2
    image = (learned_similarity(photos[:half], photos[half:]), vectors[:half] @ vectors[half:].T)
    return text, image


def radius_precision_table(library, model: SparseHash, held_out: list[int], truth: dict[int, set[str]], tags):
    """For each Hamming radius, the share of held-out photos within it of a learned tag's code
    that carry the tag (pooled over the tags), and the share of carriers it reaches: what a
    radius search finds among photos like the untagged ones. None where no photo is that near."""
    if len(held_out) < MIN_HELD_OUT or not tags:
        return None
    from retrieval.vocabulary import TagVocabulary

    photos = model.encode(library.embedding_store.of(held_out), "image")
    distances = hamming_distances(model.encode(TagVocabulary(library).vectors(tags), "text"), photos)
    carries = np.array([[t in truth[i] for i in held_out] for t in tags])  # [tags, held-out]
    table = []
    for radius in range(model.config.bits // 4 + 1):
        within = distances <= radius
        found, right = int(within.sum()), int((within & carries).sum())
        table.append(
            {
                "radius": radius,
                "precision": right / found if found else None,
                "recall": right / max(1, int(carries.sum())),
                "found": found,
            }
        )
    return {"photos": len(held_out), "tags": len(tags), "table": table}


def rescaled(fusion: Fusion, library, model: SparseHash, photo_ids: list[int], tags: list[str]) -> Fusion:
    """The fusion's spreads measured again for another model (the refit one), its weights kept."""
    if not fusion.fitted:
        return fusion
    (learned, cosine), (image_learned, image_cosine) = _similarities(library, model, photo_ids, tags)
    fusion.learned_spread, fusion.cosine_spread = spreads(learned, cosine)
    fusion.image_learned_spread, fusion.image_cosine_spread = spreads(image_learned, image_cosine)
    return fusion


LEAK = 0.1  # shrinkage gradient below threshold: a library has few distinct tag texts, units die without it
LIBRARY_MIN_STEPS = 1000  # a library of a few hundred photos makes 2 steps an epoch: train it long enough
LIBRARY_STOP_STEPS = 20  # steps an epoch from which early stopping alone decides (>= ~1,300 validation items)


def library_train_config(items: int, seed: int) -> TrainConfig:
    """How a library trains: validation checked every 2 epochs, stopping after 5 checks without
    gain. A small library (few steps an epoch, a few hundred validation items whose mAP jumps
    about) trains LIBRARY_MIN_STEPS steps at least; a large one stops when validation says."""
    config = TrainConfig(seed=seed, eval_every=2, patience=5)
    steps_per_epoch = -(-round(items * (1 - config.val_fraction)) // config.batch_size)
    config.min_steps = LIBRARY_MIN_STEPS if steps_per_epoch < LIBRARY_STOP_STEPS else 0
    return config


TRAINING_VERSION = 4  # part of the inputs' fingerprint: a change to how libraries train makes old models stale


def training_fingerprint(library, bits: int, seed: int) -> str:
    """A digest of everything a library's training depends on: the embeddings of the photos it
    trains on (all of them, or the sample a large library trains on), the photos' tags, the
    vocabulary, the settings and the training code's version. Training is deterministic, so a
    library whose fingerprint equals its model's would train that model again."""
    total = library.embedding_store.count()
    tags_by_image = library.store.tags_by_image()
    ids, vectors = training_photos(library, {i for i, ts in tags_by_image.items() if ts}, seed, total)
    digest = hashlib.sha256(json.dumps([TRAINING_VERSION, bits, seed, library.encoder_name, total]).encode())
    digest.update(ids.tobytes())
    digest.update(vectors.astype(np.float16).tobytes())  # the stored float16 bytes, on either backend
    digest.update(json.dumps(sorted(tags_by_image.items())).encode())
    digest.update(json.dumps(library.vocabulary).encode())
    return digest.hexdigest()


def train_library(library, *, bits: int = 64, seed: int = 0, force: bool = False, on_progress=None) -> dict:
    """Train a hash model on the library's own photos and install it (codes and index rebuilt);
    its metrics are returned. A library with nothing new since its model was trained keeps that
    model (the metrics then say "unchanged": True) unless `force`.

    When the library has enough tagged photos, the tags of a share of them are first hidden
    from a training run (those photos train as untagged ones do); with that model installed,
    the default ranking's weights are chosen and the tag suggestion scores calibrated on them.
    Then the model is trained again, as long, on every tag, and installed with those weights
    and that calibration: measured on photos like the untagged ones, without losing a fifth of
    the user's tags to the measurement.
    """
    from retrieval.annotate import fit_calibration

    fingerprint = training_fingerprint(library, bits, seed)
    current = library.hash_model()
    if current is not None and not force:
        metrics = library.model_metrics()
        coded = library.store.db.execute("select count(*) from codes where model_id = ?", [current[0]]).fetchone()[0]
        if metrics.get("fingerprint") == fingerprint and coded == library.embedding_store.count():
            return dict(metrics, unchanged=True)  # and every photo still has its code
    seconds: dict[str, float] = {}  # where the time goes, by step (the model's metrics show it)
    clock = time.perf_counter()

    def lap(step: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[step] = seconds.get(step, 0.0) + now - clock
        clock = now

    tags_by_image = library.store.tags_by_image()
    tagged = sorted(tags_by_image)
    held_out: list[int] = []
    if len(tagged) * HELD_OUT_SHARE >= MIN_HELD_OUT:
        count = min(HELD_OUT_MAX, int(len(tagged) * HELD_OUT_SHARE))
        held_out = sorted(np.random.default_rng(seed).choice(tagged, size=count, replace=False).tolist())
    data = library_training_data(library, seed=seed, hidden=set(held_out))
    lap("training_data")
    result = _fit(data, bits, seed, on_progress)
    lap("fit")
    metrics = dict(data.facts, val_map=result.val_map, epochs=result.epochs, train_seconds=result.seconds)
    metrics["match_radius"] = match_radius(result.model, data, seed=seed)
    metrics["learned_tags"] = data.tags
    model_id = library.install_model(result.model, metrics=metrics)
    lap("install")
    truth = {i: set(tags_by_image[i]) for i in held_out}
    fusion = fit_fusion(library, result.model, held_out, truth, data.tags)
    lap("fusion")
    calibration = fit_calibration(library, held_out, truth)
    lap("calibration")
    by_radius = radius_precision_table(library, result.model, held_out, truth, data.tags)
    if held_out:  # train again on every tag, as long as the first run
        data = library_training_data(library, seed=seed)
        lap("training_data")
        final = _fit(data, bits, seed, on_progress, epochs=result.epochs)
        lap("fit")
        metrics.update(data.facts, train_seconds=metrics["train_seconds"] + final.seconds, refit=True)
        metrics["match_radius"] = match_radius(final.model, data, seed=seed)
        metrics["learned_tags"] = data.tags
        model_id = library.install_model(final.model, metrics=metrics)
        lap("install")
        fusion = rescaled(fusion, library, final.model, held_out, data.tags)
        lap("fusion")
    metrics.update(
        model_id=model_id, held_out=len(held_out), fusion=fusion.to_dict(), tag_calibration=calibration.__dict__
    )
    metrics["radius_precision"] = by_radius  # of the model trained with the held-out tags hidden
    metrics["step_seconds"] = seconds
    metrics["fingerprint"] = fingerprint
    library.set_model_metrics(model_id, metrics)
    return metrics


def _fit(data: TrainingData, bits: int, seed: int, on_progress, epochs: int | None = None) -> TrainResult:
    config = SparseHashConfig(
        image_dim=data.images.shape[1], text_dim=data.texts.shape[1], bits=bits, margin=0.375 * bits, leak=LEAK
    )
    sides = (data.has_image, data.has_text)
    return train_sparsehash(
        data.images,
        data.texts,
        data.labels,
        config,
        library_train_config(len(data.images), seed),
        epochs=epochs,
        sides=sides,
        on_progress=on_progress,
    )
