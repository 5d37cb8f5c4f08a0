"""Synthetic short-axis cine-MR phantoms in the ACDC layout: the project's built-in data set.

Every patient has an end-diastole (``frame01``) and an end-systole (``frameXX``, XX in 08..15)
volume of 6-12 slices from base to apex. A slice is drawn from analytic shapes in millimetres:

- heart: an elliptical LV blood pool (with two papillary muscles, labelled LV as in ACDC) inside a
  myocardial ring whose thickness varies around the circumference, and an RV crescent (the part of
  an offset ellipse outside the LV epicardium) on the septal side, wrapped by a thin free wall;
  all shrink from base to apex along ellipsoidal profiles, the RV vanishes before the apex and the
  apical slice may hold only a little LV or only myocardium. End systole has a smaller cavity and,
  with the myocardial area kept, a thicker wall;
- surroundings: body ellipse with subcutaneous fat and chest-wall muscle, dark lungs with bright
  vessels, liver rising into the apical slices, descending aorta, spine, other organs, epicardial
  fat.

Patients differ in field of view (voxel spacing), heart size, wall thickness, ejection fraction,
position, rotation, ellipticity and tissue contrast. Images are rendered at twice the resolution
and block-averaged (partial volume), slightly blurred, multiplied by a smooth bias field, given
Rician noise (magnitude of complex Gaussian noise) and scaled to a raw MR range (int16, 0 to a
few hundred, bright fat up to about 1500). The stored image is ``normalise_intensity`` of that
raw volume, exactly what ``acdc_data_processing.py --raw`` computes from the raw NIfTI files.
"""
from __future__ import annotations

import os
import re

import numpy as np
from scipy import ndimage as ndi

from dataloaders.intensity import normalise_intensity
from dataloaders.io import SLICE_DIR, VOLUME_DIR, Case, write_case, write_nifti
from dataloaders.scribbles import scribble_volume

# Tissue codes (painted in this order, later ones on top) and their mean signal relative to blood.
# Codes ORGAN .. ORGAN+5 are the other organs, each with its own signal.
AIR, BODY, FAT, MUSCLE, LUNG, VESSEL, LIVER, AORTA, SPINE, BONE, PERI_FAT, RV_WALL, \
    RV_BLOOD, MYO, LV_BLOOD, PAPILLARY, ORGAN = range(17)
_SIGNAL = np.array([0.0, 0.34, 1.25, 0.26, 0.04, 0.55, 0.38, 0.95, 0.32, 0.08, 0.95, 0.30,
                    0.90, 0.36, 1.00, 0.36])
_CLASS = np.zeros(ORGAN + 6, dtype=np.uint8)
_CLASS[[RV_BLOOD, MYO, LV_BLOOD, PAPILLARY]] = [1, 2, 3, 3]

SUPERSAMPLE = 2
MIN_SIZE = 32


def _ellipse_at(x, y, cx, cy, a, b, rot, harm=()):
    """Bool mask of an ellipse at the (broadcastable) points ``x``, ``y`` mm.

    Centre (cx, cy), semi-axes ``a`` along angle ``rot`` and ``b`` across; the radius is modulated
    by the harmonics ``harm`` = ((k, amplitude, phase), ...) for irregular, organ-like outlines.
    """
    # Python floats keep float32 grids in float32.
    c, s = float(np.cos(rot)), float(np.sin(rot))
    dx, dy = x - float(cx), y - float(cy)
    u, v = dx * c + dy * s, dy * c - dx * s
    r2 = (u * (1.0 / float(a))) ** 2 + (v * (1.0 / float(b))) ** 2
    if harm:
        # cos(k*theta + ph) = Re(e^{i k theta} e^{i ph}), cheaper than arctan2 and cos.
        e = (u + 1j * v) / np.maximum(np.hypot(u, v), 1e-6)
        powers = {1: e}
        for k in range(2, max(k for k, _, _ in harm) + 1):
            powers[k] = powers[k - 1] * e
        mod = sum((powers[k] * complex(h * np.exp(1j * ph))).real for k, h, ph in harm)
        r2 = r2 / (1 + mod) ** 2
    return r2 < 1.0


def _box(grid, cx: float, cy: float, r: float):
    """(index slices, x (1, w), y (h, 1)) of the grid points within the square of half-side ``r``."""
    xs, ys = grid
    j0, j1 = np.searchsorted(xs, [cx - r, cx + r])
    i0, i1 = np.searchsorted(ys, [cy - r, cy + r])
    return (slice(i0, i1), slice(j0, j1)), xs[None, j0:j1], ys[i0:i1, None]


def _ellipse(grid, cx, cy, a, b, rot, grow=0.0, harm=()):
    """``_ellipse_at`` grown by ``grow`` mm on a whole grid (H, W), evaluated in its bounding box only."""
    a, b = a + grow, b + grow
    out = np.zeros((len(grid[1]), len(grid[0])), dtype=bool)
    if a <= 0 or b <= 0:
        return out
    sl, x, y = _box(grid, cx, cy, max(a, b) * (1 + sum(abs(h) for _, h, _ in harm)) + 1)
    if x.size and y.size:
        out[sl] = _ellipse_at(x, y, cx, cy, a, b, rot, harm)
    return out


def _profile(t, end):
    """Ellipsoidal long-axis profile: 1 at the base (t=0), 0 at t >= ``end``."""
    return np.sqrt(np.clip(1.0 - (t / end) ** 2, 0.0, None))


def _draw_patient(rng: np.random.Generator) -> dict:
    """All random scalars of one patient (shared by its ED and ES frames)."""
    u = rng.uniform
    p = {
        "fov": u(180, 225),
        "rot": u(-0.35, 0.35),
        "hx": u(-12, 12), "hy": u(-12, 12),
        "drift": (u(-6, 6), u(-6, 6)),
        "endo": u(22, 30) if rng.random() > 0.15 else u(30, 34),
        "wall": u(6.5, 10) if rng.random() > 0.15 else u(11, 14),
        "es_k": u(0.6, 0.8) if rng.random() > 0.15 else u(0.82, 0.92),
        "rv_k": u(0.65, 0.85),
        "ell": u(0.82, 1.0), "ell_rot": u(0, np.pi),
        "harm": u(-0.04, 0.04, size=2), "harm_ph": u(0, 2 * np.pi, size=2),
        "wall_var": u(0.1, 0.25), "wall_ph": u(0, 2 * np.pi),
        "endo_end": u(0.93, 1.0), "epi_end": u(1.06, 1.15), "rv_end": u(0.8, 0.95),
        "psi": np.pi + u(-0.3, 0.3),
        "rv_a": u(1.25, 1.5), "rv_b": u(0.8, 1.0), "rv_d": u(0.45, 0.6),
        "fat_ph": u(0, 2 * np.pi),
        "body": (u(-20, 20), u(40, 70), u(150, 190), u(105, 130), u(-0.15, 0.15)),
        "fat_t": u(8, 18), "mus_t": u(6, 12),
        "body_h": _harm(rng, 0.03),
        "lung1": (u(25, 40), u(-10, 15), u(35, 50), u(55, 75), u(-0.4, 0.4), _harm(rng, 0.12)),
        "lung2": (u(45, 60), u(-5, 20), u(35, 50), u(55, 75), u(-0.4, 0.4), _harm(rng, 0.12)),
        "liver": (u(10, 40), u(45, 75), u(60, 90), u(40, 55), u(-0.3, 0.3), _harm(rng, 0.08)),
        "aorta": (u(9, 13), u(-0.3, 0.3), u(5, 15)),
        "spine": (u(14, 18), u(-25, -12), u(12, 20)),
        "organs": [(u(-90, 90), u(-90, 90), u(8, 25), u(8, 25), u(0, np.pi), _harm(rng, 0.1))
                   for _ in range(rng.integers(3, 7))],
        "signal": _SIGNAL * np.where(_CLASS[:_SIGNAL.size] > 0, u(0.93, 1.07, size=_SIGNAL.size),
                                     u(0.85, 1.15, size=_SIGNAL.size)),
        "organ_signal": u(0.15, 0.6, size=6),
        "bias": u(-0.45, 0.45, size=5),
        "noise": u(0.02, 0.045),
        "texture": u(0.08, 0.18),
        "gain": u(220, 340),
        "n_slices": int(rng.integers(6, 13)),
        "t0": u(0.0, 0.08), "t1": u(0.88, 1.0),
        "es_frame": int(rng.integers(8, 16)),
        "length": u(70, 100),
    }
    p["signal"][AIR] = 0.0
    p["signal"] = np.concatenate([p["signal"], p.pop("organ_signal")])
    return p


def _harm(rng: np.random.Generator, amp: float) -> tuple:
    """Random boundary harmonics (k = 2..4) for ``_ellipse``: irregular, organ-like outlines."""
    return tuple((k, rng.uniform(-amp, amp), rng.uniform(0, 2 * np.pi)) for k in (2, 3, 4))


def _to_image(p: dict, x: float, y: float) -> tuple[float, float]:
    """Image-frame position of patient-frame point(s) (the patient is rotated by ``p['rot']``)."""
    c, s = float(np.cos(p["rot"])), float(np.sin(p["rot"]))
    xi, yi = x * c + y * s, y * c - x * s
    return (float(xi), float(yi)) if np.ndim(xi) == 0 else (xi, yi)


def _anatomy(p: dict, grid, t: float, srng: np.random.Generator) -> np.ndarray:
    """Tissue codes (int16, (H, W)) of everything but the heart at long-axis position ``t``.

    ``grid`` = (xs, ys) pixel-centre coordinates in mm; ``srng`` draws the slice's lung vessels.
    Shapes are placed in the patient frame and rotated into the image.
    """
    rot = p["rot"]
    hx, hy = p["hx"] + p["drift"][0] * t, p["hy"] + p["drift"][1] * t
    epi_base = p["endo"] + p["wall"]
    tis = np.full((len(grid[1]), len(grid[0])), AIR, dtype=np.int16)
    bx, by, ba, bb, brot = p["body"]
    bc = _to_image(p, hx + bx, hy + by)
    tis[_ellipse(grid, *bc, ba, bb, brot - rot, harm=p["body_h"])] = FAT
    tis[_ellipse(grid, *bc, ba, bb, brot - rot, -p["fat_t"], p["body_h"])] = MUSCLE
    inner = _ellipse(grid, *bc, ba, bb, brot - rot, -p["fat_t"] - p["mus_t"], p["body_h"])
    tis[inner] = BODY
    for j, (ox, oy, oa, ob, orot, oh) in enumerate(p["organs"]):
        tis[inner & _ellipse(grid, *_to_image(p, hx + ox, hy + oy), oa, ob, orot - rot, harm=oh)] = ORGAN + j
    lx, ly, la, lb, lrot, lh = p["liver"]
    lc = _to_image(p, hx + lx, hy + epi_base + ly - 55 * t)  # the liver dome rises toward the apex
    tis[inner & _ellipse(grid, *lc, la, lb, lrot - rot, harm=lh)] = LIVER
    for sign, (lx, ly, la, lb, lrot, lh) in ((1, p["lung1"]), (-1, p["lung2"])):
        cx, cy = hx + sign * (epi_base + lx), hy + ly + 25 * t
        lung = inner & _ellipse(grid, *_to_image(p, cx, cy), la, lb, lrot - rot, harm=lh)
        tis[lung] = LUNG
        # Vessels only need testing inside the lung.
        rows, cols = np.nonzero(lung)
        vx, vy = _to_image(p, cx + srng.uniform(-la, la, 14), cy + srng.uniform(-lb, lb, 14))
        vr = srng.uniform(0.8, 2.2, 14)
        d2 = (grid[0][cols, None] - vx) ** 2 + (grid[1][rows, None] - vy) ** 2
        hit = (d2 < vr ** 2).any(axis=1)
        tis[rows[hit], cols[hit]] = VESSEL
    ar, abeta, agap = p["aorta"]
    ax = hx + (epi_base + ar + agap) * np.cos(np.pi / 2 + abeta)
    ay = hy + (epi_base + ar + agap) * np.sin(np.pi / 2 + abeta)
    sr, sdx, sdy = p["spine"]
    sc = _to_image(p, ax + sdx, ay + ar + sr + sdy)
    tis[inner & _ellipse(grid, *sc, sr, sr, 0.0, 2.5)] = BONE
    tis[inner & _ellipse(grid, *sc, sr, sr, 0.0)] = SPINE
    tis[_ellipse(grid, *_to_image(p, ax, ay), ar, ar, 0.0)] = AORTA
    return tis


def _heart(p: dict, tis: np.ndarray, grid, t: float, es: bool) -> np.ndarray:
    """A copy of ``tis`` (H, W) with the heart at long-axis position ``t`` (ED, or ES if ``es``)."""
    tis = tis.copy()
    rot = p["rot"]
    hx, hy = p["hx"] + p["drift"][0] * t, p["hy"] + p["drift"][1] * t
    endo = p["endo"] * _profile(t, p["endo_end"])
    epi = (p["endo"] + p["wall"]) * _profile(t, p["epi_end"])
    if es:  # a smaller cavity; the myocardial area is kept, so the wall thickens
        endo_es = p["es_k"] * endo
        epi = np.sqrt(epi ** 2 - endo ** 2 + endo_es ** 2)
        endo = endo_es
    epi_base = p["endo"] + p["wall"]
    psi = p["psi"] - rot
    rv_scale = _profile(t, p["rv_end"]) * (p["rv_k"] if es else 1.0)
    rvd = epi * p["rv_d"] + epi_base * p["rv_b"] * (1 - rv_scale) * 0.5
    rva, rvb = epi_base * p["rv_a"] * rv_scale, epi_base * p["rv_b"] * rv_scale
    hx, hy = _to_image(p, hx, hy)
    extent = max(epi * 1.6 / p["ell"], rvd + max(rva, rvb)) + 6
    sl, x, y = _box(grid, hx, hy, extent)
    sub = tis[sl]  # a view: painting it paints tis
    # LV frame: polar angle phi, elliptic radius rho.
    ec, es_ = float(np.cos(p["ell_rot"] - rot)), float(np.sin(p["ell_rot"] - rot))
    dx, dy = x - hx, y - hy
    u, v = dx * ec + dy * es_, (dy * ec - dx * es_) / p["ell"]
    rho, phi = np.hypot(u, v), np.arctan2(v, u)
    shape = 1 + sum(a * np.cos((k + 2) * phi + ph) for k, (a, ph) in enumerate(zip(p["harm"], p["harm_ph"])))
    r_endo = endo * shape
    r_epi = r_endo + (epi - endo) * (1 + p["wall_var"] * np.cos(phi - p["wall_ph"]))
    lv_out = rho >= r_epi
    fat_on = np.cos(2 * phi + p["fat_ph"]) > 0.1  # epicardial fat is patchy
    if rv_scale > 0.05:
        rv = (hx + rvd * np.cos(psi), hy + rvd * np.sin(psi), rva, rvb, psi + np.pi / 2)
        near = (rho < r_epi + 4) | _ellipse_at(x, y, rv[0], rv[1], rva + 4, rvb + 4, rv[4])
        wall = lv_out & _ellipse_at(x, y, rv[0], rv[1], rva + 2.5, rvb + 2.5, rv[4])
        sub[near & ~(wall | (rho < r_epi + 1.5)) & fat_on] = PERI_FAT
        sub[wall] = RV_WALL
        sub[lv_out & _ellipse_at(x, y, *rv)] = RV_BLOOD
    else:
        sub[(rho < r_epi + 4) & lv_out & fat_on] = PERI_FAT
    sub[~lv_out] = MYO
    sub[rho < r_endo] = LV_BLOOD
    if endo > 8 and 0.2 < t < 0.85:
        for side in (-1, 1):  # papillary muscles, opposite the septum
            ang = psi + np.pi + side * 0.75
            px, py = hx + 0.62 * endo * np.cos(ang), hy + 0.62 * endo * np.sin(ang)
            sub[(rho < r_endo) & ((x - px) ** 2 + (y - py) ** 2 < (0.13 * endo) ** 2)] = PAPILLARY
    return tis


def _grid(size: int, spacing: float, factor: int):
    """(xs, ys): pixel-centre coordinates (mm, origin at the image centre, float32, ascending) of
    a square grid of size*factor points a side."""
    c = (((np.arange(size * factor) + 0.5) / factor - size / 2) * spacing).astype(np.float32)
    return c, c


def _layout(index: int, seed: int, size: int):
    """(the patient's generator after its draw, its parameters, the long-axis position in [0, 1]
    of each slice, spacing (z, y, x) mm) of phantom patient ``index``."""
    if size < MIN_SIZE:
        raise ValueError(f"size must be >= {MIN_SIZE}, got {size}")
    rng = np.random.default_rng([seed, index])
    p = _draw_patient(rng)
    n = p["n_slices"]
    sp = float(np.float32(p["fov"] / size))  # float32-exact, as a NIfTI header stores it
    dz = float(np.clip(np.round(2 * p["length"] / n) / 2, 5.0, 10.0))
    return rng, p, np.linspace(p["t0"], p["t1"], n), (dz, sp, sp)


def _tissues(p: dict, grid, t: float, es: bool, size: int) -> np.ndarray:
    """(size, size) int16 tissue map of the heart alone (the classes depend on nothing else)."""
    return _heart(p, np.zeros((size, size), dtype=np.int16), grid, t, es)


def render_labels(index: int, seed: int, size: int = 128) -> list[tuple[np.ndarray, tuple]]:
    """The labels of :func:`render_patient` alone, without rendering its images (a shape prior
    needs nothing else): [(ED labels, spacing), (ES labels, spacing)], labels uint8 (Z, size,
    size) in 0..3, spacing (z, y, x) mm."""
    _, p, ts, spacing = _layout(index, seed, size)
    grid = _grid(size, spacing[1], 1)
    return [(np.stack([_CLASS[_tissues(p, grid, t, es, size)] for t in ts]), spacing) for es in (False, True)]


def render_patient(index: int, seed: int, size: int = 128) -> tuple[list[Case], list[np.ndarray]]:
    """The ED and ES volumes of phantom patient ``index`` (0-based; named ``patient{index+1:03d}``).

    Returns (cases, raws): ``cases`` two ``Case`` objects with image float32 (Z, size, size) in
    [0, 1], label uint8 0..3, scribble uint16 0..4 and spacing (z, y, x) mm; ``raws`` the matching
    raw int16 (Z, size, size) volumes (0 to at most about 1500) whose ``normalise_intensity`` is the image.
    Deterministic in (index, seed, size); a patient does not depend on how many are generated.
    """
    rng, p, ts, (dz, sp, _) = _layout(index, seed, size)
    n = p["n_slices"]
    slice_seeds = rng.integers(2**32, size=n)
    fine_grid, grid = _grid(size, sp, SUPERSAMPLE), _grid(size, sp, 1)
    gx, gy = np.meshgrid(np.linspace(-1, 1, size), np.linspace(-1, 1, size))
    b = p["bias"]
    bias = np.exp(b[0] * gx + b[1] * gy + b[2] * gx ** 2 + b[3] * gy ** 2 + b[4] * gx * gy)
    name = f"patient{index + 1:03d}"
    anat = []
    for k, t in enumerate(ts):
        srng = np.random.default_rng(slice_seeds[k])
        hi = _anatomy(p, fine_grid, t, srng)
        # Smooth texture of the surroundings and trabeculation of the blood pool (coarse, fine).
        coarse = ndi.gaussian_filter(srng.normal(size=(size, size)), 1.5)
        fine = ndi.gaussian_filter(srng.normal(size=(size, size)), 0.7)
        anat.append((hi, coarse / coarse.std(), fine / fine.std()))
    cases, raws = [], []
    for fi, (frame, es) in enumerate(((1, False), (p["es_frame"], True))):
        nrng = np.random.default_rng([seed, index, fi])
        img = np.empty((n, size, size))
        lab = np.empty((n, size, size), dtype=np.uint8)
        for k, t in enumerate(ts):
            hi_a, coarse, fine = anat[k]
            hi = p["signal"][_heart(p, hi_a, fine_grid, t, es)]
            # The classes depend on the heart alone, so the labels skip the surroundings.
            tis = _tissues(p, grid, t, es, size)
            lab[k] = _CLASS[tis]
            low = hi.reshape(size, SUPERSAMPLE, size, SUPERSAMPLE).mean(axis=(1, 3))
            low = low * np.where(lab[k] == 0, 1 + p["texture"] * coarse, 1.0)
            trab = (tis == LV_BLOOD) & ndi.binary_dilation(tis == MYO)
            low = low * np.where(trab, 1 - 0.25 * np.clip(fine, 0, None), 1.0)
            low = np.clip(ndi.gaussian_filter(low, 0.5), 0, None) * bias
            noise = nrng.normal(0.0, p["noise"], size=(2, size, size))
            img[k] = np.hypot(low + noise[0], noise[1])
        raw = np.clip(np.round(img * p["gain"]), 0, np.iinfo(np.int16).max).astype(np.int16)
        case = f"{name}_frame{frame:02d}"
        scr = scribble_volume(lab, np.random.default_rng([seed, index, fi, 1]))
        cases.append(Case(case, normalise_intensity(raw), lab, scr, (dz, sp, sp)))
        raws.append(raw)
    return cases, raws


def write_raw_case(raw_root: str, case: Case, raw: np.ndarray) -> None:
    """Write ``RAW/patientXXX/<case>.nii.gz`` (raw int16 image) and ``<case>_gt.nii.gz`` (uint8).

    NIfTI array order is (Z, H, W); the header spacing is (x, y, z) mm.
    """
    folder = os.path.join(raw_root, case.name.split("_")[0])
    os.makedirs(folder, exist_ok=True)
    for arr, suffix in ((raw, ""), (case.label.astype(np.uint8), "_gt")):
        write_nifti(os.path.join(folder, f"{case.name}{suffix}.nii.gz"), arr, case.spacing)


def _remove_patient_files(out: str, patient: str) -> None:
    """Delete a patient's h5 files from an earlier run (another seed may have other ES frames or
    slice counts, whose stale files would otherwise join the data set)."""
    for sub, pattern in ((VOLUME_DIR, re.compile(rf"^{patient}_frame\d+\.h5$")),
                         (SLICE_DIR, re.compile(rf"^{patient}_frame\d+_slice_\d+\.h5$"))):
        folder = os.path.join(out, sub)
        if os.path.isdir(folder):
            for f in os.listdir(folder):
                if pattern.match(f):
                    os.remove(os.path.join(folder, f))


def write_phantoms(out: str, patients: int, seed: int, size: int = 128, raw: str | None = None,
                   progress: bool = False) -> list[str]:
    """Generate ``patients`` phantom patients into the ACDC h5 layout under ``out``.

    Writes ``out/ACDC_training_volumes`` and ``out/ACDC_training_slices`` (replacing the files of
    the generated patients, leaving other files alone) and, with ``raw``, the raw NIfTI tree
    ``raw/patientXXX/patientXXX_frameYY[_gt].nii.gz`` plus an ``Info.cfg`` with the ED/ES frames.
    Returns the case names written.
    """
    if patients < 1:
        raise ValueError(f"--patients must be >= 1, got {patients}")
    if size < MIN_SIZE:
        raise ValueError(f"--size must be >= {MIN_SIZE}, got {size}")
    it = range(patients)
    if progress:
        from tqdm import tqdm
        it = tqdm(it, desc="phantoms", unit="patient")
    names = []
    for i in it:
        cases, raws = render_patient(i, seed, size)
        _remove_patient_files(out, cases[0].name.split("_")[0])
        for case, r in zip(cases, raws):
            write_case(out, case)
            if raw is not None:
                write_raw_case(raw, case, r)
            names.append(case.name)
        if raw is not None:
            frames = [int(c.name[-2:]) for c in cases]
            with open(os.path.join(raw, cases[0].name.split("_")[0], "Info.cfg"), "w") as f:
                f.write(f"ED: {frames[0]}\nES: {frames[1]}\nNbSlice: {cases[0].image.shape[0]}\n")
    return names
