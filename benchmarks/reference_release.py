"""Train a baseline with the MaskMixAdv authors' released code and score it with ours, so that
our baselines can be compared with their reference implementations at the same budget.

    git clone https://github.com/lichen14/MaskMixAdv RELEASE
    python benchmarks/reference_release.py --release RELEASE --root data/ACDC --out OUT \\
        --variant dmpls --iterations 1500 --batch 8 --patch 128

The release's own pieces do the training: its data set class's augmentation
(``dataloaders.dataset.RandomGenerator``), its networks (``UNet_CCT``, ``UNet``), its losses
(``pDLoss`` and the regularisers below), SGD (lr 0.01, momentum 0.9, weight decay 1e-4; but see
``pce_published``) with its poly schedule, its seed 2022, on all 80 training patients of the fold
(it holds out no validation split) and the last model. The training loop is the few lines of its
scripts, repeated here because the scripts do not run as published (CUDA only, ``torchvision``
transforms, three outputs unpacked from a two-output network, a mask file read for every slice).
Variants:

- ``dmpls_published``: ``train_weakly_supervised_pCE_WSL4MIS.py`` as released: pCE of both
  branches summed, its pseudo-label term commented out;
- ``dmpls``: the same with the pseudo-label term of the paper and WSL4MIS
  (0.5 (pCE1 + pCE2) + 0.5 * 0.5 (Dice(p1, y) + Dice(p2, y)));
- ``pce``: ``train_weakly_supervised_pCE_2D.py``, a UNet on pCE (with SGD at lr 0.01 like the
  other scripts and WSL4MIS's pCE script); ``pce_published``: the same with this script's own
  default, Adam at lr 0.03 (on the same poly schedule);
- ``pce_rw``: ``train_weakly_supervised_pCE_random_walker_2D.py``: the same UNet on 0.5 (CE + Dice)
  against the release's random-walker labels (its ``pseudo_label_generator_acdc``: beta 100,
  intensities rescaled, the whole slice background where a class has no scribble). The release
  recomputes them for every sample it loads; they depend only on the slice, so they are computed
  once per slice before training (``OUT/rw_labels.npz``, reused by a later run into OUT on the
  same slices);
- ``pce_entmin``, ``pce_tv``, ``pce_ms``, ``pce_gatedcrf``: its ``..._Entropy_Mini_2D.py``,
  ``..._TV_2D.py``, ``..._MumfordShah_Loss_2D.py`` and ``..._GatedCRFLoss_2D.py``: the same UNet,
  pCE plus the script's regulariser at the script's weight (0.1, 1e-2, 1e-6, 0.1; the gated CRF
  with the script's kernel, radius 5 and input size 256 x 256), with the release's own loss
  functions as released (its TV term skips the first image of each batch, ``outputs_soft[1:]``;
  its entropy is divided by log C over all pixels). The release's losses call ``.cuda()``, made the identity here (training runs on the
  CPU). The scripts' default batches (24, 24, 12) and the TV script's seed (1337) give way to
  ``--batch`` and 2022, as for every variant, so the TV term sees 7 of each 8 images.
- ``ustm``: ``train_weakly_supervised_ustm_2D.py``: the same UNet on pCE plus the consistency
  of its rot90 view with a mean teacher (EMA decay 0.99, in training mode, so with dropout):
  the teacher segments the rotated batch with noise once for the target and 8 more times for
  the uncertainty (entropy of their mean softmax); the release's ``softmax_mse_loss`` on the
  pixels whose uncertainty lies below (0.75 + 0.25 rampup) ln 2, weighted by
  ``sigmoid_rampup(iteration // 1000, 60)`` (below 0.008 for the first 2000 iterations).

``--ours augment`` / ``--ours network`` swap in this project's augmentation or DMPLS network, to
find which piece makes a difference. The test fold is predicted as the release's test script
does (each slice resized to the patch with order 0, argmax, resized back with order 0) and
scored as ``test_2D_fully.py`` scores (mm where the root has a spacing) in a second process (the
release's packages are named like ours). Writes ``OUT/result.json``; the outputs of an earlier run
in OUT are replaced only with ``--overwrite``. The release's folds are fixed blocks of ACDC's
patients 1..100, so the root must hold exactly those.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
import types

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
CODE = os.path.join(HERE, "..", "code")
# The release's pCE + regulariser scripts: variant -> (script, regulariser weight).
REGULARIZED = {"pce_entmin": ("train_weakly_supervised_pCE_Entropy_Mini_2D.py", 0.1),
               "pce_tv": ("train_weakly_supervised_pCE_TV_2D.py", 1e-2),
               "pce_ms": ("train_weakly_supervised_pCE_MumfordShah_Loss_2D.py", 1e-6),
               "pce_gatedcrf": ("train_weakly_supervised_pCE_GatedCRFLoss_2D.py", 0.1)}
VARIANTS = ("dmpls_published", "dmpls", "pce", "pce_published", "pce_rw", "ustm", *REGULARIZED)
SEED = 2022
ACDC_PATIENTS = tuple(f"patient{i:03d}" for i in range(1, 101))
OUTPUTS = ("last.pth", "log.txt", "predictions.npz", "train.json", "result.json")  # what a run writes in --out


def parse(argv=None):
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n")[0])
    p.add_argument("--release", help="a checkout of github.com/lichen14/MaskMixAdv")
    p.add_argument("--root", "--root_path", default="data/ACDC",
                   help="ACDC in the h5 layout of acdc_data_processing.py")
    p.add_argument("--out", required=True, help="folder for last.pth, predictions and result.json")
    p.add_argument("--variant", choices=VARIANTS, default="dmpls")
    p.add_argument("--ours", nargs="*", default=[], choices=["augment", "network"])
    p.add_argument("--fold", type=int, default=1, choices=range(1, 6))
    p.add_argument("--iterations", type=int, default=1500)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--patch", type=int, default=128)
    p.add_argument("--overwrite", action="store_true", help="replace the outputs of an earlier run in --out")
    p.add_argument("--score", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if min(args.iterations, args.batch, args.patch) < 1:  # 0 iterations scored an untrained network
        p.error(f"--iterations, --batch and --patch must be >= 1, got {args.iterations}, {args.batch}, {args.patch}")
    if not args.score and not (args.release and os.path.isdir(os.path.join(args.release, "code", "networks"))):
        p.error(f"--release {args.release}: not a checkout of the MaskMixAdv release (no code/networks)")
    if not os.path.isdir(os.path.join(args.root, "ACDC_training_slices")):
        p.error(f"--root {args.root}: no ACDC_training_slices (run code/acdc_data_processing.py)")
    if args.variant in REGULARIZED and not args.score and not os.path.isfile(
            os.path.join(args.release, "code", REGULARIZED[args.variant][0])):
        p.error(f"--release {args.release}: no code/{REGULARIZED[args.variant][0]}")
    if "network" in args.ours and not args.variant.startswith("dmpls"):
        p.error("--ours network is the DMPLS network; use it with a dmpls variant")
    if not args.score:
        if not os.path.isdir(os.path.join(args.root, "ACDC_training_volumes")):
            p.error(f"--root {args.root}: no ACDC_training_volumes (the test fold is predicted from them)")
        patients = {n[:10] for n in os.listdir(os.path.join(args.root, "ACDC_training_volumes"))}
        if patients != set(ACDC_PATIENTS):  # the release's folds are fixed blocks of ACDC's patients
            p.error(f"--root {args.root}: the release's folds split ACDC's patients patient001..patient100; "
                    f"this root holds {len(patients)} others")
        written = [f for f in OUTPUTS if os.path.exists(os.path.join(args.out, f))]
        if written and not args.overwrite:
            p.error(f"--out {args.out} holds {written[0]} of an earlier run; pass --overwrite to replace it")
    return args


def import_release(release: str):
    """The release's modules, with stand-ins for the imports that training does not use."""
    tv, tvt = types.ModuleType("torchvision"), types.ModuleType("torchvision.transforms")
    for name in ("Compose", "CenterCrop", "ToTensor", "Resize"):
        setattr(tvt, name, lambda *args, **kwargs: None)
    tv.transforms = tvt
    sys.modules.update({"torchvision": tv, "torchvision.transforms": tvt,
                        "cv2": types.ModuleType("cv2"), "nibabel": types.ModuleType("nibabel")})
    sys.path.insert(0, os.path.join(release, "code"))
    from dataloaders.dataset import RandomGenerator, pseudo_label_generator_acdc
    from networks.unet import UNet, UNet_CCT
    from utils import losses, ramps
    return RandomGenerator, pseudo_label_generator_acdc, UNet, UNet_CCT, losses, ramps


def release_regularizer(release: str, variant: str, losses):
    """The regulariser term of one of the release's pCE scripts (``losses``: its
    ``utils.losses``): (images, softmax) -> 0-dim."""
    import ast

    script, weight = REGULARIZED[variant]
    # Its losses move constants with .cuda(); training here runs on the CPU.
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    if variant == "pce_entmin":
        return lambda images, probs: weight * losses.entropy_loss(probs, C=4)
    if variant == "pce_ms":
        ms = losses.MumfordShah_Loss()
        return lambda images, probs: weight * ms(images, probs)
    if variant == "pce_gatedcrf":
        from utils.gate_crf_loss import ModelLossSemsegGatedCRF

        crf = ModelLossSemsegGatedCRF()
        # The script's kernel, radius and "input size" 256 x 256, whatever the patch.
        return lambda images, probs: weight * crf(probs, [{"weight": 1, "xy": 6, "rgb": 0.1}], 5, images,
                                                  256, 256)["loss"]
    # tv_loss lives in the script, whose import would parse the command line: take its source.
    with open(os.path.join(release, "code", script)) as f:
        tree = ast.parse(f.read())
    source = ast.Module([n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "tv_loss"], [])
    if not source.body:
        raise SystemExit(f"error: --release {release}: no tv_loss in code/{script}")
    namespace = {"nn": torch.nn, "torch": torch}
    exec(compile(source, script, "exec"), namespace)
    return lambda images, probs: weight * namespace["tv_loss"](probs[1:])


class ReleaseTeacher:
    """The mean teacher of the release's USTM script: ``consistency`` is its term for one batch,
    ``update`` its EMA step after the optimiser's."""

    def __init__(self, UNet, losses, ramps, iterations: int):
        self.net = UNet(in_chns=1, class_num=4).requires_grad_(False)
        self.losses, self.ramps, self.iterations = losses, ramps, iterations

    @torch.no_grad()
    def noisy(self, x):
        return self.net(x + torch.clamp(torch.randn_like(x) * 0.1, -0.2, 0.2))

    def consistency(self, images, logits, iteration: int):
        """images (B, 1, H, W), the student's logits (B, 4, H, W) -> the weighted term, 0-dim."""
        k = random.randrange(0, 4)
        rotated = torch.rot90(images, k, [2, 3])
        target = self.noisy(rotated)
        passes = torch.cat([self.noisy(rotated.repeat(2, 1, 1, 1)) for _ in range(4)])
        mean = passes.softmax(1).reshape(8, *target.shape).mean(0)
        uncertainty = -(mean * torch.log(mean + 1e-6)).sum(1, keepdim=True)
        threshold = (0.75 + 0.25 * self.ramps.sigmoid_rampup(iteration, self.iterations)) * np.log(2)
        mask = (uncertainty < threshold).float()
        dist = self.losses.softmax_mse_loss(torch.rot90(logits, k, [2, 3]), target)
        weight = self.ramps.sigmoid_rampup(iteration // 1000, 60)
        return weight * (mask * dist).sum() / (2 * mask.sum() + 1e-16)

    @torch.no_grad()
    def update(self, student, iteration: int):
        decay = min(1 - 1 / (iteration + 1), 0.99)
        for t, s in zip(self.net.parameters(), student.parameters()):
            t.mul_(decay).add_(s, alpha=1 - decay)


def load_ours(name: str, path: str):
    """One of our modules by file (our packages' names are taken by the release's)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, os.path.join(CODE, path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fold_patients(fold: int) -> tuple[list[str], list[str]]:
    test = ACDC_PATIENTS[20 * (fold - 1):20 * fold]
    return [p for p in ACDC_PATIENTS if p not in test], list(test)


class Slices(torch.utils.data.Dataset):
    """The training slices with their scribbles (or the dense ``labels``, name -> (H, W)),
    augmented by the release (or by us)."""

    def __init__(self, root, names, patch, release_augment, our_augment=None, labels=None):
        self.root, self.names, self.patch = root, names, patch
        self.release_augment, self.our_augment, self.labels = release_augment, our_augment, labels

    def __len__(self):
        return len(self.names)

    def __getitem__(self, i):
        import h5py

        with h5py.File(os.path.join(self.root, "ACDC_training_slices", self.names[i]), "r") as f:
            image = f["image"][:]
            scribble = f["scribble"][:] if self.labels is None else self.labels[self.names[i]]
        if self.our_augment is None:
            return self.release_augment({"image": image, "label": scribble, "mask": np.zeros((8, 8), np.uint8)})
        rng = np.random.default_rng([SEED, i, random.getrandbits(32)])
        image, (scribble,) = self.our_augment(image, [scribble], [4], (self.patch, self.patch), rng)
        return {"image": torch.from_numpy(np.ascontiguousarray(image))[None],
                "label": torch.from_numpy(scribble.astype(np.uint8))}


def build_model(args, UNet, UNet_CCT):
    """(B, 1, H, W) -> tuple of logits (B, 4, H, W): both branches in training, main first."""
    if args.variant.startswith("pce") or args.variant == "ustm":
        net = UNet(in_chns=1, class_num=4)
        return net, lambda x: (net(x),)
    if "network" in args.ours:
        net = load_ours("our_unet", "networks/unet.py").DualDecoderUNet(1, 4, "attention_dropout")
        return net, lambda x: net.forward_both(x) if net.training else (net(x),)
    net = UNet_CCT(in_chns=1, class_num=4)
    return net, net


def loss_of(args, images, outputs, target, ce, dice, regularizer):
    if args.variant in ("pce", "pce_published", "ustm"):
        return ce(outputs[0], target)
    if args.variant == "pce_rw":
        return 0.5 * (ce(outputs[0], target) + dice(outputs[0].softmax(1), target[:, None]))
    if args.variant in REGULARIZED:
        return ce(outputs[0], target) + regularizer(images, outputs[0].softmax(1))
    (o1, o2), (p1, p2) = outputs, (outputs[0].softmax(1), outputs[1].softmax(1))
    if args.variant == "dmpls_published":
        return ce(o1, target) + ce(o2, target)
    beta = random.random() + 1e-10
    pseudo = torch.argmax(beta * p1.detach() + (1.0 - beta) * p2.detach(), 1, keepdim=True)
    return 0.5 * (ce(o1, target) + ce(o2, target)) + 0.5 * 0.5 * (dice(p1, pseudo) + dice(p2, pseudo))


def walker_labels(args, names, generator) -> dict:
    """The release's random-walker label of each training slice, cached in OUT/rw_labels.npz with
    a digest of the slices it was computed from (another root's slices of the same names miss)."""
    import hashlib

    import h5py

    def read(name):
        with h5py.File(os.path.join(args.root, "ACDC_training_slices", name), "r") as f:
            return f["image"][:], f["scribble"][:]

    digest = hashlib.sha256()
    for name in names:  # one slice at a time: the whole set need not be held twice
        digest.update(name.encode() + b"".join(np.ascontiguousarray(a).tobytes() for a in read(name)))
    key = np.frombuffer(digest.digest(), np.uint8)
    path = os.path.join(args.out, "rw_labels.npz")
    if os.path.isfile(path):
        with np.load(path) as cached:
            if "digest" in cached.files and np.array_equal(cached["digest"], key):
                return {n: cached[n] for n in names}
    labels = {name: generator(*read(name)).astype(np.uint8) for name in names}
    np.savez_compressed(path, digest=key, **labels)
    return labels


def train(args) -> None:
    from scipy.ndimage import zoom

    release = os.path.abspath(args.release)
    RandomGenerator, walker, UNet, UNet_CCT, losses, ramps = import_release(release)
    regularizer = release_regularizer(release, args.variant, losses) if args.variant in REGULARIZED else None
    random.seed(SEED)
    np.random.seed(SEED)
    torch.manual_seed(SEED)
    train_ids, test_ids = fold_patients(args.fold)
    names = sorted(n for n in os.listdir(os.path.join(args.root, "ACDC_training_slices")) if n[:10] in train_ids)
    our_augment = load_ours("our_augment", "dataloaders/augment.py").augment if "augment" in args.ours else None
    os.makedirs(args.out, exist_ok=True)
    labels = walker_labels(args, names, walker) if args.variant == "pce_rw" else None
    data = Slices(args.root, names, args.patch, RandomGenerator([args.patch, args.patch]), our_augment, labels)
    loader = torch.utils.data.DataLoader(data, batch_size=args.batch, shuffle=True, num_workers=1,
                                         worker_init_fn=lambda w: random.seed(SEED + w))
    net, model = build_model(args, UNet, UNet_CCT)
    teacher = ReleaseTeacher(UNet, losses, ramps, args.iterations) if args.variant == "ustm" else None
    net.train()
    base_lr = 0.03 if args.variant == "pce_published" else 0.01
    optimizer = torch.optim.Adam(net.parameters(), lr=base_lr) if args.variant == "pce_published" else \
        torch.optim.SGD(net.parameters(), lr=base_lr, momentum=0.9, weight_decay=1e-4)
    ce = torch.nn.CrossEntropyLoss(ignore_index=4)
    dice = losses.DiceLoss(4) if args.variant == "pce_rw" else losses.pDLoss(4, ignore_index=4)
    start, iteration = time.time(), 0
    with open(os.path.join(args.out, "log.txt"), "w") as log:
        while iteration < args.iterations:
            for batch in loader:
                outputs = model(batch["image"])
                loss = loss_of(args, batch["image"], outputs, batch["label"].long(), ce, dice, regularizer)
                if teacher is not None:
                    loss = loss + teacher.consistency(batch["image"], outputs[0], iteration)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                if teacher is not None:
                    teacher.update(net, iteration)
                for group in optimizer.param_groups:  # the release's poly schedule, set after the step
                    group["lr"] = base_lr * (1.0 - iteration / args.iterations) ** 0.9
                iteration += 1
                if iteration % 50 == 0:
                    print(iteration, f"{loss.item():.4f}", f"{time.time() - start:.0f} s", file=log, flush=True)
                if iteration >= args.iterations:
                    break
    torch.save(net.state_dict(), os.path.join(args.out, "last.pth"))
    net.eval()
    predictions = {}
    import h5py

    for volume in sorted(os.listdir(os.path.join(args.root, "ACDC_training_volumes"))):
        if volume[:10] not in test_ids:
            continue
        with h5py.File(os.path.join(args.root, "ACDC_training_volumes", volume), "r") as f:
            image = f["image"][:]
        pred = np.zeros(image.shape, np.uint8)
        for z, s in enumerate(image):
            x = torch.from_numpy(zoom(s, (args.patch / s.shape[0], args.patch / s.shape[1]), order=0)).float()
            with torch.no_grad():
                out = model(x[None, None])[0].argmax(1)[0].numpy()
            pred[z] = zoom(out, (s.shape[0] / args.patch, s.shape[1] / args.patch), order=0)
        predictions[volume[:-3]] = pred
    np.savez_compressed(os.path.join(args.out, "predictions.npz"), **predictions)
    with open(os.path.join(args.out, "train.json"), "w") as f:
        json.dump({**vars(args), "train_seconds": time.time() - start, "train_slices": len(names)}, f, indent=1)


def score(args) -> dict:
    """Mean per-class Dice / HD95 / ASD of the saved predictions, scored as test_2D_fully.py
    scores (mm where the root has a spacing, else voxels: ``units``)."""
    sys.path.insert(0, CODE)
    from inference import distance_units, reference_volumes, score_cases
    from metrics import summarize

    with np.load(os.path.join(args.out, "predictions.npz")) as saved:
        predictions = {case: saved[case].astype(np.int64) for case in saved.files}
    cases = reference_volumes(args.root, sorted(predictions), 4)
    rows = list(score_cases(predictions, cases, 4).values())
    result = summarize(rows)
    with open(os.path.join(args.out, "train.json")) as f:
        result.update(volumes=len(rows), units=distance_units(args.root, cases), run=json.load(f))
    with open(os.path.join(args.out, "result.json"), "w") as f:
        json.dump(result, f, indent=1)
    dice = result["dice"]
    print(f"{' '.join([args.variant, *args.ours])}: Dice RV {dice['RV']:.3f} MYO {dice['MYO']:.3f} "
          f"LV {dice['LV']:.3f} mean {dice['mean']:.3f} HD95 {result['hd95']['mean']:.1f} {result['units']}")
    return result


def main(argv=None):
    args = parse(argv)
    if args.score:
        return score(args)
    train(args)
    # A fresh interpreter, where `networks`, `dataloaders` and `utils` are ours again.
    subprocess.run([sys.executable, os.path.abspath(__file__), "--score", "--out", args.out, "--root", args.root,
                    "--variant", args.variant, *(["--ours", *args.ours] if args.ours else [])], check=True)


if __name__ == "__main__":
    main()
