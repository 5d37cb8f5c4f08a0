"""Load-time checks: no bad file may train or score silently (truncated NIfTI, labels out of
range, non-finite images, misaligned keys)."""
import dataclasses
import gzip
import os
import shutil
import struct

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import orientation_codes, without_orientation
from dataloaders import io
from dataloaders.acdc import SliceDataset, VolumeSet, make_split


def nifti_bytes(tmp_path, array):
    path = str(tmp_path / "full.nii.gz")
    io.write_nifti(path, array)
    return path, open(path, "rb").read()


def test_truncated_or_corrupt_nifti_is_named(tmp_path):
    rng = np.random.default_rng(0)
    array = rng.random((4, 32, 32)).astype(np.float32)  # incompressible: a cut removes voxels
    path, data = nifti_bytes(tmp_path, array)
    assert np.array_equal(io.read_nifti(path)[0], array)
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(OSError, match="cut.nii.gz: corrupt or truncated NIfTI"):
        io.read_nifti(str(cut))
    # a complete gzip stream of a NIfTI whose voxel data stops early: the header's size says so
    raw = gzip.decompress(data)
    short = tmp_path / "short.nii.gz"
    short.write_bytes(gzip.compress(raw[: len(raw) - 1000]))
    with pytest.raises(OSError, match=r"short.nii.gz: truncated NIfTI \(\d+ bytes of data, the header needs \d+\)"):
        io.read_nifti(str(short))
    flipped = bytearray(data)
    flipped[-6] ^= 0xFF  # the CRC no longer matches
    (tmp_path / "crc.nii.gz").write_bytes(bytes(flipped))
    with pytest.raises(OSError, match="crc.nii.gz: corrupt or truncated"):
        io.read_nifti(str(tmp_path / "crc.nii.gz"))
    plain = tmp_path / "plain.nii"
    plain.write_bytes(raw[:-1000])
    with pytest.raises(OSError, match="plain.nii: truncated NIfTI"):
        io.read_nifti(str(plain))


@pytest.mark.parametrize("side", [0.0, float("nan"), float("inf"), -1.5])
def test_a_header_without_a_voxel_size_is_refused(tmp_path, side):
    import SimpleITK as sitk

    path = tmp_path / "a.nii"
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((2, 4, 4), np.int16)), str(path))
    data = bytearray(path.read_bytes())
    data[80:84] = np.float32(side).tobytes()  # pixdim[1], the x side, which ITK would read as 1 mm
    data[254:256] = bytes(2)  # sform_code 0: the qform alone (with pixdim) places the voxels
    path.write_bytes(bytes(data))
    # A negative side: ITK read it as a flip, nibabel as its size, so a prediction written with
    # ITK's reading showed mirrored on the scan in nibabel (exit 0).
    with pytest.raises(ValueError, match=r"a.nii: voxel size \((0.0|nan|inf|-1.5), 1.0, 1.0\) in its header is zero, "
                                         "negative or not finite"):
        io.read_scan(str(path))


@pytest.mark.parametrize("units, name", [(1, "metres"), (3, "micrometres")])
def test_a_header_in_other_units_than_mm_is_refused(tmp_path, units, name):
    # ITK converts metres and microns to mm, nibabel and FSL do not: a prediction written in mm
    # for a scan in metres lay 1000 times larger than the scan there (exit 0).
    path = tmp_path / "a.nii"
    io.write_nifti(str(path), np.arange(32, dtype=np.int16).reshape(2, 4, 4), spacing=(0.008, 0.0015, 0.0015))
    data = bytearray(path.read_bytes())
    data[123] = (data[123] & ~7) | units
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=f"a.nii: its header gives lengths in {name} \\(xyzt_units\\)"):
        io.read_scan(str(path))


@pytest.mark.parametrize("spacing", [(0.01, 0.004347, 0.004347), (10.0, 1e-4, 1e-4), (1e5, 1e5, 1e5)])
def test_voxel_sizes_no_mri_scan_has_are_refused(tmp_path, spacing):
    # Found by a probe: metres written as mm (or 1e-4 mm voxels) were segmented as all background
    # by a --target_spacing model, exit 0; 1e5 mm voxels failed to allocate 44 TB.
    image = np.arange(2 * 16 * 16, dtype=np.int16).reshape(2, 16, 16)
    path = tmp_path / "a.nii.gz"
    io.write_nifti(str(path), image, spacing=spacing)
    with pytest.raises(ValueError, match=r"a.nii.gz: voxel size \(x, y, z\) \(.*\) mm is not an MRI voxel's \(0.05 to "
                                         r"100 mm\)"):
        io.read_scan(str(path))
    h5 = tmp_path / "v.h5"
    io.write_h5(str(h5), {"image": image.astype(np.float32) / 511}, spacing)
    with pytest.raises(ValueError, match=r"v.h5: attribute spacing \(y, x\) .* is not an MRI voxel's"):
        io.read_h5(str(h5))
    io.write_nifti(str(path), image, spacing=(10.0, 0.7, 0.7))
    assert io.read_scan(str(path)).spacing == pytest.approx((10.0, 0.7, 0.7))
    io.write_h5(str(h5), {"image": image.astype(np.float32) / 511}, (1e4, 0.7, 0.7))  # a stack's z too
    with pytest.raises(ValueError, match=r"v.h5: attribute spacing z \(10000.0,\) mm is not an MRI voxel's"):
        io.read_h5(str(h5))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nan_or_inf_voxels_in_a_nifti_are_refused(tmp_path, dtype):
    # ITK itself reads them as 0, so without this check a NaN scan would be segmented silently.
    array = np.ones((3, 4, 5), dtype)
    array[0, 1, 2], array[2, 3, 4] = np.nan, -np.inf
    path = str(tmp_path / "nan.nii.gz")
    io.write_nifti(path, array)
    with pytest.raises(ValueError, match=r"nan.nii.gz: 2 voxels are NaN or inf"):
        io.read_nifti(path)
    with pytest.raises(ValueError, match="nan.nii.gz: 2 voxels"):
        io.read_scan(path)
    array[0, 1, 2] = array[2, 3, 4] = 7
    io.write_nifti(path, array)
    assert io.read_scan(path).image[2, 3, 4] == 7


def test_a_scan_whose_sform_differs_from_what_itk_reads_is_refused(tmp_path):
    # A sform alone, scaled unlike the voxel sizes: ITK takes the sizes from pixdim; nibabel and FSL
    # follow the sform, so a prediction written with ITK's geometry would not overlay the scan there.
    path = tmp_path / "sheared.nii"
    io.write_nifti(str(path), np.ones((2, 4, 5), np.int16), spacing=(5.0, 1.5, 1.5), origin=(10.0, -20.0, 30.0))
    assert io.read_scan(str(path)).origin == (10.0, -20.0, 30.0)  # ITK writes one geometry into both
    header = bytearray(path.read_bytes())
    assert struct.unpack("<h", header[254:256])[0] > 0
    srow_x = list(struct.unpack("<4f", header[280:296]))
    header[280:296] = struct.pack("<4f", 2 * srow_x[0], srow_x[1], srow_x[2], srow_x[3] + 50)
    struct.pack_into("<h", header, 252, 0)  # the sform alone (with the qform too: the next test's case)
    path.write_bytes(bytes(header))
    with pytest.raises(ValueError, match="sheared.nii: its sform places the voxels elsewhere than the geometry ITK reads"):
        io.read_scan(str(path))


@pytest.mark.parametrize("edit, message", [
    # qfac -0.5 with the qform alone: ITK read it as -1, nibabel as 1 (the prediction mirrored along z there)
    ({76: ("<f", -0.5), 254: ("<h", 0)}, r"pixdim\[0\] \(qfac\) is -0.5 in its header, not 1 or -1"),
    ({256: ("<f", float("nan"))}, r"its qform \(quatern_b..d, qoffset_x..z\) holds NaN or inf"),  # ITK: no rotation
    ({268: ("<f", float("nan")), 254: ("<h", 0)}, "its qform .* holds NaN or inf"),  # ITK: the origin 0
    # vox_offset 0 in a .nii: ITK read the voxels from byte 348, nibabel from 352 (shifted 2 voxels)
    ({108: ("<f", 0.0)}, "vox_offset 0 in its header lies before byte 352"),
    # Found by a probe: a qform and a rigidly moved sform, both set: ITK read the sform and wrote it
    # as both into the prediction, which lay 40 mm off the scan in tools that follow the qform.
    ({292: ("<f", 40.0)}, r"its qform and sform \(both set\) place the voxels differently \(origins 40 mm apart\)"),
    # Found by a probe: ITK scales stored integers into float32, so an offset of 1e9 kept steps of 64
    # of a scan whose levels are 1 apart (17 grey levels of tissue, segmented at exit 0).
    ({112: ("<f", 1.0), 116: ("<f", 1e9)}, r"its header scales the voxels by scl_slope 1 and scl_inter 1e\+09, and "
                                          r"at 1e\+09 the float32 values ITK reads them as are 64 apart"),
    # A mutation audit found these unpinned: origins 0.5 mm apart at 1.5 mm pixels (the tolerance is a
    # tenth of a pixel), and an sform mirrored along x about the qform's origin (the same origin: only
    # the linear parts differ, and ITK follows the sform, so check_sform sees nothing).
    ({292: ("<f", 0.5)}, r"its qform and sform \(both set\) place the voxels differently \(origins 0.5 mm apart\)"),
    ({280: ("<f", 1.5)}, r"its qform and sform \(both set\) place the voxels differently \(origins 0 mm apart\)"),
    # Found by a mutation audit: scl_slope 0 with an offset: ITK added scl_inter, nibabel and the standard
    # ignore the scaling (two readings of one scan).
    ({112: ("<f", 0.0), 116: ("<f", 5.0)}, "scl_slope 0 with scl_inter 5 in its header, which tools read differently"),
])
def test_header_fields_that_tools_read_differently_are_refused(tmp_path, edit, message):
    path = tmp_path / "scan.nii"
    io.write_nifti(str(path), np.arange(3 * 8 * 9, dtype=np.int16).reshape(3, 8, 9), spacing=(8.0, 1.5, 1.5))
    header = bytearray(path.read_bytes())
    for at, (fmt, value) in edit.items():
        struct.pack_into(fmt, header, at, value)
    path.write_bytes(bytes(header))
    with pytest.raises(ValueError, match=f"scan.nii: {message}"):
        io.read_scan(str(path))


def test_a_header_scaling_that_float32_holds_is_applied(tmp_path):
    path = tmp_path / "scan.nii"
    array = np.arange(3 * 8 * 9, dtype=np.int16).reshape(3, 8, 9)
    io.write_nifti(str(path), array, spacing=(8.0, 1.5, 1.5))
    header = bytearray(path.read_bytes())
    struct.pack_into("<2f", header, 112, 0.5, 1000.0)  # steps of 0.5 at 1107: float32 holds them
    path.write_bytes(bytes(header))
    assert np.array_equal(io.read_scan(str(path)).image, 0.5 * array + 1000)


def test_header_scalings_and_placements_that_tools_agree_on_are_read(tmp_path):
    # A mutation audit found these unpinned: they were refused by ">=" for ">" (float32 steps of 1 at 2^23 hold
    # levels 1 apart exactly) and by an origin tolerance of 0 (0.1 mm at 1.5 mm pixels is rounding).
    array = np.arange(3 * 8 * 9, dtype=np.int16).reshape(3, 8, 9)
    for edit, expected in [({112: ("<f", 1.0), 116: ("<f", 2.0 ** 23)}, array + 2.0 ** 23),
                           ({112: ("<f", 0.0), 116: ("<f", 0.0)}, array),  # slope 0 and no offset: no scaling
                           ({292: ("<f", 0.1)}, array)]:
        path = tmp_path / "scan.nii"
        io.write_nifti(str(path), array, spacing=(8.0, 1.5, 1.5))
        header = bytearray(path.read_bytes())
        for at, (fmt, value) in edit.items():
            struct.pack_into(fmt, header, at, value)
        path.write_bytes(bytes(header))
        assert np.array_equal(io.read_scan(str(path)).image, expected)


def test_a_scaling_is_checked_at_its_largest_value_of_either_sign(tmp_path):
    # A mutation audit found this unpinned: only the largest stored value was scaled, so one voxel at -1e9
    # (float32 steps of 64 there) passed beside values 0..215.
    path = tmp_path / "scan.nii"
    array = np.arange(3 * 8 * 9, dtype=np.int32).reshape(3, 8, 9)
    array[0, 0, 0] = -10 ** 9
    io.write_nifti(str(path), array, spacing=(8.0, 1.5, 1.5))
    header = bytearray(path.read_bytes())
    struct.pack_into("<2f", header, 112, 1.0, 1.0)
    path.write_bytes(bytes(header))
    with pytest.raises(ValueError, match="scan.nii: its header scales the voxels by scl_slope 1 and scl_inter 1, and "
                                         "at 1e\\+09 the float32 values ITK reads them as are 64 apart"):
        io.read_scan(str(path))


def test_the_qform_affine_of_quarter_turns_by_hand():
    # A mutation audit found these unpinned: the half turn about z has a = 0, so the terms in a (the
    # quaternion's real part, sqrt(1 - b^2 - c^2 - d^2)) were never tested, nor a qfac of 0 (read as 1).
    r = np.sqrt(0.5)
    sizes = (1.0, 2.0, 3.0, 4.0, 1, 1, 1, 1)
    # 90 degrees about z: x -> y, y -> -x; columns scaled by the voxel sizes 2, 3, 4.
    assert np.allclose(io.qform_affine((0.0, 0.0, r, 0.0, 0.0, 0.0), sizes)[:, :3], [[0, -3, 0], [2, 0, 0], [0, 0, 4]])
    # 90 degrees about x: y -> z, z -> -y.
    assert np.allclose(io.qform_affine((r, 0.0, 0.0, 0.0, 0.0, 0.0), sizes)[:, :3], [[2, 0, 0], [0, 0, -4], [0, 3, 0]])
    # 90 degrees about y: z -> x, x -> -z.
    assert np.allclose(io.qform_affine((0.0, r, 0.0, 0.0, 0.0, 0.0), sizes)[:, :3], [[0, 0, 4], [0, 3, 0], [-2, 0, 0]])
    assert np.allclose(io.qform_affine((0.0, 0.0, 0.0, 0.0, 0.0, 0.0), (0.0, *sizes[1:]))[:, :3], np.diag([2, 3, 4]))


def test_the_qform_affine_by_hand():
    # quatern (0, 0, 1): a half turn about z; qfac -1 flips k; offsets kept.
    affine = io.qform_affine((0.0, 0.0, 1.0, 5.0, 6.0, 7.0), (-1.0, 2.0, 3.0, 4.0, 1, 1, 1, 1))
    assert np.allclose(affine, [[-2, 0, 0, 5], [0, -3, 0, 6], [0, 0, -4, 7]])
    assert np.allclose(io.qform_affine((0.0, 0.0, 0.0, 0.0, 0.0, 0.0), (1.0, 2.0, 3.0, 4.0, 1, 1, 1, 1))[:, :3],
                       np.diag([2, 3, 4]))


def test_a_stack_saved_in_zyx_order_with_voxel_sizes_is_refused(tmp_path):
    # A (Z, H, W) array saved with nibabel and the sizes diag(4.3, 4.3, 10): 48 "slices" of 9 x 48
    # voxels were segmented at exit 0 (Dice 0.31-0.52 for 0.44-0.78); only header-free files were caught.
    path = tmp_path / "zyx.nii.gz"
    stack = np.arange(48 * 48 * 9, dtype=np.int16).reshape(48, 48, 9)  # (k, j, i): i holds the 9 slices
    io.write_nifti(str(path), stack, spacing=(10.0, 4.3, 4.3))
    with pytest.raises(ValueError, match="zyx.nii.gz: 48 slices of 9 x 48 voxels and slices 10 mm thick of 4.3 mm "
                                         r"pixels: a stack saved in \(z, y, x\) order\?"):
        io.read_scan(str(path))
    io.write_nifti(str(path), stack, spacing=(1.0, 1.1, 1.1))  # near-cubic voxels: a 3-D volume, read
    assert io.read_scan(str(path)).image.shape == (48, 48, 9)


def test_a_scan_without_orientation_keeps_none_in_what_is_written_for_it(tmp_path):
    # ITK writes qform_code = sform_code = 1 whatever it read. For a header without orientation
    # nibabel and FSL mirror x (ITK does not), so a prediction written with codes 1 showed
    # mirrored on such a scan there (nibabel's affines of the two differed in x and y).
    array = np.arange(2 * 4 * 5, dtype=np.int16).reshape(2, 4, 5)
    scan, oriented = tmp_path / "scan.nii.gz", tmp_path / "oriented.nii.gz"
    io.write_nifti(str(scan), array, spacing=(8.0, 1.5, 1.25))
    shutil.copy(scan, oriented)
    assert orientation_codes(scan) == (1, 1)
    without_orientation(scan)
    read = io.read_scan(str(scan))
    assert read.unoriented and not io.read_scan(str(oriented)).unoriented
    assert read.spacing == (8.0, 1.5, 1.25) and np.array_equal(read.image, array)
    out = tmp_path / "pred.nii.gz"
    io.write_nifti(str(out), read.image, read.spacing, read.origin, read.direction, read.unoriented)
    assert orientation_codes(out) == (0, 0)
    again = io.read_scan(str(out))
    assert again.unoriented and again.spacing == read.spacing and again.origin == read.origin
    assert again.direction == read.direction and np.array_equal(again.image, array)
    # Through a converted data root (h5) the same holds for test_2D_fully.py --save_nii.
    root = str(tmp_path / "root")
    for case in (read, io.read_scan(str(oriented))):
        io.write_case(root, dataclasses.replace(case, image=case.image / array.max()), slices=False)
    assert io.read_case(root, "scan").unoriented and not io.read_case(root, "oriented").unoriented


def nifti2_of(nifti1: bytes) -> bytes:
    """The same image in a NIfTI-2 file (nifti2.h's field offsets), from a little-endian NIfTI-1 one."""
    field = lambda fmt, at: struct.unpack_from("<" + fmt, nifti1, at)  # noqa: E731
    header = bytearray(544)  # 540 and the 4-byte extension flag
    struct.pack_into("<i8s2h8q", header, 0, 540, b"n+2\0\r\n\x1a\n", *field("2h", 70), *field("8h", 40))
    struct.pack_into("<8dq2d", header, 104, *field("8f", 76), 544, *field("2f", 112))
    struct.pack_into("<2i6d12d", header, 344, *field("2h", 252), *field("6f", 256), *field("12f", 280))
    struct.pack_into("<i", header, 500, nifti1[123])
    return bytes(header) + nifti1[int(field("f", 108)[0]):]


def test_a_nifti2_file_is_named_as_one_simpleitk_cannot_read(tmp_path):
    one, two = tmp_path / "one.nii", tmp_path / "two.nii"
    io.write_nifti(str(one), np.arange(40, dtype=np.int16).reshape(2, 4, 5), spacing=(5.0, 1.5, 1.25))
    two.write_bytes(nifti2_of(one.read_bytes()))
    with pytest.raises(RuntimeError, match="Unable to determine ImageIO reader"):
        sitk.ReadImage(str(two))  # when SimpleITK reads NIfTI-2, check_nifti_file must check its header
    with pytest.raises(OSError, match="two.nii: a NIfTI-2 file, which SimpleITK cannot read; save it as NIfTI-1"):
        io.read_scan(str(two))


def test_voxels_made_infinite_by_the_header_scaling_or_complex_are_refused(tmp_path):
    path = tmp_path / "scaled.nii"
    io.write_nifti(str(path), np.full((2, 4, 5), 1e10, np.float32))
    header = bytearray(path.read_bytes())
    header[112:116] = struct.pack("<f", 1e30)  # scl_slope: finite raw values, infinite voxels
    path.write_bytes(bytes(header))
    for read in (io.read_nifti, io.read_scan):
        with pytest.raises(ValueError, match="scaled.nii: 40 voxels are NaN or inf after the header's scaling"):
            read(str(path))
    complex_path = str(tmp_path / "complex.nii.gz")
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((2, 4, 5), np.complex64)), complex_path)
    for read in (io.read_nifti, io.read_scan):
        with pytest.raises(ValueError, match=r"complex.nii.gz: complex voxels \(NIfTI datatype 32\)"):
            read(complex_path)


@pytest.mark.parametrize("spacing_xyz, thick", [((10.0, 1.6, 1.6), "i is 10 mm"), ((1.6, 10.0, 1.6), "j is 10 mm"),
                                                 ((1.5, 1.5, 10.0), None), ((1.25, 1.25, 1.25), None)])
def test_a_stack_whose_slices_are_not_the_third_axis_is_refused(tmp_path, spacing_xyz, thick):
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(np.zeros((5, 6, 7), np.int16))
    img.SetSpacing(spacing_xyz)
    sitk.WriteImage(img, str(tmp_path / "stack.nii.gz"))
    if thick is None:
        assert io.read_scan(str(tmp_path / "stack.nii.gz")).spacing == tuple(reversed(spacing_xyz))
    else:
        with pytest.raises(ValueError, match=f"stack.nii.gz: voxel axis {thick} thick, over twice the slice axis"):
            io.read_scan(str(tmp_path / "stack.nii.gz"))


@pytest.mark.parametrize("array_shape, axis", [((64, 64, 1), "i"), ((64, 1, 64), "j")])
def test_one_slice_stored_across_the_slice_axis_is_refused(tmp_path, array_shape, axis):
    # (64, 64, 1) in array order is one 64x64 slice with its single voxel along i: read as
    # stored, it would be 64 slices of 1x64 pixels, each stretched to a whole image.
    img = sitk.GetImageFromArray(np.zeros(array_shape, np.int16))
    img.SetSpacing((10.0, 3.0, 3.0) if axis == "i" else (3.0, 10.0, 3.0))
    sitk.WriteImage(img, str(tmp_path / "one.nii.gz"))
    with pytest.raises(ValueError, match=f"one.nii.gz: voxel axis {axis} has one voxel"):
        io.read_scan(str(tmp_path / "one.nii.gz"))


@pytest.mark.parametrize("array_shape, geometry, refused", [((9, 64, 64), False, False), ((64, 64, 9), False, True),
                                                      ((64, 9, 64), False, True), ((64, 64, 9), True, False)])
def test_a_header_free_stack_in_zyx_order_is_refused(tmp_path, array_shape, geometry, refused):
    # A (Z, H, W) array saved as (x, y, z) without a header: 64 "slices" of 9 x 64 voxels, at exit 0.
    # An isotropic scan with its geometry is read as stored.
    img = sitk.GetImageFromArray(np.zeros(array_shape, np.int16))
    if geometry:
        img.SetSpacing((1.5, 1.5, 1.5))
        img.SetOrigin((10.0, -4.0, 2.0))
    sitk.WriteImage(img, str(tmp_path / "bare.nii.gz"))
    if refused:
        with pytest.raises(ValueError, match=r"bare.nii.gz: 64 slices of (9 x 64|64 x 9) voxels and no geometry in "
                                             r"its header: a stack saved in \(z, y, x\) order\?"):
            io.read_scan(str(tmp_path / "bare.nii.gz"))
    else:
        assert io.read_scan(str(tmp_path / "bare.nii.gz")).image.shape == array_shape


def test_check_same_grid_names_what_differs():
    image = np.zeros((2, 3, 4))
    ref = io.Case("ref", image, spacing=(10.0, 1.5, 1.5), origin=(1.0, 2.0, 3.0), direction=tuple(np.eye(3).ravel()))
    same = io.Case("s", image.copy(), spacing=(10.0, 1.5, 1.5), origin=(1.0, 2.0, 3.1), direction=ref.direction)
    io.check_same_grid("s.nii.gz", same, ref)  # 0.1 mm off: within a tenth of a voxel
    io.check_same_grid("bare", io.Case("b", image), ref)  # no geometry on one side: shape only
    flipped = tuple((np.eye(3) * [-1, 1, 1]).ravel())
    for other, message in [(io.Case("x", np.zeros((2, 3, 5))), r"x.nii.gz: shape \(2, 3, 5\) differs from the scan's"),
                           (io.Case("x", image, spacing=(10.0, 1.5, 3.0)), "x.nii.gz: spacing"),
                           (io.Case("x", image, direction=flipped), "x.nii.gz: direction"),
                           (io.Case("x", image, origin=(1.0, 2.0, 3.2)), r"x.nii.gz: origin \(1.0, 2.0, 3.2\) differs")]:
        with pytest.raises(ValueError, match=message):
            io.check_same_grid("x.nii.gz", other, ref)


def test_read_labels_on_matches_geometry_or_a_file_without_any(tmp_path):
    import SimpleITK as sitk

    ref = io.Case("ref", np.zeros((2, 3, 4)), spacing=(8.0, 1.5, 1.5), origin=(5.0, 6.0, 7.0),
                  direction=tuple(np.eye(3).ravel()))
    labels = np.zeros((2, 3, 4), np.uint8)
    labels[1, 1, 1:3] = 2
    bare = sitk.GetImageFromArray(labels)  # unit spacing, zero origin, identity direction
    sitk.WriteImage(bare, str(tmp_path / "bare.nii.gz"))
    bare.SetDirection((-1, 0, 0, 0, -1, 0, 0, 0, 1))  # an identity affine, as ITK reads it
    sitk.WriteImage(bare, str(tmp_path / "ras.nii.gz"))
    for name in ("bare", "ras"):
        assert np.array_equal(io.read_labels_on(str(tmp_path / f"{name}.nii.gz"), ref), labels)
    bare.SetOrigin((0.0, 0.0, 2.0))  # geometry of its own, not the scan's
    sitk.WriteImage(bare, str(tmp_path / "moved.nii.gz"))
    with pytest.raises(ValueError, match="moved.nii.gz: spacing"):
        io.read_labels_on(str(tmp_path / "moved.nii.gz"), ref)
    labels[0, 0, 0] = 4
    sitk.WriteImage(sitk.GetImageFromArray(labels), str(tmp_path / "four.nii.gz"))
    with pytest.raises(ValueError, match="four.nii.gz: values must lie in 0..3, found 4"):
        io.read_labels_on(str(tmp_path / "four.nii.gz"), ref)
    assert io.read_labels_on(str(tmp_path / "four.nii.gz"), ref, top=4)[0, 0, 0] == 4


@pytest.mark.parametrize("key, values, message", [
    ("label", [0, 1, 9], "label: values must lie in 0..3, found 9"),
    ("label", [0, -1, 2], "label: values must lie in 0..3, found -1"),
    ("scribble", [0, 4, 5], "scribble: values must lie in 0..4, found 5"),
    ("label", [0.0, 1.5, 2.0], "label: values must be whole numbers 0..3"),
])
def test_labels_out_of_range_are_named_at_load(tmp_path, key, values, message):
    image = np.zeros((3, 1, 4), np.float32)
    arrays = {"image": image, key: np.array(values).reshape(3, 1, 1) * np.ones((3, 1, 4))}
    if not isinstance(values[1], float):
        arrays[key] = arrays[key].astype(np.int16)
    path = str(tmp_path / "case.h5")
    io.write_h5(path, arrays)
    with pytest.raises(ValueError, match=f"case.h5: {message}"):
        io.read_h5(path)


def test_empty_raw_or_non_finite_images_and_misaligned_keys_are_named(tmp_path):
    image = np.zeros((2, 4, 4), np.float32)
    image[1, 2, 2] = np.nan
    image[0, 0, 0] = np.inf
    io.write_h5(str(tmp_path / "nan.h5"), {"image": image})
    with pytest.raises(ValueError, match="nan.h5: image has 2 non-finite values"):
        io.read_h5(str(tmp_path / "nan.h5"))
    io.write_h5(str(tmp_path / "shift.h5"), {"image": np.zeros((4, 4), np.float32),
                                             "scribble": np.full((4, 5), 4, np.uint16)})
    with pytest.raises(ValueError, match=r"shift.h5: arrays of different shapes"):
        io.read_h5(str(tmp_path / "shift.h5"))
    io.write_h5(str(tmp_path / "empty.h5"), {"image": np.zeros((0, 0), np.float32)})
    with pytest.raises(ValueError, match=r"empty.h5: image is empty \(shape \(0, 0\)\)"):
        io.read_h5(str(tmp_path / "empty.h5"))
    io.write_h5(str(tmp_path / "raw.h5"), {"image": np.array([[0.0, 255.0]], np.float32)})
    with pytest.raises(ValueError, match=r"raw.h5: image values lie in \[0, 255\], not in \[0, 1\]"):
        io.read_h5(str(tmp_path / "raw.h5"))
    io.write_h5(str(tmp_path / "unit.h5"), {"image": np.array([[0.0, 1.0]], np.float32)})
    assert io.read_h5(str(tmp_path / "unit.h5"))["image"].max() == 1.0


@pytest.mark.parametrize("spacing, shown", [
    ((0.0, 1.5, 1.5), r"\(0.0, 1.5, 1.5\)"), ((10.0, -1.5, 1.5), r"\(10.0, -1.5, 1.5\)"),
    ((float("nan"), 1.5, 1.5), r"\(nan, 1.5, 1.5\)"), ("10,1.5,1.5", "'10,1.5,1.5'"), ((1.5, 1.5), r"\(1.5, 1.5\)"),
])
def test_a_bad_spacing_attribute_is_named_when_read(phantom_root, tmp_path, spacing, shown):
    # Found only at scoring before, by metrics, with no file name; validation volumes are read
    # when training starts (VolumeSet), so a run fails there too.
    import shutil

    import h5py

    root = tmp_path / "root"
    shutil.copytree(phantom_root, root)
    case = io.list_cases(str(root))[0]
    with h5py.File(io.volume_path(str(root), case), "a") as f:
        f.attrs["spacing"] = spacing
    message = f"{case}.h5: attribute spacing {shown} must be 3 finite positive numbers"
    with pytest.raises(ValueError, match=message):
        io.read_case(str(root), case)
    with pytest.raises(ValueError, match=message):
        VolumeSet(str(root), [case])


def test_a_spacing_attribute_in_itks_axis_order_is_named(phantom_root, tmp_path):
    # sitk's GetSpacing() is (x, y, z); stored as (z, y, x) it made distances along x 6x too long.
    import shutil

    import h5py

    root = tmp_path / "root"
    shutil.copytree(phantom_root, root)
    case = io.list_cases(str(root))[0]
    with h5py.File(io.volume_path(str(root), case), "a") as f:
        f.attrs["spacing"] = (1.5625, 1.5625, 10.0)
    with pytest.raises(ValueError, match=rf"{case}.h5: attribute spacing \(1.5625, 1.5625, 10.0\) is \(z, y, x\) mm"):
        io.read_case(str(root), case)


@pytest.mark.parametrize("spacing, why", [(None, "no attribute spacing"), ((10.0, 1.5, 1.5), "slices 10 mm thick")])
@pytest.mark.parametrize("key", ["image", "label"])
def test_an_h5_stack_in_xyz_order_is_refused(tmp_path, spacing, why, key):
    # Found by a probe: nibabel's (x, y, z) arrays converted, trained and scored at exit 0 (216
    # "slices" of 256 x 10 from an ACDC volume; phantoms: test Dice 0.34 against 0.58).
    rng = np.random.default_rng(0)
    arrays = {"image": rng.random((40, 32, 6), dtype=np.float32), "label": np.zeros((40, 32, 6), np.uint8)}
    path = str(tmp_path / "case.h5")
    io.write_h5(path, arrays, spacing=spacing)
    with pytest.raises(ValueError, match=rf"case.h5: 40 slices of 32 x 6 voxels and {why}: an \(x, y, z\) array"):
        io.read_h5(path, keys=(key,))
    io.write_h5(path, {k: np.ascontiguousarray(a.transpose(2, 0, 1)) for k, a in arrays.items()}, spacing=spacing)
    assert io.read_h5(path, keys=(key,))[key].shape == (6, 40, 32)
    cubic = str(tmp_path / "cubic.h5")  # a volume of near-cubic voxels may have more slices
    io.write_h5(cubic, arrays, spacing=(1.2, 1.0, 1.0))
    assert io.read_h5(cubic, keys=(key,))[key].shape == (40, 32, 6)


def test_training_and_validation_data_are_checked_when_loaded(phantom_root, tmp_path):
    import shutil

    root = tmp_path / "root"
    shutil.copytree(phantom_root, root)
    case = io.list_cases(str(root))[0]
    bad_slice = io.slice_path(str(root), case, 1)
    s = io.read_h5(bad_slice)
    io.write_h5(bad_slice, {"image": s["image"], "label": s["label"],
                            "scribble": np.full((5, 5), 4, np.uint16)})
    with pytest.raises(ValueError, match=f"{os.path.basename(bad_slice)}: arrays of different shapes"):
        SliceDataset(str(root), [case], "scribble", (32, 32), progress=False)
    v = io.read_case(str(root), case)
    label = v.label.copy()
    label[0, 0, 0] = 7
    io.write_h5(io.volume_path(str(root), case), {"image": v.image, "label": label})
    with pytest.raises(ValueError, match=f"{case}.h5: label: values must lie in 0..3, found 7"):
        VolumeSet(str(root), [case])


def test_classes_the_data_root_lacks_are_named_when_loaded(lv_root, tmp_path):
    # Labels and scribbles were checked against 0..3 whatever the root's classes: a one-class
    # root whose masks kept RV/MYO/LV stopped training with a traceback, and test_2D_fully.py
    # scored its LV Dice against the RV as truth (exit 0).
    root = tmp_path / "root"
    shutil.copytree(lv_root, root)
    root = str(root)
    case = io.list_cases(root)[0]
    bad_slice = io.slice_path(root, case, 1)
    s = io.read_h5(bad_slice)
    scribble = s["scribble"].copy()
    scribble[0, 0] = 3
    io.write_h5(bad_slice, {"image": s["image"], "label": s["label"], "scribble": scribble})
    with pytest.raises(ValueError, match=f"{os.path.basename(bad_slice)}: scribble \\(4 = unlabeled\\): "
                                         "values must lie in 0..1, found 3"):
        SliceDataset(root, [case], "scribble", (32, 32), progress=False)
    v = io.read_case(root, case)
    label = v.label.copy()
    label[0, 0, 0] = 2
    io.write_h5(io.volume_path(root, case), {"image": v.image, "label": label})
    with pytest.raises(ValueError, match=f"{case}.h5: label: values must lie in 0..1, found 2"):
        VolumeSet(root, [case])


def test_check_outputs_refuses_existing_files_folders_and_paths_under_a_file(tmp_path):
    (tmp_path / "afile").write_text("x")
    (tmp_path / "old.nii.gz").write_text("an earlier result")
    io.check_outputs("--out", [str(tmp_path / "new" / "deeper" / "a.nii.gz")])
    for path, message in [(tmp_path / "afile" / "sub" / "a.nii.gz", "afile is a file, not a folder"),
                          (tmp_path / "old.nii.gz", "old.nii.gz exists; pass --overwrite"),
                          (tmp_path, "is a folder")]:
        with pytest.raises(ValueError, match=f"--out: .*{message}"):
            io.check_outputs("--out", [str(path)])
    io.check_outputs("--out", [str(tmp_path / "old.nii.gz")], overwrite=True)


def test_dataset_json_with_a_repeated_class_name_is_refused(tmp_path):
    # per-class results are keyed by name: "A A A" would score one column with the mean of one class
    io.write_dataset_json(str(tmp_path), ("A", "B", "A"))
    with pytest.raises(ValueError, match=r"dataset.json: class names must differ, 'A' repeated"):
        io.class_names(str(tmp_path))
    # "mean" is the results' mean over the classes: a class of that name hid the mean (exit 0)
    io.write_dataset_json(str(tmp_path), ("RV", "mean", "LV"))
    with pytest.raises(ValueError, match=r"dataset.json: 'mean' names the mean over the classes"):
        io.class_names(str(tmp_path))
    # a fourth class would be label 4, the unlabeled marker: never learnt, its Dice 0 at exit 0
    io.write_dataset_json(str(tmp_path), ("RV", "MYO", "LV", "scar"))
    with pytest.raises(ValueError, match=r"dataset.json: 1..3 class names \(label 4 marks unlabeled pixels\), got 4"):
        io.class_names(str(tmp_path))


@pytest.mark.parametrize("pattern", ["[", 3])
def test_dataset_json_with_a_bad_patient_pattern_is_refused(phantom_root, tmp_path, pattern):
    root = tmp_path / "root"
    shutil.copytree(phantom_root, root)
    io.write_dataset_json(str(root), io.CLASS_NAMES, patient_pattern=pattern)
    with pytest.raises(ValueError, match=f"{root / 'dataset.json'}: patient_pattern: .*(not a valid regex|regex string)"):
        make_split(str(root), "fold1")


def test_atomic_path_replaces_only_on_success_and_leaves_no_partial_file(tmp_path):
    path = tmp_path / "a.h5"
    path.write_bytes(b"good")
    with pytest.raises(RuntimeError):
        with io.atomic_path(str(path)) as tmp:
            open(tmp, "wb").write(b"half")
            raise RuntimeError("disk full")
    assert path.read_bytes() == b"good" and os.listdir(tmp_path) == ["a.h5"]
    with io.atomic_path(str(path), ".nii.gz", fsync=True) as tmp:
        assert tmp.endswith(".tmp.nii.gz") and os.path.dirname(tmp) == str(tmp_path)
        open(tmp, "wb").write(b"new")
    assert path.read_bytes() == b"new" and os.listdir(tmp_path) == ["a.h5"]


def test_root_digest_tells_a_root_generated_again_from_a_copy(phantom_root, tmp_path):
    import shutil

    import h5py

    copy = tmp_path / "copy"
    shutil.copytree(phantom_root, copy)
    assert io.root_digest(str(copy)) == io.root_digest(phantom_root)
    case = io.list_cases(str(copy))[-1]
    with h5py.File(io.volume_path(str(copy), case), "a") as f:
        scribble = f["scribble"][()]
        scribble[scribble == 1] = io.UNLABELED  # other strokes only: the scores' volumes are the same
        f["scribble"][...] = scribble
    assert io.root_digest(str(copy)) != io.root_digest(phantom_root)


def test_h5_labels_are_read_on_the_reference_grid_with_their_own_top(tmp_path):
    # Strokes (4 = unlabeled) in an h5 file were checked against 0..3 before the caller's top.
    ref = io.Case("c", np.zeros((2, 4, 4), np.float32), spacing=(5.0, 1.0, 1.0))
    strokes = np.full((2, 4, 4), 4, np.uint8)
    strokes[0, 0, 0] = 1
    io.write_h5(str(tmp_path / "s.h5"), {"label": strokes}, spacing=(5.0, 1.0, 1.0))
    assert np.array_equal(io.read_labels_on(str(tmp_path / "s.h5"), ref, io.UNLABELED), strokes)
    io.write_h5(str(tmp_path / "t.h5"), {"label": strokes}, spacing=(5.0, 2.0, 1.0))
    with pytest.raises(ValueError, match=r"t.h5: spacing \(5.0, 2.0, 1.0\) differs from the scan's"):
        io.read_labels_on(str(tmp_path / "t.h5"), ref, io.UNLABELED)
