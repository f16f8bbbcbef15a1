"""Training the coupled SparseHash networks: balanced pair sampling, Adam, early stopping.

Deterministic under a seed (one torch generator drives initialisation, dropout and sampling;
torch's deterministic kernels are on while training, see `deterministic_kernels`), fast on two
cores (the networks are small: a few linear layers), and early-stopped on the validation mAP of
a split carved out of the training items.
"""

from __future__ import annotations

import contextlib
import copy
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from models.bits import hamming_distances
from models.sparsehash import SparseHash, SparseHashConfig
from retrieval.evaluate import hamming_map, relevance


@dataclass
class TrainConfig:
    max_epochs: int = 200  # upper bound on passes over the training items
    batch_size: int = 256  # anchors per step
    pairs_per_anchor: int = 4  # similar partners per anchor, and as many dissimilar ones
    lr: float = 3e-3  # Adam learning rate
    weight_decay: float = 1e-4  # decoupled weight decay (AdamW)
    eval_every: int = 5  # epochs between validation checks
    patience: int = 6  # validation checks without improvement before stopping
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
        self.labels = torch.as_tensor(multi_hot(labels))
        self.generator = generator
        self.per_anchor = per_anchor
        item, label = np.nonzero(multi_hot(labels))
        order = np.argsort(label, kind="stable")
        self.members = torch.as_tensor(item[order])  # items grouped by label
        counts = np.bincount(label, minlength=self.labels.shape[1])
        self.count = torch.as_tensor(counts)
        self.offset = torch.as_tensor(np.concatenate([[0], np.cumsum(counts)[:-1]]))

    def _uniform(self, n: int) -> torch.Tensor:
        return torch.rand(n, generator=self.generator)

    def pairs(self, anchors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """anchors [b] -> (left [p], right [p], similar [p]) with p <= 2·b·per_anchor."""
        anchors = anchors.repeat(self.per_anchor)
        b = len(anchors)
        anchor_labels = self.labels[anchors]  # [b, c]
        labelled = anchor_labels.sum(1) > 0
        # similar: a random label of the anchor, then a random member of that label
        weights = anchor_labels[labelled]
        label = torch.multinomial(weights, 1, generator=self.generator)[:, 0]
        pick = (self._uniform(len(label)) * self.count[label]).long()
        positive = self.members[self.offset[label] + pick]
        # dissimilar: the first of several uniform draws that shares no label
        candidates = (self._uniform(b * self.draws) * len(self.labels)).long().view(b, self.draws)
        shares = (self.labels[candidates] * anchor_labels[:, None, :]).sum(2) > 0  # [b, draws]
        ok = ~shares
        found = ok.any(1)
        negative = candidates[torch.arange(b), ok.float().argmax(1)][found]
        left = torch.cat([anchors[labelled], anchors[found]])
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
    query: tuple[np.ndarray, np.ndarray, np.ndarray],
    database: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> tuple[float, float]:
    """(image→text, text→image) mAP@all of validation queries against the fit items."""
    (qi, qt, ql), (di, dt, dl) = query, database
    rel = relevance(ql, dl)
    i2t = hamming_map(hamming_distances(model.encode(qi, "image"), model.encode(dt, "text")), rel)
    t2i = hamming_map(hamming_distances(model.encode(qt, "text"), model.encode(di, "image")), rel)
    return i2t, t2i


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
    on_progress=None,
) -> TrainResult:
    """Train on paired (image, text, labels) items.

    With epochs=None, a validation split is held out and training stops early on its mAP; the
    returned model has the best validation weights. `validation` = (images, texts, labels)
    gives that split explicitly instead (then every given item trains; used where features
    were fitted on the training items alone, so validation items must stay out of them). With
    epochs=N, every item is used for exactly N epochs (the way to retrain on all data once N is
    known).
    """
    start = time.perf_counter()
    torch.set_num_threads(train_config.threads)
    generator = torch.Generator().manual_seed(train_config.seed)
    torch.manual_seed(train_config.seed)  # dropout draws from the global generator
    images = np.asarray(images, np.float32)
    texts = np.asarray(texts, np.float32)
    labels = multi_hot(labels)

    if epochs is not None:  # a fixed run on every item
        validation = None
    elif validation is None:  # hold out a split of the items
        fit, val = split_validation(len(images), train_config.val_fraction, train_config.seed)
        validation = (images[val], texts[val], labels[val])
        images, texts, labels = images[fit], texts[fit], labels[fit]
    else:
        v_images, v_texts, v_labels = validation
        validation = (np.asarray(v_images, np.float32), np.asarray(v_texts, np.float32), multi_hot(v_labels))
    max_epochs = train_config.max_epochs if epochs is None else epochs

    model = SparseHash(model_config)
    xi, xt = torch.as_tensor(images), torch.as_tensor(texts)
    model.image.fit_input(xi)
    model.text.fit_input(xt)
    sampler = PairSampler(labels, generator, per_anchor=train_config.pairs_per_anchor)
    optimiser = torch.optim.AdamW(model.parameters(), lr=train_config.lr, weight_decay=train_config.weight_decay)

    best_state, best_score, best_epoch, stale = None, -1.0, max_epochs, 0
    history: list[dict] = []
    n = len(images)
    for epoch in range(1, max_epochs + 1):
        if on_progress is not None:  # (epoch, most epochs): early stopping may end sooner
            on_progress(epoch, max_epochs)
        model.train()
        for anchors in torch.randperm(n, generator=generator).split(train_config.batch_size):
            left, right, similar = sampler.pairs(anchors)
            # encode each item of the step once, then compare codes by index
            items, index = torch.unique(torch.cat([left, right]), return_inverse=True)
            left, right = index[: len(left)], index[len(left) :]
            loss = model.loss(xi[items], xt[items], left, right, similar)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        if validation is not None and (epoch % train_config.eval_every == 0 or epoch == max_epochs):
            i2t, t2i = validation_map(model, validation, (images, texts, labels))
            score = (i2t + t2i) / 2
            history.append({"epoch": epoch, "loss": float(loss.detach()), "val_i2t": i2t, "val_t2i": t2i})
            if score > best_score:
                best_state, best_score, best_epoch, stale = copy.deepcopy(model.state_dict()), score, epoch, 0
            else:
                stale += 1
                if stale >= train_config.patience:
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


class NothingToTrain(RuntimeError):
    """The library has too few embedded photos to train a hash model."""


def _kmeans_labels(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Cluster ids of rows of x (cosine k-means via FAISS)."""
    import faiss

    km = faiss.Kmeans(x.shape[1], k, niter=20, seed=seed, spherical=True, verbose=False, min_points_per_centroid=1)
    km.train(np.ascontiguousarray(x, np.float32))
    return km.index.search(np.ascontiguousarray(x, np.float32), 1)[1][:, 0]


def library_training_data(
    library, *, seed: int = 0, exclude: set[int] | frozenset = frozenset()
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """(image embeddings, text embeddings, multi-hot labels, facts) for training on a library.

    Supervision, best first: the photo's own tags (user, sidecar, XMP/IPTC, accepted). A photo
    without tags gets CLIP's stand-ins: the tag its embedding is closest to (zero-shot; over the
    library's tags, or over the shipped vocabulary when the library has none) as its text, and,
    for every photo, a cluster of its image neighbours (k-means) as a label, so a library without
    any tag still trains. Tagged photos' text is their tag list. Photos in `exclude` (held out
    for calibration) are left out.
    """
    from retrieval.vocabulary import TagVocabulary

    ids, images = library.embeddings()
    keep = np.array([int(i) not in exclude for i in ids], bool)
    ids, images = ids[keep], images[keep]
    if len(ids) < 8:
        raise NothingToTrain(f"the library has {len(ids)} embedded photos; index at least 8 before training")
    tags_by_image = library.store.tags_by_image()
    vocabulary = sorted({t for i in ids for t in tags_by_image.get(int(i), [])})
    zero_shot = vocabulary or library.vocabulary
    tag_vectors = TagVocabulary(library).vectors(zero_shot)
    texts, label_sets, has_tags = [], [], []
    for row, image_id in enumerate(ids):
        tags = tags_by_image.get(int(image_id))
        has_tags.append(bool(tags))
        if not tags:  # zero-shot: the closest tag
            tags = [zero_shot[int(np.argmax(tag_vectors @ images[row]))]]
        texts.append(", ".join(tags))
        label_sets.append(set(tags))
    clusters = _kmeans_labels(images, max(2, min(64, int(np.sqrt(len(ids) / 2)))), seed)
    vocabulary = sorted(set().union(*label_sets))
    label_names = vocabulary + [f"cluster {c}" for c in range(int(clusters.max()) + 1)]
    labels = np.zeros((len(ids), len(label_names)), np.float32)
    index = {name: i for i, name in enumerate(label_names)}
    for row, names in enumerate(label_sets):
        for name in names:
            labels[row, index[name]] = 1
        if not has_tags[row]:  # untagged photos also share a label with their image neighbours
            labels[row, len(vocabulary) + clusters[row]] = 1
    unique_texts = list(dict.fromkeys(texts))  # many photos share a tag list: encode each once
    encoded = dict(zip(unique_texts, library.encoder.encode_texts(unique_texts)))
    text_vectors = np.stack([encoded[t] for t in texts])
    facts = {
        "photos": int(len(ids)),
        "tagged": int(sum(has_tags)),
        "vocabulary": len(vocabulary),
        "clusters": int(clusters.max()) + 1,
    }
    return images, text_vectors, labels, facts


def match_radius(model: SparseHash, images, texts, labels, *, seed: int = 0, queries: int = 300) -> int:
    """The Hamming radius whose text→image ball has the best F1 on the training data: how far
    a photo may be from a tag's code and still count as carrying it (boolean queries)."""
    from models.bits import hamming_distances
    from retrieval.evaluate import radius_precision_recall, relevance

    rows = np.random.default_rng(seed).permutation(len(texts))[:queries]
    distances = hamming_distances(model.encode(texts[rows], "text"), model.encode(images, "image"))
    precision, recall = radius_precision_recall(distances, relevance(labels[rows], labels), model.config.bits // 4)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return int(np.argmax(f1))


CALIBRATION_SHARE = 0.2  # of the tagged photos, held out of training to calibrate tag scores
CALIBRATION_MAX = 2000  # held-out photos at most (calibration cost grows with them)


def train_library(library, *, bits: int = 64, seed: int = 0, on_progress=None) -> dict:
    """Train a hash model on the library's own photos and install it (codes and index rebuilt).

    When the library has enough tagged photos, a share of them is held out of the training and
    used to calibrate the tag suggestion scores (retrieval/annotate.py) under the new model.
    """
    from retrieval.annotate import MIN_HELD_OUT, fit_calibration

    tags_by_image = library.store.tags_by_image()
    tagged = sorted(tags_by_image)
    held_out: list[int] = []
    if len(tagged) * CALIBRATION_SHARE >= MIN_HELD_OUT:
        count = min(CALIBRATION_MAX, int(len(tagged) * CALIBRATION_SHARE))
        held_out = sorted(np.random.default_rng(seed).choice(tagged, size=count, replace=False).tolist())
    images, texts, labels, facts = library_training_data(library, seed=seed, exclude=set(held_out))
    config = SparseHashConfig(image_dim=images.shape[1], text_dim=texts.shape[1], bits=bits, margin=0.375 * bits)
    result = train_sparsehash(images, texts, labels, config, TrainConfig(seed=seed), on_progress=on_progress)
    metrics = dict(facts, val_map=result.val_map, epochs=result.epochs, train_seconds=result.seconds)
    metrics["match_radius"] = match_radius(result.model, images, texts, labels, seed=seed)
    model_id = library.install_model(result.model, metrics=metrics)
    calibration = fit_calibration(library, held_out, {i: set(tags_by_image[i]) for i in held_out})
    metrics.update(model_id=model_id, held_out=len(held_out), tag_calibration=calibration.__dict__)
    with library.store.transaction():
        library.store.set_model_metrics(model_id, metrics)
    return metrics
