"""Translator evaluation (model/transfer_eval.py): features, distance, any-width generator loading, report."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import wasserstein_distance

from model.checkpoint import CheckpointError
from model.transfer_eval import (
    FEATURES, crop_features, domain_distance, evaluate_translators, format_report, load_generator, wasserstein_1d,
)
from model.transfer_net import build_transfer_generator


def test_wasserstein_matches_scipy():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, 37), rng.exponential(2, 51)
    assert wasserstein_1d(a, b) == pytest.approx(wasserstein_distance(a, b), rel=1e-12)
    assert wasserstein_1d(a, a.copy()) == 0.0
    assert wasserstein_1d(np.array([np.nan, 1.0]), np.array([3.0])) == pytest.approx(2.0)


def test_crop_features_on_a_hand_made_crop():
    """A 20 x 20 square plateau at depth 0 with one 1-pixel hole and a +0.01 bump: values counted by hand."""
    x = torch.ones(1, 1, 40, 40, dtype=torch.float64)
    x[..., 10:30, 10:30] = 0.0
    x[..., 20, 20] = 1.0  # a hole (background inside the silhouette)
    x[..., 15, 15] = 0.01  # a bump on the surface
    f = crop_features(x, half_cube_mm=100.0)
    n_fg = 400 - 1
    assert f["fg_fraction"].item() == pytest.approx(n_fg / 1600)
    # closing fills the hole only: 1 background pixel in a 400-pixel closed silhouette
    assert f["hole_fraction"].item() == pytest.approx(1 / 400)
    # boundary = 76 outer-ring pixels + the 4 neighbours of the hole
    assert f["edge_ratio"].item() == pytest.approx(80 / np.sqrt(n_fg))
    # interior pixels: Laplacian 0 except at the bump (4 * 0.01) and its 4 neighbours (0.01): median 0
    assert f["roughness_mm"].item() == 0.0
    noisy = x.clone()
    noisy[..., 10:30, 10:30] += torch.from_numpy(np.random.default_rng(1).normal(0, 0.01, (20, 20)))
    noisy[..., 20, 20] = 1.0
    assert crop_features(noisy, 100.0)["roughness_mm"].item() > 1.0  # sigma 1 mm -> |Laplacian| ~ 3 mm
    empty = crop_features(torch.ones(1, 1, 8, 8))
    assert empty["fg_fraction"].item() == 0 and all(np.isnan(empty[k].item()) for k in FEATURES[1:])


def test_domain_distance_is_zero_for_the_same_set_and_scale_free():
    rng = np.random.default_rng(2)
    real = {k: rng.normal(1, 0.5, 40) for k in FEATURES}
    assert domain_distance(real, real)["mean"] == 0.0
    shifted = {k: v + 0.5 for k, v in real.items()}  # one real std
    d = domain_distance(shifted, real)
    assert d["mean"] == pytest.approx(np.mean([0.5 / np.std(real[k]) for k in FEATURES]), rel=1e-9)
    scaled = domain_distance({k: 10 * v for k, v in shifted.items()}, {k: 10 * v for k, v in real.items()})
    assert scaled["mean"] == pytest.approx(d["mean"], rel=1e-9)


def test_load_generator_of_any_width(tmp_path):
    g = build_transfer_generator(ngf=8, n_blocks=2)
    torch.save(g.state_dict(), tmp_path / "latest_net_G_A.pth")
    loaded = load_generator(tmp_path)
    x = torch.rand(1, 1, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.equal(loaded(x), g.eval()(x))
    torch.save({"model.1.weight": torch.zeros(3)}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match="bad.pth"):
        load_generator(tmp_path / "bad.pth")


def test_evaluate_translators_identity_and_a_blur():
    torch.manual_seed(0)
    syn = torch.ones(4, 1, 32, 32)
    syn[..., 8:24, 8:24] = torch.linspace(-0.5, 0.5, 16)
    real = syn + torch.where(syn < 0.99, 0.02 * torch.randn_like(syn), torch.zeros_like(syn))

    class AddNoise(torch.nn.Module):
        def forward(self, x):
            return torch.where(x < 0.99, x + 0.02 * torch.randn_like(x), x)

    report = evaluate_translators({"identity": None, "noise": AddNoise()}, [syn, syn], [real], [real])
    assert report["identity"]["consistency"] == 0.0 and report["identity"]["n"] == 8
    assert report["noise"]["consistency"] > 0
    # adding the real crops' noise brings the roughness statistic to the real one
    assert report["noise"]["domain_distance"]["roughness_mm"] < report["identity"]["domain_distance"]["roughness_mm"]
    assert report["real (other split)"]["domain_distance"]["mean"] == 0.0
    table = format_report(report)
    assert table.count("\n") == 2 + len(report) - 1 and "| noise |" in table
