import math

import pytest
import torch

from losses.regularizers import (entropy_loss, gated_crf_loss, ivm_loss, mumford_shah_loss,
                                 mumford_shah_release_loss, tv_loss)


def two_class(p0):
    """(1, 2, H, W) probs from a (H, W) map of class-0 probabilities."""
    p0 = torch.as_tensor(p0, dtype=torch.float32)
    return torch.stack((p0, 1 - p0)).unsqueeze(0)


def step_image(h=16, w=16):
    """(1, 1, H, W): left half 0, right half 1."""
    img = torch.zeros(1, 1, h, w)
    img[..., w // 2:] = 1.0
    return img


def test_tv_hand_value_and_constant():
    p = two_class([[0.0, 1.0], [1.0, 1.0]])
    # per channel: |dH| = [1, 0], |dW| = [1, 0] -> 0.5 + 0.5
    assert tv_loss(p).item() == pytest.approx(1.0)
    assert tv_loss(torch.full((2, 3, 5, 4), 1 / 3)).item() == 0.0


def test_entropy_hand_values_and_mask():
    p = two_class([[0.5, 1.0]])
    assert entropy_loss(p).item() == pytest.approx(math.log(2) / 2, abs=1e-5)
    mask = torch.tensor([[[True, False]]])
    assert entropy_loss(p, mask).item() == pytest.approx(math.log(2), abs=1e-5)
    assert entropy_loss(p, ~torch.ones_like(mask)).item() == 0.0
    assert entropy_loss(torch.full((1, 4, 3, 3), 0.25)).item() == pytest.approx(math.log(4),
                                                                                   abs=1e-5)


def test_ivm_hand_value():
    img = torch.tensor([[[[0.0, 0.5, 1.0]]]])
    p = two_class([[1.0, 0.5, 0.0]])
    # class 0: mu = 0.25/1.5 = 1/6, var = (1/36 + 0.5/9)/1.5 = 1/18; class 1 symmetric
    assert ivm_loss(p, img).item() == pytest.approx(1 / 18, abs=1e-5)


def test_ivm_zero_on_intensity_split_positive_on_random():
    img = step_image()
    p = two_class((img[0, 0] == 0).float())
    assert ivm_loss(p, img).item() == pytest.approx(0.0, abs=1e-6)
    torch.manual_seed(0)
    assert ivm_loss(two_class(torch.rand(16, 16)), img).item() > 0.05


def test_mumford_shah_release_form_hand_value():
    # x = (1, 0.5), p0 = (1, 0), p1 = (0, 1): centres c0 = 1/1.5, c1 = 0.5/1.5;
    # sum_i x_i (p_ci - c_c)^2 = 1/9 + 0.5 * 4/9 = 1/3 for each class.
    p = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).reshape(1, 2, 1, 2)
    img = torch.tensor([1.0, 0.5]).reshape(1, 1, 1, 2)
    assert mumford_shah_release_loss(p, img).item() == pytest.approx(2 / 3, abs=1e-6)
    assert mumford_shah_release_loss(torch.cat([p, p]), torch.cat([img, img])).item() == pytest.approx(4 / 3, abs=1e-6)


def test_pce_ms_form_flag_picks_the_functional(phantom_root, tmp_path):
    import engine
    from conftest import tiny_cfg
    from methods import get_method

    ms = get_method("pce_ms")
    cfg = tiny_cfg(ms, phantom_root, tmp_path / "run", "--ms_form", "release", "--w_reg", "1e-6")
    method = ms(cfg)
    p = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).reshape(1, 2, 1, 2)
    batch = {"image": torch.tensor([1.0, 0.5]).reshape(1, 1, 1, 2)}
    assert method.regularizer(p, batch).item() == pytest.approx(2 / 3, abs=1e-6)
    engine.train(cfg, ms)
    assert (tmp_path / "run" / "last.pth").exists()


def test_mumford_shah_hand_value():
    img = torch.tensor([[[[0.0, 0.5, 1.0]]]])
    p = two_class([[1.0, 0.5, 0.0]])
    # data: sum_c mass_c var_c / (B H W) = 2 * 1.5/18 / 3 = 1/18; TV: H = 1, |dW| = 0.5 everywhere
    assert mumford_shah_loss(p, img, tv_weight=0.1).item() == pytest.approx(1 / 18 + 0.05,
                                                                            abs=1e-5)
    assert mumford_shah_loss(p, img, tv_weight=0.0).item() == pytest.approx(1 / 18, abs=1e-5)


def test_gated_crf_hand_value():
    img = torch.tensor([[[[0.0, 1.0]]]])
    p = two_class([[1.0, 0.0]])
    k = [{"weight": 1.0, "xy": 1.0, "intensity": 1.0}]
    # pairs (0,1) and (1,0), each K = exp(-1/2 - 1/2), disagreement 1, two valid pixels
    val = gated_crf_loss(p, img, kernels=k, radius=1, scale_factor=1.0).item()
    assert val == pytest.approx(math.exp(-1.0), abs=1e-5)
    # "rgb" alias and weight scale linearly
    k2 = [{"weight": 2.0, "xy": 1.0, "rgb": 1.0}]
    assert gated_crf_loss(p, img, kernels=k2, radius=1, scale_factor=1.0).item() == \
        pytest.approx(2 * math.exp(-1.0), abs=1e-5)
    # masking pixel 1 gates out both pairs
    mask = torch.tensor([[[True, False]]])
    assert gated_crf_loss(p, img, kernels=k, radius=1, scale_factor=1.0, mask=mask).item() == 0.0
    # a lone pixel has no pairs: its own soft disagreement 1 - p.p is not counted
    lone = gated_crf_loss(two_class([[0.5]]), img[..., :1], kernels=k, radius=1, scale_factor=1.0)
    assert lone.item() == 0.0


def test_gated_crf_follows_edges_and_constant_is_zero():
    img = step_image(32, 32)
    along = two_class((img[0, 0] == 0).float())
    across = two_class(torch.zeros(32, 32).index_fill_(0, torch.arange(16), 1.0))
    l_along = gated_crf_loss(along, img).item()
    l_across = gated_crf_loss(across, img).item()
    assert l_along < 0.1 * l_across
    assert gated_crf_loss(two_class(torch.ones(32, 32)), img).item() == 0.0


@pytest.mark.parametrize("name", ["tv", "entropy", "gcrf", "ivm", "ms"])
def test_gradients_and_bf16_autocast(name):
    torch.manual_seed(1)
    img = torch.rand(2, 1, 16, 16)
    logits = torch.randn(2, 4, 16, 16, requires_grad=True)
    fns = {
        "tv": lambda p: tv_loss(p),
        "entropy": lambda p: entropy_loss(p, img[:, 0] > 0.5),
        "gcrf": lambda p: gated_crf_loss(p, img),
        "ivm": lambda p: ivm_loss(p, img),
        "ms": lambda p: mumford_shah_loss(p, img),
    }
    loss = fns[name](torch.softmax(logits, 1))
    assert loss.dim() == 0 and loss.dtype == torch.float32
    loss.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = fns[name](torch.softmax(logits.detach().bfloat16(), 1))
    assert low.dtype == torch.float32 and torch.isfinite(low)
    assert low.item() == pytest.approx(loss.item(), rel=0.05, abs=1e-3)


def test_bad_shapes_raise():
    p = torch.rand(1, 2, 4, 4)
    with pytest.raises(ValueError, match="probs"):
        tv_loss(torch.rand(2, 4, 4))
    with pytest.raises(ValueError, match="mask"):
        entropy_loss(p, torch.ones(1, 3, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="images"):
        ivm_loss(p, torch.rand(1, 1, 4, 5))
    with pytest.raises(ValueError, match="images"):
        mumford_shah_loss(p, torch.rand(4, 4))
    with pytest.raises(ValueError, match="images"):
        gated_crf_loss(p, torch.rand(2, 1, 4, 4))
    with pytest.raises(ValueError, match="radius"):
        gated_crf_loss(p, torch.rand(1, 1, 4, 4), radius=0)
    with pytest.raises(ValueError, match="kernels"):
        gated_crf_loss(p, torch.rand(1, 1, 4, 4), kernels=[{"weight": 1.0, "sigma": 2.0}])


def test_gated_crf_positions_are_in_original_pixels_whatever_the_scale():
    # A mutation audit found this unpinned: positions on the downscaled grid: the xy sigma then meant
    # twice as many pixels.
    from losses.regularizers import gated_crf_loss

    g = torch.Generator().manual_seed(0)
    p_small = torch.rand(1, 2, 4, 4, generator=g).softmax(1)
    img_small = torch.rand(1, 1, 4, 4, generator=g)
    up = lambda x: x.repeat_interleave(2, -1).repeat_interleave(2, -2)  # noqa: E731 block upsampling
    k_big = [{"weight": 1.0, "xy": 2.0, "intensity": 0.3}]
    k_small = [{"weight": 1.0, "xy": 1.0, "intensity": 0.3}]
    big = gated_crf_loss(up(p_small), up(img_small), kernels=k_big, radius=1, scale_factor=0.5)
    small = gated_crf_loss(p_small, img_small, kernels=k_small, radius=1, scale_factor=1.0)
    assert big.item() == pytest.approx(small.item(), rel=1e-5)


def test_gated_crf_downscaled_pixel_needs_most_of_its_pixels_valid():
    # A mutation audit found this unpinned: a downscaled pixel counted as valid when any of its pixels
    # was.
    from losses.regularizers import gated_crf_loss

    g = torch.Generator().manual_seed(1)
    p = torch.rand(1, 2, 8, 8, generator=g).softmax(1)
    img = torch.rand(1, 1, 8, 8, generator=g)
    mask = torch.zeros(1, 8, 8, dtype=torch.bool)
    mask[:, ::2, ::2] = True  # one pixel in four of every 2x2 block
    assert gated_crf_loss(p, img, mask=mask, radius=1, scale_factor=0.5).item() == 0.0
    assert gated_crf_loss(p, img, radius=1, scale_factor=0.5).item() > 0


def test_mumford_shah_data_term_is_a_mean_over_the_batch():
    # A mutation audit found this unpinned: the data term divided by H W only: a batch of two equal images
    # scored twice one.
    from losses.regularizers import mumford_shah_loss

    g = torch.Generator().manual_seed(2)
    p = torch.rand(1, 3, 8, 8, generator=g).softmax(1)
    img = torch.rand(1, 1, 8, 8, generator=g)
    one = mumford_shah_loss(p, img, tv_weight=0.0)
    two = mumford_shah_loss(torch.cat([p, p]), torch.cat([img, img]), tv_weight=0.0)
    assert two.item() == pytest.approx(one.item(), rel=1e-6)
