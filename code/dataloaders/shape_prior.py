"""Dense heart masks from an unpaired source: the "real" shapes for the shape discriminator.

Sources: a folder or file of h5 volumes (key ``label``) or NIfTI masks (``.nii``/``.nii.gz``),
each a (Z, H, W) map with 0 background, 1 RV, 2 MYO, 3 LV. Every slice that shows some heart is
kept, resized (nearest neighbour) to the patch size. The training fold's own dense labels must
never serve as the prior: that would leak full supervision into a scribble-supervised run.
"""
from __future__ import annotations

import glob
import os

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F

from dataloaders.augment import augment, resize
from dataloaders.io import read_h5

MASK_PATTERNS = ("*.h5", "*.nii", "*.nii.gz")


def _read_mask(path: str) -> np.ndarray:
    if path.endswith(".h5"):
        arrays = read_h5(path, keys=("label",))
        if "label" not in arrays:
            raise KeyError(f"{path}: no 'label' dataset for the shape prior")
        return arrays["label"]
    try:
        return sitk.GetArrayFromImage(sitk.ReadImage(path))
    except RuntimeError as e:
        raise OSError(f"{path}: cannot read NIfTI mask ({str(e).splitlines()[0]})") from e


def mask_files(source: str) -> list[str]:
    """The mask files under ``source`` (a file, or a folder searched recursively)."""
    if os.path.isfile(source):
        return [source]
    if not os.path.isdir(source):
        raise FileNotFoundError(f"--shape_prior {source}: no such file or folder")
    files = sorted(f for pat in MASK_PATTERNS
                   for f in glob.glob(os.path.join(source, "**", pat), recursive=True))
    if not files:
        raise FileNotFoundError(f"--shape_prior {source}: no .h5 / .nii / .nii.gz masks found")
    return files


def check_not_training_labels(source: str, root_path: str) -> None:
    """Refuse a prior that lies inside the training data root (its own dense labels)."""
    src, root = os.path.realpath(source), os.path.realpath(root_path)
    if src == root or src.startswith(root + os.sep):
        raise ValueError(f"--shape_prior {source} lies inside --root_path {root_path}: the training "
                         "data's own dense labels must not be the shape prior")


class ShapePrior:
    """A pool of (num_classes, H, W) one-hot masks and a reproducible sampler over them.

    Args:
        masks: list of (h, w) integer maps with classes 0..num_classes-1 (any size).
        patch_size: (H, W) of the predictions the discriminator will compare them with.
    """

    def __init__(self, masks: list[np.ndarray], patch_size, num_classes: int = 4):
        self.patch_size, self.num_classes = tuple(patch_size), num_classes
        # Resized once here so that sampling only rotates and flips patch-sized masks.
        self.masks = [resize(m.astype(np.int64), self.patch_size, order=0) for m in masks if (m > 0).any()]
        if not self.masks:
            raise ValueError("the shape prior holds no slice with a heart in it")
        bad = [int(m.max()) for m in self.masks if m.max() >= num_classes or m.min() < 0]
        if bad:
            raise ValueError(f"shape prior labels must lie in 0..{num_classes - 1}, found {max(bad)}")

    @classmethod
    def from_source(cls, source: str, patch_size, num_classes: int = 4) -> "ShapePrior":
        masks = [s for f in mask_files(source) for s in _read_mask(f)]
        return cls(masks, patch_size, num_classes)

    def __len__(self) -> int:
        return len(self.masks)

    def sample(self, batch_size: int, device: torch.device, seed) -> torch.Tensor:
        """(batch_size, num_classes, H, W) float one-hot masks, augmented like the training data.

        The draw is a pure function of ``seed`` (e.g. ``[run_seed, iteration]``), so a resumed
        run sees the same masks without any sampler state to save.
        """
        rng = np.random.default_rng(seed)
        out = []
        for i in rng.integers(0, len(self.masks), batch_size):
            _, (m,) = augment(np.zeros(self.masks[i].shape, np.float32), [self.masks[i]], [0],
                              self.patch_size, rng)
            out.append(torch.from_numpy(np.ascontiguousarray(m)))
        onehot = F.one_hot(torch.stack(out), self.num_classes).permute(0, 3, 1, 2)
        return onehot.to(device=device, dtype=torch.float32)
