import torch

from models.ista import IstaConfig, IstaEncoder, shrink
from models.sparsehash import SparseHash, SparseHashConfig, pair_loss


def test_shrink_is_one_sided_soft_threshold():
    b = torch.tensor([-2.0, 0.0, 0.5, 1.0, 3.0])
    tau = torch.tensor(1.0)
    assert torch.equal(shrink(b, tau), torch.tensor([0.0, 0.0, 0.0, 0.0, 2.0]))


def test_codes_are_in_unit_interval_and_bits_are_their_support():
    torch.manual_seed(0)
    enc = IstaEncoder(IstaConfig(in_dim=6, bits=16, steps=3, tau_init=0.3))
    x = torch.randn(50, 6)
    relaxed = enc(x)
    assert relaxed.min() >= 0 and relaxed.max() < 1
    assert torch.equal(enc.encode_bits(x), relaxed > 0)
    assert 0 < enc.encode_bits(x).float().mean() < 1  # neither all off nor all on


def test_higher_threshold_gives_sparser_codes():
    torch.manual_seed(0)
    x = torch.randn(200, 6)
    enc = IstaEncoder(IstaConfig(in_dim=6, bits=32, steps=0))
    ones = []
    for tau in (0.0, 0.5, 1.5):
        enc.tau.data.fill_(tau)
        ones.append(enc.encode_bits(x).float().sum(1).mean().item())
    assert ones[0] > ones[1] > ones[2]


def test_code_length_must_be_whole_bytes():
    import pytest

    from models.bits import CodeLengthError

    with pytest.raises(CodeLengthError):
        IstaConfig(in_dim=4, bits=12)


def test_identical_similar_pair_costs_only_sparsity():
    a = torch.tensor([[0.5, 0.0, 0.25, 0.0]])
    loss = pair_loss(a, a.clone(), torch.tensor([1.0]), margin=4.0, lam=1.0, alpha=0.1)
    assert torch.allclose(loss, torch.tensor([0.1 * (0.75 + 0.75)]))


def test_dissimilar_pair_beyond_margin_costs_nothing_from_hinge():
    a = torch.tensor([[0.9, 0.9, 0.0, 0.0]])
    b = torch.tensor([[0.0, 0.0, 0.9, 0.9]])  # L1 distance 3.6
    far = pair_loss(a, b, torch.tensor([0.0]), margin=3.0, lam=2.0, alpha=0.0)
    assert far.item() == 0.0
    near = pair_loss(a, b, torch.tensor([0.0]), margin=5.0, lam=2.0, alpha=0.0)
    assert torch.allclose(near, torch.tensor([2.0 * (5.0 - 3.6)]))
    # a similar pair pays its distance
    assert torch.allclose(pair_loss(a, b, torch.tensor([1.0]), margin=5.0, lam=2.0, alpha=0.0), torch.tensor([3.6]))


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    model = SparseHash(SparseHashConfig(image_dim=5, text_dim=3, bits=8, steps=2, tau_init=0.0))
    with torch.no_grad():  # S starts at zero; any value must still get a gradient
        model.image.S.weight.normal_(0, 0.1)
        model.text.S.weight.normal_(0, 0.1)
    images, texts = torch.randn(6, 5), torch.randn(6, 3)
    left, right = torch.tensor([0, 1, 2, 3]), torch.tensor([1, 2, 3, 4])
    loss = model.loss(images, texts, left, right, torch.tensor([1.0, 0.0, 1.0, 0.0]))
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_dense_ablation_has_no_sparsity_term():
    a = torch.tensor([[0.5, 0.5]])
    assert pair_loss(a, a, torch.tensor([1.0]), margin=1.0, lam=1.0, alpha=0.0).item() == 0.0


def test_leaky_shrink_keeps_the_value_and_lets_a_gradient_through_below_threshold():
    b = torch.tensor([-2.0, 0.5, 3.0], requires_grad=True)
    out = shrink(b, torch.tensor(1.0), leak=0.1)
    assert torch.equal(out.detach(), torch.tensor([0.0, 0.0, 2.0]))  # codes are the same
    out.sum().backward()
    assert torch.allclose(b.grad, torch.tensor([0.1, 0.1, 1.0]))  # plain shrinkage would give 0, 0, 1


def test_loss_leaves_out_the_sides_an_item_lacks():
    """An item without text (an untagged photo) or without image (a tag on its own): whatever its
    missing features hold, the loss is the same."""
    torch.manual_seed(0)
    model = SparseHash(SparseHashConfig(image_dim=5, text_dim=3, bits=8, tau_init=0.0))
    images, texts = torch.randn(4, 5), torch.randn(4, 3)
    left, right, similar = torch.tensor([0, 1, 2]), torch.tensor([1, 2, 3]), torch.tensor([1.0, 0.0, 1.0])
    has_image = torch.tensor([True, True, False, True])
    has_text = torch.tensor([True, False, True, True])
    loss = model.loss(images, texts, left, right, similar, has_image, has_text)
    images2, texts2 = images.clone(), texts.clone()
    images2[2], texts2[1] = 100.0, -100.0  # the missing sides, changed
    assert torch.equal(loss, model.loss(images2, texts2, left, right, similar, has_image, has_text))
    assert not torch.equal(loss, model.loss(images2, texts2, left, right, similar))  # all present: it shows
