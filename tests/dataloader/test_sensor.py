"""The Kinect-like sensor model of the stand-in: quantisation, depth-dependent noise, edge dropouts, holes."""
from __future__ import annotations

import numpy as np

from dataloader.sensor import SensorModel, apply_sensor, apply_sensor_roi, quantize, shadow_mask

QUIET = SensorModel(noise_a=0.0, noise_b=0.0, edge_drop_prob=0.0, edge_drop_near=0.0, shadow=False,
                    dilate_prob=0.0, holes=(0, 0), speckle_prob=0.0)


def test_quantisation_steps_follow_disparity():
    m = SensorModel()
    for z in (600.0, 800.0, 1200.0):
        ramp = np.linspace(z - 20, z + 20, 4001, dtype=np.float32)
        levels = np.unique(quantize(ramp, m))
        step = np.median(np.diff(levels))
        expected = z * z / (m.fb * m.subpixel)  # dz = z^2 / (fb * subpixel) for one disparity step
        assert abs(step - expected) / expected < 0.05, (z, step, expected)
    assert quantize(np.zeros(3, np.float32), m).tolist() == [0, 0, 0]


def test_noise_grows_with_depth_and_invalid_is_2001():
    rng = np.random.default_rng(0)
    m = SensorModel(edge_drop_prob=0.0, edge_drop_near=0.0, shadow=False, dilate_prob=0.0, holes=(0, 0),
                    speckle_prob=0.0)
    stds = []
    for z in (600.0, 1200.0):
        out = apply_sensor(np.full((80, 80), z, np.float32), m, rng)
        stds.append(np.std(out - z))
        assert abs(np.mean(out - z)) < 0.5 * stds[-1] + 0.5
    expected = [m.noise_a + m.noise_b * z * z for z in (600.0, 1200.0)]
    assert stds[1] > 1.8 * stds[0]
    assert abs(stds[1] - expected[1]) / expected[1] < 0.35  # quantisation adds a little on top
    scene = np.zeros((20, 20), np.float32)
    scene[5:15, 5:15] = 800.0
    scene[0, 0] = 2500.0  # beyond the range
    out = apply_sensor(scene, QUIET, rng)
    assert out[0, 0] == 2001 and out[0, 1] == 2001 and (out != 0).all()
    assert np.all(np.abs(out[5:15, 5:15] - 800) <= 1)  # quiet model: only quantisation and rounding


def test_edges_lose_pixels_and_holes_appear():
    rng = np.random.default_rng(1)
    scene = np.full((120, 160), 1100.0, np.float32)  # wall
    scene[30:90, 50:110] = 700.0  # a box in front of it
    m = SensorModel(noise_a=0.0, noise_b=0.0, speckle_prob=0.0, holes=(0, 0), dilate_prob=0.0)
    out = apply_sensor(scene, m, rng)
    missing = out == m.invalid
    # projector shadow: wall pixels left of the box within fb (1/700 - 1/1100) ~ 22.6 px are missing
    width = m.fb * (1 / 700 - 1 / 1100)
    assert missing[40:80, 50 - int(width) + 1:49].all()
    assert not missing[40:80, 50 - int(width) - 3:50 - int(width) - 1].any()
    assert not missing[40:80, 112:118].any()  # no shadow on the right of the box
    # right edge: the wall next to the box loses about edge_drop_prob, the box rim about edge_drop_near
    assert 0.3 < missing[35:85, 110].mean() < 0.7
    assert 0.02 < missing[35:85, 109].mean() < 0.35
    assert not missing[35:85, 55:105].any()
    s = shadow_mask(scene, m.fb, m.edge_threshold)
    assert s[60, 49] and not s[60, 40 - int(width)] and not s[60, 60]


def test_holes_are_small_discs():
    import cv2

    m = SensorModel(noise_a=0.0, noise_b=0.0, edge_drop_prob=0.0, edge_drop_near=0.0, shadow=False,
                    dilate_prob=0.0, holes=(3, 3),
                    speckle_prob=0.0)
    for seed in range(5):
        out = apply_sensor(np.full((100, 100), 900.0, np.float32), m, np.random.default_rng(seed))
        missing = (out == m.invalid).astype(np.uint8)
        n, _ = cv2.connectedComponents(missing)
        assert 1 <= n - 1 <= 3  # discs may overlap
        assert 0 < missing.sum() <= 3 * np.pi * 4.5 ** 2 + 6


def test_edge_dilation_and_roi():
    rng = np.random.default_rng(2)
    scene = np.zeros((40, 40), np.float32)
    scene[10:30, 10:30] = 800.0
    m = SensorModel(noise_a=0.0, noise_b=0.0, edge_drop_prob=0.0, edge_drop_near=0.0, shadow=False,
                    dilate_prob=1.0, holes=(0, 0), speckle_prob=0.0)
    out = apply_sensor(scene, m, rng)
    valid = out < m.invalid
    assert valid[9:31, 9:31].all() and not valid[:8].any()  # grown by exactly one pixel
    frames = np.stack([scene, scene])
    roi = apply_sensor_roi(frames, [(0, 40, 0, 40), (0, 0, 0, 0)], m, rng)
    np.testing.assert_array_equal(roi[0] < m.invalid, valid)
    np.testing.assert_array_equal(roi[1] < m.invalid, scene > 0)  # outside the window: quantisation only
