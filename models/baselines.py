"""Cross-modal hashing baselines, with the interface of the SparseHash model.

Each has fit(images, texts, labels) and encode(features, modality) -> packed codes [n, bits/8]:

- SrpLsh: signed random projections (Charikar 2002) of the CCA space. Image and text features
  are not aligned, so random hyperplanes on the raw features would compare unrelated spaces;
  both are first projected onto their common CCA subspace, then hashed with the same planes.
- CcaItq: CCA followed by iterative quantisation (Gong & Lazebnik, CVPR 2011 / PAMI 2013).
- CmSsh: cross-modal similarity-sensitive hashing (Bronstein et al., CVPR 2010), a boosted
  sequence of coupled hyperplanes (p, a) for images and (q, b) for text, each chosen by the
  SVD of the weighted cross-modal correlation of similar minus dissimilar pairs.
- FloatCca: no hashing at all: cosine similarity in the CCA space, the upper reference.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from models.bits import check_code_length, pack_codes


def _inverse_sqrt(c: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(c)
    return (vectors / np.sqrt(np.maximum(values, 1e-12))) @ vectors.T


def _shares_label(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (np.asarray(a, np.float32) @ np.asarray(b, np.float32).T) > 0


@dataclass
class Cca:
    """Regularised CCA between two views (Hotelling 1936; ridge as in Vinod 1976)."""

    dims: int  # number of canonical directions kept
    reg: float = 1e-2  # ridge added to each covariance, relative to its mean eigenvalue
    mean_x: np.ndarray = field(default=None, repr=False)  # [dx]
    mean_y: np.ndarray = field(default=None, repr=False)  # [dy]
    proj_x: np.ndarray = field(default=None, repr=False)  # [dx, dims]
    proj_y: np.ndarray = field(default=None, repr=False)  # [dy, dims]
    correlations: np.ndarray = field(default=None, repr=False)  # [dims], descending

    def fit(self, x: np.ndarray, y: np.ndarray) -> Cca:
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        self.mean_x, self.mean_y = x.mean(0), y.mean(0)
        x, y = x - self.mean_x, y - self.mean_y
        n = len(x)
        cxx, cyy, cxy = x.T @ x / n, y.T @ y / n, x.T @ y / n
        cxx += self.reg * np.trace(cxx) / len(cxx) * np.eye(len(cxx))
        cyy += self.reg * np.trace(cyy) / len(cyy) * np.eye(len(cyy))
        wx, wy = _inverse_sqrt(cxx), _inverse_sqrt(cyy)
        u, s, vt = np.linalg.svd(wx @ cxy @ wy, full_matrices=False)
        k = min(self.dims, len(s))
        self.proj_x, self.proj_y = wx @ u[:, :k], wy @ vt[:k].T
        self.correlations = s[:k]
        return self

    def transform(self, features: np.ndarray, modality: str) -> np.ndarray:
        if modality == "image":
            return (np.asarray(features, np.float64) - self.mean_x) @ self.proj_x
        return (np.asarray(features, np.float64) - self.mean_y) @ self.proj_y


@dataclass
class FloatCca:
    """Cosine retrieval in the CCA space; embed() returns L2-normalised float vectors."""

    dims: int = 32  # canonical directions kept
    reg: float = 1e-2  # CCA ridge
    cca: Cca | None = None

    def fit(self, images: np.ndarray, texts: np.ndarray, labels: np.ndarray | None = None) -> FloatCca:
        self.cca = Cca(dims=self.dims, reg=self.reg).fit(images, texts)
        return self

    def embed(self, features: np.ndarray, modality: str) -> np.ndarray:
        z = self.cca.transform(features, modality) * self.cca.correlations
        return (z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)).astype(np.float32)


@dataclass
class SrpLsh:
    """Signed random projections of the (shared) CCA space: bit_k = [r_k · z > 0]."""

    bits: int = 64  # code length
    dims: int = 32  # CCA directions the hyperplanes live in
    reg: float = 1e-2  # CCA ridge
    seed: int = 0  # draws the hyperplanes
    cca: Cca | None = None
    planes: np.ndarray | None = None  # [dims, bits]

    def fit(self, images: np.ndarray, texts: np.ndarray, labels: np.ndarray | None = None) -> SrpLsh:
        check_code_length(self.bits)
        self.cca = Cca(dims=self.dims, reg=self.reg).fit(images, texts)
        rng = np.random.default_rng(self.seed)
        self.planes = rng.standard_normal((self.cca.proj_x.shape[1], self.bits))
        return self

    def encode(self, features: np.ndarray, modality: str) -> np.ndarray:
        return pack_codes(self.cca.transform(features, modality) @ self.planes > 0)


@dataclass
class CcaItq:
    """CCA to `bits` directions scaled by correlation**power, then an ITQ rotation."""

    bits: int = 64  # code length = CCA directions kept (needs features with >= bits dims)
    reg: float = 1e-2  # CCA ridge
    power: float = 4.0  # eigenvalue scaling of the directions (Gong et al. use 4)
    iterations: int = 50  # ITQ alternations
    seed: int = 0  # draws the initial rotation
    cca: Cca | None = None
    rotation: np.ndarray | None = None  # [bits, bits]

    def fit(self, images: np.ndarray, texts: np.ndarray, labels: np.ndarray | None = None) -> CcaItq:
        check_code_length(self.bits)
        self.cca = Cca(dims=self.bits, reg=self.reg).fit(images, texts)
        if len(self.cca.correlations) < self.bits:
            raise ValueError(
                f"CCA-ITQ needs {self.bits} canonical directions, the features give "
                f"{len(self.cca.correlations)}; lift them first (models.features.RbfFeatures)"
            )
        v = np.concatenate([self._project(images, "image"), self._project(texts, "text")])
        rng = np.random.default_rng(self.seed)
        rotation, _ = np.linalg.qr(rng.standard_normal((self.bits, self.bits)))
        for _ in range(self.iterations):  # fix B = sign(VR), then R by orthogonal Procrustes
            b = np.where(v @ rotation >= 0, 1.0, -1.0)
            u, _, wt = np.linalg.svd(v.T @ b)
            rotation = u @ wt
        self.rotation = rotation
        return self

    def _project(self, features: np.ndarray, modality: str) -> np.ndarray:
        return self.cca.transform(features, modality) * self.cca.correlations**self.power

    def encode(self, features: np.ndarray, modality: str) -> np.ndarray:
        return pack_codes(self._project(features, modality) @ self.rotation >= 0)


@dataclass
class CmSsh:
    """Cross-modal SSH by boosting over all training pairs (Bronstein et al., CVPR 2010).

    Bit k is the pair of hyperplanes ξ_k(x) = sign(p_k·x + a_k), η_k(y) = sign(q_k·y + b_k).
    With pair weights w and labels s = ±1 (similar/dissimilar), (p, q) are the top singular
    vectors of Σ w s x yᵀ, the thresholds the best of a quantile grid for Σ w s ξ η, and the
    weights are then raised on the pairs the new bit gets wrong (AdaBoost). Features are first
    reduced by PCA to at most `pca_dims` so the n×n pair sums stay cheap.
    """

    bits: int = 64  # code length
    pca_dims: int = 128  # dimensions kept per modality before boosting
    quantiles: int = 21  # threshold candidates per hyperplane
    mean_x: np.ndarray | None = None
    mean_y: np.ndarray | None = None
    pca_x: np.ndarray | None = None  # [dx, d]
    pca_y: np.ndarray | None = None  # [dy, d]
    planes_x: np.ndarray | None = None  # [d, bits]
    planes_y: np.ndarray | None = None  # [d, bits]
    offsets_x: np.ndarray | None = None  # [bits]
    offsets_y: np.ndarray | None = None  # [bits]

    @staticmethod
    def _pca(z: np.ndarray, dims: int) -> np.ndarray:
        _, _, vt = np.linalg.svd(z, full_matrices=False)
        return vt[:dims].T

    def fit(self, images: np.ndarray, texts: np.ndarray, labels: np.ndarray) -> CmSsh:
        check_code_length(self.bits)
        x, y = np.asarray(images, np.float64), np.asarray(texts, np.float64)
        self.mean_x, self.mean_y = x.mean(0), y.mean(0)
        self.pca_x = self._pca(x - self.mean_x, self.pca_dims)
        self.pca_y = self._pca(y - self.mean_y, self.pca_dims)
        x, y = (x - self.mean_x) @ self.pca_x, (y - self.mean_y) @ self.pca_y
        s = np.where(_shares_label(labels, labels), 1.0, -1.0)  # [n, n] image i with text j
        w = np.where(s > 0, 0.5 / (s > 0).sum(), 0.5 / (s < 0).sum())  # balanced start
        qs = np.linspace(0.02, 0.98, self.quantiles)
        planes_x, planes_y, off_x, off_y = [], [], [], []
        for _ in range(self.bits):
            u, _, vt = np.linalg.svd(x.T @ (w * s) @ y)
            p, q = u[:, 0], vt[0]
            px, qy = x @ p, y @ q
            cand_a, cand_b = -np.quantile(px, qs), -np.quantile(qy, qs)
            xi = np.where(px[:, None] + cand_a[None, :] > 0, 1.0, -1.0)  # [n, quantiles]
            eta = np.where(qy[:, None] + cand_b[None, :] > 0, 1.0, -1.0)
            gain = xi.T @ (w * s) @ eta  # [quantiles, quantiles] weighted agreement
            ia, ib = np.unravel_index(np.argmax(gain), gain.shape)
            agreement = s * np.outer(xi[:, ia], eta[:, ib])  # +1 where the bit is right
            r = float(np.clip((w * agreement).sum(), -1 + 1e-9, 1 - 1e-9))
            alpha = 0.5 * np.log((1 + r) / (1 - r))
            w = w * np.exp(-alpha * agreement)
            w /= w.sum()
            planes_x.append(p), planes_y.append(q), off_x.append(cand_a[ia]), off_y.append(cand_b[ib])
        self.planes_x, self.planes_y = np.stack(planes_x, 1), np.stack(planes_y, 1)
        self.offsets_x, self.offsets_y = np.array(off_x), np.array(off_y)
        return self

    def encode(self, features: np.ndarray, modality: str) -> np.ndarray:
        f = np.asarray(features, np.float64)
        if modality == "image":
            z = (f - self.mean_x) @ self.pca_x @ self.planes_x + self.offsets_x
        else:
            z = (f - self.mean_y) @ self.pca_y @ self.planes_y + self.offsets_y
        return pack_codes(z > 0)
