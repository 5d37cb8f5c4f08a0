import gzip
import os
import struct
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CODE = os.path.join(ROOT, "code")
if CODE not in sys.path:
    sys.path.insert(0, CODE)

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(scope="session")
def phantom_root(tmp_path_factory):
    """A tiny phantom data set (5 patients, 64x64) in the ACDC h5 layout, made once per run."""
    from dataloaders.phantoms import write_phantoms

    root = tmp_path_factory.mktemp("phantoms")
    write_phantoms(str(root), patients=5, seed=0, size=64)
    return str(root)


def tiny_cfg(method_cls, root, out_dir, *extra):
    """A config for fast CPU runs on ``phantom_root``: 32x32 patches, batch 2, no workers."""
    from config import build_parser, finalize

    args = ["--root_path", root, "--out_dir", str(out_dir), "--patch_size", "32", "32",
            "--batch_size", "2", "--num_workers", "0", "--device", "cpu", "--no_progress",
            "--max_iterations", "4", "--val_interval", "2", *extra]
    return finalize(build_parser(method_cls).parse_args(args), method_cls)


class Interrupt(Exception):
    """Raised by training under :func:`stop_after_first_save`."""


def stop_after_first_save(monkeypatch) -> None:
    """Make training raise :class:`Interrupt` right after it first writes ``last.pth``: a run
    stopped part-way, as SIGTERM leaves it."""
    import checkpoint

    real = checkpoint.save_checkpoint

    def save_then_crash(path, *args):
        real(path, *args)
        if path.endswith("last.pth"):
            raise Interrupt
    monkeypatch.setattr(checkpoint, "save_checkpoint", save_then_crash)


def benchmark(name: str):
    """The module ``benchmarks/<name>.py`` (benchmarks are scripts, not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "benchmarks", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def lv_root(phantom_root, tmp_path_factory):
    """``phantom_root`` with one class: LV (1) and background, named in its ``dataset.json``."""
    from dataloaders import io

    root = str(tmp_path_factory.mktemp("lv_only"))
    for name in io.list_cases(phantom_root):
        case = io.read_case(phantom_root, name)
        case.label = (case.label == 3).astype(np.uint8)
        case.scribble = np.where(case.scribble == 3, 1, np.where(case.scribble == 0, 0, io.UNLABELED))
        io.write_case(root, case)
    io.write_dataset_json(root, ("LV",))
    return root


def orientation_codes(path) -> tuple[int, int]:
    """(qform_code, sform_code) of a little-endian NIfTI-1 file."""
    data = (gzip.open if str(path).endswith(".gz") else open)(path, "rb").read()
    return struct.unpack("<2h", data[252:256])


def without_orientation(path) -> None:
    """Set both orientation codes of a little-endian .nii.gz file to 0, as ANALYZE-era tools write."""
    data = bytearray(gzip.open(path, "rb").read())
    data[252:256] = struct.pack("<2h", 0, 0)
    with gzip.open(path, "wb") as f:
        f.write(data)
