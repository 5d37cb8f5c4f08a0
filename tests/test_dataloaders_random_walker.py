import os

import numpy as np
import pytest

import dataloaders.random_walker as rw
from dataloaders.io import UNLABELED
from dataloaders.random_walker import RandomWalkerCache, random_walker_labels


def phantom(seed=0, n=48):
    """Bright disk (class 3) on a dark background (class 0), noisy; one stroke per region."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:n, :n]
    disk = (yy - n / 2) ** 2 + (xx - n / 2) ** 2 < (n / 4) ** 2
    image = np.where(disk, 0.8, 0.2) + rng.normal(0, 0.03, (n, n))
    image = np.clip(image, 0, 1).astype(np.float32)
    truth = np.where(disk, 3, 0).astype(np.uint8)
    scribble = np.full((n, n), UNLABELED, np.uint16)
    scribble[n // 2, n // 2 - 4:n // 2 + 5] = 3
    scribble[3, 5:n - 5] = 0
    return image, scribble, truth


def test_recovers_regions_and_keeps_scribbles():
    image, scribble, truth = phantom()
    out = random_walker_labels(image, scribble)
    assert out.dtype == np.uint8 and out.shape == image.shape
    assert (out == truth).mean() > 0.95
    seeded = scribble != UNLABELED
    assert np.array_equal(out[seeded], scribble[seeded])
    assert set(np.unique(out)) == {0, 3}


def test_no_scribble_single_class_and_flat_conventions():
    image, scribble, _ = phantom()
    empty = np.full_like(scribble, UNLABELED)
    assert (random_walker_labels(image, empty) == UNLABELED).all()
    one = np.where(scribble == 3, 3, UNLABELED).astype(np.uint16)
    out = random_walker_labels(image, one)
    assert out.dtype == np.uint8 and np.array_equal(out, one)
    # flat image: nearest scribbled pixel decides
    flat = random_walker_labels(np.zeros((5, 5), np.float32),
                                np.array([[0, 4, 4, 4, 1]] + [[4] * 5] * 4, np.uint16))
    assert flat[0].tolist() == [0, 0, 0, 1, 1] and flat[4, 0] == 0 and flat[4, 4] == 1


def test_bad_input_raises():
    image, scribble, _ = phantom()
    with pytest.raises(ValueError, match="shape"):
        random_walker_labels(image[:-1], scribble)
    with pytest.raises(ValueError, match="0..4"):
        random_walker_labels(image, scribble + 1)
    with pytest.raises(ValueError, match="mode"):
        random_walker_labels(image, scribble, mode="fast")
    with pytest.raises(ValueError, match="key"):
        RandomWalkerCache("unused").path("../escape")


@pytest.fixture
def counted(monkeypatch):
    calls = []
    real = rw.random_walker_labels

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(rw, "random_walker_labels", counting)
    return calls


def test_cache_hit_miss_and_invalidation(tmp_path, counted):
    image, scribble, _ = phantom()
    cache = RandomWalkerCache(str(tmp_path))
    first = cache.get("p1_slice_0", image, scribble)
    assert len(counted) == 1 and os.path.isfile(tmp_path / "p1_slice_0.npz")
    again = RandomWalkerCache(str(tmp_path)).get("p1_slice_0", image, scribble)
    assert len(counted) == 1 and np.array_equal(first, again)
    changed = scribble.copy()
    changed[40, 10:20] = 0
    cache.get("p1_slice_0", image, changed)
    assert len(counted) == 2
    RandomWalkerCache(str(tmp_path), beta=50.0).get("p1_slice_0", image, changed)
    assert len(counted) == 3
    # an unreadable file is a miss, not a crash; no temporary files are left behind
    (tmp_path / "p1_slice_0.npz").write_bytes(b"garbage")
    cache.get("p1_slice_0", image, scribble)
    assert len(counted) == 4
    assert sorted(os.listdir(tmp_path)) == ["p1_slice_0.npz"]


def test_build_skips_cached(tmp_path, counted):
    items = [(f"s{i}", *phantom(seed=i)[:2]) for i in range(3)]
    cache = RandomWalkerCache(str(tmp_path))
    cache.get(*items[0])
    assert cache.build(items, progress=False) == 2
    assert len(counted) == 3
    assert cache.build(items, progress=False) == 0
    assert all(cache.cached(*it) for it in items)


def test_build_process_pool(tmp_path):
    items = [(f"s{i}", *phantom(seed=i, n=24)[:2]) for i in range(2)]
    cache = RandomWalkerCache(str(tmp_path))
    assert cache.build(items, progress=False, workers=2) == 2
    for key, image, scribble in items:
        assert np.array_equal(cache.get(key, image, scribble),
                              random_walker_labels(image, scribble))


def test_random_walker_beta_sets_how_strongly_edges_stop_the_walk():
    # A mutation audit found this unpinned: beta was not passed to skimage (its default 130 equals ours,
    # so only other betas were ignored): a weak edge must stop a sharp walker and not a blunt one.
    from dataloaders.random_walker import random_walker_labels

    img = np.zeros((16, 40), np.float32)
    img[:, 10:] = 0.3  # an edge a quarter of the way from the left seed
    img += np.random.default_rng(0).random(img.shape).astype(np.float32) * 0.02
    s = np.full(img.shape, 4, np.uint16)
    s[:, 0], s[:, -1] = 1, 2
    assert ((random_walker_labels(img, s, beta=130.0) == 1).sum(1) == 10).all()  # stops at the edge
    assert ((random_walker_labels(img, s, beta=1.0) == 1).sum(1) == 20).all()    # halfway: edges ignored
