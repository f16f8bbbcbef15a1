import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def _small_torch():
    torch.set_num_threads(1)


def clustered_pairs(n: int = 240, classes: int = 4, image_dim: int = 24, text_dim: int = 8, seed: int = 0):
    """Paired (image, text, labels) items where each class is a noisy cluster in both views."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    ci, ct = rng.normal(size=(classes, image_dim)), rng.normal(size=(classes, text_dim))
    images = ci[labels] + 0.5 * rng.normal(size=(n, image_dim))
    texts = ct[labels] + 0.5 * rng.normal(size=(n, text_dim))
    return images.astype(np.float32), texts.astype(np.float32), np.eye(classes, dtype=np.float32)[labels]


@pytest.fixture
def pairs():
    return clustered_pairs()
