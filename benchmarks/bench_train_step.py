"""Seconds per training step of each method, side by side in one run (CPU or GPU).

    python benchmarks/bench_train_step.py --methods pce maskmixadv --patch 128 --batch 8 --amp bf16 off
    python benchmarks/bench_train_step.py --methods maskmixadv "maskmixadv --disc_ndf 32" --amp bf16
    python benchmarks/bench_train_step.py --methods maskmixadv --amp bf16 off --release RELEASE

A method may carry its own flags, quoted with its name (as ``train.py`` takes them).

Random images and scribble-like targets; each method does ``--warmup`` steps, then the timed
ones. Prints s/step and the ratio to the first method (ratios, not absolute times, are what
transfer between machines). ``--release`` adds, for each precision, the step of the authors'
released MaskMixAdv (``release_step.py``, CPU only), as published and with the host-memory
settings our training runs with (:mod:`host_memory`).
"""
from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(HERE, "..", "code"), HERE]

from config import build_parser, finalize  # noqa: E402
from dataloaders.shape_prior import ShapePrior  # noqa: E402
from engine import TrainState  # noqa: E402
from host_memory import GLIBC_ENV, keep_freed_memory  # noqa: E402
from inference import resolve_amp, resolve_device  # noqa: E402
from methods import METHODS, get_method  # noqa: E402
from step_timing import add_step_args, check_step_args  # noqa: E402


RELEASE_STEP = os.path.join(HERE, "release_step.py")


class FakeSlices:
    """Just enough of a SliceDataset for methods whose prepare() reads the training slices."""

    def __init__(self, n, size, rng):
        self.names = [f"patient001_frame01_slice_{i}" for i in range(n)]
        self.images = [rng.random((size, size), dtype=np.float32) for _ in range(n)]
        self.targets = [rng.integers(0, 5, (size, size)) for _ in range(n)]


def parse_method(spec: str) -> tuple[str, list[str]]:
    """``"maskmixadv --disc_ndf 32"`` -> ``("maskmixadv", ["--disc_ndf", "32"])``."""
    name, *flags = shlex.split(spec)
    if name not in METHODS:
        raise SystemExit(f"--methods: unknown method {name!r}; choose from {sorted(METHODS)}")
    return name, flags


def time_method(spec, amp, args, device) -> tuple[float, str]:
    """(seconds per step, the precision it ran in: ``amp`` resolved for ``device``)."""
    name, flags = parse_method(spec)
    method_cls = get_method(name)
    cfg = finalize(build_parser(method_cls).parse_args(
        ["--amp", amp, "--batch_size", str(args.batch), "--patch_size", str(args.patch), str(args.patch),
         "--device", str(device), *flags]), method_cls)
    cfg.amp = resolve_amp(cfg.amp, device)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    method = method_cls(cfg)
    if hasattr(method, "prior"):  # MaskMixAdv: a random prior instead of rendering phantoms
        method.prior = ShapePrior([rng.integers(0, 4, (args.patch, args.patch))], [args.patch] * 2)
    else:
        method.prepare(FakeSlices(4 * args.batch, args.patch, rng))
    layout = torch.channels_last if cfg.channels_last else torch.contiguous_format  # as the engine does
    method.to(device).to(memory_format=layout).train()
    state = TrainState(cfg, device, method.configure_optimizers())
    image = torch.rand(args.batch, 1, args.patch, args.patch, device=device)
    batch = {"image": image.contiguous(memory_format=layout),
             "target": torch.randint(0, 5, (args.batch, args.patch, args.patch), device=device),
             "index": torch.arange(args.batch, device=device)}
    for _ in range(args.warmup):
        method.training_step(batch, state)
        method.update_average(state.iteration + 1)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(args.steps):
        method.training_step(batch, state)
        method.update_average(state.iteration + 1)
        state.iteration += 1
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / args.steps, cfg.amp


def time_release(release: str, amp: str, args, env=None) -> float:
    """Seconds per step of the release's MaskMixAdv (``release_step.py``, its own process, with
    ``env`` added to the environment)."""
    out = subprocess.run([sys.executable, RELEASE_STEP, "--release", release, "--amp", amp, "--patch", str(args.patch),
                          "--batch", str(args.batch), "--steps", str(args.steps), "--warmup", str(args.warmup)],
                         capture_output=True, text=True, env={**os.environ, **(env or {})})
    if out.returncode:
        raise SystemExit(f"--release {release}: {(out.stderr.strip().splitlines() or ['failed'])[-1]}")
    return float(out.stdout.split()[-2])


def main():
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n")[0])
    p.add_argument("--methods", nargs="+", default=["pce", "maskmixadv"],
                   help="method names, each optionally quoted with its own flags")
    p.add_argument("--amp", nargs="+", default=["bf16", "off"])
    add_step_args(p)
    p.add_argument("--device", default="auto")
    p.add_argument("--release", help="a checkout of github.com/lichen14/MaskMixAdv: also time its MaskMixAdv step")
    args = p.parse_args()
    check_step_args(p, args)
    for spec in args.methods:
        parse_method(spec)
    device = resolve_device(args.device)
    if device.type == "cpu":  # as train.py runs (engine.train)
        keep_freed_memory()
    if args.release and device.type != "cpu":
        p.error("--release: the release's step is timed on the CPU only (--device cpu)")
    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}), "
          f"torch {torch.__version__}, patch {args.patch}, batch {args.batch}")
    base = None
    for amp in args.amp:
        for spec in args.methods:
            t, amp_used = time_method(spec, amp, args, device)
            base = base or t
            print(f"{spec:40s} amp {amp if amp_used == amp else f'{amp}={amp_used}':8s} {t:8.4f} s/step  "
                  f"x{t / base:5.2f}", flush=True)
        if args.release:  # as published, and with the allocator settings our training runs with
            for label, env in (("release maskmixadv", None), ("release maskmixadv, kept memory", GLIBC_ENV)):
                t = time_release(args.release, amp_used, args, env)
                print(f"{label:40s} amp {amp_used:8s} {t:8.4f} s/step  x{t / base:5.2f}", flush=True)


if __name__ == "__main__":
    main()
