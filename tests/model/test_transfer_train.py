"""train_stage=transfer (model/transfer_train.py): one iteration on stand-in data, checkpoint format, resume."""
from __future__ import annotations

import json

import pytest
import torch

from config import load_config
from model.cyclegan import CycleGANSettings
from model.transfer_train import (
    STATE_FILE, build_transfer_model, net_file, save_transfer_checkpoint, train_step, train_transfer,
)

TINY = dict(transfer_ngf=4, transfer_n_blocks=1, transfer_ndf=4, transfer_pool_size=3, transfer_batch_size=2,
            num_workers=0, log_every=1, img_log_every=1)


@pytest.fixture(scope="module")
def standin_tree(tmp_path_factory, standin_pkl):
    """A 4-frame stand-in NYU tree (Kinect view 1 only) rendered with the stand-in MANO file."""
    from dataloader.standin_nyu import generate_standin_nyu

    root = tmp_path_factory.mktemp("standin") / "nyu"
    generate_standin_nyu(root, 4, 1, seed=3, mano_path=str(standin_pkl), views=1, view_mode="copy")
    return root


def tiny_config(tree, pkl, **kw):
    return load_config(data_root=str(tree), mano_path=str(pkl), **{**TINY, **kw})


class BankSource:
    """Domain A for the resume test: stand-in synthetic crops rendered once, drawn with its own generator."""

    def __init__(self, depth: torch.Tensor, batch: int, seed: int = 0) -> None:
        self.depth, self.batch = depth, batch
        self.generator = torch.Generator().manual_seed(seed)
        self.calls = 0

    def next_batch(self) -> dict:
        self.calls += 1
        idx = torch.randint(0, self.depth.shape[0], (self.batch,), generator=self.generator)
        return {"depth": self.depth[idx]}


@pytest.fixture(scope="module")
def synthetic_bank(standin_model):
    from dataloader.synthetic import SyntheticRenderer, SyntheticSettings
    from render.mano_layer import ManoLayer
    from render.mano_params import LAYOUT_AXIS_ANGLE, PARAM_DIM
    from util.camera import NYU_CAMERA

    params = torch.zeros(6, PARAM_DIM)
    params[:, LAYOUT_AXIS_ANGLE.scale] = 1.0
    params[:, LAYOUT_AXIS_ANGLE.pose_pca] = torch.randn(6, 45, generator=torch.Generator().manual_seed(0)) * 0.5
    renderer = SyntheticRenderer(ManoLayer(standin_model), NYU_CAMERA.as_tuple(), SyntheticSettings(cube=250.0))
    out = renderer(params, torch.Generator().manual_seed(1))
    return out["depth"]


def test_one_iteration_on_standin_updates_all_four_networks(standin_tree, standin_pkl):
    from dataloader.builders import build_real_loader, build_synthetic

    cfg = tiny_config(standin_tree, standin_pkl)
    synthetic = build_synthetic(cfg, "cpu", "transfer", batch_size=2)
    real = build_real_loader(cfg, "train", train=True, labels=False, batch_size=2)
    real_B = next(iter(real))["depth"]
    real_A = synthetic.next_batch()["depth"]
    assert real_A.shape == real_B.shape == (2, 1, 128, 128)
    assert (real_A < 0.99).any() and (real_B < 0.99).any()  # hands in both domains
    torch.manual_seed(0)
    m = build_transfer_model(CycleGANSettings(ngf=4, n_blocks=1, ndf=4), lr=2e-4, beta1=0.5, n_epochs=1,
                             n_epochs_decay=1, pool_size=3, device="cpu")
    before = {name: [p.detach().clone() for p in net.parameters()] for name, net in m.nets().items()}
    losses, out = train_step(m, real_A, real_B)
    for name, net in m.nets().items():
        changed = [not torch.equal(p0, p) for p0, p in zip(before[name], net.parameters())]
        assert all(changed), f"{name}: {changed.count(False)} parameter tensors not updated"
    expected = {"G_A", "G_B", "cycle_A", "cycle_B", "idt_A", "idt_B", "consis_A", "consis_B", "D_A", "D_B",
                "G_total", "D_total"}
    assert set(losses) == {f"loss/{k}" for k in expected}
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values()), losses
    assert losses["loss/consis_A"] > 0 and losses["loss/consis_B"] == 0.0
    assert out.fake_B.shape == real_A.shape and not out.fake_B.requires_grad


def test_saved_generator_loads_into_pretraining_strictly(tmp_path):
    """The CycleGAN-named export of a default-size G_A is what builders / load_transfer_generator read."""
    from dataloader.builders import build_transfer_generator as build_frozen_g_a
    from model.transfer_net import load_transfer_generator

    torch.manual_seed(0)
    m = build_transfer_model(CycleGANSettings(), lr=2e-4, beta1=0.5, n_epochs=1, n_epochs_decay=1, pool_size=1,
                             device="cpu")
    with torch.no_grad():
        for p in m.gens_plain.G_A.parameters():
            p.add_(torch.randn_like(p))
    save_transfer_checkpoint(tmp_path, m, epoch=1, step=1, config={"seed": 0})
    for name in ("G_A", "G_B", "D_A", "D_B"):
        assert net_file(tmp_path, name).is_file()
    g_a = load_transfer_generator(net_file(tmp_path, "G_A"))  # strict=True inside
    for (k, v), (k2, v2) in zip(g_a.state_dict().items(), m.gens_plain.G_A.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    cfg = load_config(transfer="consis", transfer_net_path=str(tmp_path))  # a folder: its latest_net_G_A.pth
    frozen = build_frozen_g_a(cfg)
    x = torch.rand(1, 1, 128, 128) * 2 - 1
    with torch.no_grad():
        assert torch.equal(frozen(x), m.gens_plain.G_A.eval()(x))


def _lr_by_epoch(run_dir) -> dict[int, float]:
    lines = [json.loads(s) for s in (run_dir / "train_log.jsonl").read_text().splitlines()]
    return {row["step"]: row["lr"] for row in lines}


@pytest.mark.slow
def test_resume_continues_epochs_and_schedule(tmp_path, standin_tree, standin_pkl, synthetic_bank):
    """Interrupted after epoch 2 of 3 and resumed == one uninterrupted run (same weights, same LR schedule)."""
    from dataloader.builders import build_real_loader

    kw = dict(iters_per_epoch=1, transfer_epochs=1, transfer_decay_epochs=2, seed=5)
    cfg = tiny_config(standin_tree, standin_pkl, **kw)

    def run(run_dir, cfg, crash_after=None):
        source = BankSource(synthetic_bank, 2, seed=4)
        if crash_after is not None:
            inner = source.next_batch

            def next_batch():
                if source.calls >= crash_after:
                    raise KeyboardInterrupt("simulated crash")
                return inner()
            source.next_batch = next_batch
        real = build_real_loader(cfg, "train", train=True, labels=False, batch_size=2)
        torch.manual_seed(123)  # network init
        return train_transfer(cfg, run_dir, synthetic=source, real_loader=real)

    straight = run(tmp_path / "straight", cfg)
    assert straight["epochs"] == 3 and straight["steps"] == 3 and straight["resumed_from"] is None

    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "resumed", cfg, crash_after=2)  # the 3rd iteration (epoch 3) fails
    state = torch.load(tmp_path / "resumed" / STATE_FILE, weights_only=True)
    assert state["epoch"] == 2 and state["step"] == 2
    assert state["sched_G"]["last_epoch"] == 2
    resumed = run(tmp_path / "resumed", load_config(**{**TINY, **kw, "data_root": str(standin_tree),
                                                       "mano_path": str(standin_pkl), "resume": "auto"}))
    assert resumed["resumed_from"] == 2 and resumed["epochs"] == 3 and resumed["steps"] == 3
    assert resumed["steps_this_run"] == 1 and straight["steps_this_run"] == 3

    lr = _lr_by_epoch(tmp_path / "resumed")
    base = 2e-4  # CycleGAN linear rule, 1 + 2 epochs: factors 1, 1 - 1/3, 1 - 2/3
    assert lr == pytest.approx({1: base, 2: base * 2 / 3, 3: base / 3})
    assert _lr_by_epoch(tmp_path / "straight") == pytest.approx(lr)
    for name in ("G_A", "G_B", "D_A", "D_B"):
        a = torch.load(net_file(tmp_path / "straight", name), weights_only=True)
        b = torch.load(net_file(tmp_path / "resumed", name), weights_only=True)
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=f"{name}.{k}")
    assert (tmp_path / "resumed" / "transfer_examples.png").is_file()


def test_resume_refuses_a_different_config(tmp_path, standin_tree, standin_pkl, synthetic_bank):
    from dataloader.builders import build_real_loader
    from model.checkpoint import CheckpointError

    cfg = tiny_config(standin_tree, standin_pkl, iters_per_epoch=1, transfer_epochs=1, transfer_decay_epochs=0)
    real = build_real_loader(cfg, "train", train=True, labels=False, batch_size=2)
    train_transfer(cfg, tmp_path, synthetic=BankSource(synthetic_bank, 2), real_loader=real)
    other = tiny_config(standin_tree, standin_pkl, iters_per_epoch=1, transfer_epochs=1, transfer_decay_epochs=0,
                        transfer_consistency=0.0, resume="auto")
    with pytest.raises(CheckpointError, match=r"transfer_consistency: 10\.0 -> 0\.0"):
        train_transfer(other, tmp_path, synthetic=BankSource(synthetic_bank, 2), real_loader=real)


DDP_WORKER = """
import json, os, sys
import torch
from model.cyclegan import CycleGANSettings
from model.transfer_train import build_transfer_model, train_step
from util.distributed import cleanup_distributed, init_distributed

info = init_distributed("cpu")
torch.manual_seed(0)  # same initial networks on both ranks
m = build_transfer_model(CycleGANSettings(ngf=4, n_blocks=1, ndf=4), lr=2e-4, beta1=0.5, n_epochs=1,
                         n_epochs_decay=1, pool_size=2, device="cpu", seed=info.rank, dist=info)
g = torch.Generator().manual_seed(10 + info.rank)  # each rank its own images
before = {n: [p.detach().clone() for p in net.parameters()] for n, net in m.nets().items()}
for _ in range(2):
    a = torch.ones(1, 1, 32, 32)
    a[..., 8:24, 8:24] = torch.rand(1, 1, 16, 16, generator=g) - 0.5
    losses, _ = train_step(m, a, torch.rand(1, 1, 32, 32, generator=g) * 2 - 1)
out = {"ddp": type(m.gens).__name__,
       "changed": {n: all(not torch.equal(p0, p) for p0, p in zip(before[n], net.parameters()))
                   for n, net in m.nets().items()},
       "finite": all(torch.isfinite(torch.tensor(v)).item() for v in losses.values()),
       "weights": {n: torch.cat([p.detach().flatten() for p in net.parameters()]).tolist()
                   for n, net in m.nets().items()}}
cleanup_distributed()
json.dump(out, open(os.path.join(sys.argv[1], f"rank{info.rank}.json"), "w"))
"""


@pytest.mark.slow
def test_two_gloo_processes_keep_all_four_networks_in_sync(tmp_path):
    """DDP: generator pair and discriminator pair each one DDP module; replicas identical after two steps."""
    from tests.launch import run_torchrun

    script = tmp_path / "worker.py"
    script.write_text(DDP_WORKER)
    run_torchrun(script, tmp_path, timeout=180)
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["ddp"] == "DistributedDataParallel"
    assert all(r0["changed"].values()) and all(r1["changed"].values()) and r0["finite"] and r1["finite"]
    for name in ("G_A", "G_B", "D_A", "D_B"):
        assert r0["weights"][name] == r1["weights"][name], name
