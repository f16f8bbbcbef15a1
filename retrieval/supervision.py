"""What each photo is trained on: the user's tags, and for photos nobody tagged, a careful guess.

Training items (rows of TrainingData) have an image side, a text side, or both:
- a tagged photo: its image and its tag list (the normalised mean of its tags' text vectors),
  labelled with its tags;
- every tag on its own, from each photo that carries it beside other tags: text only, labelled
  with that tag, because people type one tag ("red") while photos carry lists ("red, circle");
- an untagged photo: image only, labelled with the tags a teacher is confident it carries. The
  teacher is a linear probe per tag on the tagged photos' CLIP vectors, confident from the score
  at which its guesses were right 95% of the time on tagged photos it was not fitted on: it learns a
  word CLIP cannot know ("box 17") as well as one it knows, where CLIP's zero-shot guess ("the
  closest tag") is noise for the first kind and outvoted the user's own tags. Photos the teacher
  is unsure of are left out of the training (and coded by the trained model like every photo).
A library without any tag still trains: every photo gets the vocabulary tag CLIP finds closest
as its text, and a cluster of its image neighbours (k-means) as a label.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

TEACHER_RIDGE = 0.1  # L2 strength of the probes (bench clip's guesses: 0.01, 0.1, 1 -> 0.1 as right as before)
# A guess counts where the probes' scores are right this often, measured out of fold on the
# tagged photos. A fixed score of 0.5 kept 0.98 of bench clip's one-tag photos' guesses right
# but found only 58% of the tags of the search bench's photos carrying 1–3 tags (a least-squares
# score is shared among a photo's tags); 0.95 finds 82% there, 95.7% right, and keeps bench
# clip's threshold near 0.5.
TEACHER_PRECISION = 0.95
THRESHOLD_PHOTOS = 5_000  # tagged photos the out-of-fold precision is measured on at most
MIN_PHOTOS_PER_TAG = 2  # tags on fewer tagged photos get no probe (they still train as tags)
# Untagged photos a training reads at most (beyond, a seeded sample): the teacher's guesses for
# 100,000 photos are more than training can use (its steps see a few hundred thousand items), and
# their embeddings are 200 MB; a library of 10^8 would not fit in memory at all.
MAX_UNTAGGED = 100_000


class NothingToTrain(RuntimeError):
    """The library has too few embedded photos to train a hash model."""


@dataclass
class TrainingData:
    images: np.ndarray  # [n, dim] image embeddings (zeros where has_image is False)
    texts: np.ndarray  # [n, dim] text embeddings (zeros where has_text is False)
    labels: np.ndarray  # [n, labels] multi-hot
    has_image: np.ndarray  # [n] bool
    has_text: np.ndarray  # [n] bool
    tags: list[str]  # the library tags learned: label columns 0 .. len(tags) − 1
    facts: dict = field(default_factory=dict)  # counts for the model's metrics


def unit_mean(vectors: np.ndarray) -> np.ndarray:
    v = np.asarray(vectors, np.float32).mean(0)
    return v / max(float(np.linalg.norm(v)), 1e-12)


def kmeans_labels(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Cluster ids of rows of x (cosine k-means via FAISS)."""
    import faiss

    km = faiss.Kmeans(x.shape[1], k, niter=20, seed=seed, spherical=True, verbose=False, min_points_per_centroid=1)
    km.train(np.ascontiguousarray(x, np.float32))
    return km.index.search(np.ascontiguousarray(x, np.float32), 1)[1][:, 0]


def ridge_probes(vectors: np.ndarray, carries: np.ndarray):
    """Least-squares probes of what photos carry (bool [t, tags]) from their vectors [t, dim]:
    a function of other vectors [u, dim] giving scores [u, tags] (about 1: carried, 0: not).
    All probes share one dim × dim system (closed-form ridge regression), so 2,000 tags cost
    what one does."""
    x = np.asarray(vectors, np.float64)
    mean = x.mean(0)
    centred = x - mean
    targets = carries.astype(np.float64)
    base = targets.mean(0)
    gram = centred.T @ centred + TEACHER_RIDGE * np.eye(x.shape[1])
    weights = np.linalg.solve(gram, centred.T @ (targets - base)).astype(np.float32)  # [dim, tags]
    mean, base = mean.astype(np.float32), base.astype(np.float32)
    return lambda other: (np.asarray(other, np.float32) - mean) @ weights + base


def teacher_threshold(tagged: np.ndarray, carries: np.ndarray, *, seed: int = 0) -> tuple[float | None, float]:
    """(score, precision): the lowest probe score from which the probes' guesses are right at
    least TEACHER_PRECISION of the time, measured out of fold (two halves of at most
    THRESHOLD_PHOTOS tagged photos, each scored by the probes of the other), and the precision
    reached there. Where no score is that reliable, (None, 0): nothing is guessed."""
    rng = np.random.default_rng(seed)
    rows = np.arange(len(tagged))
    if len(rows) > THRESHOLD_PHOTOS:
        rows = np.sort(rng.choice(rows, THRESHOLD_PHOTOS, replace=False))
    half = rng.permutation(len(rows)) < len(rows) // 2
    scores, truths = [], []
    for fit, scored in ((half, ~half), (~half, half)):
        if fit.sum() < 2 or not scored.any():
            return None, 0.0
        probe = ridge_probes(tagged[rows[fit]], carries[rows[fit]])
        s = probe(tagged[rows[scored]])
        keep = s >= 0.05  # pairs scored near 0 never set the threshold; dropping them saves memory
        scores.append(s[keep])
        truths.append(carries[rows[scored]][keep])
    scores, truths = np.concatenate(scores), np.concatenate(truths)
    order = np.argsort(-scores, kind="stable")
    precision = np.cumsum(truths[order]) / np.arange(1, len(order) + 1)
    reliable = np.flatnonzero(precision >= TEACHER_PRECISION)
    if not len(reliable):
        return None, 0.0
    last = reliable[-1]
    return float(scores[order][last]), float(precision[last])


def teacher_guesses(
    tagged: np.ndarray, carries: np.ndarray, untagged: np.ndarray, *, seed: int = 0, chunk: int = 20_000
) -> tuple[np.ndarray, np.ndarray, dict]:
    """(rows, tag columns, facts) where an untagged photo probably carries a tag: ridge probes
    per tag, fitted on the tagged photos' vectors [t, dim] and what they carry (bool [t, tags]),
    applied to the untagged photos' vectors [u, dim]; pairs scoring at least teacher_threshold.
    Tags with too few photos (or carried by all) get no probe. `facts` has the threshold and
    its out-of-fold precision.

    On bench clip's real CLIP vectors the guesses are as right as per-tag logistic regressions
    were, in 0.01 s instead of 0.4 s for 10 tags. Pairs, not a [u, tags] matrix: a library of a
    million photos and a thousand tags would not fit one in memory."""
    counts = carries.sum(0)
    probed = np.flatnonzero((counts >= MIN_PHOTOS_PER_TAG) & (len(carries) - counts >= MIN_PHOTOS_PER_TAG))
    none = np.zeros(0, np.int64), np.zeros(0, np.int64)
    if not len(untagged) or not len(probed):
        return *none, {}
    threshold, precision = teacher_threshold(tagged, carries[:, probed], seed=seed)
    facts = {"teacher_threshold": threshold, "teacher_precision": precision}
    if threshold is None:
        return *none, facts
    probe = ridge_probes(tagged, carries[:, probed])
    rows, columns = [], []
    for start in range(0, len(untagged), chunk):
        r, c = np.nonzero(probe(untagged[start : start + chunk]) >= threshold)
        rows.append(r + start)
        columns.append(probed[c])
    order = np.lexsort((np.concatenate(rows), np.concatenate(columns)))  # by tag, then photo
    return np.concatenate(rows)[order].astype(np.int64), np.concatenate(columns)[order].astype(np.int64), facts


def in_sample(ids: np.ndarray, share: float, seed: int) -> np.ndarray:
    """Which of `ids` a seeded sample of about `share` of all photos keeps: a hash of each id
    and the seed (splitmix64), so a photo is kept or not whatever batch it is read in."""
    if share >= 1:
        return np.ones(len(ids), bool)
    with np.errstate(over="ignore"):
        x = ids.astype(np.uint64) + np.uint64((seed + 1) * 0x9E3779B97F4A7C15 % 2**64)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    return (x >> np.uint64(11)).astype(np.float64) / 2.0**53 < share


def training_photos(library, tagged: set[int], seed: int, total: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids, embeddings) training reads, in id order: every tagged photo, and the untagged ones
    or, in a library of more than MAX_UNTAGGED of them (of `total` embedded photos), a seeded
    sample of about that many. Memory holds what training uses and one batch, not the whole
    library; a sample is chosen from SQLite's ids, so only its own vectors are read (from
    Milvus, on that backend), not every photo's."""
    share = MAX_UNTAGGED / max(1, total - len(tagged))
    tagged_ids = np.array(sorted(tagged), np.int64)
    kept_ids, kept = [], []
    if share >= 1:  # every photo trains: read in order, a batch at a time
        for ids, vectors in library.embedding_store.batches():
            kept_ids.append(ids)
            kept.append(vectors)
    else:
        for ids in library.store.embedded_id_batches(library.encoder_name):
            chosen = ids[np.isin(ids, tagged_ids) | in_sample(ids, share, seed)]
            if len(chosen):
                kept_ids.append(chosen)
                kept.append(library.embedding_store.of(chosen))
    if not kept:
        return np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
    return np.concatenate(kept_ids), np.concatenate(kept)


def library_training_data(library, *, seed: int = 0, hidden: set[int] | frozenset = frozenset()) -> TrainingData:
    """The training items of a library (see the module docstring). Photos in `hidden` are
    treated as untagged (their tags are held out to choose and calibrate scores)."""
    from retrieval.vocabulary import TagVocabulary

    total = library.embedding_store.count()
    if total < 8:
        raise NothingToTrain(f"the library has {total} embedded photos; index at least 8 before training")
    tags_by_image = library.store.tags_by_image()
    ids, images = training_photos(library, {i for i, ts in tags_by_image.items() if ts} - set(hidden), seed, total)
    photo_tags = [[] if int(i) in hidden else tags_by_image.get(int(i), []) for i in ids]
    tags = sorted({t for ts in photo_tags for t in ts})
    if not tags:
        return _zero_shot_data(library, ids, images, seed, total)

    start = time.perf_counter()
    vectors = TagVocabulary(library).vectors(tags)  # cached per tag: each text is encoded once, ever
    column = {t: c for c, t in enumerate(tags)}
    tagged = np.array([bool(ts) for ts in photo_tags])
    tagged_rows, untagged_rows = np.flatnonzero(tagged), np.flatnonzero(~tagged)
    carries = np.zeros((len(tagged_rows), len(tags)), bool)  # [tagged photos, tags]
    for r, row in enumerate(tagged_rows):
        carries[r, [column[t] for t in photo_tags[row]]] = True
    guess_rows, guess_columns, teacher = teacher_guesses(images[tagged_rows], carries, images[untagged_rows], seed=seed)
    teacher_seconds = time.perf_counter() - start

    rows_image, rows_text, rows_label, sides = [], [], [], []
    zero = np.zeros(images.shape[1], np.float32)
    for r, row in enumerate(tagged_rows):  # a tagged photo with its tag list
        cols = np.flatnonzero(carries[r])
        rows_image.append(images[row])
        rows_text.append(unit_mean(vectors[cols]))
        rows_label.append(cols)
        sides.append((True, True))
        if len(cols) > 1:  # and each of its tags on its own
            for c in cols:
                rows_image.append(zero)
                rows_text.append(vectors[c])
                rows_label.append([c])
                sides.append((False, True))
    by_row: dict[int, list[int]] = {}  # an untagged photo the teacher is sure of, image only
    for r, c in zip(guess_rows.tolist(), guess_columns.tolist()):
        by_row.setdefault(r, []).append(c)
    for r in sorted(by_row):
        rows_image.append(images[untagged_rows[r]])
        rows_text.append(zero)
        rows_label.append(by_row[r])
        sides.append((True, False))
    labels = np.zeros((len(rows_label), len(tags)), np.float32)
    for r, cols in enumerate(rows_label):
        labels[r, cols] = 1
    has_image, has_text = (np.array(s, bool) for s in zip(*sides))
    facts = {
        "photos": total,
        "read": int(len(ids)),  # photos whose embeddings training read: the tagged ones and a sample
        "tagged": int(tagged.sum()),
        "vocabulary": len(tags),
        "guessed": len(by_row),  # untagged photos trained on the teacher's tags
        "teacher_seconds": teacher_seconds,
        **teacher,
    }
    return TrainingData(np.stack(rows_image), np.stack(rows_text), labels, has_image, has_text, tags, facts)


def _zero_shot_data(library, ids: np.ndarray, images: np.ndarray, seed: int, total: int) -> TrainingData:
    """No photo carries a tag: CLIP's closest vocabulary tag as each photo's text, and a cluster
    of its image neighbours as a second label, so the codes still group like photos."""
    from retrieval.vocabulary import TagVocabulary

    vocabulary = library.vocabulary
    tag_vectors = TagVocabulary(library).vectors(vocabulary)
    nearest = np.argmax(images @ tag_vectors.T, axis=1)
    used = sorted(set(nearest.tolist()))
    column = {v: c for c, v in enumerate(used)}
    clusters = kmeans_labels(images, max(2, min(64, int(np.sqrt(len(ids) / 2)))), seed)
    labels = np.zeros((len(ids), len(used) + int(clusters.max()) + 1), np.float32)
    labels[np.arange(len(ids)), [column[v] for v in nearest]] = 1
    labels[np.arange(len(ids)), len(used) + clusters] = 1
    facts = {"photos": total, "read": int(len(ids)), "tagged": 0, "vocabulary": len(used)}
    facts["clusters"] = int(clusters.max()) + 1
    both = np.ones(len(ids), bool)
    return TrainingData(images, tag_vectors[nearest], labels, both, both, [], facts)
