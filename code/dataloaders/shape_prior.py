"""Dense heart masks from an unpaired source: the "real" shapes for the shape discriminator.

Sources: a folder or file of h5 volumes (key ``label``) or NIfTI masks (``.nii``/``.nii.gz``),
each a (Z, H, W) map with 0 background and the data root's classes 1..C (RV, MYO, LV unless its
``dataset.json`` names others); when those include LV and MYO, masks that number them otherwise
(LV and MYO swapped, another data set's order) are refused by anatomy: the MYO encloses the LV.
Every slice that shows some heart is kept, brought to the training input as the training slices
are (nearest neighbour): resized whole to the input size, or with ``--target_spacing`` resampled
from its own spacing (or ``--prior_spacing`` for masks without one) to the target spacing, so that
its hearts have the training hearts' scale; then, like the training slices, cropped to the patch
size when that is smaller. NIfTI masks pass the scans' checks (:func:`dataloaders.io.read_scan`),
so their slices lie along the third voxel axis. The training fold's own dense labels must
never serve as the prior: that would leak full supervision into a scribble-supervised run, so
a prior is compared with the data root's labels by content, not only by path.
"""
from __future__ import annotations

import glob
import hashlib
import os

import numpy as np
import torch
import torch.nn.functional as F

from dataloaders.augment import crop_origin, draw_scale, resize, rot_flip
from dataloaders import io
from dataloaders.spacing import mask_to_target

MASK_PATTERNS = ("*.h5", "*.nii", "*.nii.gz")


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
    """Refuse a prior that holds any dense label of the training data root, by place (inside
    the root) and by content: every heart slice of the prior is hashed and compared with every
    slice of the root's dense labels (all patients, test fold included), so a copy of the root or
    the raw ``_gt`` masks of its patients are refused too. ValueError naming a matching pair."""
    src, root = os.path.realpath(source), os.path.realpath(root_path)
    if src == root or src.startswith(root + os.sep):
        raise ValueError(f"--shape_prior {source} lies inside --root_path {root_path}: the training "
                         "data's own dense labels must not be the shape prior")
    prior = {}
    for f in mask_files(source):
        for z, m in enumerate(read_prior_file(f)[0]):
            if (m > 0).any():
                prior.setdefault(_slice_hash(m), (f, z))
    for case in io.list_cases(root_path):
        label = io.read_h5(io.volume_path(root_path, case), keys=("label",)).get("label")
        for z, m in enumerate(label if label is not None else []):
            match = prior.get(_slice_hash(m))
            if match is not None:
                raise ValueError(f"--shape_prior: slice {match[1]} of {match[0]} equals slice {z} of the "
                                 f"dense label of {io.volume_path(root_path, case)}; the training "
                                 "data's own labels must not be the shape prior")


def read_prior_file(path: str) -> tuple[np.ndarray, tuple[float, float] | None]:
    """(labels (Z, H, W) uint8 with classes 0..3, in-plane spacing (y, x) mm or None: an h5 file
    without the attribute, a NIfTI file without geometry) of one mask file: an h5 volume (key
    ``label``) or a NIfTI file read as scans are (:func:`io.read_scan`: slices along the third
    voxel axis, one geometry). ValueError or OSError naming the file."""
    if path.lower().endswith(".h5"):
        prior = io.read_h5_labels(path)
        labels, spacing = prior.image, prior.spacing
    else:
        mask = io.read_scan(path)
        io.check_labels(path, mask.image)
        # A file written without geometry reads as 1 mm: its spacing is unknown, not 1 mm.
        labels, spacing = mask.image.astype(np.uint8), None if io.header_free(mask) else mask.spacing
    if labels.ndim != 3:  # a 2-D file's rows would pass for slices
        raise ValueError(f"{path}: expected a 3-D label volume, got shape {labels.shape}")
    return labels, None if spacing is None else (spacing[1], spacing[2])


def _slice_hash(mask: np.ndarray) -> bytes:
    m = np.ascontiguousarray(mask, dtype=np.uint8)
    return hashlib.sha1(repr(m.shape).encode() + m.tobytes()).digest()


class ShapePrior:
    """A pool of dense masks, kept as (N, H', W') uint8 label maps at ``input_size``, and a
    reproducible sampler of (B, num_classes, H, W) one-hot crops of them (:meth:`sample`).

    Args:
        masks: list of (h, w) integer maps with classes 0..num_classes-1 (any size).
        patch_size: (H, W) of the predictions the discriminator will compare them with.
        input_size: (H', W') >= patch_size the masks are resized to before cropping, as the
            training slices are (default: the patch size, no crop).
        fg_prob: probability that a crop is centred on a heart pixel (as the training crops).
        class_names: names of classes 1..num_classes-1 of the data root, to check that the masks
            number them alike (:func:`io.check_class_order`); None: unchecked.
        scale: the training slices' ``--aug_scale``: masks are zoomed as they are
            (:func:`dataloaders.augment.draw_scale`), or the discriminator could tell the
            predictions of zoomed slices from the prior by the heart's size.
    """

    def __init__(self, masks: list[np.ndarray], patch_size, num_classes: int = io.NUM_CLASSES, input_size=None,
                 fg_prob: float = 0.5, class_names=None, scale: float = 0.0):
        self.patch_size, self.num_classes = tuple(patch_size), num_classes
        self.input_size, self.fg_prob, self.scale = tuple(input_size or patch_size), fg_prob, scale
        masks = [m for m in masks if (m > 0).any()]
        if not masks:
            raise ValueError("the shape prior holds no slice with a heart in it")
        bad = [int(m.max()) for m in masks if m.max() >= num_classes or m.min() < 0]
        if bad:
            raise ValueError(f"shape prior labels must lie in 0..{num_classes - 1}, found {max(bad)}")
        # A prior without some structure (e.g. binary heart masks) would teach the discriminator
        # that predictions of that class are fake.
        missing = sorted(set(range(1, num_classes)) - set().union(*(np.unique(m).tolist() for m in masks)))
        if missing:
            raise ValueError(f"the shape prior has no voxel of class {', '.join(map(str, missing))} of "
                             f"1..{num_classes - 1}: its masks must label every structure")
        if class_names is not None:
            io.check_class_order(masks, class_names, "the shape prior", "the data root does")
        # Resized once here; sampling then augments whole batches with torch on the device.
        self.masks = torch.from_numpy(np.stack([resize(m.astype(np.uint8), self.input_size, order=0)
                                                for m in masks]))
        self._on_device = self.masks

    @classmethod
    def from_source(cls, source: str, patch_size, num_classes: int = io.NUM_CLASSES, input_size=None,
                    fg_prob: float = 0.5, class_names=None, target_spacing=None,
                    prior_spacing=None, scale: float = 0.0) -> "ShapePrior":
        """The masks of the files of ``source`` (:func:`mask_files`, :func:`read_prior_file`); with
        ``target_spacing`` (y, x) mm each slice is resampled from its file's spacing, or
        ``prior_spacing`` (y, x) for a file without one (ValueError naming it when neither is
        known: its hearts would be at another scale than the training slices')."""
        size, masks = tuple(input_size or patch_size), []
        for f in mask_files(source):
            volume, spacing = read_prior_file(f)
            if target_spacing:
                spacing = spacing or prior_spacing
                if spacing is None:
                    raise ValueError(f"--shape_prior: {f} has no spacing, and --target_spacing resamples the "
                                     f"training slices to {tuple(target_spacing)} mm, so its hearts would be at "
                                     "another scale; give --prior_spacing MM (its in-plane voxel size)")
                volume = [mask_to_target(m, spacing, target_spacing, size) for m in volume]
            masks.extend(volume)
        try:
            return cls(masks, patch_size, num_classes, input_size, fg_prob, class_names, scale)
        except ValueError as e:  # properties of the whole pool: the flag names it
            raise ValueError(f"--shape_prior {source}: {e}") from None

    def __len__(self) -> int:
        return len(self.masks)

    def digest(self) -> str:
        """SHA-256 of the masks as the discriminator gets them: runs record it, so that a run
        resumed with other prior masks under the same path is refused."""
        return hashlib.sha256(self.masks.numpy().tobytes()).hexdigest()

    def sample(self, batch_size: int, device: torch.device, seed) -> torch.Tensor:
        """(batch_size, num_classes, H, W) float one-hot masks, augmented like the training data
        (:mod:`dataloaders.augment`: rot90 + flip, or a rotation in [-20, 20] degrees; then the
        zoom of ``scale``).

        The draw is a pure function of ``seed`` (e.g. ``[run_seed, iteration]``), so a resumed
        run sees the same masks without any sampler state to save.
        """
        rng = np.random.default_rng(seed)
        if self._on_device.device != torch.device(device):
            self._on_device = self.masks.to(device)
        picks = self._on_device[torch.from_numpy(rng.integers(0, len(self), batch_size)).to(device)]
        angles, zooms = np.zeros(batch_size), np.ones(batch_size)
        out = []
        for i, m in enumerate(picks):
            if rng.random() > 0.5:
                m = rot_flip(m, int(rng.integers(0, 4)), bool(rng.integers(0, 2)))
                if m.shape != picks.shape[1:]:  # odd quarter turns of a non-square patch
                    m = F.interpolate(m[None, None].float(), size=self.input_size, mode="nearest")[0, 0]
            elif rng.random() > 0.5:
                angles[i] = np.deg2rad(rng.uniform(-20, 20))
            zooms[i] = draw_scale(self.scale, rng)
            out.append(m)
        labels = _rotate_and_zoom(torch.stack(out).float(), torch.as_tensor(angles, device=device),
                                 torch.as_tensor(zooms, device=device))
        if self.input_size != self.patch_size:
            (ph, pw), heart = self.patch_size, (labels > 0).cpu().numpy()
            origins = [crop_origin(h, self.patch_size, self.fg_prob, rng) for h in heart]
            labels = torch.stack([m[y:y + ph, x:x + pw] for m, (y, x) in zip(labels, origins)])
        return F.one_hot(labels.long(), self.num_classes).permute(0, 3, 1, 2).float()


def _rotate_and_zoom(labels: torch.Tensor, angles: torch.Tensor, zooms: torch.Tensor) -> torch.Tensor:
    """Rotate (B, H, W) label maps by ``angles`` (B,) radians and zoom them by ``zooms`` (B,)
    about the centre, nearest neighbour; pixels brought in from outside are background (0). The
    grid's coordinates are normalised per axis, so a rigid turn of an H x W map scales the sine
    terms by H/W and W/H (a plain rotation matrix would shear a non-square map)."""
    cos, sin = (angles.cos() / zooms).float(), (angles.sin() / zooms).float()
    zero = torch.zeros_like(angles).float()
    aspect = labels.shape[-2] / labels.shape[-1]
    theta = torch.stack([torch.stack([cos, -sin * aspect, zero], 1), torch.stack([sin / aspect, cos, zero], 1)], 1)
    grid = F.affine_grid(theta, [labels.shape[0], 1, *labels.shape[1:]], align_corners=False)
    return F.grid_sample(labels[:, None], grid, mode="nearest", padding_mode="zeros",
                         align_corners=False)[:, 0]
