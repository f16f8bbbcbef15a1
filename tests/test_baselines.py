import numpy as np
import pytest

from models.baselines import Cca, CcaItq, CmSsh, FloatCca, SrpLsh
from models.features import RbfFeatures
from retrieval.evaluate import evaluate_codes, relevance, score_map


def test_cca_finds_the_shared_direction():
    rng = np.random.default_rng(0)
    shared = rng.normal(size=500)
    x = np.column_stack([shared + 0.1 * rng.normal(size=500), rng.normal(size=500)])
    y = np.column_stack([rng.normal(size=500), -shared + 0.1 * rng.normal(size=500)])
    cca = Cca(dims=2, reg=1e-6).fit(x, y)
    assert cca.correlations[0] > 0.98 and cca.correlations[1] < 0.2
    zx, zy = cca.transform(x, "image")[:, 0], cca.transform(y, "text")[:, 0]
    assert np.corrcoef(zx, zy)[0, 1] > 0.98


@pytest.mark.parametrize(
    "method",
    [SrpLsh(bits=16, dims=8), CcaItq(bits=16), CmSsh(bits=16, pca_dims=8)],
    ids=["srp_lsh", "cca_itq", "cmssh"],
)
def test_baselines_hash_clusters_across_modalities(method, pairs):
    images, texts, labels = pairs
    lift_i, lift_t = RbfFeatures.fit(images, n_anchors=60), RbfFeatures.fit(texts, n_anchors=60)
    images, texts = lift_i.transform(images), lift_t.transform(texts)
    method.fit(images, texts, labels)
    qi, dt = method.encode(images, "image"), method.encode(texts, "text")
    assert qi.shape == (len(images), 2) and qi.dtype == np.uint8
    assert evaluate_codes(qi, dt, labels, labels, 16).map_all > 0.6  # chance is about 0.25


def test_float_cca_is_an_upper_reference(pairs):
    images, texts, labels = pairs
    model = FloatCca(dims=4).fit(images, texts)
    scores = model.embed(texts, "text") @ model.embed(images, "image").T
    assert score_map(scores, relevance(labels, labels)) > 0.9


def test_cca_itq_says_when_features_are_too_narrow(pairs):
    images, texts, labels = pairs
    with pytest.raises(ValueError, match="RbfFeatures"):
        CcaItq(bits=16).fit(images, texts, labels)  # texts have 8 dimensions


def test_rbf_features_are_bounded_and_local():
    x = np.random.default_rng(0).normal(size=(100, 5))
    f = RbfFeatures.fit(x, n_anchors=20)
    phi = f.transform(x)
    assert phi.shape == (100, 20) and phi.min() >= 0 and phi.max() <= 1
    anchor_rows = f.transform(f.anchors * f.scale + f.mean)
    assert np.allclose(np.diag(anchor_rows), 1.0)
