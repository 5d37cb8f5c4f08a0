"""NIfTI scans: headers checked where tools would read them differently, scans read with
their geometry, label volumes matched to a scan's grid, files written back onto a scan."""
from __future__ import annotations

import gzip
import os
import struct
import zlib
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from dataloaders.io.h5 import read_h5_labels
from dataloaders.io.layout import Case, NUM_CLASSES, check_labels, check_voxel_sides
from dataloaders.io.outputs import atomic_path


# NIfTI datatype codes of floating-point voxels and their numpy types, and of complex voxels
# (read through numpy as their real part alone).
NIFTI_FLOATS = {16: "f4", 64: "f8"}
NIFTI_INTEGERS = {2: "u1", 4: "i2", 8: "i4", 256: "i1", 512: "u2", 768: "u4", 1024: "i8", 1280: "u8"}
NIFTI_COMPLEX = {32, 1792, 2048}


# The header's xyzt_units codes of lengths other than mm (0: unknown, read as mm; 2: mm).
NIFTI_OTHER_UNITS = {1: "metres", 3: "micrometres"}


def _read_itk(path: str) -> sitk.Image:
    """``sitk.ReadImage(path)``; OSError naming the file with ITK's last line when it fails."""
    try:
        return sitk.ReadImage(path)
    except RuntimeError as e:
        raise OSError(f"{path}: cannot read NIfTI ({str(e).strip().splitlines()[-1]})") from e


@dataclass(frozen=True)
class NiftiHeader:
    """The fields of a NIfTI-1 header that :func:`check_nifti_file` checks (ITK hides some of
    them, e.g. the second of qform and sform, and the raw voxels before scaling)."""
    order: str  # byte order for struct and numpy, "<" or ">"
    dims: tuple
    datatype: int
    bitpix: int
    pixdim: tuple
    offset: int  # vox_offset
    slope: float
    intercept: float
    units: int
    qform_code: int
    sform_code: int
    quaternion: tuple  # quatern_b..d, qoffset_x..z
    sform: tuple  # srow_x, srow_y, srow_z

    @classmethod
    def parse(cls, path: str, data: bytes) -> "NiftiHeader":
        """The header at the start of the file's ``data``; OSError naming ``path`` for NIfTI-2 or
        no NIfTI-1 header in either byte order."""
        for order in "<>":
            if len(data) >= 4 and struct.unpack(order + "i", data[:4])[0] == 540:
                raise OSError(f"{path}: a NIfTI-2 file, which SimpleITK cannot read; save it as NIfTI-1")
            if len(data) >= 348 and struct.unpack(order + "i", data[:4])[0] == 348:
                def field(fmt: str, at: int):  # the value(s) at byte ``at``
                    values = struct.unpack_from(order + fmt, data, at)
                    return values[0] if len(values) == 1 else values

                return cls(order=order, dims=field("8h", 40), datatype=field("h", 70), bitpix=field("h", 72),
                           pixdim=field("8f", 76), offset=int(field("f", 108)), slope=field("f", 112),
                           intercept=field("f", 116), units=data[123] & 7, qform_code=field("h", 252),
                           sform_code=field("h", 254), quaternion=field("6f", 256), sform=field("12f", 280))
        raise OSError(f"{path}: not a NIfTI file (no NIfTI-1 header)")


def check_nifti_file(path: str) -> tuple[np.ndarray | None, bool]:
    """OSError naming ``path`` when a NIfTI file is truncated or corrupt, ValueError when its
    floating-point voxels hold NaN or inf, they are complex, its header gives a voxel side of 0,
    NaN or below 0, lengths in other units than mm, a qform tools read differently
    (:func:`check_qform`), a qform and a sform that place the voxels differently
    (:func:`check_same_placement`), a scaling of integer voxels that float32 cannot hold
    (:func:`check_scaling_precision`) or voxels starting before byte 352, or a NIfTI file of the
    same stem lies beside it (:func:`same_name_files`). Returns
    the header's sform, (3, 4) voxel -> RAS mm, where its sform_code is set, else None; and
    whether the header gives no orientation at all (qform_code and sform_code both 0).

    ITK reads truncated files as partly zero arrays, and NaN or inf voxels as 0, without an
    error, so the whole file is decompressed here (gzip checks its CRC and length), the voxel
    data's size is compared with what the header promises (NIfTI-1, either byte order) and
    float voxels are checked before ITK reads them. NIfTI-2, which this SimpleITK cannot read, is
    an OSError saying so.
    """
    twins = same_name_files(path)
    if twins:
        raise ValueError(f"{path}: {twins[0]} beside it has the same name, and ITK may read one for the "
                         "other; rename or remove one")
    opener = gzip.open if path.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise OSError(f"{path}: corrupt or truncated NIfTI ({e})") from e
    h = NiftiHeader.parse(path, data)
    if h.units in NIFTI_OTHER_UNITS:
        # ITK converts them to mm, nibabel and FSL do not: what is written for the scan in mm would
        # lie 1000 times larger or smaller than the scan there.
        raise ValueError(f"{path}: its header gives lengths in {NIFTI_OTHER_UNITS[h.units]} (xyzt_units), which "
                         "tools read differently; save the scan in mm")
    if h.datatype in NIFTI_COMPLEX:
        raise ValueError(f"{path}: complex voxels (NIfTI datatype {h.datatype}); give the magnitude image")
    n_dims = max(0, min(int(h.dims[0]), 7))
    sides = [(d, n) for d, n in zip(h.pixdim[1:4], h.dims[1:4])][:min(n_dims, 3)]
    if any(n > 1 and not (np.isfinite(d) and d > 0) for d, n in sides):
        # ITK would silently read a zero or NaN side as 1 mm, and distances in mm would be wrong. A
        # negative one ITK reads as a flip, nibabel as its size and niftilib as 1 mm: a prediction
        # written with ITK's reading would show mirrored on the scan elsewhere.
        raise ValueError(f"{path}: voxel size {tuple(round(float(d), 4) for d, _ in sides)} in its header is "
                         "zero, negative or not finite; the scan's spacing is undefined (tools disagree on a "
                         "negative one: save the scan with positive sizes and any flip in its qform or sform)")
    check_qform(path, h.qform_code, h.sform_code, h.pixdim[0], h.quaternion)
    if h.qform_code > 0 and h.sform_code > 0:
        check_same_placement(path, qform_affine(h.quaternion, h.pixdim), np.reshape(h.sform, (3, 4)))
    if h.offset < SINGLE_FILE_OFFSET:
        # A single-file NIfTI's voxels start at byte 352 at the earliest; ITK reads a lower
        # vox_offset (e.g. 0) from byte 348, nibabel from 352: two images, shifted by 4 bytes.
        raise ValueError(f"{path}: vox_offset {h.offset} in its header lies before byte {SINGLE_FILE_OFFSET}, where "
                         "a single-file NIfTI's voxels start (tools read it differently); save the scan again")
    if h.slope == 0.0 and h.intercept != 0.0:
        # The NIfTI standard and nibabel ignore the scaling when scl_slope is 0; ITK adds scl_inter.
        raise ValueError(f"{path}: scl_slope 0 with scl_inter {h.intercept:g} in its header, which tools read "
                         "differently (ITK adds the offset, nibabel ignores both); save the scan without that scaling")
    count = int(np.prod([max(1, int(d)) for d in h.dims[1:n_dims + 1]]))
    expected = h.offset + count * h.bitpix // 8
    if len(data) < expected:
        raise OSError(f"{path}: truncated NIfTI ({len(data)} bytes of data, the header needs {expected})")
    if h.datatype in NIFTI_FLOATS:
        if h.bitpix != 8 * np.dtype(NIFTI_FLOATS[h.datatype]).itemsize:
            raise OSError(f"{path}: inconsistent NIfTI header (datatype {h.datatype}, bitpix {h.bitpix})")
        values = np.frombuffer(data, h.order + NIFTI_FLOATS[h.datatype], count=count, offset=h.offset)
        bad = int(count - np.isfinite(values).sum())
        if bad:
            raise ValueError(f"{path}: {bad} voxels are NaN or inf")
    elif h.datatype in NIFTI_INTEGERS and (h.slope not in (0.0, 1.0) or h.intercept != 0.0):
        stored = np.frombuffer(data, h.order + NIFTI_INTEGERS[h.datatype], count=count, offset=h.offset)
        check_scaling_precision(path, stored, h.slope, h.intercept)
    sform = np.reshape(h.sform, (3, 4)) if h.sform_code > 0 else None
    return sform, h.qform_code == 0 and h.sform_code == 0


SINGLE_FILE_OFFSET = 352  # the 348-byte header and the 4 bytes of its extension flag


def check_qform(path: str, qform_code: int, sform_code: int, qfac: float, quaternion) -> None:
    """ValueError naming ``path`` when its qform (qform_code set) is one tools read differently:
    a non-finite quaternion or offset (ITK replaces them, nibabel keeps NaN), or, where the qform
    alone places the voxels (no sform), a qfac (pixdim[0]) other than -1, 0 or 1 (ITK reads any
    negative as -1, nibabel resets it to 1: the slices mirrored)."""
    if qform_code <= 0:
        return
    if not all(np.isfinite(quaternion)):
        raise ValueError(f"{path}: its qform (quatern_b..d, qoffset_x..z) holds NaN or inf; the scan's orientation "
                         "is undefined")
    if sform_code <= 0 and qfac not in (-1.0, 0.0, 1.0):
        raise ValueError(f"{path}: pixdim[0] (qfac) is {qfac:g} in its header, not 1 or -1, and tools read it "
                         "differently (ITK as -1 when negative, nibabel as 1: the slices mirrored); save the scan again")


def qform_affine(quaternion, pixdim) -> np.ndarray:
    """The (3, 4) voxel -> RAS mm affine of a NIfTI-1 qform: ``quaternion`` = (quatern_b, c, d,
    qoffset_x, y, z), ``pixdim`` the header's 8 (pixdim[0] = qfac, the k axis's sign)."""
    b, c, d, *offset = (float(v) for v in quaternion)
    a = np.sqrt(max(0.0, 1.0 - (b * b + c * c + d * d)))
    rotation = np.array([[a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)],
                         [2 * (b * c + a * d), a * a + c * c - b * b - d * d, 2 * (c * d - a * b)],
                         [2 * (b * d - a * c), 2 * (c * d + a * b), a * a + d * d - c * c - b * b]])
    qfac = -1.0 if pixdim[0] < 0 else 1.0
    return np.column_stack([rotation @ np.diag([pixdim[1], pixdim[2], qfac * pixdim[3]]), offset])


def places_alike(first: np.ndarray, second: np.ndarray) -> bool:
    """Whether two (3, 4) voxel -> mm affines place the voxels alike: their linear parts within a
    thousandth of ``first``'s largest voxel side, their origins within a tenth of its smallest."""
    sides = np.linalg.norm(first[:, :3], axis=0)
    return bool(np.allclose(first[:, :3], second[:, :3], rtol=0, atol=1e-3 * sides.max())
                and np.allclose(first[:, 3], second[:, 3], rtol=0, atol=0.1 * sides.min()))


def check_same_placement(path: str, qform: np.ndarray, sform: np.ndarray) -> None:
    """ValueError naming ``path`` when its header's qform and sform, (3, 4) affines, place the
    voxels differently: ITK follows one and writes files for the scan with it as both, nibabel
    and FSL follow the sform, other tools the qform, so a prediction would lie elsewhere than the
    scan in some of them."""
    if not places_alike(qform, sform):
        moved = float(np.linalg.norm(qform[:, 3] - sform[:, 3]))
        raise ValueError(f"{path}: its qform and sform (both set) place the voxels differently (origins "
                         f"{moved:.3g} mm apart), and tools differ on which they follow; save the scan with one "
                         "geometry")


def check_scaling_precision(path: str, stored: np.ndarray, slope: float, intercept: float) -> None:
    """ValueError naming ``path`` when the header's scaling (``slope``, ``intercept``) of its
    ``stored`` integer voxels gives values that float32, what ITK returns scaled voxels as, cannot
    hold one level apart (e.g. scl_inter 1e9: steps of 64): the scan's contrast would be lost in
    rounding before it is normalised."""
    if not stored.size:
        return
    largest = max(abs(slope * float(stored.min()) + intercept), abs(slope * float(stored.max()) + intercept))
    step = float(np.spacing(np.float32(largest)))
    if step > abs(slope):
        raise ValueError(f"{path}: its header scales the voxels by scl_slope {slope:g} and scl_inter {intercept:g}, "
                         f"and at {largest:.3g} the float32 values ITK reads them as are {step:g} apart, where the "
                         f"stored levels are {abs(slope):g} apart; save the intensities without that scaling")


def check_sform(path: str, img: sitk.Image, sform: np.ndarray | None) -> None:
    """ValueError naming ``path`` when the header's ``sform`` (:func:`check_nifti_file`) places the
    voxels elsewhere than the geometry ITK read: ITK takes the voxel sizes from pixdim, and falls
    back to them when the sform is scaled unlike them, while nibabel, FSL and most viewers follow
    the sform, so a prediction written with ITK's geometry would not overlay the scan there. (A
    qform beside the sform must place the voxels alike: :func:`check_same_placement`.)"""
    if sform is None:
        return
    to_ras = np.diag([-1.0, -1.0, 1.0])  # ITK's LPS frame -> the header's RAS
    linear = to_ras @ np.reshape(img.GetDirection(), (3, 3)) @ np.diag(img.GetSpacing())
    if not places_alike(np.column_stack([linear, to_ras @ np.array(img.GetOrigin())]), sform):
        raise ValueError(f"{path}: its sform places the voxels elsewhere than the geometry ITK reads (a "
                         "sheared or rescaled sform?); a prediction would not overlay the scan in tools that "
                         "follow the sform; save the scan with one geometry")


def read_nifti(path: str) -> tuple[np.ndarray, tuple[float, ...]]:
    """(array in ``GetArrayFromImage`` order, e.g. (Z, H, W); spacing in the same axis order, mm)
    of a NIfTI file; OSError naming the file when it cannot be read, is truncated or corrupt,
    ValueError as :func:`check_nifti_file` (NaN or inf, undefined spacing, a same-named twin)."""
    check_nifti_file(path)
    img = _read_itk(path)
    return voxels(img, path), tuple(float(s) for s in reversed(img.GetSpacing()))


def voxels(img: sitk.Image, path: str) -> np.ndarray:
    """``GetArrayFromImage`` of ``img`` read from ``path``; ValueError when the header's scaling
    (scl_slope, scl_inter) made voxels NaN or inf (:func:`check_nifti_file` saw the raw values)."""
    array = sitk.GetArrayFromImage(img)
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise ValueError(f"{path}: {int(array.size - np.isfinite(array).sum())} voxels are NaN or inf after "
                         "the header's scaling (scl_slope, scl_inter)")
    return array


def read_scan(path: str) -> Case:
    """A 3-D NIfTI scan as a ``Case`` named by its stem, with its raw intensities and geometry.

    Orientation: the array is ITK's (k, j, i) voxel order, i.e. (Z, H, W) with the file's third
    voxel axis as the slice axis, which is how short-axis stacks are stored (one acquired plane
    per k). Nothing is resampled or flipped: ``origin`` and ``direction`` are kept, so a
    prediction written with them (:func:`write_nifti`) overlays exactly on the scan, whatever its
    orientation. OSError (unreadable, truncated) or ValueError (as :func:`check_nifti_file`; not
    3-D, an in-plane voxel axis of one voxel, an in-plane voxel side over twice the slice
    spacing, or more slices than voxels along an in-plane axis in a file without geometry or
    with slices over 1.5 times thicker than their pixels: the slices would not be the acquired
    planes) naming the file.

    A header without orientation (qform_code = sform_code = 0, as ANALYZE-era tools write) sets
    ``unoriented``: viewers then place the voxels by their sizes alone, each by its own
    convention (ITK unflipped, nibabel and FSL with x mirrored), so files written for the scan
    keep both codes 0 (:func:`write_nifti`) and every viewer overlays them as it shows the scan.
    """
    sform, unoriented = check_nifti_file(path)
    img = _read_itk(path)
    if img.GetDimension() != 3 or img.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError(f"{path}: expected a 3-D stack of 2-D slices, got a {img.GetDimension()}-D image"
                         + (f" with {img.GetNumberOfComponentsPerPixel()} components"
                            if img.GetNumberOfComponentsPerPixel() != 1 else ""))
    (si, sj, sk), (ni, nj, nk) = img.GetSpacing(), img.GetSize()
    if min(ni, nj) == 1:  # e.g. one slice saved as a (1, H, W) array: the "slices" would be lines
        raise ValueError(f"{path}: voxel axis {'i' if ni == 1 else 'j'} has one voxel (size {ni} x {nj} x {nk}), so "
                         "its slices would be lines; store the slices along the third voxel axis")
    if nk > 1:
        check_voxel_sides(path, (si, sj, sk), "voxel size (x, y, z)")
    else:
        check_voxel_sides(path, (si, sj), "voxel size (x, y)")
    thick = max((si, "i"), (sj, "j"))
    if thick[0] > 2 * sk and nk > 1:
        raise ValueError(f"{path}: voxel axis {thick[1]} is {thick[0]:g} mm thick, over twice the slice axis k's "
                         f"{sk:g} mm; store the stack with its slices along the third voxel axis")
    check_sform(path, img, sform)
    case = Case(nifti_stem(path), voxels(img, path),
                spacing=tuple(float(s) for s in reversed(img.GetSpacing())),
                origin=tuple(float(o) for o in img.GetOrigin()),
                direction=tuple(float(d) for d in img.GetDirection()), unoriented=unoriented)
    # More slices than voxels along an in-plane axis is a stack saved in (z, y, x) order, not a
    # short-axis stack, where a file gives no spacing or gives its slices thicker than their
    # pixels (e.g. an array saved with its voxel sizes in (x, y, z) order); a 3-D volume of
    # near-cubic voxels may have more slices.
    no_geometry = header_free(case)
    if nk > min(ni, nj) and (no_geometry or sk > 1.5 * max(si, sj)):
        why = "no geometry in its header" if no_geometry else f"slices {sk:g} mm thick of {max(si, sj):g} mm pixels"
        raise ValueError(f"{path}: {nk} slices of {ni} x {nj} voxels and {why}: a stack saved in (z, y, x) order? "
                         "Store the slices along the third voxel axis, with the scan's spacing")
    return case


def unrotated_at_origin(case: Case) -> bool:
    """True for a volume at the origin with an identity direction up to axis signs (array tools
    write identity; an identity affine reads back in ITK's LPS frame as diag(-1, -1, 1))."""
    return (case.origin is not None and np.allclose(case.origin, 0.0)
            and np.allclose(np.abs(case.direction), np.eye(3).ravel()))


def header_free(case: Case) -> bool:
    """True for a volume read from a NIfTI written without geometry: unit spacing, and
    :func:`unrotated_at_origin`."""
    return case.spacing is not None and np.allclose(case.spacing, 1.0) and unrotated_at_origin(case)


def check_same_grid(what: str, other: Case, ref: Case, ref_name: str = "the scan") -> None:
    """ValueError naming ``what`` unless ``other`` lies on ``ref``'s voxel grid: the same shape,
    spacing (to 0.1%), direction (to 1e-3) and origin (to a tenth of the smallest voxel side).
    Geometry that either side lacks (h5 files without it) is not compared."""
    if other.image.shape != ref.image.shape:
        raise ValueError(f"{what}: shape {other.image.shape} differs from {ref_name}'s {ref.image.shape}")
    checks = [("spacing", lambda a, b: np.allclose(a, b, rtol=1e-3)),
              ("direction", lambda a, b: np.allclose(a, b, atol=1e-3)),
              ("origin", lambda a, b: np.allclose(a, b, rtol=0, atol=0.1 * min(ref.spacing or (1.0,))))]
    for key, same in checks:
        a, b = getattr(other, key), getattr(ref, key)
        if a is not None and b is not None and not same(a, b):
            raise ValueError(f"{what}: {key} {tuple(round(v, 4) for v in a)} differs from {ref_name}'s "
                             f"{tuple(round(v, 4) for v in b)}")


def read_labels_on(path: str, ref: Case, top: int = NUM_CLASSES - 1, ref_name: str = "the scan") -> np.ndarray:
    """(Z, H, W) uint8 label volume of the NIfTI or h5 (key ``label``) ``path``, whole numbers in
    0..``top``, on ``ref``'s grid (:func:`check_same_grid`; a NIfTI without geometry,
    :func:`header_free`, is matched by shape; an h5 file's geometry attributes are compared where
    both record them). A ``ref`` without an origin and direction (h5 data) has no orientation to
    check against: a NIfTI :func:`unrotated_at_origin` is matched by shape, any other must lie on
    the grid :func:`write_nifti` gives ``ref`` (at the origin, unrotated). OSError or ValueError
    naming the file otherwise."""
    if path.lower().endswith(".h5"):
        labels = read_h5_labels(path, top)
        check_same_grid(path, labels, ref, ref_name)
        return labels.image
    labels = read_scan(path)
    if header_free(labels) or (ref.direction is None and unrotated_at_origin(labels)):
        labels = Case(labels.name, labels.image)
    elif ref.direction is None:
        ref = Case(ref.name, ref.image, spacing=ref.spacing, origin=(0.0, 0.0, 0.0), direction=tuple(np.eye(3).ravel()))
        ref_name = f"{ref_name} (at the origin, unrotated: it has no geometry)"
    check_same_grid(path, labels, ref, ref_name)
    check_labels(path, labels.image, top)
    return labels.image.astype(np.uint8)  # whole numbers, checked; a float file would fail the metrics


NIFTI_EXTENSIONS = (".nii.gz", ".nii")


def is_nifti(path: str) -> bool:
    """True for a ``.nii`` or ``.nii.gz`` name, in any letter case (ITK reads ``.NII.GZ`` too)."""
    return path.lower().endswith(NIFTI_EXTENSIONS)


def nifti_stem(path: str) -> str:
    """``dir/subject3_DE.nii.gz`` (or ``.NII.GZ``, ``.nii``) -> ``subject3_DE``."""
    name = os.path.basename(path)
    for ext in NIFTI_EXTENSIONS:
        if name.lower().endswith(ext):
            return name[:-len(ext)]
    return name


def same_name_files(path: str) -> list[str]:
    """The other NIfTI files beside ``path`` with its stem (``a.nii`` beside ``a.nii.gz``): given
    one, ITK's NIfTI reader may read the other's voxels under this file's header."""
    folder, name = os.path.split(os.path.abspath(path))
    if not is_nifti(name):
        return []
    stem = nifti_stem(name)
    try:
        names = os.listdir(folder)
    except OSError:  # a missing or unlistable folder: reading the file itself will say what is wrong
        return []
    return sorted(os.path.join(folder, f) for f in names if f != name and is_nifti(f) and nifti_stem(f) == stem)


def write_nifti(path: str, array: np.ndarray, spacing=None, origin=None, direction=None,
                unoriented: bool = False, note: str | None = None) -> None:
    """Write ``array`` (e.g. (Z, H, W)) as NIfTI; ``spacing`` in the array's axis order (mm),
    ``origin`` and ``direction`` as ITK's (x, y, z) and row-major 3x3 (see :func:`read_scan`).
    ``unoriented`` writes qform_code = sform_code = 0, as the scan read had (ITK always writes
    1); ``note`` goes to the header's ``descrip`` (up to 80 characters). Atomic (:func:`atomic_path`)."""
    img = sitk.GetImageFromArray(array)
    if note is not None:
        img.SetMetaData("ITK_FileNotes", note)  # ITK's name for descrip
    if spacing is not None:
        img.SetSpacing(tuple(float(s) for s in reversed(spacing)))  # ITK wants (x, y, z)
    if origin is not None:
        img.SetOrigin(tuple(float(o) for o in origin))
    if direction is not None:
        img.SetDirection(tuple(float(d) for d in direction))
    ext = ".nii.gz" if path.endswith(".nii.gz") else os.path.splitext(path)[1]  # ITK picks the format by it
    with atomic_path(path, ext) as tmp:
        sitk.WriteImage(img, tmp)
        if unoriented:
            clear_orientation_codes(tmp)


def clear_orientation_codes(path: str) -> None:
    """Set qform_code and sform_code of the NIfTI-1 file ``path`` (as ITK writes it) to 0."""
    opener = gzip.open if path.lower().endswith(".gz") else open
    with opener(path, "rb") as f:
        data = bytearray(f.read())
    order = "<" if struct.unpack("<i", data[:4])[0] == 348 else ">"
    data[252:256] = struct.pack(order + "2h", 0, 0)
    with opener(path, "wb") as f:
        f.write(data)
