"""Photo → tags: suggestions with calibrated scores, and accepting them as the user's own.

A candidate tag is judged on its code's Hamming distance to the photo's code (the hashing), the
closeness of the networks' relaxed codes (what the model learned, without ties), the CLIP
similarity of its text embedding to the photo's, how many of the photo's nearest library photos
carry it, whether the model learned the tag from the library's photos, and how far a candidate
falls behind the photo's best one. A logistic model over the signals and their squares (so the
score can bend where a straight line would be over- or under-confident) turns them into a
probability. It is fitted, when a model is trained, on tagged photos whose tags were hidden from
that training, so that of the suggestions scored about 0.8 about 80% are right. Without enough
such photos the scores use fixed weights and say they are not calibrated.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from scipy.optimize import minimize

from retrieval.library import Library
from retrieval.ranking import learned_similarity, relaxed_codes
from retrieval.vocabulary import hamming_to, normalise_tag

CANDIDATES = 30  # tags nearest to the photo by code (then by text similarity) considered
NEIGHBOURS = 10  # nearest library photos whose tags vote
MIN_CALIBRATION_PHOTOS = 10  # held-out tagged photos needed to fit the calibration
# columns of candidate_features
FEATURES = (
    "code_match",
    "learned_match",
    "text_similarity",
    "neighbour_votes",
    "learned_tag",
    "learned_gap",
    "text_gap",
)
FIRST_FEATURES = ("code_match", "text_similarity", "neighbour_votes")  # what models stored before 2026-12 used
UNCALIBRATED_WEIGHTS = [4.0, 4.0, 4.0, -6.0]  # on FIRST_FEATURES: a plausible monotone score until one is fitted


@dataclass
class TagSuggestion:
    tag: str
    score: float  # calibrated probability that the tag is right (see Calibration.calibrated)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Calibration:
    # per term of `features` (with their squares after them once fitted), then the bias
    weights: list[float] = field(default_factory=lambda: list(UNCALIBRATED_WEIGHTS))
    features: list[str] = field(default_factory=lambda: list(FIRST_FEATURES))  # the signals weighed
    calibrated: bool = False  # fitted on held-out tagged photos
    photos: int = 0  # held-out photos it was measured on
    table: list[dict] = field(default_factory=list)  # score bin -> suggestions, mean score, share right
    precision_at_5: float | None = None  # share of right tags among the top 5, held-out photos

    def score(self, features: np.ndarray) -> np.ndarray:
        """Probabilities [m] for candidate_features rows [m, len(FEATURES)]."""
        w = np.asarray(self.weights)
        features = features[:, [FEATURES.index(f) for f in self.features]]
        # weights fitted before the squared terms existed (and the fixed ones) take the signals alone
        terms = features if len(w) == features.shape[1] + 1 else logistic_terms(features)
        return 1.0 / (1.0 + np.exp(-(terms @ w[:-1] + w[-1])))


def logistic_terms(features: np.ndarray) -> np.ndarray:
    """The calibration's inputs: each signal and its square. With the signals alone the scores
    below 0.5 were under-confident (scored 0.15, right 27% in `bench search`): a straight line
    in the logit cannot fit both the many sure suggestions and the few in between."""
    return np.hstack([features, features**2])


def current_calibration(library: Library) -> Calibration:
    stored = library.model_metrics().get("tag_calibration")
    return Calibration(**stored) if stored else Calibration()


def candidate_features(
    library: Library, vector: np.ndarray, table, *, tags_of, exclude_id: int | None = None
) -> tuple[list[str], np.ndarray]:
    """(candidate tags, features [m, len(FEATURES)]) for one photo embedding [dim]; `table` from
    Library.tag_table()."""
    _, model = library.hash_model()
    bits = model.config.bits
    code = model.encode(vector[None], "image")[0]
    names, tag_vectors, tag_codes, tag_relaxed = table
    learned_tags = set(library.model_metrics().get("learned_tags", []))
    distances = hamming_to(code, tag_codes)
    similarity = np.einsum("ij,j->i", tag_vectors, vector)  # not `@`: see Library.similarities
    learned = learned_similarity(relaxed_codes(model, vector[None], "image"), tag_relaxed)[0]
    nearest_tags = np.argsort(-learned, kind="stable")[:CANDIDATES]

    _, found_ids = library.index.knn(code, NEIGHBOURS * 5 + 1)
    keep = found_ids != (exclude_id if exclude_id is not None else -1)
    found_ids = found_ids[keep]
    if len(found_ids):
        sims = library.similarities(found_ids, vector)
        found_ids = found_ids[np.argsort(-sims, kind="stable")][:NEIGHBOURS]
    votes: dict[str, float] = {}
    for image_id in found_ids:
        for tag in tags_of(int(image_id)):
            votes[tag] = votes.get(tag, 0.0) + 1.0 / NEIGHBOURS

    position = {n: i for i, n in enumerate(names)}
    candidates = list(dict.fromkeys([names[i] for i in nearest_tags] + [t for t in votes if t in position]))
    rows = [position[t] for t in candidates]
    learned, similarity = learned[rows], similarity[rows]
    trained = np.array([t in learned_tags for t in candidates], float)  # the model learned it from photos
    best_trained = learned[trained > 0].max() if trained.any() else 0.0
    features = np.stack(
        [
            1.0 - distances[rows] / bits,
            learned,
            similarity,
            np.array([votes.get(t, 0.0) for t in candidates]),
            trained,
            # how far behind the photo's best learned tag (−1 for tags never learned): a softmax's view
            np.where(trained > 0, learned - best_trained, -1.0),
            similarity - similarity.max(),
        ],
        axis=1,
    )
    return candidates, features


def suggest_tags(library: Library, photo: str | Path, *, k: int = 10) -> list[TagSuggestion]:
    """The k most likely tags for `photo` (in the library or not), best first."""
    from retrieval.search import require_searchable

    require_searchable(library)
    image_id, vector = library.embed_photo(photo)
    return suggest_for_vector(library, vector, k=k, exclude_id=image_id)


def suggest_for_vector(
    library: Library, vector: np.ndarray, *, k: int = 10, exclude_id: int | None = None
) -> list[TagSuggestion]:
    table = library.tag_table()
    names, features = candidate_features(library, vector, table, tags_of=library.store.tags_of, exclude_id=exclude_id)
    scores = current_calibration(library).score(features)
    order = np.argsort(-scores, kind="stable")[:k]
    return [TagSuggestion(names[i], float(scores[i])) for i in order]


def accept_tags(library: Library, photo: str | Path, tags: list[str]) -> list[str]:
    """Store `tags` as the user's own on `photo` (added to the library first when it is not in it).

    Returns the photo's tags afterwards.
    """
    from retrieval.ingest import index_paths

    tags = [normalise_tag(t) for t in tags if normalise_tag(t)]
    if not tags:
        raise ValueError("no tag to accept")
    path = Path(photo).expanduser().resolve()
    record = library.store.image_by_path(str(path))
    if record is None or record["status"] != "ok":
        summary = index_paths(library, [path], workers=0, progress=False)
        if summary.failures:
            raise ValueError(f"{photo}: {summary.failures[0]['reason']}")
        record = library.store.image_by_path(str(path))
    with library.store.transaction():
        kept = library.store.tags_of(record["id"], source="accepted")
        library.store.set_tags(record["id"], kept + tags, "accepted")
    return library.store.tags_of(record["id"])


# --- calibration ---------------------------------------------------------------------------


def _fit_logistic(x: np.ndarray, y: np.ndarray) -> list[float]:
    """Weights (features, then bias) of an L2-regularised logistic regression."""
    design = np.hstack([x, np.ones((len(x), 1))])

    def loss(w):
        z = design @ w
        value = np.sum(np.logaddexp(0, z) - y * z) + 1e-3 * np.sum(w[:-1] ** 2)
        grad = design.T @ (1 / (1 + np.exp(-z)) - y) + np.concatenate([2e-3 * w[:-1], [0.0]])
        return value, grad

    return minimize(loss, np.zeros(design.shape[1]), jac=True, method="L-BFGS-B").x.tolist()


def calibration_table(scores: np.ndarray, right: np.ndarray, bins: int = 10) -> list[dict]:
    """Per score bin: how many suggestions, their mean score, and the share that were right."""
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(scores, edges) - 1, 0, bins - 1)
    table = []
    for b in range(bins):
        mask = which == b
        if mask.any():
            table.append(
                {
                    "bin": f"{edges[b]:.1f}–{edges[b + 1]:.1f}",
                    "suggestions": int(mask.sum()),
                    "mean_score": float(scores[mask].mean()),
                    "right": float(right[mask].mean()),
                }
            )
    return table


def calibration_error(table: list[dict]) -> float:
    """Expected calibration error: the gap |mean score − share right| of each bin of a
    calibration_table, weighted by the bin's share of the suggestions."""
    total = sum(row["suggestions"] for row in table)
    return sum(row["suggestions"] * abs(row["mean_score"] - row["right"]) for row in table) / max(total, 1)


def precision_at(scores: np.ndarray, right: np.ndarray, groups: np.ndarray, k: int = 5) -> float:
    """Mean over photos of the share of right tags among the photo's top-k suggestions."""
    shares = []
    for g in np.unique(groups):
        mask = groups == g
        top = np.argsort(-scores[mask], kind="stable")[:k]
        shares.append(right[mask][top].sum() / k)
    return float(np.mean(shares)) if shares else 0.0


def fit_calibration(library: Library, photo_ids: list[int], truth: dict[int, set[str]]) -> Calibration:
    """Fit the suggestion scores on held-out photos whose right tags are `truth`.

    The table and precision@5 are measured out of fold (two folds by photo), so they describe
    photos the weights were not fitted on; the stored weights are then fitted on all of them.
    """
    if len(photo_ids) < MIN_CALIBRATION_PHOTOS:
        return Calibration()
    tags_by_image = library.store.tags_by_image()
    vectors = library.embedding_store.of(photo_ids)
    table = library.tag_table()
    xs, ys, groups = [], [], []
    for image_id, vector in zip(photo_ids, vectors):
        names, features = candidate_features(
            library, vector, table, tags_of=lambda i: tags_by_image.get(i, []), exclude_id=image_id
        )
        xs.append(features)
        ys.append(np.array([n in truth[image_id] for n in names], np.float64))
        groups.append(np.full(len(names), image_id))
    x, y, groups = np.concatenate(xs), np.concatenate(ys), np.concatenate(groups)
    fold = np.isin(groups, photo_ids[::2])
    out_of_fold = np.zeros(len(y))
    for test in (fold, ~fold):
        weights = _fit_logistic(logistic_terms(x[~test]), y[~test])
        out_of_fold[test] = Calibration(weights, features=list(FEATURES)).score(x[test])
    return Calibration(
        weights=_fit_logistic(logistic_terms(x), y),
        features=list(FEATURES),
        calibrated=True,
        photos=len(photo_ids),
        table=calibration_table(out_of_fold, y),
        precision_at_5=precision_at(out_of_fold, y, groups, 5),
    )
