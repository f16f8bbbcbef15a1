"""The default ranking: what the hash model learned, fused with CLIP's own similarity.

A query (a tag's text vector, or a photo's image vector) and a candidate photo are compared
twice: by the learned similarity, 1 − ‖f(query) − h(photo)‖₁ / bits between the relaxed codes
of the two hashing networks (the distance the networks were trained on, read from the photo's
stored embedding, so it has no ties), and by the CLIP cosine of the two embeddings. Each is
divided by its typical spread within one query's ranking (measured at training), and

    score = (1 − w) · learned / spread_learned + w · cosine / spread_cosine

with the weight w chosen at training on tagged photos held out of it (retrieval/train.py), and
stored with the model. w = 0 ranks by what the model learned alone, w = 1 by CLIP alone. A tag
the model never learned (the vocabulary, free text) is ranked with w = 1: the learned code of an
unseen text says nothing the cosine does not, so free text stays as good as float CLIP.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from models.sparsehash import SparseHash
from retrieval.evaluate import ranked_ap

WEIGHTS = tuple(np.round(np.linspace(0, 1, 21), 2))  # the grid the weights are chosen from


@dataclass
class Fusion:
    text_weight: float = 1.0  # w for queries of tags the model learned (1: CLIP alone, until fitted)
    image_weight: float = 1.0  # w for photo → similar photos
    learned_spread: float = 1.0  # typical std of the learned similarity within one tag's ranking
    cosine_spread: float = 1.0  # typical std of the CLIP cosine within one tag's ranking
    image_learned_spread: float = 1.0  # the same two for photo → photo
    image_cosine_spread: float = 1.0
    fitted: bool = False  # chosen on held-out tagged photos (else: CLIP alone, w = 1)
    photos: int = 0  # held-out photos it was chosen on
    table: list[dict] | None = None  # weight -> held-out mAP of tag queries, photo queries

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, stored: dict | None) -> Fusion:
        return cls(**stored) if stored else cls()


@torch.inference_mode()
def relaxed_codes(model: SparseHash, features: np.ndarray, modality: str) -> np.ndarray:
    """The networks' relaxed codes in [0, 1), [n, bits] float32 (what the loss compares)."""
    encoder = {"image": model.image, "text": model.text}[modality]
    encoder.eval()
    return encoder(torch.as_tensor(np.asarray(features, np.float32))).numpy()


def learned_similarity(query_codes: np.ndarray, photo_codes: np.ndarray) -> np.ndarray:
    """1 − mean |difference| of relaxed codes: [q, bits] × [n, bits] -> [q, n]."""
    rows = max(1, 8_000_000 // max(1, photo_codes.size))  # queries per chunk: ~32 MB of differences at most
    out = np.empty((len(query_codes), len(photo_codes)), np.float32)
    for start in range(0, len(query_codes), rows):
        chunk = query_codes[start : start + rows]
        out[start : start + rows] = 1.0 - np.abs(chunk[:, None, :] - photo_codes[None, :, :]).mean(2)
    return out


def fused(learned: np.ndarray, cosine: np.ndarray, weight: float, learned_spread: float, cosine_spread: float):
    """The fused score of the module docstring, elementwise."""
    if weight >= 1.0:
        return cosine / cosine_spread
    if weight <= 0.0:
        return learned / learned_spread
    return (1.0 - weight) * learned / learned_spread + weight * cosine / cosine_spread


def score_photos(
    model: SparseHash,
    query_vectors: np.ndarray,
    modality: str,
    photo_vectors: np.ndarray,
    *,
    weight: float,
    learned_spread: float,
    cosine_spread: float,
) -> np.ndarray:
    """Fused scores [n] of photos (their embeddings [n, dim]) for the mean of one or more queries
    [q, dim] (several tags: a photo should match each of them)."""
    photos = relaxed_codes(model, photo_vectors, "image") if weight < 1.0 else None
    scores = np.zeros(len(photo_vectors))
    for query in query_vectors:
        cosine = np.einsum("ij,j->i", photo_vectors, query)  # not `@`: see Library.similarities
        learned = (
            learned_similarity(relaxed_codes(model, query[None], modality), photos)[0] if photos is not None else 0.0
        )
        scores += fused(learned, cosine, weight, learned_spread, cosine_spread)
    return scores / max(1, len(query_vectors))


def spreads(learned: np.ndarray, cosine: np.ndarray) -> tuple[float, float]:
    """Median over queries of the std of each similarity within a query's row ([q, n] each)."""
    return (
        float(max(np.median(learned.std(1)), 1e-6)),
        float(max(np.median(cosine.std(1)), 1e-6)),
    )


def choose_weight(learned: np.ndarray, cosine: np.ndarray, relevant: np.ndarray) -> tuple[float, list[dict], tuple]:
    """(weight, [{weight, map}], (learned spread, cosine spread)) for queries [q, n].

    The weight is the smallest one whose mAP is within one standard error of the best (the
    one-standard-error rule): held-out sets are small, and between weights they cannot tell
    apart, the one that leans on what the model learned is kept."""
    keep = relevant.any(1)  # queries without a relevant photo say nothing
    learned, cosine, relevant = learned[keep], cosine[keep], relevant[keep]
    spread = spreads(learned, cosine)
    aps = []
    for w in WEIGHTS:
        order = np.argsort(-fused(learned, cosine, w, *spread), axis=1, kind="stable")
        aps.append(ranked_ap(order, relevant))
    table = [{"weight": float(w), "map": float(ap.mean())} for w, ap in zip(WEIGHTS, aps)]
    best = int(np.argmax([row["map"] for row in table]))
    error = float(aps[best].std() / np.sqrt(max(1, len(aps[best]))))
    chosen = next(i for i, row in enumerate(table) if row["map"] >= table[best]["map"] - error)
    return table[chosen]["weight"], table, spread
