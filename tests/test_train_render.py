"""The trainer entry point: mode validation, LR schedule, 2-iteration smoke runs of every mode on stand-in data,
label independence of fine-tuning, checkpoint round trip and the official checkpoint layout in test mode."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import train_render as T
from config import load_config

TINY = ["width=0.125", "batch_size=2", "transfer=none", "num_workers=0", "iters_per_epoch=2", "max_epoch=1",
        "epoch_test=false", "img_log_every=1", "num_points=256"]


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """Stand-in MANO model + a small NYU-format tree (8 train / 4 test frames)."""
    root = tmp_path_factory.mktemp("assets")
    cfg = load_config([f"demo_dir={root}", "demo_train_frames=8", "demo_test_frames=4"])
    mano, tree = T.ensure_demo_assets(cfg)
    return {"mano": mano, "tree": tree, "args": [f"mano_path={mano}", f"data_root={tree}"]}


def _run(tmp, assets, name, *extra):
    rc = T.main([f"output_dir={tmp}", f"run_name={name}", *assets["args"], *TINY, *extra])
    return rc, Path(tmp) / "nyu" / name


# ----------------------------------------------------------------------------------------------------
# validation and schedule
# ----------------------------------------------------------------------------------------------------
def test_bad_key_exits_2_with_message(capsys):
    assert T.main(["lr=fast"]) == 2
    assert "lr" in capsys.readouterr().err


@pytest.mark.parametrize("args, needle", [
    (["train_stage=finetune"], "finetune_dir"),
    (["phase=test"], "load_model"),
    (["train_stage=warmup"], "train_stage"),
    (["stage_num=3"], "stage_num"),
])
def test_mode_validation(tmp_path, capsys, assets, args, needle):
    assert T.main([f"output_dir={tmp_path}", *assets["args"], *TINY, *args]) == 2
    assert needle in capsys.readouterr().err


def test_consis_transfer_needs_a_generator(tmp_path, capsys, assets):
    args = [a for a in TINY if not a.startswith("transfer")]
    assert T.main([f"output_dir={tmp_path}", *assets["args"], *args, "transfer=consis"]) == 2
    assert "transfer_net_path" in capsys.readouterr().err


def _lrs(cfg, epochs=15):
    net = torch.nn.Linear(2, 2)
    opt, sched = T.build_optimizer(cfg, net)
    out = []
    for _ in range(epochs):
        out.append(opt.param_groups[0]["lr"])
        opt.step()  # no gradients: a no-op, keeps torch's call-order check quiet
        sched.step()
    return out


def test_lr_schedule_official_off_by_one():
    lrs = _lrs(load_config([]))
    assert lrs == pytest.approx([1e-3] * 11 + [1e-4] * 4, rel=1e-12)  # epochs 0-10, then 11-14
    assert _lrs(load_config(["lr_offbyone=false"])) == pytest.approx([1e-3] * 10 + [1e-4] * 5, rel=1e-12)
    assert _lrs(load_config(["scheduler=none"])) == pytest.approx([1e-3] * 15, rel=1e-12)


def test_optimizer_is_adamw_with_decay_on_every_parameter():
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))
    opt, _ = T.build_optimizer(load_config([]), net)
    assert isinstance(opt, torch.optim.AdamW)
    (group,) = opt.param_groups
    assert group["weight_decay"] == 0.01 and len(group["params"]) == 4


def test_loss_weights_follow_the_official_constants():
    w = T.loss_weights(load_config([]))
    assert (w["pix"], w["coord"], w["joint"], w["vert"], w["shape"], w["negscale"]) == (1, 100, 100, 100, 1000, 0.1)
    assert (w["m2d"], w["d2m"], w["pd2m"], w["coll"], w["p2m"], w["m2p"]) == pytest.approx((0.1, 1, 1, 1, 100, 100))
    off = T.loss_weights(load_config(["inter_branch=false"]))
    assert off["p2m"] == off["m2p"] == off["distil_joint"] == 0 and off["distil_mesh"] == 100


def test_weighted_total_by_hand():
    terms = {"syn/pix/s1": torch.tensor(2.0), "syn/coord/s2": torch.tensor(0.5), "real/m2d/s1": torch.tensor(3.0)}
    w = {"pix": 1.0, "coord": 100.0, "m2d": 0.1}
    assert float(T.weighted_total(terms, w)) == pytest.approx(2.0 + 50.0 + 0.3)


# ----------------------------------------------------------------------------------------------------
# smoke runs of every mode (2 iterations each)
# ----------------------------------------------------------------------------------------------------
def _jsonl(run):
    return [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, assets):
    tmp = tmp_path_factory.mktemp("pre")
    rc, run = _run(tmp, assets, "pre", "train_stage=pretrain")
    assert rc == 0
    return run


def test_pretrain_smoke(pretrained):
    steps = _jsonl(pretrained)
    assert [s["step"] for s in steps] == [1, 2]
    names = {k for k in steps[0] if k.startswith("loss/")}
    for k in (1, 2):
        assert {f"loss/syn/{t}/s{k}" for t in ("pix", "coord", "joint", "vert", "shape", "negscale")} <= names
    assert all(np.isfinite(v) for s in steps for k, v in s.items() if k.startswith("loss/"))
    state = torch.load(pretrained / "latest.pth", weights_only=True)
    assert {"model", "optimizer", "scheduler", "epoch", "step", "config"} <= set(state)
    assert state["epoch"] == 0 and state["step"] == 2 and state["config"]["width"] == 0.125
    scores = json.loads((pretrained / "test_scores.json").read_text())
    assert set(scores["views"][0]["scores"]) == {"s1_pwe", "s1_mano", "s2_pwe", "s2_mano"}
    for png in ("loss_curves.png", "success_curves_v1.png"):
        assert (pretrained / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "epoch 0:" in (pretrained / "train.log").read_text()


def test_finetune_two_stage_smoke(tmp_path, assets, pretrained):
    rc, run = _run(tmp_path, assets, "ft2", "train_stage=finetune", f"finetune_dir={pretrained / 'latest.pth'}")
    assert rc == 0
    steps = _jsonl(run)
    assert len(steps) == 2
    names = {k for k in steps[0] if k.startswith("loss/")}
    expect = {f"loss/real/{t}/s1" for t in ("distil_map", "distil_pwe", "distil_joint", "distil_mesh", "m2d", "d2m",
                                            "pd2m", "coll")}
    expect |= {f"loss/real/{t}/s2" for t in ("p2m", "m2d", "d2m", "pd2m", "coll", "m2p")}
    expect |= {f"loss/syn/{t}/s{k}" for t in ("pix", "coord", "joint", "vert", "coll") for k in (1, 2)}
    assert expect <= names and "loss/syn/shape/s1" not in names
    assert 0 <= steps[0]["stat/m2p_selected"] <= 2 * 21  # counted pairs of the batch
    assert "err/mano_s2" in steps[0]  # logged errors against the labels
    result = np.loadtxt(run / "result_1_0.txt")
    assert result.shape == (4, 63) and np.isfinite(result).all()


def test_finetune_one_stage_smoke(tmp_path, assets, pretrained):
    rc, run = _run(tmp_path, assets, "ft1", "train_stage=finetune", "stage_num=1",
                   f"finetune_dir={pretrained / 'latest.pth'}")
    assert rc == 0
    names = {k for k in _jsonl(run)[0] if k.startswith("loss/")}
    assert {"loss/real/p2m/s1", "loss/real/m2p/s1", "loss/real/d2m/s1"} <= names
    assert not any(n.endswith("/s2") for n in names) and "loss/real/distil_map/s1" not in names
    scores = json.loads((run / "test_scores.json").read_text())
    assert set(scores["views"][0]["scores"]) == {"s1_pwe", "s1_mano"}


def test_test_mode_on_our_checkpoint(tmp_path, assets, pretrained):
    rc, run = _run(tmp_path, assets, "t", "phase=test", f"load_model={pretrained / 'latest.pth'}", "width=1.0",
                   "save_mesh=true")
    assert rc == 0  # width 1.0 on the command line: the checkpoint's saved width 0.125 is used
    ours = json.loads((run / "test_scores.json").read_text())["views"][0]["scores"]
    before = json.loads((pretrained / "test_scores.json").read_text())["views"][0]["scores"]
    for key, entry in ours.items():  # the same weights give the same numbers as the end-of-training test
        assert entry["dsf11"] == pytest.approx(before[key]["dsf11"], abs=1e-6)
    assert np.loadtxt(run / "mesh_result_0.txt").shape == (4, 779 * 3)
    assert np.loadtxt(run / "MANO_result_0.txt").shape == (4, 62)


def test_test_mode_on_official_layout(tmp_path, assets):
    """A checkpoint in the official layout ({"model": DataParallel state dict, "optimizer", "epoch"}) loads strictly
    and its result file equals an independent evaluation of the same network through ``model.predict``."""
    from dataloader.nyu import NYUDataset
    from model.pose_net import build_pose_net
    from model.prediction import predict
    from render.hand_renderer import HandRenderer
    from render.mano_io import load_mano
    from render.mano_layer import ManoLayer
    from util.camera import NYU_CAMERA
    from util.geometry import xyz_to_uvd

    torch.manual_seed(3)
    net = build_pose_net(2, 21, width=0.125)
    with torch.no_grad():  # make the MANO head produce a visible hand (official init gives scale ~ 0)
        net.mano_regress_s2[2].bias[58] = 1.0
        for bn in [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]:
            bn.running_mean.uniform_(-0.1, 0.1)
    ckpt = tmp_path / "official.pth"
    torch.save({"model": {f"module.{k}": v for k, v in net.state_dict().items()}, "optimizer": {}, "epoch": 14}, ckpt)
    rc, run = _run(tmp_path, assets, "off", "phase=test", f"load_model={ckpt}")
    assert rc == 0
    ds = NYUDataset(assets["tree"], "test", view=1, augment=False, crop_sampling=load_config([]).crop_sampling)
    batch = {k: torch.stack([ds[i][k] for i in range(len(ds))]) for k in ("depth", "center_xyz", "cube", "M")}
    renderer = HandRenderer(ManoLayer(load_mano(assets["mano"])), NYU_CAMERA.as_tuple())
    pred = predict(net, batch["depth"], batch["center_xyz"], batch["cube"], batch["M"],
                   camera=NYU_CAMERA.as_tuple(), renderer=renderer)
    expect = xyz_to_uvd(pred.final.mano_mm.double(), NYU_CAMERA.as_tuple()).numpy().reshape(len(ds), -1)
    np.testing.assert_allclose(np.loadtxt(run / "result_1_0.txt"), expect, atol=2e-3)  # %.3f file


def test_official_layout_with_wrong_keys_is_one_clear_error(tmp_path, capsys, assets):
    from model.pose_net import build_pose_net

    state = build_pose_net(2, 21, width=0.125).state_dict()
    state.pop("fusion.0.weight")
    torch.save({"model": state, "epoch": 1}, tmp_path / "bad.pth")
    rc, _ = _run(tmp_path, assets, "bad", "phase=test", f"load_model={tmp_path / 'bad.pth'}")
    assert rc == 2 and "fusion.0.weight" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------
# label independence, BN mode, checkpoint round trip
# ----------------------------------------------------------------------------------------------------
def _tiny_setup(assets, seed=0):
    from dataloader.builders import build_real_loader, build_synthetic

    cfg = load_config([*assets["args"], *TINY, "augment=false"])
    torch.manual_seed(seed)
    models = T.build_models(cfg, torch.device("cpu"), transfer=True)
    syn = build_synthetic(cfg, "cpu", "finetune", mano_layer=models.layer)
    loader = build_real_loader(cfg, "train", train=False)
    return cfg, models, syn, loader


def test_real_labels_never_reach_a_loss(assets):
    """Fine-tuning with the real labels replaced by noise gives bit-identical weights after 3 steps."""
    weights = []
    for noisy in (False, True):
        cfg, models, syn, loader = _tiny_setup(assets)
        opt, _ = T.build_optimizer(cfg, models.net)
        gen = torch.Generator().manual_seed(5)
        noise = torch.Generator().manual_seed(99)
        for step, real in zip(range(3), loader):
            if noisy:
                for k in [k for k in real if k.startswith("joints_")]:
                    real[k] = torch.randn(real[k].shape, generator=noise) * 10
            res = T.finetune_step(models, syn.next_batch(), real, cfg, gen)
            T.label_errors(res.real_out, real, models.layer, cfg)  # the trainer logs these every step
            opt.zero_grad()
            T.weighted_total(res.terms, T.loss_weights(cfg)).backward()
            opt.step()
        weights.append({k: v.clone() for k, v in models.net.state_dict().items()})
    assert weights[0].keys() == weights[1].keys()
    changed = 0
    for k in weights[0]:
        assert torch.equal(weights[0][k], weights[1][k]), k
        changed += not torch.equal(weights[0][k], _tiny_setup_initial(assets)[k])
    assert changed > 0  # the steps did train the network


_INITIAL: dict = {}


def _tiny_setup_initial(assets):
    if not _INITIAL:
        _, models, _, _ = _tiny_setup(assets)
        _INITIAL.update({k: v.clone() for k, v in models.net.state_dict().items()})
    return _INITIAL


def test_bn_statistics_updated_by_both_domains(assets):
    cfg, models, syn, loader = _tiny_setup(assets)
    models.net.train()
    bn = models.net.pre[1]
    before = int(bn.num_batches_tracked)
    T.finetune_step(models, syn.next_batch(), next(iter(loader)), cfg, torch.Generator().manual_seed(0))
    assert int(bn.num_batches_tracked) == before + 2  # the synthetic and the real pass, both in train mode


def test_checkpoint_round_trip(tmp_path, assets):
    cfg, models, syn, loader = _tiny_setup(assets)
    opt, sched = T.build_optimizer(cfg, models.net)
    res = T.finetune_step(models, syn.next_batch(), next(iter(loader)), cfg, torch.Generator().manual_seed(0))
    T.weighted_total(res.terms, T.loss_weights(cfg)).backward()
    opt.step()
    sched.step()
    path = tmp_path / "latest.pth"
    T.save_training_checkpoint(str(path), net=models.net, opt=opt, sched=sched, epoch=4, step=17, cfg=cfg,
                               extra={"best": 12.5}, generators={"synthetic": syn.generator})
    assert not list(tmp_path.glob("*.tmp*"))  # atomic write leaves no temporary file
    state = T.load_training_checkpoint(str(path))
    assert state["epoch"] == 4 and state["step"] == 17 and state["config"] == cfg.to_dict()
    fresh, _ = T.build_models(cfg, torch.device("cpu"), transfer=False).net, None
    T.load_network_weights(fresh, str(path))
    for k, v in models.net.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v), k
    opt2, sched2 = T.build_optimizer(cfg, fresh)
    opt2.load_state_dict(state["optimizer"])
    sched2.load_state_dict(state["scheduler"])
    a, b = opt.state_dict()["state"], opt2.state_dict()["state"]
    assert a.keys() == b.keys() and all(torch.equal(a[i]["exp_avg"], b[i]["exp_avg"]) for i in a)
    assert sched2.last_epoch == sched.last_epoch == 1


def test_one_stage_network_starts_from_a_two_stage_checkpoint(tmp_path):
    from model.pose_net import build_pose_net

    two = build_pose_net(2, 21, width=0.125)
    torch.save({"model": two.state_dict(), "epoch": 0}, tmp_path / "two.pth")
    one = build_pose_net(1, 21, width=0.125)
    T.load_network_weights(one, str(tmp_path / "two.pth"))
    assert torch.equal(one.layer4[1].conv2.weight, two.layer4[1].conv2.weight)


def test_dsf11_metric_by_hand():
    from util.joints import MANO_TO_NYU

    pred = torch.zeros(1, 21, 3, dtype=torch.float64)
    labels = torch.zeros(1, 14, 3, dtype=torch.float64)
    labels[0, :11, 0] = torch.arange(11.0)  # joint j is j mm off; the 3 palm points are ignored
    labels[0, 11:, 2] = 1000.0
    assert float(T.dsf11_errors(pred, labels)[0]) == pytest.approx(5.0)  # mean of 0..10
    pred[0, list(MANO_TO_NYU[:11])] = labels[0, :11]
    assert float(T.dsf11_errors(pred, labels)[0]) == 0.0


def test_demo_profile_keeps_command_line_values():
    cfg = T.apply_demo_profile(load_config(["demo=true", "width=0.5"]), ["demo=true", "width=0.5"])
    assert cfg.width == 0.5 and cfg.batch_size == T.DEMO_PROFILE["batch_size"] and cfg.transfer == "none"
    assert dataclasses.asdict(cfg)["max_epoch"] == T.DEMO_PROFILE["max_epoch"]


def test_bn_recalibration_uses_unlabelled_real_train_crops(tmp_path, assets, pretrained):
    """``bn_recalibration=N``: after fine-tuning the checkpoint's BN statistics are those of the first N unaugmented
    real train batches (first BN layer checked against its input, the stem convolution, in float64)."""
    from dataloader.builders import build_real_loader

    rc, run = _run(tmp_path, assets, "ftbn", "train_stage=finetune", f"finetune_dir={pretrained / 'latest.pth'}",
                   "bn_recalibration=1")
    assert rc == 0
    state = torch.load(run / "latest.pth", weights_only=True)["model"]
    cfg = load_config([*assets["args"], *TINY])
    batch = next(iter(build_real_loader(cfg, "train", train=False, labels=False)))
    x = batch["depth"].double()
    conv = torch.nn.functional.conv2d(x, state["pre.0.weight"].double(), padding=2)  # 5x5, no bias (stem)
    flat = conv.transpose(0, 1).reshape(conv.shape[1], -1)
    np.testing.assert_allclose(state["pre.1.running_mean"].double().numpy(), flat.mean(1).numpy(), rtol=1e-4,
                               atol=1e-6)
    np.testing.assert_allclose(state["pre.1.running_var"].double().numpy(), flat.var(1).numpy(), rtol=1e-4,
                               atol=1e-6)
    assert int(state["pre.1.num_batches_tracked"]) == 1
    assert "stat/bn_batches=1" in (run / "train.log").read_text()


def test_test_mode_bn_recalibration_matches_the_fine_tuning_one(tmp_path, assets, pretrained):
    """``phase=test bn_recalibration=1`` on a checkpoint fine-tuned without it scores exactly like the run that
    re-estimated the statistics at its end (training does not read the running statistics)."""
    args = ("train_stage=finetune", f"finetune_dir={pretrained / 'latest.pth'}")
    rc, plain = _run(tmp_path, assets, "ft_plain", *args)
    assert rc == 0
    rc, recal = _run(tmp_path, assets, "ft_recal", *args, "bn_recalibration=1")
    assert rc == 0
    rc, tested = _run(tmp_path, assets, "t_recal", "phase=test", f"load_model={plain / 'latest.pth'}",
                      "bn_recalibration=1")
    assert rc == 0
    a = json.loads((recal / "test_scores.json").read_text())["views"][0]["scores"]
    b = json.loads((tested / "test_scores.json").read_text())["views"][0]["scores"]
    c = json.loads((plain / "test_scores.json").read_text())["views"][0]["scores"]
    for key in a:
        assert b[key]["dsf11"] == pytest.approx(a[key]["dsf11"], abs=1e-4)
    assert any(abs(c[k]["dsf11"] - a[k]["dsf11"]) > 1e-3 for k in a)  # the statistics did change the scores


def test_host_scalars_equal_per_value_floats():
    values = {"a": torch.tensor(1.5), "b": torch.tensor([2.25]), "c": torch.tensor(3, dtype=torch.float64) / 7,
              "d": torch.tensor(4.0, requires_grad=True) * 2}
    out = T.host_scalars(values)
    assert list(out) == list(values)
    for k, v in values.items():
        assert out[k] == pytest.approx(float(v.detach()), rel=1e-7)
        assert isinstance(out[k], float)
    assert T.host_scalars({}) == {}
