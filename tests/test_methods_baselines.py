import copy
import io
import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

import config
import engine
from dataloaders.augment import rot_flip, unrot_flip
from losses.regularizers import pixel_entropy
from methods import METHODS
from methods.base import branch_mean, ema_update, mixed_pseudo_label
from methods.dmpls import DMPLS
from methods.scribble2label import Scribble2Label, confident_pseudo_labels, update_memory
from methods.ustm import USTM

SIZE = 32


def make_cfg(method_cls, *args):
    cfg = config.build_parser(method_cls).parse_args(
        ["--patch_size", str(SIZE), str(SIZE), "--max_iterations", "100", "--device", "cpu", *args])
    return config.finalize(cfg, method_cls)


def fake_train_set(n=5, seed=0):
    """A train_set-like object: slices of varied size, scribbles with 4 = unlabeled."""
    rng = np.random.default_rng(seed)
    images, targets = [], []
    for i in range(n):
        h, w = 40 + 4 * i, 36
        images.append(rng.random((h, w), dtype=np.float32))
        t = np.full((h, w), 4, np.int64)
        t[h // 2, :] = rng.integers(0, 4, w)
        targets.append(t)
    return SimpleNamespace(images=images, targets=targets, names=[f"s{i}" for i in range(n)])


def random_batch(b=2, seed=0, n=5):
    g = torch.Generator().manual_seed(seed)
    target = torch.full((b, SIZE, SIZE), 4, dtype=torch.int64)
    target[:, 10:12, 5:25] = torch.randint(0, 4, (b, 2, 20), generator=g)
    return {"image": torch.rand(b, 1, SIZE, SIZE, generator=g), "target": target,
            "index": torch.arange(b) % n}


def build(method_cls, *args):
    cfg = make_cfg(method_cls, *args)
    torch.manual_seed(0)
    method = method_cls(cfg)
    notes = method.prepare(fake_train_set())
    assert notes == (["s2l: prediction memory of 5 slices, 0 MB"] if method_cls is Scribble2Label else [])
    method.train()
    return method, engine.TrainState(cfg, torch.device("cpu"), method.configure_optimizers())


# ---- DMPLS -------------------------------------------------------------------------------

def test_dmpls_pseudo_label_is_argmax_of_beta_mixture():
    p1 = torch.tensor([0.7, 0.2, 0.1, 0.0]).view(1, 4, 1, 1).repeat(1, 1, 1, 2)
    p2 = torch.tensor([0.0, 0.4, 0.1, 0.5]).view(1, 4, 1, 1).repeat(1, 1, 1, 2)
    # beta=1 -> p1's argmax; beta=0 -> p2's; beta=0.5 -> [0.35, 0.3, 0.1, 0.25] -> class 0;
    # beta=0.3 -> [0.21, 0.34, 0.1, 0.35] -> class 3
    assert mixed_pseudo_label(p1, p2, 1.0).tolist() == [[[0, 0]]]
    assert mixed_pseudo_label(p1, p2, 0.0).tolist() == [[[3, 3]]]
    assert mixed_pseudo_label(p1, p2, 0.5).tolist() == [[[0, 0]]]
    assert mixed_pseudo_label(p1, p2, 0.3).tolist() == [[[3, 3]]]
    # A tie goes to the first class, in either memory layout (as argmax).
    tie = torch.tensor([0.1, 0.4, 0.1, 0.4]).view(1, 4, 1, 1).repeat(1, 1, 1, 2)
    for layout in (torch.contiguous_format, torch.channels_last):
        assert mixed_pseudo_label(tie.contiguous(memory_format=layout), tie, 0.5).tolist() == [[[1, 1]]]
    with pytest.raises(ValueError, match="mixing weight"):
        mixed_pseudo_label(p1, p2, 1.5)


def test_dmpls_pseudo_label_carries_no_gradient():
    a = torch.rand(2, 4, 3, 3, requires_grad=True)
    b = torch.rand(2, 4, 3, 3, requires_grad=True)
    y = mixed_pseudo_label(a.softmax(1), b.softmax(1), 0.4)
    assert not y.requires_grad and y.grad_fn is None and y.dtype == torch.int64
    assert y.shape == (2, 3, 3)


def test_dmpls_uses_dual_network_and_main_decoder_at_inference():
    method, _ = build(DMPLS)
    assert method.network == "unet_dual" and method.cfg.w_pseudo == 0.5
    x = torch.rand(1, 1, SIZE, SIZE)
    method.eval()
    with torch.no_grad():
        main = method.net.decoder(method.net.encoder(x))
        assert torch.equal(method.segmenter()(x), main)


# ---- USTM --------------------------------------------------------------------------------

def test_ema_update_formula():
    teacher, student = nn.Linear(2, 1), nn.Linear(2, 1)
    with torch.no_grad():
        teacher.weight.copy_(torch.tensor([[1.0, 2.0]]))
        teacher.bias.fill_(0.0)
        student.weight.copy_(torch.tensor([[3.0, -2.0]]))
        student.bias.fill_(1.0)
    ema_update(teacher, student, 0.9)
    # 0.9 * old + 0.1 * new
    assert torch.allclose(teacher.weight, torch.tensor([[1.2, 1.6]]))
    assert torch.allclose(teacher.bias, torch.tensor([0.1]))
    ema_update(teacher, student, 0.0)
    assert torch.equal(teacher.weight, student.weight)
    with pytest.raises(ValueError, match="decay"):
        ema_update(teacher, student, 1.1)
    with pytest.raises(ValueError):  # networks of another structure are not paired up silently
        ema_update(teacher, nn.Sequential(nn.Linear(2, 1), nn.Linear(1, 1)), 0.5, buffers=True)


@pytest.mark.parametrize("k", range(4))
@pytest.mark.parametrize("flip", [False, True])
def test_rot_flip_inverse_round_trip(k, flip):
    x = torch.arange(2 * 3 * 4 * 6, dtype=torch.float32).view(2, 3, 4, 6)
    y = rot_flip(x, k, flip)
    assert y.shape == ((2, 3, 6, 4) if k % 2 else x.shape)
    assert torch.equal(unrot_flip(y, k, flip), x)
    if k or flip:
        assert not torch.equal(y.reshape(-1), x.reshape(-1))


def test_rot_flip_hand_value():
    x = torch.tensor([[1, 2], [3, 4]])
    assert rot_flip(x, 1, False).tolist() == [[2, 4], [1, 3]]  # counter-clockwise quarter turn
    assert rot_flip(x, 0, True).tolist() == [[2, 1], [4, 3]]


def test_entropy_hand_values():
    p = torch.tensor([[0.5, 1.0], [0.5, 0.0]]).view(1, 2, 1, 2)
    assert torch.allclose(pixel_entropy(p), torch.tensor([[[float(np.log(2)), 0.0]]]), atol=1e-5)


def test_ustm_teacher_not_optimised_and_updated_after_step():
    method, state = build(USTM, "--amp", "off")
    opt_params = {id(p) for g in state.optimizers["seg"].param_groups for p in g["params"]}
    assert all(id(p) not in opt_params and not p.requires_grad for p in method.teacher.parameters())
    assert any(k.startswith("teacher.") for k in method.state_dict())
    state.iteration = 5  # decay = min(1 - 1/6, 0.99)
    old_t = [p.clone() for p in method.teacher.parameters()]
    method.training_step(random_batch(), state)
    d = 1 - 1 / 6
    for t0, t, s in zip(old_t, method.teacher.parameters(), method.net.parameters()):
        assert torch.allclose(t, d * t0 + (1 - d) * s, atol=1e-6)


def test_ustm_bad_flags():
    with pytest.raises(ValueError, match="--mc_passes"):
        make_cfg(USTM, "--mc_passes", "0")


# ---- Scribble2Label ----------------------------------------------------------------------

def test_s2l_memory_update_hand_values():
    memory = torch.tensor([0, 255, 100], dtype=torch.uint8).view(1, 3, 1, 1)
    probs = torch.tensor([1.0, 0.0, 0.5]).view(1, 3, 1, 1)
    out = update_memory(memory, probs, 0.2)
    # 255 * (0.2 p + 0.8 m/255): 51, 204, 25.5 + 80 = 105.5 -> 106 (round half to even: 106)
    assert out.dtype == torch.uint8 and out.flatten().tolist() == [51, 204, 106]
    # a constant confident prediction passes 0.8 only after enough updates: 1 - 0.8^n > 0.8 at n=8
    m = torch.zeros(1, 2, 1, 1, dtype=torch.uint8)
    p = torch.tensor([1.0, 0.0]).view(1, 2, 1, 1)
    scribble = torch.full((1, 1, 1), 4)
    passed = []
    for _ in range(9):
        m = update_memory(m, p, 0.2)
        passed.append(confident_pseudo_labels(m, scribble, 0.8).item() != 4)
    assert passed == [False] * 7 + [True] * 2
    with pytest.raises(ValueError, match="--ema_alpha"):
        update_memory(m, p, 0.0)


def test_s2l_confidence_filtering():
    per_pixel = torch.tensor([[10, 15, 230],    # class 2 at 0.9: kept
                              [0, 230, 25],     # class 1 at 0.9, but scribbled
                              [102, 153, 0]],   # class 1 at 0.6: not confident
                             dtype=torch.uint8)
    memory = per_pixel.t().reshape(1, 3, 1, 3)
    scribble = torch.tensor([[[4, 0, 4]]])
    assert confident_pseudo_labels(memory, scribble, 0.8).tolist() == [[[2, 4, 4]]]
    assert confident_pseudo_labels(memory, torch.full_like(scribble, 4), 0.8).tolist() == [[[2, 1, 4]]]
    assert confident_pseudo_labels(memory, torch.full_like(scribble, 4), 0.5).tolist() == [[[2, 1, 1]]]


def test_s2l_prepare_sizes_canonical_slices_and_memory():
    method, _ = build(Scribble2Label)
    ts = fake_train_set()
    assert method.memory.shape == (5, 4, SIZE, SIZE) and method.memory.dtype == torch.uint8
    assert method.memory.sum() == 0
    assert method.canon_images.shape == (5, 1, SIZE, SIZE)
    # nearest-neighbour resizing keeps scribble values in {0..4}
    assert set(method.canon_targets.unique().tolist()) <= {0, 1, 2, 3, 4}
    assert set(method.state_dict()) >= {"memory"} and "canon_images" not in method.state_dict()
    assert abs(method.canon_images[0].float().mean().item() - ts.images[0].mean()) < 0.02


def test_s2l_memory_updates_batch_slices_in_canonical_frame():
    method, _ = build(Scribble2Label, "--amp", "off")
    # a pixel-wise net whose softmax depends strongly on the intensity, so that frames differ
    method.net = nn.Conv2d(1, 4, 1)
    with torch.no_grad():
        method.net.weight.copy_(torch.tensor([10.0, -10.0, 5.0, 0.0]).view(4, 1, 1, 1))
        method.net.bias.zero_()
    state = engine.TrainState(method.cfg, torch.device("cpu"), method.configure_optimizers())
    batch = random_batch(b=2)
    batch["index"] = torch.tensor([3, 1])
    net_before = copy.deepcopy(method.net).eval()
    method.training_step(batch, state)
    touched = method.memory.flatten(1).sum(1) > 0
    assert touched.tolist() == [False, True, False, True, False]
    # alpha * softmax of the pre-step net, in eval mode, on the un-augmented slice, quantised
    with torch.no_grad():
        probs = net_before(method.canon_images[[3, 1]].float()).softmax(1)
    expected = (0.2 * probs * 255).round()
    assert (method.memory[[3, 1]].float() - expected).abs().max() <= 1
    assert method.net.training  # the eval-mode pass restored training mode


def test_s2l_unprepared_method_fails_clearly():
    method = Scribble2Label(make_cfg(Scribble2Label))
    state = engine.TrainState(method.cfg, torch.device("cpu"), method.configure_optimizers())
    with pytest.raises(RuntimeError, match="prepare"):
        method.training_step(random_batch(), state)


# ---- all three: one step, state_dict round trips ------------------------------------------

def test_the_registry_holds_the_twelve_methods():
    assert sorted(METHODS) == ["dmpls", "fully", "maskmixadv", "pce", "pce_entmin", "pce_gatedcrf", "pce_ivm",
                               "pce_ms", "pce_rw", "pce_tv", "s2l", "ustm"]
    assert all(cls.name == name for name, cls in METHODS.items())


@pytest.mark.parametrize("method_cls,extra", [
    (DMPLS, []), (USTM, []), (Scribble2Label, []), (Scribble2Label, ["--w_cons", "0"])])
def test_one_training_step_changes_weights_and_logs_finite(method_cls, extra):
    method, state = build(method_cls, "--amp", "bf16", *extra)
    state.iteration = 60  # past s2l's pseudo_start (0.1 of 100) and into the ramps
    if method_cls is Scribble2Label:
        method.memory.fill_(0)
        method.memory[:, 1] = 255  # every unscribbled pixel confidently class 1
    before = [p.detach().clone() for p in method.net.parameters()]
    logs = method.training_step(random_batch(), state)
    assert all(torch.isfinite(v).all() for v in logs.values())
    assert logs["loss"].item() > 0
    if method_cls is Scribble2Label:
        assert logs["pseudo"].item() > 0
        assert (logs["cons"].item() > 0) == (not extra)
    if method_cls is USTM:
        assert logs["w_cons"].item() > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, method.net.parameters()))


def test_s2l_memory_survives_state_dict_round_trip():
    method, state = build(Scribble2Label, "--amp", "off")
    method.training_step(random_batch(), state)
    buf = io.BytesIO()
    torch.save(method.state_dict(), buf)
    buf.seek(0)
    fresh = Scribble2Label(make_cfg(Scribble2Label))  # never prepared, as at inference
    fresh.load_state_dict(torch.load(buf))
    assert torch.equal(fresh.memory, method.memory) and fresh.memory.sum() > 0
    # a prepared method of another size still refuses a mismatched memory
    other = Scribble2Label(make_cfg(Scribble2Label))
    other.prepare(fake_train_set(n=3))
    with pytest.raises(RuntimeError, match="memory"):
        other.load_state_dict(method.state_dict())


def test_ustm_teacher_survives_state_dict_round_trip():
    method, state = build(USTM, "--amp", "off")
    method.training_step(random_batch(), state)
    state.iteration = 3  # decay 0.75: the teacher now lags the student
    method.training_step(random_batch(seed=1), state)
    assert not torch.equal(method.teacher.encoder.stages[0][0].weight, method.net.encoder.stages[0][0].weight)
    fresh = USTM(make_cfg(USTM))
    fresh.load_state_dict(method.state_dict())
    for a, b in zip(fresh.teacher.state_dict().values(), method.teacher.state_dict().values()):
        assert torch.equal(a, b)


# ---- defining terms, checked through the methods themselves ------------------------------

@pytest.mark.parametrize("w_ce,w_pseudo", [(1.0, 0.5), (2.0, 0.0)])  # WSL4MIS; the authors' release
def test_dmpls_loss_is_weighted_pce_plus_dice_to_the_beta_mixture(monkeypatch, w_ce, w_pseudo):
    from losses.segmentation import dice_loss, partial_ce

    method, state = build(DMPLS, "--w_ce", str(w_ce), "--w_pseudo", str(w_pseudo))
    g = torch.Generator().manual_seed(3)
    logits1, logits2 = torch.randn(2, 4, SIZE, SIZE, generator=g), torch.randn(2, 4, SIZE, SIZE, generator=g)
    monkeypatch.setattr(method.net, "forward_both", lambda x: (logits1, logits2))
    batch = random_batch()
    torch.manual_seed(5)
    beta = float(torch.rand(()))  # the draw the method makes next, after the same seed (0.83)
    torch.manual_seed(5)
    total, logs = method.loss(batch, state)
    p1, p2 = logits1.softmax(1), logits2.softmax(1)
    y = (beta * p1 + (1 - beta) * p2).argmax(1)
    assert (y != (0.5 * p1 + 0.5 * p2).argmax(1)).any() and abs(beta - 0.5) > 0.2  # beta matters here
    ce = 0.5 * (partial_ce(logits1, batch["target"]) + partial_ce(logits2, batch["target"]))
    dice = 0.5 * (dice_loss(p1, y, None) + dice_loss(p2, y, None))
    torch.testing.assert_close(total, w_ce * ce + w_pseudo * dice)
    torch.testing.assert_close(logs["pseudo"], dice)


def test_ustm_teacher_target_is_brought_back_to_the_students_frame():
    method, _ = build(USTM)
    teacher = nn.Conv2d(1, 4, 1)  # class by intensity: bright -> LV (3), dark -> MYO (2)
    with torch.no_grad():
        teacher.weight.copy_(torch.tensor([0.0, 0.0, 0.0, 50.0]).view(4, 1, 1, 1))
        teacher.bias.copy_(torch.tensor([0.0, 0.0, 25.0, 0.0]))
    method.teacher = teacher
    image = torch.zeros(1, 1, SIZE, SIZE)
    image[..., 2:9, 3:20] = 1  # asymmetric: any rotation or flip left over would misplace it
    for seed in range(6):
        torch.manual_seed(seed)
        target = method.teacher_target(image)
        assert torch.equal(target.argmax(1), (image[:, 0] > 0.5).long() + 2)


def test_s2l_pseudo_labels_are_its_confident_unscribbled_memory(monkeypatch):
    import methods.scribble2label as s2l

    method, state = build(Scribble2Label, "--w_cons", "0", "--memory_interval", "1000")
    method.memory.fill_(0)
    method.memory[:, 3] = 240  # every slice: LV at 0.94 everywhere
    calls = []
    real_ce = s2l.partial_ce
    monkeypatch.setattr(s2l, "partial_ce", lambda logits, target: calls.append(target) or real_ce(logits, target))
    batch = random_batch()
    state.iteration = 99  # past --pseudo_start, and no memory refresh this step
    method.loss(batch, state)
    pseudo = calls[1]
    canon = method.canon_targets[batch["index"]]
    assert torch.equal(pseudo, torch.where(canon == 4, 3, 4))  # LV where unscribbled, else unlabeled
    method.memory[:, 3] = int(255 * method.cfg.conf_threshold) - 2  # just below the threshold
    calls.clear()
    method.loss(batch, state)
    assert (calls[1] == 4).all()


def test_pce_rw_loss_is_half_ce_half_dice_on_the_walker_labels():
    # the reference's loss for this baseline; CE alone found no RV or LV on ACDC at the quick budget
    from losses.segmentation import ce_dice_loss, partial_ce

    method, state = build(METHODS["pce_rw"])
    method.eval()  # no dropout: the two forward passes below must agree
    batch = random_batch()
    batch["target"][0, :16] = 0  # a dense-ish label map, with an unlabeled (4) remainder
    loss, _ = method.loss(batch, state)
    logits = method.net(batch["image"])
    assert loss.item() == pytest.approx(ce_dice_loss(logits, batch["target"]).item(), rel=1e-5)
    assert loss.item() != pytest.approx(partial_ce(logits, batch["target"]).item(), rel=1e-3)


def test_the_reference_harness_refuses_what_would_mislead_and_scores_in_mm(phantom_root, tmp_path, capsys):
    # benchmarks/reference_release.py scored an untrained network with --iterations 0, replaced an
    # earlier run's files in --out, took its fixed ACDC folds on any root, and gave HD95 in voxels
    # on a root with a spacing (test_2D_fully.py gives mm there), all at exit 0.
    from conftest import benchmark
    from dataloaders import io as data_io

    ref = benchmark("reference_release")
    release = tmp_path / "release"
    (release / "code" / "networks").mkdir(parents=True)
    acdc = tmp_path / "acdc"
    for folder in ("ACDC_training_volumes", "ACDC_training_slices"):
        (acdc / folder).mkdir(parents=True)
    for i in range(1, 101):
        (acdc / "ACDC_training_volumes" / f"patient{i:03d}_frame01.h5").touch()
    out = tmp_path / "out"
    out.mkdir()
    (out / "last.pth").write_bytes(b"an earlier run")
    for args, message in [(["--root", str(acdc), "--iterations", "0"], "--iterations, --batch and --patch must be >= 1"),
                          (["--root", phantom_root], "the release's folds split ACDC's patients"),
                          (["--root", str(acdc)], "holds last.pth of an earlier run; pass --overwrite")]:
        with pytest.raises(SystemExit) as e:
            ref.parse(["--release", str(release), "--out", str(out), *args])
        assert e.value.code == 2 and message in capsys.readouterr().err
    assert (out / "last.pth").read_bytes() == b"an earlier run"
    assert ref.parse(["--release", str(release), "--out", str(out), "--root", str(acdc), "--overwrite"]).overwrite

    cases = data_io.list_cases(phantom_root)[:2]
    truths = {c: data_io.read_case(phantom_root, c) for c in cases}
    np.savez_compressed(out / "predictions.npz", **{c: np.roll(t.label, 1, axis=2) for c, t in truths.items()})
    (out / "train.json").write_text("{}")
    result = ref.main(["--score", "--out", str(out), "--root", phantom_root])
    spacing_x = truths[cases[0]].spacing[2]
    assert result["units"] == "mm" and spacing_x > 1.5 and result["hd95"]["mean"] >= spacing_x - 1e-6


def test_the_reference_random_walker_cache_is_keyed_by_the_slices(phantom_root, tmp_path):
    # The cache was reused whenever the slice names matched, also for another root's images.
    import shutil

    from conftest import benchmark
    from dataloaders import io as data_io

    ref = benchmark("reference_release")
    calls = []
    walker = lambda image, scribble: calls.append(1) or (image > 0.5)  # noqa: E731
    names = sorted(os.listdir(os.path.join(phantom_root, data_io.SLICE_DIR)))[:3]
    args = SimpleNamespace(out=str(tmp_path), root=phantom_root)
    first = ref.walker_labels(args, names, walker)
    assert len(calls) == 3 and all(np.array_equal(ref.walker_labels(args, names, walker)[n], first[n]) for n in names)
    assert len(calls) == 3  # the same slices: from the cache
    other = tmp_path / "other"
    shutil.copytree(phantom_root, other)
    path = os.path.join(other, data_io.SLICE_DIR, names[0])
    arrays = data_io.read_h5(path)
    data_io.write_h5(path, {k: arrays[k] for k in data_io.KEYS if k != "image"} | {"image": 1 - arrays["image"]})
    args.root = str(other)
    assert not np.array_equal(ref.walker_labels(args, names, walker)[names[0]], first[names[0]]) and len(calls) == 6


def test_ustm_consistency_counts_the_certain_pixels_only(monkeypatch):
    # A mutation audit found that the consistency on uncertain pixels (entropy > tau) passed.
    method, state = build(USTM)
    target = torch.full((2, 4, SIZE, SIZE), 0.25)  # entropy log 4 > tau: uncertain
    target[:, :, :SIZE // 4] = torch.tensor([0.97, 0.01, 0.01, 0.01]).view(1, 4, 1, 1)  # certain
    monkeypatch.setattr(method, "teacher_target", lambda image: target)
    _, logs = method.loss(random_batch(), state)
    assert logs["certain"].item() == pytest.approx(0.25)
    # at iteration 0 the consistency weight is ramped from exp(-5) of --w_cons
    assert logs["w_cons"].item() == pytest.approx(method.cfg.w_cons * np.exp(-5), rel=1e-6)


def test_entmin_regularises_the_unlabeled_pixels_only():
    # A mutation audit found this unpinned: pce_entmin's entropy ran over every pixel, scribbled ones
    # included.
    from losses.regularizers import pixel_entropy
    from methods.regularized import PCEEntMin

    g = torch.Generator().manual_seed(3)
    probs = torch.rand(2, 4, 6, 6, generator=g).softmax(1)
    target = torch.zeros(2, 6, 6, dtype=torch.int64)
    target[0, 2, 3] = target[1, 4, 1] = 4  # two unlabeled pixels
    got = PCEEntMin.regularizer(None, probs, {"target": target})
    ent = pixel_entropy(probs)
    assert got.item() == pytest.approx(((ent[0, 2, 3] + ent[1, 4, 1]) / 2).item(), rel=1e-6)


def test_regularized_loss_weighs_the_term_by_w_reg():
    # A mutation audit found this unpinned: --w_reg was ignored (pCE + reg).
    from losses.segmentation import partial_ce
    from methods.regularized import RegularizedPCE

    logits = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(4))
    target = torch.full((1, 4, 4), 4, dtype=torch.int64)
    target[0, 0, :] = torch.tensor([0, 1, 2, 3])
    fake = SimpleNamespace(net=lambda x: logits, cfg=SimpleNamespace(w_reg=0.25),
                           regularizer=lambda p, b: torch.tensor(2.0))
    total, logs = RegularizedPCE.loss(fake, {"image": torch.zeros(1, 1, 4, 4), "target": target}, None)
    assert total.item() == pytest.approx(partial_ce(logits, target).item() + 0.25 * 2.0, rel=1e-6)
    assert logs["reg"].item() == 2.0


def test_s2l_pseudo_loss_starts_at_pseudo_start():
    # A mutation audit found this unpinned: `progress > pseudo_start` started the pseudo-label loss one
    # step late.
    from test_methods_baselines import build, random_batch
    from methods.scribble2label import Scribble2Label

    method, state = build(Scribble2Label, "--w_cons", "0", "--memory_interval", "1000", "--pseudo_start", "0.1")
    method.memory.fill_(0)
    method.memory[:, 3] = 250
    state.iteration = 10  # progress 10 / 100 = pseudo_start
    assert state.progress == pytest.approx(0.1)
    _, logs = method.loss(random_batch(), state)
    assert logs["pseudo"].item() > 0


def test_s2l_consistency_compares_in_the_canonical_frame():
    # A mutation audit found this unpinned: the transformed view's softmax was not brought back by T^-1
    # before the MSE. With a 1x1-convolution network (equivariant to rot90/flip) the term must vanish.
    from test_methods_baselines import build, random_batch
    from methods.scribble2label import Scribble2Label

    method, state = build(Scribble2Label, "--w_cons", "1", "--memory_interval", "1000", "--pseudo_start", "1")
    method.net = torch.nn.Conv2d(1, 4, 1)
    state.iteration = 1
    cons = []
    for seed in range(8):  # several (k, flip) draws, some not the identity
        torch.manual_seed(seed)
        _, logs = method.loss(random_batch(), state)
        cons.append(logs["cons"].item())
    assert max(cons) < 1e-10


def test_branch_mean_averages_one_loss_over_two_branches_on_the_same_target():
    target = torch.tensor([2.0])
    seen = []

    def loss(out, t, scale):
        seen.append((out.item(), t.item(), scale))
        return scale * (out - t).abs().sum()

    assert branch_mean(loss, torch.tensor([1.0]), torch.tensor([5.0]), target, 2.0).item() == 0.5 * (2 + 6)
    assert seen == [(1.0, 2.0, 2.0), (5.0, 2.0, 2.0)]
