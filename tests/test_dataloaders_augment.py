import numpy as np

from dataloaders.augment import augment, crop_origin


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
