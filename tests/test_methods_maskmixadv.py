import numpy as np
import pytest
import torch

from conftest import tiny_cfg
from dataloaders.shape_prior import ShapePrior
from engine import TrainState
from methods.base import mixed_pseudo_label
from methods.maskmixadv import MaskMixAdv, block_masks


def test_block_masks_are_binary_blocks_with_half_the_cells_on():
    m = block_masks(3, (64, 64), grid=32, ratio=0.5)
    assert m.shape == (3, 1, 64, 64) and set(m.unique().tolist()) == {0.0, 1.0}
    cells = m[:, 0, ::2, ::2]
    assert torch.equal(cells.repeat_interleave(2, 1).repeat_interleave(2, 2), m[:, 0])
    assert (cells.sum((1, 2)) == 512).all()
    assert not torch.equal(m[0], m[1])


def test_mask_ratio_is_checked():
    with pytest.raises(ValueError, match="--mask_ratio"):
        block_masks(1, (32, 32), ratio=1.0)


def test_pseudo_label_takes_each_pixel_from_the_view_that_saw_it():
    p1 = torch.zeros(1, 4, 2, 2)
    p1[:, 1] = 1  # view 1 says RV everywhere
    p2 = torch.zeros(1, 4, 2, 2)
    p2[:, 3] = 1  # view 2 says LV everywhere
    mask = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])
    assert mixed_pseudo_label(p1, p2, mask).tolist() == [[[1, 3], [3, 1]]]


def make_method(tmp_path, phantom_root, *extra):
    cfg = tiny_cfg(MaskMixAdv, phantom_root, tmp_path, "--disc_ndf", "8", *extra)
    torch.manual_seed(0)
    method = MaskMixAdv(cfg)
    labels = np.zeros((32, 32), np.int64)
    labels[8:24, 8:24], labels[12:20, 12:20], labels[8:24, 4:8] = 2, 3, 1
    method.prior = ShapePrior([labels], (32, 32))
    return cfg, method


def batch(n=2):
    g = torch.Generator().manual_seed(1)
    return {"image": torch.rand(n, 1, 32, 32, generator=g),
            "target": torch.randint(0, 5, (n, 32, 32), generator=g), "index": torch.arange(n)}


def test_adversarial_gradient_reaches_the_segmenter(tmp_path, phantom_root):
    # The authors' release feeds argmax maps to D, so no gradient flows back; ours must.
    _, method = make_method(tmp_path, phantom_root)
    terms, _ = method.losses(batch())
    method.zero_grad()
    terms["adv"].backward()
    grads = [p.grad for n, p in method.net.named_parameters() if "seg_decoders" in n or "encoder" in n]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


def test_adversarial_weight_changes_the_segmenter_update(tmp_path, phantom_root):
    updates = []
    for w_adv in ("0", "100"):
        cfg, method = make_method(tmp_path, phantom_root, "--w_adv", w_adv, "--adv_rampup", "0")
        state = TrainState(cfg, torch.device("cpu"), method.configure_optimizers())
        before = method.net.seg_decoders[0].head.weight.detach().clone()
        torch.manual_seed(5)
        method.training_step(batch(), state)
        updates.append(method.net.seg_decoders[0].head.weight.detach() - before)
    assert not torch.allclose(updates[0], updates[1])


def test_discriminator_is_not_updated_by_the_segmenter_loss(tmp_path, phantom_root):
    cfg, method = make_method(tmp_path, phantom_root)
    opts = method.configure_optimizers()
    seg_params = {id(p) for g in opts["seg"].param_groups for p in g["params"]}
    assert not seg_params & {id(p) for p in method.disc.parameters()}
    assert seg_params == {id(p) for p in method.net.parameters()}


def test_a_few_steps_lower_the_loss(tmp_path, phantom_root):
    cfg, method = make_method(tmp_path, phantom_root, "--w_adv", "0")
    state = TrainState(cfg, torch.device("cpu"), method.configure_optimizers())
    b = batch(4)
    losses = []
    for _ in range(8):
        losses.append(float(method.training_step(b, state)["loss"]))
        state.iteration += 1
    assert losses[-1] < losses[0]


def test_discriminator_step_equals_its_loss_on_detached_fakes(tmp_path, phantom_root):
    # D's step reuses the scores of the fakes from the segmenter's forward: its gradient must
    # equal that of BCE(D(real), 1) + BCE(D(p.detach()), 0) with D's weights before the step.
    import copy

    import torch.nn.functional as F

    cfg, method = make_method(tmp_path, phantom_root, "--adv_rampup", "0")
    state = TrainState(cfg, torch.device("cpu"), method.configure_optimizers())
    disc_before = copy.deepcopy(method.disc)
    inputs, grads = [], {}
    method.disc.register_forward_hook(lambda mod, args, out: inputs.append(args[0].detach().clone()))
    for name, p in method.disc.named_parameters():
        p.register_hook(lambda g, name=name: grads.__setitem__(name, g.clone()))
    method.training_step(batch(), state)
    fakes, real = inputs
    d_real, d_fake = disc_before(real), disc_before(fakes)
    loss = F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real)) + \
        F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake))
    expected = dict(zip([n for n, _ in disc_before.named_parameters()],
                        torch.autograd.grad(loss, list(disc_before.parameters()))))
    assert grads.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(grads[name], expected[name], rtol=1e-4, atol=1e-6)


def test_zero_weights_switch_terms_off_for_the_ablation(tmp_path, phantom_root):
    cfg, method = make_method(tmp_path, phantom_root, "--w_pseudo", "0", "--w_rec", "0", "--w_adv", "0")
    state = TrainState(cfg, torch.device("cpu"), method.configure_optimizers())
    disc_before = [p.detach().clone() for p in method.disc.parameters()]
    rec_before = [p.detach().clone() for p in method.net.rec_decoder.parameters()]
    logs = method.training_step(batch(), state)
    assert set(logs) == {"loss", "pce"}
    assert torch.equal(logs["loss"], 10 * logs["pce"])
    assert all(torch.equal(a, b) for a, b in zip(disc_before, method.disc.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(rec_before, method.net.rec_decoder.parameters()))


def fixed_views(monkeypatch, method):
    """M = [[1, 0], [0, 1]] (view 1 sees the diagonal); view 1 says RV, view 2 says LV
    everywhere; hand-made reconstructions."""
    import methods.maskmixadv as mm

    mask = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])
    seg1, seg2 = torch.zeros(1, 4, 2, 2), torch.zeros(1, 4, 2, 2)
    seg1[:, 1], seg2[:, 3] = 9.0, 9.0
    rec1 = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    rec2 = torch.tensor([[[[5.0, 6.0], [7.0, 9.0]]]])
    monkeypatch.setattr(mm, "block_masks", lambda *a, **k: mask)
    monkeypatch.setattr(method.net, "forward_views", lambda *a, **k: (seg1, seg2, rec1, rec2))
    labels = []
    real = mm.mixed_pseudo_label
    monkeypatch.setattr(mm, "mixed_pseudo_label", lambda *a: labels.append(real(*a)) or labels[-1])
    return labels


def test_each_view_labels_the_pixels_it_saw_inside_the_method(tmp_path, phantom_root, monkeypatch):
    _, method = make_method(tmp_path, phantom_root, "--w_adv", "0")  # D needs >= 32 pixels
    labels = fixed_views(monkeypatch, method)
    batch = {"image": torch.zeros(1, 1, 2, 2), "target": torch.full((1, 2, 2), 4)}
    method.losses(batch)
    assert labels[0].tolist() == [[[1, 3], [3, 1]]]


def test_reconstruction_is_scored_on_the_hidden_pixels_only(tmp_path, phantom_root, monkeypatch):
    _, method = make_method(tmp_path, phantom_root, "--w_adv", "0")
    fixed_views(monkeypatch, method)
    batch = {"image": torch.zeros(1, 1, 2, 2), "target": torch.full((1, 2, 2), 4)}
    terms, _ = method.losses(batch)
    # view 1 hid (0,1), (1,0): (2^2 + 3^2) / 2 = 6.5; view 2 hid the diagonal: (5^2 + 9^2) / 2 = 53
    # (the visible pixels would give 25.5, all pixels 27.625)
    assert terms["rec"].item() == pytest.approx(0.5 * (6.5 + 53.0))


def test_ablation_refuses_train_args_that_define_variants_and_prints_the_roots_classes(monkeypatch, capsys):
    from conftest import benchmark

    ablation = benchmark("ablation")
    # Given after a variant's own flags they won: "--seed 7" made pce_seed1 a copy of pce, exit 0.
    for extra in ("--seed 7", "--seed=7", "--max_iterations 6 --w_adv 0.2", "--shape_prior x"):
        with pytest.raises(SystemExit) as e:
            ablation.main([f"--train_args={extra}"])
        assert e.value.code == 2 and "defines the variants" in capsys.readouterr().err
    ablation.check_train_args("--max_iterations 6 --val_interval 3")
    # --shape_prior went to pce's train_wss.sh call too, which refuses --args of a method it does not run.
    calls = []

    def no_result(path):
        raise FileNotFoundError(path)  # stops run_variant after its train_wss.sh call
    monkeypatch.setattr(ablation.subprocess, "run", lambda cmd, check: calls.append(cmd))
    monkeypatch.setattr(ablation, "open", no_result, raising=False)
    for variant in ("pce", "views"):
        with pytest.raises(FileNotFoundError):
            ablation.run_variant(variant, ablation.argparse.Namespace(
                exp_prefix="a_", root="r", fold="fold1", protocol="quick", shape_prior="prior", train_args=""))
    assert "--args" not in calls[0] and calls[1][calls[1].index("--args"):][:3] == ["--args", "maskmixadv",
                                                                                   "--shape_prior prior"]
    per = {"LV": 0.8, "mean": 0.8}
    monkeypatch.setattr(ablation, "run_variant", lambda name, args: {"dice": per, "hd95": per, "asd": per})
    assert ablation.main(["--variants", "pce", "views"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["variant", "Dice", "LV", "mean", "HD95", "ASD"]
    assert out[1].split() == ["pce", "0.8000", "0.8000", "0.80", "0.80"]


class ConstantCritic(torch.nn.Module):
    """A discriminator that scores every input 2.0 (a logit), still in the graph."""

    def forward(self, p):
        return torch.full((p.shape[0], 1, 1, 1), 2.0) + 0 * p.sum()


def test_the_loss_terms_by_hand(tmp_path, phantom_root, monkeypatch):
    # Found by a mutation audit: pCE or the pseudo-label Dice of view 1 twice, or the segmenter's
    # adversarial target "fake" instead of "real", passed every test (the views were mirror images).
    import math

    import methods.maskmixadv as mm
    from losses.segmentation import dice_loss

    _, method = make_method(tmp_path, phantom_root, "--w_rec", "0")
    method.disc = ConstantCritic()
    seg1, seg2 = torch.zeros(1, 4, 2, 2), torch.zeros(1, 4, 2, 2)
    seg1[:, 1] = 9.0  # view 1 says RV confidently, view 2 is uniform
    monkeypatch.setattr(mm, "block_masks", lambda *a, **k: torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]]))
    monkeypatch.setattr(method.net, "forward_views", lambda *a, **k: (seg1, seg2, None, None))
    target = torch.full((1, 2, 2), 4)
    target[0, 0, 0] = 1
    terms, _ = method.losses({"image": torch.zeros(1, 1, 2, 2), "target": target})
    # pCE of each view on the one RV stroke: log(1 + 3 e^-9) and log 4
    assert terms["pce"].item() == pytest.approx(0.5 * (math.log(1 + 3 * math.exp(-9)) + math.log(4)), rel=1e-5)
    # pseudo label: view 1's RV where M = 1, view 2's uniform argmax (class 0) where M = 0
    pseudo = torch.tensor([[[1, 0], [0, 1]]])
    uniform = dice_loss(torch.full((1, 4, 2, 2), 0.25), pseudo, None).item()
    assert uniform == pytest.approx(7 / 9, abs=1e-4)  # classes 0, 1: 1 - 2 * 0.5 / 2.5; 2, 3: 0
    assert terms["pseudo"].item() == pytest.approx(0.5 * (dice_loss(seg1.softmax(1), pseudo, None).item()
                                                          + uniform), rel=1e-5)
    assert terms["adv"].item() == pytest.approx(math.log(1 + math.exp(-2)), rel=1e-6)  # BCE(2, real)


def test_the_adversarial_weight_ramps_up(tmp_path, phantom_root):
    import math

    from methods.base import sigmoid_rampup

    assert sigmoid_rampup(0.0, 0.25) == pytest.approx(math.exp(-5))
    assert sigmoid_rampup(0.125, 0.25) == pytest.approx(math.exp(-1.25))
    assert sigmoid_rampup(0.25, 0.25) == sigmoid_rampup(0.9, 0.25) == sigmoid_rampup(0.3, 0.0) == 1.0
    cfg, method = make_method(tmp_path, phantom_root, "--adv_rampup", "0.5")  # 4 iterations
    state = TrainState(cfg, torch.device("cpu"), method.configure_optimizers())
    state.iteration = 1  # progress 1/4, half the ramp: 0.1 * exp(-5 * 0.5 ** 2)
    assert method.training_step(batch(), state)["w_adv"].item() == pytest.approx(0.1 * math.exp(-1.25), rel=1e-6)


@pytest.mark.parametrize("from_files", [False, True])
def test_the_shape_prior_is_zoomed_with_aug_scale(tmp_path, phantom_root, from_files):
    # A mutation audit found this unpinned: either prior (phantom masks or --shape_prior files) built
    # without --aug_scale kept the hearts' size while the training slices were zoomed.
    from dataloaders import io

    extra = ["--aug_scale", "0.3"]
    if from_files:
        label = np.zeros((1, 32, 32), np.uint8)
        label[0, 8:24, 8:24], label[0, 12:20, 12:20], label[0, 8:24, 4:8] = 2, 3, 1  # as make_method's
        io.write_h5(str(tmp_path / "prior" / "x.h5"), {"label": label})
        extra += ["--shape_prior", str(tmp_path / "prior")]
    method = MaskMixAdv(tiny_cfg(MaskMixAdv, phantom_root, tmp_path / "run", "--disc_ndf", "8", *extra))
    method.prepare(None)
    assert method.prior.scale == 0.3
