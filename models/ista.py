"""The LISTA hashing encoder of SparseHash (Masci et al., ICLR 2014; Gregor & LeCun 2010).

x ──standardise──▶ b_in = W x ──▶ z = σ_τ(b_in) ──▶ [b = b_in + S z, z = σ_τ(b)] × T ──▶ tanh(γ z)

σ_τ is the one-sided shrinkage max(b − τ, 0): it is non-negative and exactly zero below the
threshold, so a code unit is either off (0) or on (> 0). The relaxed code tanh(γ z) lies in
[0, 1) and is what the loss sees; the binary code is its support, bit = z > 0, which is the
same as rounding the relaxed code up from 0. Because σ_τ produces exact zeros, the binary code
keeps exactly the zeros the sparsity term paid for.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from models.bits import check_code_length


@dataclass
class IstaConfig:
    in_dim: int  # input feature dimension n (512 for CLIP ViT-B-32)
    bits: int = 64  # code length m; a multiple of 8 so codes pack into bytes
    steps: int = 2  # unrolled ISTA iterations T after the first shrinkage (0 = one layer)
    tau_init: float = 0.5  # initial threshold of every unit, in units of standardised W x
    gain: float = 2.0  # slope γ of the tanh binarizer applied to the shrunk activations
    dropout: float = 0.0  # dropout on the standardised input while training
    leak: float = 0.0  # gradient slope below the threshold while training (0: plain shrinkage)

    def __post_init__(self) -> None:
        check_code_length(self.bits)
        if self.in_dim <= 0 or self.steps < 0:
            raise ValueError(f"bad IstaConfig: {self}")

    def to_dict(self) -> dict:
        return asdict(self)


def shrink(b: torch.Tensor, tau: torch.Tensor, leak: float = 0.0) -> torch.Tensor:
    """One-sided soft threshold σ_τ(b) = max(b − τ, 0).

    With leak > 0 the value is the same, but below the threshold the gradient has slope `leak`
    instead of 0: a unit that no input switches on (easy with a few distinct tag texts) can
    still learn to, instead of staying off for good."""
    shifted = b - tau
    out = torch.relu(shifted)
    if leak:
        below = torch.clamp(shifted, max=0.0)
        out = out + leak * (below - below.detach())  # adds 0 to the value, leak to the gradient
    return out


class IstaEncoder(nn.Module):
    """Maps features [batch, in_dim] to relaxed codes [batch, bits] in [0, 1)."""

    def __init__(self, config: IstaConfig) -> None:
        super().__init__()
        self.config = config
        m = config.bits
        self.W = nn.Linear(config.in_dim, m, bias=False)
        self.S = nn.Linear(m, m, bias=False)  # lateral inhibition between code units
        nn.init.zeros_(self.S.weight)  # start as a single shrinkage layer; S is learned
        self.tau = nn.Parameter(torch.full((m,), float(config.tau_init)))
        self.dropout = nn.Dropout(config.dropout)
        # Input standardisation, fitted to the training features and saved with the weights.
        self.register_buffer("input_mean", torch.zeros(config.in_dim))
        self.register_buffer("input_scale", torch.ones(config.in_dim))

    def fit_input(self, features: torch.Tensor) -> None:
        """Standardise each input dimension with the training mean and standard deviation."""
        self.input_mean.copy_(features.mean(0))
        std = features.std(0)
        self.input_scale.copy_(torch.where(std > 1e-8, std, torch.ones_like(std)))

    def standardise(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.input_mean) / self.input_scale

    def activations(self, x: torch.Tensor, *, standardised: bool = False) -> torch.Tensor:
        """Shrunk ISTA activations z >= 0, [batch, bits]. standardised: x went through
        standardise() already (training standardises its features once, not every step)."""
        x = self.dropout(x if standardised else self.standardise(x))
        b_in = self.W(x)  # [batch, bits]
        leak = self.config.leak if self.training else 0.0
        z = shrink(b_in, self.tau, leak)
        for _ in range(self.config.steps):
            z = shrink(b_in + self.S(z), self.tau, leak)
        return z

    def forward(self, x: torch.Tensor, *, standardised: bool = False) -> torch.Tensor:
        return torch.tanh(self.config.gain * self.activations(x, standardised=standardised))

    @torch.inference_mode()
    def encode_bits(self, x: torch.Tensor) -> torch.Tensor:
        """Binary codes [batch, bits] as bool: the support of the activations."""
        return self.activations(x) > 0
