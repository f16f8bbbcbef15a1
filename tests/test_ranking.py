"""The fused ranking: the weight chosen on held-out photos follows whichever similarity knows."""

import numpy as np

from retrieval.ranking import choose_weight, fused, learned_similarity


def test_learned_similarity_is_one_minus_mean_absolute_difference():
    a = np.array([[0.0, 1.0, 0.5, 0.5]], np.float32)
    b = np.array([[0.0, 1.0, 0.5, 0.5], [1.0, 0.0, 0.5, 0.0]], np.float32)
    assert np.allclose(learned_similarity(a, b), [[1.0, 1.0 - 2.5 / 4]])


def test_fused_is_one_similarity_at_the_ends_of_the_weight():
    learned, cosine = np.array([0.2, 0.9]), np.array([0.5, 0.1])
    assert np.allclose(fused(learned, cosine, 0.0, 0.5, 0.1), learned / 0.5)
    assert np.allclose(fused(learned, cosine, 1.0, 0.5, 0.1), cosine / 0.1)


def _queries(informative: str, seed: int = 0):
    rng = np.random.default_rng(seed)
    relevant = rng.random((12, 60)) < 0.3
    knows = relevant + 0.3 * rng.standard_normal(relevant.shape)
    noise = rng.standard_normal(relevant.shape)
    return (knows, noise, relevant) if informative == "learned" else (noise, knows, relevant)


def test_weight_is_zero_when_only_the_learned_similarity_knows():
    learned, cosine, relevant = _queries("learned")
    weight, table, _ = choose_weight(learned, cosine, relevant)
    assert weight == 0.0 and table[0]["map"] > table[-1]["map"] + 0.3


def test_weight_leans_on_clip_when_only_the_cosine_knows():
    learned, cosine, relevant = _queries("cosine")
    weight, table, _ = choose_weight(learned, cosine, relevant)
    assert weight >= 0.8 and table[-1]["map"] > table[0]["map"] + 0.3
