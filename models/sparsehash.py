"""Multimodal SparseHash: two coupled siamese ISTA encoders and the SparseHash loss.

h encodes images, g encodes text; both land in one Hamming space {0, 1}^m. For a pair (u, v)
with similarity s ∈ {0, 1} and relaxed codes a = f(u), b = f'(v):

    L = s‖a − b‖₁ + λ(1 − s)·max{0, M − ‖a − b‖₁} + α(‖a‖₁ + ‖b‖₁)

applied to image–image, text–text and image–text pairs with a weight for each.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from models.bits import pack_codes
from models.ista import IstaConfig, IstaEncoder


@dataclass
class SparseHashConfig:
    image_dim: int  # image feature dimension
    text_dim: int  # text feature dimension
    bits: int = 64  # code length m shared by both modalities
    steps: int = 2  # unrolled ISTA steps T in each encoder
    tau_init: float = 0.5  # initial shrinkage threshold
    gain: float = 1.0  # tanh binarizer slope
    dropout: float = 0.0  # input dropout while training (0.2 was worse on Wiki)
    leak: float = 0.0  # gradient slope of the shrinkage below its threshold while training (see ista.shrink)
    margin: float = 24.0  # M: dissimilar pairs are pushed to L1 distance >= M (~0.4·bits)
    lam: float = 1.0  # λ: weight of the dissimilar-pair hinge
    alpha: float = 0.02  # α: L1 sparsity weight; 0 gives the dense ablation
    weight_ii: float = 0.5  # weight of image–image pairs
    weight_tt: float = 0.5  # weight of text–text pairs
    weight_it: float = 1.0  # weight of image–text pairs

    def encoder_config(self, in_dim: int) -> IstaConfig:
        return IstaConfig(
            in_dim=in_dim,
            bits=self.bits,
            steps=self.steps,
            tau_init=self.tau_init,
            gain=self.gain,
            dropout=self.dropout,
            leak=self.leak,
        )

    def to_dict(self) -> dict:
        return asdict(self)


def pair_loss(
    a: torch.Tensor, b: torch.Tensor, s: torch.Tensor, *, margin: float, lam: float, alpha: float
) -> torch.Tensor:
    """SparseHash loss of each pair: relaxed codes a, b [pairs, bits], s [pairs] in {0, 1}."""
    d = (a - b).abs().sum(1)  # [pairs] L1 distance, the relaxed Hamming distance
    hinge = torch.clamp(margin - d, min=0.0)
    sparsity = a.abs().sum(1) + b.abs().sum(1)
    return s * d + lam * (1.0 - s) * hinge + alpha * sparsity


class SparseHash(nn.Module):
    """The coupled model: image encoder h and text encoder g."""

    def __init__(self, config: SparseHashConfig) -> None:
        super().__init__()
        self.config = config
        self.image = IstaEncoder(config.encoder_config(config.image_dim))  # h
        self.text = IstaEncoder(config.encoder_config(config.text_dim))  # g

    def loss(
        self,
        images: torch.Tensor,
        texts: torch.Tensor,
        left: torch.Tensor,
        right: torch.Tensor,
        similar: torch.Tensor,
        has_image: torch.Tensor | None = None,
        has_text: torch.Tensor | None = None,
        *,
        standardised: bool = False,
    ) -> torch.Tensor:
        """Mean loss over pairs of items (left[k], right[k]) with similarity similar[k].

        images [u, image_dim] and texts [u, text_dim] are the features of u items, each encoded
        once; a pair of items gives an image–image, a text–text and two image–text comparisons
        (image_left–text_right and text_left–image_right). An item may lack one side (has_image,
        has_text [u] bool: a photo nobody tagged has no text, a tag on its own has no image);
        comparisons with a missing side are left out of the mean. standardised: the features
        went through each encoder's standardise() already.
        """
        c = self.config
        h, g = self.image(images, standardised=standardised), self.text(texts, standardised=standardised)
        u = len(images)
        hi = torch.ones(u) if has_image is None else has_image.float()
        ht = torch.ones(u) if has_text is None else has_text.float()
        kw = dict(margin=c.margin, lam=c.lam, alpha=c.alpha)
        hl, hr, gl, gr = h[left], h[right], g[left], g[right]  # each gathered once: indexing's backward is costly
        il, ir, tl, tr = hi[left], hi[right], ht[left], ht[right]
        terms = [
            (c.weight_ii, pair_loss(hl, hr, similar, **kw), il * ir),
            (c.weight_tt, pair_loss(gl, gr, similar, **kw), tl * tr),
            (0.5 * c.weight_it, pair_loss(hl, gr, similar, **kw), il * tr),
            (0.5 * c.weight_it, pair_loss(gl, hr, similar, **kw), tl * ir),
        ]
        total = sum(w * (loss * mask) for w, loss, mask in terms)
        compared = sum(mask for _, _, mask in terms) > 0  # pairs with at least one comparison
        return total.sum() / compared.sum().clamp(min=1)

    def encode(self, features: np.ndarray, modality: str, batch_size: int = 4096) -> np.ndarray:
        """Features [n, dim] -> packed codes [n, bits/8] uint8."""
        encoder = {"image": self.image, "text": self.text}[modality]
        was_training = encoder.training
        encoder.eval()
        try:
            x = torch.as_tensor(np.asarray(features, dtype=np.float32))
            bits = [encoder.encode_bits(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
            out = torch.cat(bits).numpy() if bits else np.zeros((0, self.config.bits), bool)
        finally:
            encoder.train(was_training)
        return pack_codes(out)
