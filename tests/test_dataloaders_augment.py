import numpy as np
import pytest

from dataloaders.augment import (augment, crop_origin, draw_scale, fit, jitter_intensity, keep_points, resize,
                                 resize_zoomed)


def test_augment_keeps_masks_aligned_and_pads_scribbles_with_unlabeled():
    rng = np.random.default_rng(0)
    image = np.zeros((40, 40), np.float32)
    image[10:30, 12:28] = 1
    label = (image > 0).astype(np.uint8)
    scribble = np.full((40, 40), 4, np.uint16)
    scribble[20, 15:25] = 1
    seen_pad = False
    for _ in range(30):
        img, (lab, scr) = augment(image, [label, scribble], [0, 4], (32, 32), rng)
        assert img.shape == lab.shape == scr.shape == (32, 32)
        assert lab.dtype == np.uint8 and scr.dtype == np.uint16
        assert set(np.unique(scr)) <= {1, 4} and set(np.unique(lab)) <= {0, 1}
        assert np.all(lab[scr == 1] == 1)
        assert abs(float(img[lab == 1].mean()) - 1) < 0.2
        seen_pad |= bool((scr == 4).all(axis=0).any())
    assert seen_pad


def test_augment_crops_a_patch_of_the_resized_slice_centred_on_the_foreground():
    rng = np.random.default_rng(0)
    image = np.linspace(0, 1, 48 * 48, dtype=np.float32).reshape(48, 48)
    scribble = np.full((48, 48), 4, np.uint16)
    scribble[8:12, 8:12] = 3  # a small labelled patch far from the slice's centre
    for _ in range(20):
        img, (scr,) = augment(image, [scribble], [4], (64, 64), rng, patch=(32, 32), fg_prob=1.0)
        assert img.shape == scr.shape == (32, 32)
        assert (scr == 3).any()  # fg_prob 1: every crop holds a foreground pixel
    hits = [(augment(image, [scribble], [4], (64, 64), rng, (32, 32), 0.0)[1][0] == 3).any()
            for _ in range(200)]
    assert 0 < sum(hits) < 100  # uniform crops find the corner only sometimes


def test_crop_origin_stays_inside_and_centres_on_the_only_foreground_pixel():
    fg = np.zeros((40, 50), bool)
    fg[20, 30] = True
    assert crop_origin(fg, (16, 16), 1.0, np.random.default_rng(0)) == (12, 22)
    fg[:] = False
    fg[0, 49] = True
    assert crop_origin(fg, (16, 16), 1.0, np.random.default_rng(0)) == (0, 34)
    assert crop_origin(fg, (40, 50), 0.0, np.random.default_rng(0)) == (0, 0)


def test_points_survive_a_downsampling_on_the_pixel_whose_cell_holds_them():
    points = np.full((8, 8), 4, np.uint8)
    points[1, 1], points[6, 3], points[7, 7] = 2, 1, 3
    # 8 -> 2 per axis: cells of 4 pixels; nearest neighbour samples source pixels 1 and 5 (about)
    # and keeps one point at most, keep_points puts every point in its cell.
    nearest = resize(points, (2, 2), order=0)
    assert (nearest != 4).sum() <= 1
    assert resize(points, (2, 2), order=0, points_fill=4).tolist() == [[2, 4], [1, 3]]
    up = resize(points, (16, 16), order=0, points_fill=4)  # upsampling keeps them anyway: as nearest
    assert np.array_equal(up, resize(points, (16, 16), order=0))
    # Non-integer ratios: each point lands in the cell holding its centre, floor((y + 0.5) h / H).
    rng = np.random.default_rng(0)
    for shape, size in [((216, 256), (128, 128)), ((100, 73), (37, 50))]:
        for _ in range(20):
            y, x = rng.integers(0, shape[0]), rng.integers(0, shape[1])
            one = np.full(shape, 4, np.uint8)
            one[y, x] = 1
            ys, xs = np.nonzero(keep_points(np.full(size, 4, np.uint8), one, 4) == 1)
            assert (ys.tolist(), xs.tolist()) == ([int((y + 0.5) * size[0] / shape[0])],
                                                  [int((x + 0.5) * size[1] / shape[1])])
            assert (resize(one, size, order=0, points_fill=4) == 1).sum() == 1


def test_augment_keeps_isolated_points_that_nearest_neighbour_drops():
    # 3 clicks per class on a 256x216 slice: nearest-neighbour resizing to 128x128 kept 2.3 of 12
    # on average, so --sup_type points trained on a fifth of its points.
    label = np.zeros((256, 216), np.uint8)
    label[60:140, 50:130], label[80:120, 70:110], label[90:110, 80:100] = 1, 2, 3
    points = np.full(label.shape, 4, np.uint8)
    ys, xs = [65, 70, 75, 85, 95, 100, 92, 100, 105, 150, 200, 30], [55, 60, 120, 72, 75, 108, 85, 90, 95, 20, 150, 200]
    points[ys, xs] = label[ys, xs]
    image = np.random.default_rng(0).random(label.shape).astype(np.float32)
    counts = {p: [(augment(image, [points], [4], (128, 128), np.random.default_rng(s), points=[p])[1][0] != 4).sum()
                  for s in range(40)] for p in (False, True)}
    assert np.mean(counts[False]) < 4 and np.mean(counts[True]) > 11 and min(counts[True]) >= 9


def test_foreground_crop_centres_on_the_pixel_with_a_non_square_patch():
    # A mutation audit found this unpinned: the x origin used the patch height: with a 16 x 32 patch the
    # crop was off-centre.
    from dataloaders.augment import crop_origin

    fg = np.zeros((64, 64), bool)
    fg[20, 30] = True
    assert crop_origin(fg, (16, 32), 1.0, np.random.default_rng(0)) == (20 - 8, 30 - 16)
    assert crop_origin(fg, (32, 16), 1.0, np.random.default_rng(0)) == (20 - 16, 30 - 8)


def test_keep_points_never_overwrites_a_sampled_label():
    # A mutation audit found this unpinned: keep_points wrote every point on its target pixel, replacing a
    # label that nearest neighbour had already put there.
    from dataloaders.augment import keep_points

    a = np.full((4, 4), 4, np.uint8)
    a[0, 0], a[1, 1] = 1, 2  # two points in the cell of target pixel (0, 0)
    resized = np.full((2, 2), 4, np.uint8)
    resized[0, 0] = 1  # nearest neighbour sampled the 1: the 2 must not replace it
    out = keep_points(resized, a, 4)
    assert out[0, 0] == 1 and resized[0, 0] == 1
    empty = np.full((2, 2), 4, np.uint8)
    assert keep_points(empty, a, 4)[0, 0] in (1, 2)  # a free pixel does take a point


def test_fit_crops_and_pads_about_the_centre():
    a = np.arange(16).reshape(4, 4)
    assert fit(a, (2, 2), -1).tolist() == [[5, 6], [9, 10]]
    assert fit(a[:2, :2], (4, 3), -1).tolist() == [[-1, -1, -1], [0, 1, -1], [4, 5, -1], [-1, -1, -1]]


def test_a_zoom_about_the_centre_by_hand():
    labels = np.array([[1, 2], [3, 0]], np.uint8)
    # Zoom 2 at size 2: the 4x4 nearest-neighbour resize, its centre 2x2 kept.
    assert resize_zoomed(labels, (2, 2), 2.0, 0, 4).tolist() == [[1, 2], [3, 0]]
    big = np.kron(labels, np.ones((2, 2), np.uint8))  # 4x4 blocks
    assert resize_zoomed(big, (4, 4), 2.0, 0, 4).tolist() == [[1, 1, 2, 2], [1, 1, 2, 2],
                                                               [3, 3, 0, 0], [3, 3, 0, 0]]
    # Zoom 0.5 at size 4: the 2x2 resize in the centre, the ring around it the fill (4 = unlabeled).
    assert resize_zoomed(big, (4, 4), 0.5, 0, 4).tolist() == [[4, 4, 4, 4], [4, 1, 2, 4], [4, 3, 0, 4], [4, 4, 4, 4]]
    assert np.array_equal(resize_zoomed(big, (4, 4), 1.0, 0, 4), big)


class Scripted:
    """A generator whose ``random()`` and ``uniform(lo, hi)`` (as lo + t (hi - lo)) play given values."""

    def __init__(self, randoms, ts):
        self.randoms, self.ts = list(randoms), list(ts)

    def random(self):
        return self.randoms.pop(0)

    def uniform(self, lo, hi):
        return lo + self.ts.pop(0) * (hi - lo)


def test_the_zoom_is_drawn_for_half_the_slices_and_never_without_aug_scale():
    assert draw_scale(0.2, Scripted([0.7], [])) == 1.0
    assert draw_scale(0.2, Scripted([0.3], [0.0])) == pytest.approx(0.8)
    assert draw_scale(0.2, Scripted([0.3], [1.0])) == pytest.approx(1.2)
    rng, fresh = np.random.default_rng(5), np.random.default_rng(5)
    assert draw_scale(0.0, rng) == 1.0
    assert rng.random() == fresh.random()  # scale 0 draws nothing: default runs keep their augmentations


def test_the_intensity_jitter_by_hand():
    image = np.array([[0.25, 0.81]], np.float32)
    # gamma uniform in [0.7, 1.5]: t = 0.375 gives 1.0, then t = 0 (0.7); contrast skipped.
    assert np.allclose(jitter_intensity(image, Scripted([0.1, 0.9], [0.375])), image)
    assert np.allclose(jitter_intensity(image, Scripted([0.1, 0.9], [0.0])), image ** 0.7)
    # contrast about the mean 0.53 by 1.25 (t = 1): 0.18 and 0.88, clipped to [0, 1] where it leaves it.
    assert np.allclose(jitter_intensity(image, Scripted([0.9, 0.1], [1.0])), [[0.18, 0.88]])
    assert np.allclose(jitter_intensity(np.array([[0.0, 1.0]], np.float32), Scripted([0.9, 0.1], [1.0])),
                       [[0.0, 1.0]])
    out = jitter_intensity(np.array([[0.0, 1.0]], np.float32), Scripted([0.9, 0.1], [0.0]))
    assert out.dtype == np.float32 and np.allclose(out, [[0.125, 0.875]])


def test_augment_zooms_image_and_masks_together_and_leaves_default_draws_alone():
    image = np.zeros((40, 40), np.float32)
    image[12:28, 12:28] = 1
    label = (image > 0).astype(np.uint8)
    scribble = np.full((40, 40), 4, np.uint16)
    scribble[20, 14:26] = 1
    areas = set()
    for seed in range(40):
        img, (lab, scr) = augment(image, [label, scribble], [0, 4], (32, 32), np.random.default_rng(seed),
                                  scale=0.4, intensity=True)
        assert np.all(lab[scr == 1] == 1) and np.all(img[lab == 0] < 0.9) and np.all(img[lab == 1] > 0.1)
        areas.add(int(lab.sum()))
        plain = augment(image, [label, scribble], [0, 4], (32, 32), np.random.default_rng(seed))
        again = augment(image, [label, scribble], [0, 4], (32, 32), np.random.default_rng(seed), scale=0.0)
        assert np.array_equal(plain[0], again[0]) and np.array_equal(plain[1][1], again[1][1])
    assert min(areas) < 0.7 * 164 < 1.3 * 164 < max(areas)  # 16/40 of 32 squared, zoomed by up to 1.4


def test_the_zoom_pads_masks_with_their_own_fill():
    # A mutation audit found this unpinned: padding every mask with 0 after a zoom below 1 labelled the
    # ring around a zoomed-out scribble map as background (class 0) where nothing was annotated.
    image = np.full((10, 10), 0.5, np.float32)
    label = np.ones((10, 10), np.uint8)
    scribble = np.ones((10, 10), np.uint16)
    # randoms: no rot90 + flip, no rotation, zoom drawn; t = 0: zoom 1 - 0.4 = 0.6, the 6x6 resize in
    # the centre of 10x10 (offset 2), the 2-pixel ring the fills: image 0, label 0, scribble 4.
    img, (lab, scr) = augment(image, [label, scribble], [0, 4], (10, 10), Scripted([0.1, 0.1, 0.1], [0.0]),
                              scale=0.4)
    inner = np.zeros((10, 10), bool)
    inner[2:8, 2:8] = True
    assert np.all(scr[inner] == 1) and np.all(scr[~inner] == 4)
    assert np.all(lab[inner] == 1) and np.all(lab[~inner] == 0)
    assert np.allclose(img[inner], 0.5) and np.all(img[~inner] == 0)


def test_the_zoomed_size_is_rounded():
    # A mutation audit found this unpinned: int() in place of round() zoomed 10 pixels by 0.58 to 5, not 6.
    ones = np.ones((10, 10), np.uint8)
    out = resize_zoomed(ones, (10, 10), 0.58, 0, 4)
    assert (out == 1).sum() == 36 and np.all(out[2:8, 2:8] == 1)


def test_the_zoom_is_drawn_below_one_half_only():
    # A mutation audit found this unpinned: a threshold of 0.4 zoomed 2/5 of the slices, not half.
    assert draw_scale(0.2, Scripted([0.45], [0.0])) == pytest.approx(0.8)
    assert draw_scale(0.2, Scripted([0.55], [])) == 1.0


def test_images_slightly_below_zero_stay_finite_under_the_gamma():
    # A mutation audit found this unpinned: without the first clip, an h5 image 1e-4 below 0
    # (io.IMAGE_SLACK) raised to gamma 0.7 gave NaN pixels.
    image = np.array([[-1e-4, 0.5]], np.float32)
    out = jitter_intensity(image, Scripted([0.1, 0.9], [0.0]))
    assert np.all(np.isfinite(out)) and np.allclose(out, [[0.0, 0.5 ** 0.7]])


def test_augment_jitters_the_intensity_only_when_asked():
    # A mutation audit found this unpinned: an inverted --aug_intensity test jittered every default run and
    # never the runs that asked for it; the earlier tests compared default runs only with each other.
    image = np.full((8, 8), 0.25, np.float32)
    label = np.ones((8, 8), np.uint8)
    # randoms: no rot90 + flip, no rotation; scale 0 draws no zoom; without intensity nothing more.
    img, _ = augment(image, [label], [0], (8, 8), Scripted([0.1, 0.1], []))
    assert np.array_equal(img, image)
    # with it: gamma drawn (0.1 < 0.5) at t = 0 (0.7), contrast skipped (0.9).
    img, _ = augment(image, [label], [0], (8, 8), Scripted([0.1, 0.1, 0.1, 0.9], [0.0]), intensity=True)
    assert np.allclose(img, 0.25 ** 0.7)
