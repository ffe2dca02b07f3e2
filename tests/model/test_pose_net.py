"""Pose network (docs/method.md §7): layout, counts, init, shapes, the stage-2 remap, inference on a real frame."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from torch import nn

from model import CheckpointError, build_pose_net, load_pose_checkpoint, stage_parameters
from util.camera import NYU_CAMERA
from tests.reference import literal_crop_matrix
from util.geometry import crop_matrix_batch

J = 21


# ----------------------------------------------------------------------------------------------------
# the official checkpoint layout, rebuilt from docs/method.md §7 and torchvision's BasicBlock naming
# ----------------------------------------------------------------------------------------------------
def _bn(prefix: str, ch: int) -> dict[str, tuple]:
    return {f"{prefix}.weight": (ch,), f"{prefix}.bias": (ch,), f"{prefix}.running_mean": (ch,),
            f"{prefix}.running_var": (ch,), f"{prefix}.num_batches_tracked": ()}


def _block(prefix: str, cin: int, cout: int, stride: int) -> dict[str, tuple]:
    keys = {f"{prefix}.conv1.weight": (cout, cin, 3, 3), **_bn(f"{prefix}.bn1", cout),
            f"{prefix}.conv2.weight": (cout, cout, 3, 3), **_bn(f"{prefix}.bn2", cout)}
    if stride != 1 or cin != cout:
        keys.update({f"{prefix}.downsample.0.weight": (cout, cin, 1, 1), **_bn(f"{prefix}.downsample.1", cout)})
    return keys


def _stage(suffix: str, cin: int) -> dict[str, tuple]:
    keys: dict[str, tuple] = {}
    for k, cout in enumerate((64, 128, 256, 512)):
        keys.update(_block(f"layer{k + 1}{suffix}.0", cin, cout, 1 if k == 0 else 2))
        keys.update(_block(f"layer{k + 1}{suffix}.1", cout, cout, 1))
        cin = cout
    keys.update({f"mano_regress{suffix}.2.weight": (62, 512), f"mano_regress{suffix}.2.bias": (62,)})
    for k, c_in in ((4, 512), (3, 256), (2, 256)):
        keys.update({f"deconv_layer{k}{suffix}.0.weight": (c_in, 256, 4, 4), **_bn(f"deconv_layer{k}{suffix}.1", 256)})
    keys.update({f"finals{suffix}.0.weight": (3 * J, 256, 1, 1), f"finals{suffix}.0.bias": (3 * J,),
                 f"finals{suffix}.1.weight": (J, 256, 1, 1), f"finals{suffix}.1.bias": (J,)})
    return keys


def official_layout(stage_num: int = 2) -> dict[str, tuple]:
    keys = {"pre.0.weight": (64, 1, 5, 5), **_bn("pre.1", 64), **_stage("", 64)}
    if stage_num == 2:
        keys.update({"fusion.0.weight": (256, 64 + 256 + 4 * J * 2, 3, 3), "fusion.0.bias": (256,),
                     **_bn("fusion.1", 256), **_stage("_s2", 256)})
    return keys


def _learnable(layout: dict[str, tuple]) -> int:
    skip = ("running_mean", "running_var", "num_batches_tracked")
    return sum(math.prod(s) for k, s in layout.items() if not k.endswith(skip))


@pytest.fixture(scope="module")
def net2():
    torch.manual_seed(0)
    return build_pose_net(stage_num=2, joint_num=J)


def test_parameter_counts(net2):
    total = sum(p.numel() for p in net2.parameters())
    assert total == 32_086_372 == _learnable(official_layout(2))
    assert sum(p.numel() for p in stage_parameters(net2, 1)) == 15_417_938 == _learnable(official_layout(1))
    assert sum(p.numel() for p in build_pose_net(stage_num=1).parameters()) == 15_417_938


def test_official_checkpoint_loads_strict(net2):
    layout = official_layout(2)
    assert {k: tuple(v.shape) for k, v in net2.state_dict().items()} == layout
    g = torch.Generator().manual_seed(3)
    state = {k: (torch.zeros(s, dtype=torch.int64) if k.endswith("num_batches_tracked")
                 else torch.randn(s, generator=g)) for k, s in layout.items()}
    net = build_pose_net()
    net.load_official_state({"model": {f"module.{k}": v for k, v in state.items()}, "epoch": 3})
    for k, v in net.state_dict().items():
        assert torch.equal(v, state[k]), k
    # Sequential indices the official code relies on
    assert isinstance(net.mano_regress[2], nn.Linear) and isinstance(net.fusion[0], nn.Conv2d)
    assert isinstance(net.deconv_layer4[0], nn.ConvTranspose2d) and isinstance(net.pre[1], nn.BatchNorm2d)
    assert list(build_pose_net(stage_num=1).state_dict()) == list(official_layout(1))


def _random_state(net: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: (v.clone() if not v.is_floating_point() else torch.randn(v.shape, generator=g))
            for k, v in net.state_dict().items()}


def test_checkpoint_file_round_trip(tmp_path):
    """A trainer-style file {"model", "optimizer", "epoch"} (DataParallel prefix) loads by path, weights_only."""
    net = build_pose_net(width=0.25)
    state = _random_state(net, 6)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    path = tmp_path / "latest.pth"
    torch.save({"model": {f"module.{k}": v for k, v in state.items()}, "optimizer": optimizer.state_dict(),
                "epoch": 7}, path)
    loaded = load_pose_checkpoint(path)
    assert list(loaded) == list(state)
    fresh = build_pose_net(width=0.25)
    fresh.load_official_state(path)
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_checkpoint_errors_name_file_and_keys(tmp_path):
    net = build_pose_net(width=0.25)
    with pytest.raises(FileNotFoundError, match="nothing.pth"):
        net.load_official_state(tmp_path / "nothing.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(CheckpointError, match=r"garbage\.pth.*not a readable PyTorch checkpoint.*DSF pose"):
        load_pose_checkpoint(garbage)
    with pytest.raises(CheckpointError, match="garbage.pth"):
        net.load_official_state(garbage)
    not_state = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), not_state)
    with pytest.raises(CheckpointError, match=r"tensor\.pth.*got a Tensor"):
        load_pose_checkpoint(not_state)

    state = _random_state(net, 7)
    del state["fusion.0.bias"]
    state["fusion.2.weight"] = torch.zeros(3)
    state["finals_s2.1.bias"] = torch.zeros(J + 1)
    wrong = tmp_path / "wrong_keys.pth"
    torch.save({"model": state, "epoch": 1}, wrong)
    with pytest.raises(CheckpointError) as info:
        net.load_official_state(wrong)
    msg = str(info.value)
    assert "wrong_keys.pth" in msg and "2-stage DSF pose network" in msg
    assert "missing keys (1): fusion.0.bias" in msg
    assert "unexpected keys (1): fusion.2.weight" in msg
    assert f"finals_s2.1.bias ({J + 1},) != ({J},)" in msg
    with pytest.raises(CheckpointError, match="missing keys"):  # an in-memory state dict: same check
        net.load_official_state(state)
    # a one-stage checkpoint given to the two-stage net lists the whole second stage as missing
    with pytest.raises(CheckpointError, match=r"missing keys \(\d+\): fusion\.0\.weight"):
        net.load_official_state(build_pose_net(stage_num=1, width=0.25).state_dict())


def test_initialisation_statistics(net2):
    for name, m in net2.named_modules():
        if isinstance(m, nn.Conv2d) and not name.startswith("finals"):
            n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            if m.weight.numel() >= 1000:
                assert m.weight.std().item() == pytest.approx(math.sqrt(2.0 / n), rel=0.1), name
                assert abs(m.weight.mean().item()) < 0.1 * math.sqrt(2.0 / n), name
        elif isinstance(m, (nn.ConvTranspose2d, nn.Linear)):
            assert m.weight.std().item() == pytest.approx(0.001, rel=0.1), name
        elif isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0), name
    for heads in (net2.finals, net2.finals_s2):
        for conv in heads:
            assert conv.weight.std().item() == pytest.approx(0.001, rel=0.1)
            assert torch.all(conv.bias == 0)
    bound = 1 / math.sqrt(512)  # PyTorch default bias init of the MANO heads
    assert net2.mano_regress[2].bias.abs().max() <= bound
    assert net2.mano_regress[2].bias.std() > 0.3 * bound
    assert net2.fusion[0].bias.abs().max() <= 1 / math.sqrt(net2.fusion[0].weight[0].numel())


def test_initial_mano_output_is_near_zero():
    torch.manual_seed(1)
    net = build_pose_net(stage_num=1)
    out = net(torch.rand(2, 1, 128, 128) * 2 - 1).final.mano
    # weight std 0.001 -> output ~ bias (|b| <= 1/sqrt(512) = 0.044): a collapsed hand (s ~ 0) at the centre
    assert out.abs().max() < 0.15
    assert (out - net.mano_regress[2].bias).abs().mean() < 0.03


def _crop_batch(b: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    depth = torch.ones(b, 1, 128, 128)
    depth[:, :, 40:90, 30:100] = torch.rand(b, 1, 50, 70, generator=g) * 0.4 - 0.2
    center = torch.tensor([[20.0, -30.0, 700.0]]).repeat(b, 1) + torch.randn(b, 3, generator=g) * 10
    return depth, center, torch.full((b, 3), 250.0)


def test_output_shapes_two_stages(net2, splat_renderer):
    depth, center, cube = _crop_batch(2)
    seen = {}

    def record(module, inputs, output) -> None:
        seen["fusion_in"] = tuple(inputs[0].shape)

    hook = net2.fusion[0].register_forward_hook(record)
    try:
        out = net2(depth, center, cube, renderer=splat_renderer)
    finally:
        hook.remove()
    assert seen["fusion_in"] == (2, 488, 64, 64)
    assert len(out.stages) == 2
    for stage in out.stages:
        assert stage.maps.shape == (2, 84, 64, 64) and stage.mano.shape == (2, 62)
        assert torch.isfinite(stage.maps).all() and torch.isfinite(stage.mano).all()
    assert out.render.depth.shape == (2, 1, 128, 128)
    assert out.final is out.stages[1]


def test_stage2_needs_renderer_and_crop(splat_renderer):
    net = build_pose_net(width=0.25)
    depth, center, cube = _crop_batch(1)
    with pytest.raises(ValueError, match="renderer"):
        net(depth, center, cube)
    with pytest.raises(ValueError, match="centre and cube"):
        net(depth, renderer=splat_renderer)
    assert len(net(depth, num_stages=1).stages) == 1


def test_stage2_gradients_reach_stage1_through_rendering(splat_renderer):
    """The stage-1 MANO head feeds stage 2 only through the rendered remap: its gradient proves the path."""
    torch.manual_seed(2)
    net = build_pose_net(width=0.25)
    depth, center, cube = _crop_batch(2)

    def stage2_grad(renderer):
        net.zero_grad(set_to_none=True)
        out = net(depth, center, cube, renderer=renderer)
        (out.stages[1].maps.square().sum() + out.stages[1].mano.square().sum()).backward()
        return net.mano_regress[2].weight.grad

    grad = stage2_grad(splat_renderer)
    assert grad is not None and grad.abs().max() > 0

    class Detached:
        def render_prediction(self, theta, center_xyz, cube_mm):
            return splat_renderer.render_prediction(theta.detach(), center_xyz, cube_mm)

    grad = stage2_grad(Detached())
    assert grad is None or grad.abs().max() == 0  # control: without the render path nothing arrives
    assert net.pre[0].weight.grad.abs().max() > 0  # stage 1 trunk still gets stage-2 gradient via c0 / maps


def test_width_quarter_builds_and_runs(splat_renderer):
    net = build_pose_net(width=0.25)
    full = 32_086_372
    n = sum(p.numel() for p in net.parameters())
    assert full / 20 < n < full / 10  # ~16x fewer weights in the trunks (heads / fusion inputs do not scale)
    assert net.pre[0].out_channels == 16 and net.layer4[0].conv1.out_channels == 128
    depth, center, cube = _crop_batch(2)
    out = net(depth, center, cube, renderer=splat_renderer)
    assert out.final.maps.shape == (2, 84, 64, 64) and out.final.mano.shape == (2, 62)


def test_renderer_is_an_explicit_argument_not_state(splat_renderer):
    """The renderer is passed to forward (never stored on the net): stage 2 without it is a clear error, and the
    state dict / module tree do not change when it is used."""
    net = build_pose_net(width=0.25)
    keys = list(net.state_dict())
    depth, center, cube = _crop_batch(1)
    with pytest.raises(ValueError, match="renderer"):
        net(depth, center, cube)
    assert len(net(depth, center, cube, renderer=splat_renderer).stages) == 2
    assert len(net(depth, num_stages=1).stages) == 1  # stage 1 alone needs no renderer
    assert list(net.state_dict()) == keys and not hasattr(net, "renderer")
    assert not hasattr(net, "set_renderer")


def test_bad_arguments():
    with pytest.raises(ValueError, match="stage_num"):
        build_pose_net(stage_num=3)
    with pytest.raises(ValueError, match="width"):
        build_pose_net(width=0)


def crop_depth_matrix(shared_dir) -> np.ndarray:
    """The data loader's float64 crop matrix (1, 3, 3) of the real NYU test frame."""
    return _real_nyu_crop(shared_dir, float64_matrix=True)


def _real_nyu_crop(shared_dir, float64_matrix: bool = False):
    from dataloader.crop import crop_depth
    from dataloader.depth_io import decode_depth

    depth_mm = decode_depth(shared_dir / "nyu" / "sample" / "test" / "depth_1_0000001.png")
    first = (shared_dir / "nyu" / "center_test_refined.txt").read_text().splitlines()[0]
    center = np.array([float(v) for v in first.split()])
    center[1] = -center[1]  # the file is y-up; the code's frame is y-down
    cube = np.full(3, 250.0)
    crop, M = crop_depth(depth_mm, center, cube, NYU_CAMERA.as_tuple())
    if float64_matrix:
        return M[None]
    as_t = lambda a: torch.as_tensor(a, dtype=torch.float32)[None]  # noqa: E731
    return as_t(crop)[:, None], as_t(center), as_t(cube), as_t(M)


def test_forward_and_predict_on_real_nyu_frame(net2, splat_renderer, shared_dir):
    depth, center, cube, M = _real_nyu_crop(shared_dir)
    assert 0.02 < (depth < 0.99).float().mean() < 0.6  # a hand-sized foreground
    pred = net2.predict(depth, center, cube, M, camera=NYU_CAMERA, renderer=splat_renderer)
    assert net2.training  # mode restored
    # predict(depth, centre, cube, camera=...): M defaults to the shared crop matrix of (C, S); for an
    # un-augmented test crop that is the loader's M, so both calls must agree
    literal = literal_crop_matrix(center.double().numpy(), cube.double().numpy(), NYU_CAMERA.as_tuple())
    np.testing.assert_allclose(crop_depth_matrix(shared_dir), literal, rtol=0, atol=1e-12)
    np.testing.assert_allclose(  # the default M of predict
        crop_matrix_batch(center.double().numpy(), cube.double().numpy(), NYU_CAMERA.as_tuple()), literal,
        rtol=0, atol=1e-12)
    default = net2.predict(depth, center, cube, camera=NYU_CAMERA, renderer=splat_renderer)
    for got, ref in zip(default.stages, pred.stages):
        for name in ("pwe_uvd", "pwe_mm", "mano_mm", "mano_verts_mm"):
            torch.testing.assert_close(getattr(got, name), getattr(ref, name), rtol=0, atol=1e-4, msg=name)
    assert len(pred.stages) == 2
    for stage in pred.stages:
        for joints in (stage.pwe_mm, stage.mano_mm):
            assert joints.shape == (1, 21, 3) and torch.isfinite(joints).all()
        # untrained: the decoded pixel joints lie in the crop's cube, the collapsed MANO hand at the centre
        assert (stage.pwe_mm - center[:, None]).abs().max() < 250
        assert (stage.mano_mm - center[:, None]).abs().max() < 20


@pytest.fixture(scope="module")
def hand_renderer_setup(mano_model):
    """A width-0.25 net whose stage 1 predicts a plausible hand, the real HandRenderer and a batch of 2 crops."""
    from dataloader.synthetic import PALM_TO_CAMERA
    from render.hand_renderer import HandRenderer
    from render.mano_layer import ManoLayer
    from render.mano_params import LAYOUT_AXIS_ANGLE as LAYOUT

    renderer = HandRenderer(ManoLayer(mano_model), NYU_CAMERA.as_tuple())
    torch.manual_seed(4)
    net = build_pose_net(width=0.25)
    theta = torch.zeros(LAYOUT.dim)  # a palm-to-camera hand of crop scale (g = 1/125, s = 1) at the centre
    theta[LAYOUT.global_orient] = torch.tensor(PALM_TO_CAMERA)
    theta[LAYOUT.pose_pca] = 0.3 * torch.randn(45, generator=torch.Generator().manual_seed(5))
    theta[LAYOUT.scale] = 1.0
    with torch.no_grad():  # make stage 1 predict a plausible hand (weights std 0.001 keep it input-dependent)
        net.mano_regress[2].bias.copy_(theta)
    return net, renderer, _crop_batch(2)


class _DetachingRenderer:
    """Wraps a renderer and cuts one of the two remap inputs out of the graph (forward values unchanged)."""

    def __init__(self, inner, detach_depth: bool, detach_joints: bool):
        self.inner, self.detach_depth, self.detach_joints = inner, detach_depth, detach_joints

    def render_prediction(self, theta, center_xyz, cube):
        out = self.inner.render_prediction(theta, center_xyz, cube)
        return dataclasses.replace(out, depth=out.depth.detach() if self.detach_depth else out.depth,
                                   joints_uvd=out.joints_uvd.detach() if self.detach_joints else out.joints_uvd)


def test_stage2_with_hand_renderer(hand_renderer_setup):
    """The real prediction renderer: a stage-1 hand that covers pixels; stage-2 gradients reach the stage-1 MANO
    head through the rendered depth values alone and through the rendered joints alone, and the two add up."""
    net, renderer, (depth, center, cube) = hand_renderer_setup

    def head_grad(detach_depth: bool, detach_joints: bool) -> torch.Tensor:
        net.zero_grad(set_to_none=True)
        out = net(depth, center, cube, renderer=_DetachingRenderer(renderer, detach_depth, detach_joints))
        if not (detach_depth or detach_joints):
            assert (out.render.depth < 0.99).sum() > 200  # the hand is visible in both crops
            assert out.render.joints_uvd.shape == (2, 21, 3)
        out.stages[1].maps.square().sum().backward()
        grad = net.mano_regress[2].weight.grad  # the MANO head feeds stage 2 only through the rendering
        return torch.zeros_like(net.mano_regress[2].weight) if grad is None else grad.clone()

    full = head_grad(False, False)
    through_depth = head_grad(False, True)  # joints_uvd detached: only the rendered depth carries gradient
    through_joints = head_grad(True, False)  # converse: depth detached, only the rendered joints carry it
    control = head_grad(True, True)
    assert control.abs().max() == 0  # nothing else connects the head to stage 2
    scale = full.abs().max()
    assert scale > 0
    assert through_depth.abs().max() > 1e-3 * scale  # the depth path alone is a real, not round-off, gradient
    assert through_joints.abs().max() > 1e-3 * scale
    # chain rule: the total is the sum of the two path contributions (same forward values in all runs)
    torch.testing.assert_close(through_depth + through_joints, full, rtol=1e-3, atol=1e-4 * scale.item())
