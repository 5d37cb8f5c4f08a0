"""Folds, model-selection splits and in-memory datasets over the ACDC h5 layout.

Folds: fold k (1..5) tests on the k-th fifth of the sorted patient IDs and trains on the rest;
for ACDC's 100 patients fold k tests patients 20(k-1)+1..20k. Model selection never looks at the
test fold unless asked to: a fixed, seeded ~10% of the training patients is held out as the
validation split (``select_on_test=True`` reproduces the peers' protocol of selecting on the test
fold, for comparison only; ``val_fraction=0`` holds out nobody). Patients are grouped by
:func:`dataloaders.io.patient_of` (``dataset.json``'s ``patient_pattern`` when given).

Fold ``split``: the parts listed in ``ROOT/splits.json`` (``{"train": [...], "val": [...],
"test": [...]}``, written by ``acdc_data_processing.py --nifti`` or by hand; a missing or empty
part is allowed, e.g. no ``val`` trains without validation).
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage
from torch.utils.data import Dataset, Sampler
from tqdm import tqdm

from dataloaders import io
from dataloaders.augment import augment
from dataloaders.spacing import to_target

FOLDS = tuple(f"fold{k}" for k in range(1, 6))
SPLIT_FOLD = "split"
FOLD_CHOICES = (*FOLDS, SPLIT_FOLD)
SPLIT_SEED = 2022


@dataclass(frozen=True)
class Split:
    """Case names (``patientXXX_frameYY``) of each part of one fold."""

    train: list[str]
    val: list[str]
    test: list[str]


def fold_split(cases: list[str], fold: str, val_fraction: float = 0.1,
               select_on_test: bool = False, split_seed: int = SPLIT_SEED,
               patient_pattern: str | None = None) -> Split:
    """Split ``cases`` into train / validation / test patients of ``fold``.

    Both frames of a patient always fall in the same part. The validation patients are drawn
    with ``split_seed`` (fixed, independent of the training seed) from the training patients;
    with ``select_on_test`` the validation split is the test fold itself.
    """
    if fold not in FOLDS:
        raise ValueError(f"--fold must be one of {', '.join(FOLDS)}, got {fold!r}")
    patient = {c: io.patient_of(c, patient_pattern) for c in cases}
    patients = sorted(set(patient.values()))
    if len(patients) < 5:
        raise ValueError(f"need at least 5 patients for 5 folds, found {len(patients)} (use --fold split "
                         "with a splits.json)")
    k, n = int(fold[4:]), len(patients)
    test_p = set(patients[(k - 1) * n // 5: k * n // 5])
    train_p = [p for p in patients if p not in test_p]
    if select_on_test:
        val_p = set(test_p)
    elif val_fraction <= 0:
        val_p = set()
    else:
        n_val = max(1, round(val_fraction * len(train_p)))
        rng = np.random.default_rng(split_seed)
        val_p = set(rng.choice(train_p, n_val, replace=False).tolist())
        train_p = [p for p in train_p if p not in val_p]
    pick = lambda ps: [c for c in cases if patient[c] in ps]  # noqa: E731
    return Split(pick(set(train_p)), pick(val_p), pick(test_p))


def read_splits(root: str) -> Split:
    """The parts of ``root/splits.json``; ValueError naming the file when it is missing or
    malformed, names a case that is not in the data root, or puts a case (or two cases of one
    patient, :func:`dataloaders.io.patient_of`) in two parts."""
    path = os.path.join(root, io.SPLITS_JSON)
    if not os.path.isfile(path):
        raise ValueError(f"--fold split: {path} does not exist (write it, or use fold1..fold5)")
    parts = io.read_json_object(path)
    if set(parts) - {"train", "val", "test"} or \
            not all(isinstance(v, list) for v in parts.values()):
        raise ValueError(f"{path}: expected {{\"train\": [...], \"val\": [...], \"test\": [...]}}")
    known, pattern = set(io.list_cases(root)), io.patient_pattern(root)
    seen: dict[str, str] = {}
    patient_part: dict[str, tuple[str, str]] = {}
    for part, cases in parts.items():
        for c in cases:
            if c not in known:
                raise ValueError(f"{path}: case {c!r} ({part}) has no volume {io.volume_path(root, str(c))}")
            if c in seen:
                raise ValueError(f"{path}: case {c!r} is in both {seen[c]} and {part}")
            seen[c] = part
            # A patient's frames in two parts: the test scored a patient the model trained on.
            other, first = patient_part.setdefault(io.patient_of(c, pattern), (part, c))
            if other != part:
                raise ValueError(f"{path}: patient {io.patient_of(c, pattern)}'s cases {first!r} ({other}) and "
                                 f"{c!r} ({part}) are in two parts; a patient's cases must share one")
    return Split(*(list(parts.get(k, [])) for k in ("train", "val", "test")))


def make_split(root: str, fold: str, val_fraction: float = 0.1, select_on_test: bool = False) -> Split:
    """The split a run uses: ``splits.json`` for fold ``split``, else :func:`fold_split` of the
    root's cases with its ``dataset.json`` patient grouping."""
    if fold == SPLIT_FOLD:
        split = read_splits(root)
        return Split(split.train, split.test, split.test) if select_on_test else split
    cases, pattern = io.list_cases(root), io.patient_pattern(root)
    try:
        return fold_split(cases, fold, val_fraction, select_on_test, patient_pattern=pattern)
    except ValueError as e:  # e.g. too few patients for five folds: the flag's data root is named
        raise ValueError(f"--fold {fold} of {root}: {e}") from None


def split_part(root: str, fold: str, part: str, val_fraction: float = 0.1, select_on_test: bool = False) -> list[str]:
    """The cases of ``part`` ("train", "val" or "test") of :func:`make_split`; ValueError naming the
    fold and root when it has none (nothing would be scored)."""
    cases = getattr(make_split(root, fold, val_fraction, select_on_test), part)
    if not cases:
        raise ValueError(f"--fold {fold} of {root} has no {part} cases")
    return cases


def _key(root: str, sup_type: str, slices: list[dict], key: str) -> list[np.ndarray]:
    """The ``key`` array of each slice; ValueError naming the first slice file without one."""
    for s in slices:
        if key not in s:
            raise ValueError(f"{os.path.join(root, io.SLICE_DIR, s['name'] + '.h5')}: no {key!r} dataset "
                             f"(needed by --sup_type {sup_type})")
    return [s[key] for s in slices]


def scribble_targets(root: str, slices: list[dict], progress: bool) -> list[np.ndarray]:
    return check_scribbles(root, slices, _key(root, "scribble", slices, "scribble"))


def check_scribbles(root: str, slices: list[dict], scribbles: list[np.ndarray]) -> list[np.ndarray]:
    """``scribbles`` (one per slice of ``slices``), checked case by case: ValueError naming the
    volume of a case whose scribble slices leave under ``io.MIN_UNLABELED`` of their pixels 4, as
    the conversions refuse (a scribble marking the unstroked pixels 0 trained them all as
    background strokes, test Dice 0 at exit 0)."""
    by_case: dict[str, list[np.ndarray]] = {}
    for s, scribble in zip(slices, scribbles):
        by_case.setdefault(s["case"], []).append(scribble.ravel())
    for case, arrays in by_case.items():
        io.check_mostly_unlabeled(io.volume_path(root, case), np.concatenate(arrays))
    return scribbles


def label_targets(root: str, slices: list[dict], progress: bool) -> list[np.ndarray]:
    return _key(root, "label", slices, "label")


def random_walker_targets(root: str, slices: list[dict], progress: bool) -> list[np.ndarray]:
    """Random-walker labels grown from the scribbles, cached in ``<root>/random_walker_cache``."""
    from dataloaders.random_walker import RandomWalkerCache

    cache = RandomWalkerCache(os.path.join(root, "random_walker_cache"))
    items = list(zip([s["name"] for s in slices], [s["image"] for s in slices],
                     check_scribbles(root, slices, _key(root, "random_walker", slices, "scribble"))))
    cache.build(items, progress=progress, workers=min(4, os.cpu_count() or 1))
    return [cache.get(*it) for it in items]


def point_targets(root: str, slices: list[dict], progress: bool) -> list[np.ndarray]:
    """A few points per class per slice drawn inside the dense masks (see
    :mod:`dataloaders.points`), cached in ``<root>/points_cache``."""
    from dataloaders.points import PointCache

    cache = PointCache(os.path.join(root, "points_cache"))
    items = list(zip([s["name"] for s in slices], _key(root, "points", slices, "label")))
    cache.build(items, progress=progress)
    return [cache.get(*it) for it in items]


# Supervision types: (root, slices as dicts of arrays with their "name" and "case", progress) -> the
# training target of each slice, (H, W) with 4 = unlabeled.
SUPERVISION = {
    "scribble": scribble_targets,
    "label": label_targets,
    "random_walker": random_walker_targets,
    "points": point_targets,
}
# Supervision types whose targets are grown from what an annotator drew: the key of that drawing,
# which is what their annotation counts.
GROWN_FROM = {"random_walker": "scribble"}
# Value a rotation brings in from outside the slice, per supervision type.
FILL = {"scribble": io.UNLABELED, "label": 0, "random_walker": io.UNLABELED, "points": io.UNLABELED}
# Supervision types of isolated labelled pixels, which a nearest-neighbour downsampling drops
# (strokes and regions keep most of theirs): every one is kept by the resizes.
POINTS = {"points"}


def contour_pixels(mask: np.ndarray) -> int:
    """Pixels of an (H, W) dense mask (0 background, 1..3 structures) that lie on the border of
    their structure (a 4-neighbour holds another label): the outlines traced to draw the mask."""
    cross = ndimage.generate_binary_structure(2, 1)
    border = ((ndimage.minimum_filter(mask, footprint=cross, mode="nearest") != mask)
              | (ndimage.maximum_filter(mask, footprint=cross, mode="nearest") != mask))
    return int(np.count_nonzero(border & (mask > 0)))


def labeled_patients(cases: list[str], n: int, seed: int, patient_pattern: str | None = None) -> list[str]:
    """The ``n`` patients of ``cases`` (grouped as the folds group them, by ``patient_pattern``) that
    train on their dense masks: the first ``n`` of a permutation seeded by ``seed``, so the choices
    for growing ``n`` are nested (1 in 4 in 8)."""
    patients = sorted({io.patient_of(c, patient_pattern) for c in cases})
    if not 0 <= n <= len(patients):
        raise ValueError(f"--labeled_patients must be in 0..{len(patients)} (training patients), got {n}")
    return sorted(np.random.default_rng(seed).permutation(patients)[:n].tolist())


def dense_training_cases(train: list[str], sup_type: str, n: int, seed: int,
                         patient_pattern: str | None = None) -> tuple[list[str], list[str]]:
    """(training cases, cases trained on dense masks) for ``--labeled_patients n`` (every case of
    each chosen patient, :func:`labeled_patients`).

    With a sparse ``sup_type`` every training case is kept and the chosen patients' cases use
    their dense masks; with ``label`` and ``n`` > 0 only the chosen patients train (full
    supervision with fewer patients). ``n`` = 0 keeps the training cases as they are.
    """
    chosen = set(labeled_patients(train, n, seed, patient_pattern))
    dense = [c for c in train if io.patient_of(c, patient_pattern) in chosen]
    if sup_type == "label":
        return (dense if n else train), []
    return train, dense


def check_slices_match_volumes(root: str, cases: list[str], slices: list[dict], num_classes: int) -> None:
    """ValueError naming the first training slice file whose image, label, scribble or spacing
    differs from its volume's slice (``slices``: what was read of every slice of ``cases``, in
    order). Training reads the slices, validation and testing the volumes: volumes replaced
    without converting their slices again would train on other data than the run is scored on."""
    it = iter(slices)
    for case in cases:
        volume = io.read_h5(io.volume_path(root, case), num_classes=num_classes)
        for z in range(len(volume["image"])):
            s = next(it)
            differ = [k for k in io.KEYS if k in s and k in volume and not np.array_equal(s[k], volume[k][z])]
            # --target_spacing resamples training slices by their own spacing (refusing slices
            # without one), the rest by the volume's; slices record no origin or direction.
            spacings = s.get("spacing"), volume.get("spacing")
            if None not in spacings and not np.allclose(*spacings, rtol=1e-6, atol=1e-6):
                differ.append("spacing")
            if differ:
                raise ValueError(f"{io.slice_path(root, case, z)}: its {differ[0]} differs "
                                 f"from slice {z} of {io.volume_path(root, case)}; convert the volumes again "
                                 "(acdc_data_processing.py --volumes ... --overwrite)")


class SliceDataset(Dataset):
    """Training slices of ``cases``, read once from ``ACDC_training_slices`` and then served
    from memory (a fold of ACDC is ~150 MB), augmented reproducibly.

    Slices are resized to ``input_size`` (default: the patch size) and, when the patch is smaller,
    cropped (see :func:`dataloaders.augment.augment`). Items are indexed by ``(slice_index, seed)``
    pairs (see :class:`TrainBatchSampler`) and are dicts with ``image`` (1, h, w) float32 in
    [0, 1], ``target`` (h, w) int64 in {0..3, 4} and ``index``, the slice's position in ``names``
    (for methods that keep per-slice memories). The slices of ``dense_cases`` train on their
    dense masks whatever ``sup_type`` says. ``keep_points``: resizes keep every point of a points
    target (:func:`dataloaders.augment.keep_points`); False samples them by nearest neighbour.
    ``scale``, ``intensity``: the optional zoom and intensity jitter of
    :func:`dataloaders.augment.augment` (``--aug_scale``, ``--aug_intensity``).
    """

    def __init__(self, root: str, cases: list[str], sup_type: str, patch_size, progress: bool = True,
                 input_size=None, fg_prob: float = 0.5, target_spacing=None, dense_cases=(),
                 keep_points: bool = True, scale: float = 0.0, intensity: bool = False):
        if sup_type not in SUPERVISION:
            raise ValueError(f"--sup_type must be one of {sorted(SUPERVISION)}, got {sup_type!r}")
        self.patch_size = tuple(patch_size)
        self.input_size = tuple(input_size or patch_size)
        self.fg_prob, self.scale, self.intensity = fg_prob, scale, intensity
        counts = {case: io.num_slices(root, case) for case in cases}
        empty = [case for case, n in counts.items() if n == 0]
        if empty:
            raise ValueError(f"{io.volume_path(root, empty[0])}: a volume of 0 slices; remove it or convert it again")
        self.cases = list(cases)
        pairs = [(case, f"{case}_slice_{z}") for case in cases for z in range(counts[case])]
        if not pairs:
            raise ValueError(f"{root}: no training slices for the chosen split")
        classes = io.root_classes(root)
        slices = [{"name": n, "case": case, **io.read_h5(os.path.join(root, io.SLICE_DIR, n + ".h5"),
                                                         num_classes=classes)}
                  for case, n in tqdm(pairs, desc="loading slices", disable=not progress, leave=False)]
        check_slices_match_volumes(root, cases, slices, classes)
        self.names = [n for _, n in pairs]
        self.images = [s["image"].astype(np.float32) for s in slices]
        dense = [case in set(dense_cases) for case, _ in pairs]
        targets = iter(SUPERVISION[sup_type](root, [s for s, d in zip(slices, dense) if not d], progress))
        labels = iter(label_targets(root, [s for s, d in zip(slices, dense) if d], progress))
        self.targets = [next(labels if d else targets).astype(np.int64) for d in dense]
        self.dense = [d or sup_type == "label" for d in dense]
        self.sup_type, self.keep_points = sup_type, keep_points
        if not any((t != io.UNLABELED).any() for t in self.targets):
            # pCE is then 0 at every step: the run trained on nothing and exited 0.
            raise ValueError(f"{root}: no labelled pixel in the {len(self.targets)} training slices "
                             f"(--sup_type {sup_type}: every target pixel is {io.UNLABELED}, unlabeled)")
        present = set().union(*(np.unique(t).tolist() for t in self.targets))
        absent = [k for k in range(1, classes) if k not in present]
        if absent:  # the model would learn that the class never occurs, and be scored on it
            raise ValueError(f"{root}: class {absent[0]} ({io.class_names(root)[absent[0] - 1]}) is labelled in none "
                             f"of the {len(self.targets)} training slices (--sup_type {sup_type}); label it, or declare "
                             "only the classes the data hold (dataset.json 'labels', --class_names)")
        # Hashed on the slices' own grid: resampling's rounding may change with the SciPy version.
        self._digest = self._hash()
        drawing = GROWN_FROM.get(sup_type)
        self._annotation = self._count([s[drawing] if drawing and not d else None for s, d in zip(slices, dense)])
        self.image_fingerprints = sorted({f for f in map(image_fingerprint, self.images) if f is not None})
        if target_spacing is not None:
            self._resample(slices, target_spacing)

    def _resample(self, slices: list[dict], target) -> None:
        """Bring every slice to the ``target`` spacing and the input size at load time
        (:mod:`dataloaders.spacing`); augmentation's resize then has nothing left to do."""
        for i, s in enumerate(slices):
            if s.get("spacing") is None:
                raise ValueError(f"--target_spacing: {s['name']} has no spacing attribute")
            fill, points = self.target_kind(i)
            self.images[i], (self.targets[i],) = to_target(self.images[i], [self.targets[i]], [fill],
                                                          s["spacing"][1:], target, self.input_size, [points])

    def target_kind(self, index: int) -> tuple[int, bool]:
        """(the fill of slice ``index``'s target where rotation or padding brings pixels in from
        outside, whether the target holds points that every resize must keep)."""
        dense = self.dense[index]
        return (FILL["label" if dense else self.sup_type],
                self.keep_points and not dense and self.sup_type in POINTS)

    def digest(self) -> str:
        """SHA-256 of what the run trains on: each slice's name, image and target as loaded, before
        any ``target_spacing`` resampling. Checkpoints record it, so that a run resumed (or
        re-tested) on other data with the same case names is refused."""
        return self._digest

    def _hash(self) -> str:
        h = hashlib.sha256()
        for name, image, target in zip(self.names, self.images, self.targets):
            h.update(name.encode())
            h.update(np.ascontiguousarray(image).tobytes())
            h.update(target.astype(np.uint8).tobytes())  # 0..4
        return h.hexdigest()

    def annotation(self) -> dict[str, int]:
        """How much annotation the run trains on, counted on the training slices as stored (their
        own grid, before any ``target_spacing`` resampling, which would count a downsampled
        stroke's pixels): ``labelled`` and all (``pixels``) pixels, and ``drawn``: the pixels an
        annotator draws, every labelled pixel of a scribble or point target, the scribbles a grown
        target comes from (:data:`GROWN_FROM`), and the outlines (:func:`contour_pixels`) of a
        dense mask."""
        return self._annotation

    def _count(self, drawings: list[np.ndarray | None]) -> dict[str, int]:
        """:meth:`annotation` of the targets as loaded; ``drawings``: per slice, what a grown target
        grew from (None for the others)."""
        labelled = sum(int(np.count_nonzero(t != io.UNLABELED)) for t in self.targets)
        drawn = sum(contour_pixels(t) if d else int(np.count_nonzero((t if g is None else g) != io.UNLABELED))
                    for t, d, g in zip(self.targets, self.dense, drawings))
        return {"labelled": labelled, "drawn": drawn, "pixels": sum(t.size for t in self.targets)}

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, item) -> dict:
        index, seed = item
        rng = np.random.default_rng(seed)
        fill, points = self.target_kind(index)
        image, (target,) = augment(self.images[index], [self.targets[index]], [fill], self.input_size, rng,
                                   self.patch_size, self.fg_prob, [points], self.scale, self.intensity)
        return {"image": torch.from_numpy(image.copy())[None], "target": torch.from_numpy(target.copy()),
                "index": index}


class TrainBatchSampler(Sampler):
    """Endless batches of ``(slice_index, augmentation_seed)``, a pure function of
    ``(seed, iteration)``: resuming at iteration i replays exactly the batches a run would
    have drawn, whatever the number of loader workers.

    With ``world_size`` > 1 (data-parallel training) each iteration draws one global batch of
    ``batch_size * world_size`` and ``rank`` takes its own consecutive share, so the ranks' batches
    together are exactly the single-process batches of the effective batch size.
    """

    def __init__(self, n: int, batch_size: int, seed: int, start_iteration: int = 0, rank: int = 0,
                 world_size: int = 1):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside 0..{world_size - 1}")
        self.n, self.batch_size, self.seed, self.start = n, batch_size, seed, start_iteration
        self.rank, self.world_size = rank, world_size

    def batch(self, iteration: int) -> list[tuple[int, int]]:
        size = self.batch_size * self.world_size
        per_epoch = max(1, self.n // size)
        epoch, pos = divmod(iteration, per_epoch)
        order = np.random.default_rng([self.seed, epoch]).permutation(self.n)
        if self.n < size:
            order = np.resize(order, size)
        first = pos * size + self.rank * self.batch_size
        idx = order[first:first + self.batch_size]
        return [(int(i), int(np.random.SeedSequence([self.seed, iteration, j]).generate_state(1)[0]))
                for j, i in enumerate(idx, start=self.rank * self.batch_size)]

    def __iter__(self):
        it = self.start
        while True:
            yield self.batch(it)
            it += 1

    def __len__(self) -> int:
        return 2**62


class VolumeSet:
    """Whole volumes of ``cases`` for validation and testing, read once and kept in memory.

    Every case needs a dense, non-empty ``label``: a scribble-only or empty mask would score a
    meaningless Dice of 1, so it is a ValueError naming the file.
    """

    def __init__(self, root: str, cases: list[str]):
        self.cases = [io.read_case(root, c) for c in cases]
        for c in self.cases:
            path = io.volume_path(root, c.name)
            if c.label is None:
                raise ValueError(f"{path}: no dense 'label' to evaluate against (a scribble-only "
                                 "case can only train)")
            if not c.label.any():
                raise ValueError(f"{path}: the dense 'label' is empty (all background); "
                                 "it cannot be evaluated against")

    def __iter__(self):
        return iter(self.cases)

    def __len__(self) -> int:
        return len(self.cases)


def image_fingerprint(image: np.ndarray) -> str | None:
    """A short SHA-256 of one slice's image as float32 (as training loads it), or None for a
    constant image (blank slices are alike in any data set). Checkpoints record those of their
    training slices, so that a case scored under another name or from another root is known by
    its image (:func:`trained_on_image`)."""
    image = np.ascontiguousarray(image, np.float32)
    if image.size == 0 or image.min() == image.max():
        return None
    return hashlib.sha256(image.tobytes()).hexdigest()[:20]


def trained_on_image(cases, fingerprints) -> tuple[str, int] | None:
    """(case name, slice index) of the first slice of ``cases`` (:class:`~dataloaders.io.Case`)
    whose image is among the training ``fingerprints`` (:func:`image_fingerprint`), else None."""
    seen = set(fingerprints)
    for case in cases:
        for z, image in enumerate(case.image):
            if image_fingerprint(image) in seen:
                return case.name, z
    return None


def volumes_digest(cases) -> str:
    """SHA-256 of what the volumes ``cases`` (:class:`~dataloaders.io.Case`) are scored on: each
    one's name, image and label. Checkpoints record it for their validation volumes, so that a
    run resumed on other data with the same case names is refused."""
    h = hashlib.sha256()
    for case in cases:
        h.update(case.name.encode())
        h.update(np.ascontiguousarray(case.image).tobytes())
        h.update(np.asarray(case.label, np.uint8).tobytes())
    return h.hexdigest()
