"""Kernel feature map shared by every method on weak hand-crafted features.

RBF responses to anchor points, φ(x)_k = exp(−‖x − a_k‖² / 2σ²), the anchor-kernel
representation of KSH (Liu et al., CVPR 2012). Linear maps on φ(x) are kernel machines, so a
linear projection (the ISTA network's W, CCA, a boosted hyperplane) can separate what the raw
features cannot. CLIP embeddings need none of this; the Wiki benchmark's SIFT and LDA do.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _squared_distances(x: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    d = (x * x).sum(1)[:, None] + (anchors * anchors).sum(1)[None, :] - 2.0 * x @ anchors.T
    return np.maximum(d, 0.0)


@dataclass
class RbfFeatures:
    mean: np.ndarray  # [dim] training mean, for per-dimension standardisation
    scale: np.ndarray  # [dim] training standard deviation
    anchors: np.ndarray  # [k, dim] standardised anchor points drawn from the training features
    sigma: float  # RBF width: the mean distance to the anchors times a factor

    @classmethod
    def fit(cls, features: np.ndarray, *, n_anchors: int = 1000, width: float = 0.3, seed: int = 0) -> RbfFeatures:
        features = np.asarray(features, np.float64)
        mean, scale = features.mean(0), features.std(0)
        scale = np.where(scale > 1e-12, scale, 1.0)
        features = (features - mean) / scale
        rng = np.random.default_rng(seed)
        pick = rng.choice(len(features), size=min(n_anchors, len(features)), replace=False)
        anchors = features[np.sort(pick)]
        sigma = float(np.sqrt(_squared_distances(features, anchors)).mean()) * width
        return cls(mean=mean, scale=scale, anchors=anchors, sigma=max(sigma, 1e-12))

    def transform(self, features: np.ndarray) -> np.ndarray:
        x = (np.asarray(features, np.float64) - self.mean) / self.scale
        d = _squared_distances(x, self.anchors)
        return np.exp(-d / (2.0 * self.sigma**2)).astype(np.float32)
