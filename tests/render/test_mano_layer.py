"""MANO layer: LBS vs an independent float64 numpy MANO, gradients, faithfulness to the official DSF code."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from render.mano_io import ManoFormatError
from render.mano_layer import (
    DSF_GLOBAL_SCALE,
    ManoLayer,
    batch_rodrigues,
    quat_to_rotmat,
    to_dataset_order,
)
from render.mano_params import LAYOUT_AXIS_ANGLE, LAYOUT_QUATERNION, ManoParams
from tests.reference import FINGERTIPS, numpy_mano, rodrigues_np  # independent float64 MANO

WRIST_LOOP = (121, 214, 215, 279, 239, 234, 92, 38, 122, 118, 117, 119, 120, 108, 79, 78)


def random_inputs(batch: int, seed: int, pose_sigma: float = 0.6) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"full_pose": rng.normal(0, pose_sigma, (batch, 48)), "betas": rng.normal(0, 1, (batch, 10)),
            "transl": rng.uniform(-200, 200, (batch, 3))}


def run_layer(layer: ManoLayer, inp: dict[str, np.ndarray], dtype=torch.float32):
    t = {k: torch.as_tensor(v, dtype=dtype) for k, v in inp.items()}
    return layer(t["full_pose"][:, :3], t["full_pose"][:, 3:], t["betas"], t["transl"])


@pytest.fixture(scope="module")
def oracle_layer(oracle_model) -> ManoLayer:
    return ManoLayer(oracle_model)


@pytest.fixture(scope="module")
def layer(mano_model) -> ManoLayer:
    """The layer of :func:`mano_model` (oracle model or stand-in): for checks that hold for any MANO model."""
    return ManoLayer(mano_model)


@pytest.fixture(scope="module")
def oracle_forward(shared_dir):
    with np.load(shared_dir / "oracle" / "mano_forward.npz") as npz:
        return {k: npz[k] for k in npz.files}


# --------------------------------------------------------------------------------------------------
# LBS


def test_shapes_and_zero_input_gives_the_template(layer, mano_model):
    zeros = torch.zeros(2, 48)
    out = layer(zeros[:, :3], zeros[:, 3:], torch.zeros(2, 10))
    assert out.vertices.shape == (2, 778, 3) and out.joints.shape == (2, 21, 3)
    assert out.full_pose.shape == (2, 48)
    np.testing.assert_allclose(out.vertices[0].numpy(), 1000 * mano_model.v_template, atol=1e-4)
    template_joints = 1000 * np.concatenate([mano_model.J_regressor @ mano_model.v_template,
                                             mano_model.v_template[list(FINGERTIPS)]])
    np.testing.assert_allclose(out.joints[1].numpy(), template_joints, atol=1e-4)


@pytest.mark.parametrize("model_name", ["oracle_model", "standin_model"])
def test_forward_matches_float64_numpy_mano(request, model_name):
    model = request.getfixturevalue(model_name)
    layer = ManoLayer(model)
    inp = random_inputs(6, seed=1)
    out = run_layer(layer, inp)
    verts, joints = numpy_mano(model, inp["full_pose"], inp["betas"])
    expect_v = 1000 * verts + inp["transl"][:, None]
    expect_j = 1000 * joints + inp["transl"][:, None]
    assert np.abs(out.vertices.numpy() - expect_v).max() < 1e-3  # mm
    assert np.abs(out.joints.numpy() - expect_j).max() < 1e-3
    np.testing.assert_array_equal(out.full_pose.numpy(), inp["full_pose"].astype(np.float32))
    assert np.abs(expect_v - 1000 * model.v_template).max() > 20  # the poses really move the mesh (mm)


def test_root_rotation_turns_the_hand_about_the_wrist(layer):
    rng = np.random.default_rng(2)
    betas = torch.as_tensor(rng.normal(0, 1, (1, 10)), dtype=torch.float32).expand(3, 10)
    root = torch.as_tensor([[0.0, 0.0, 0.0], [0.3, -1.2, 0.7], [2.5, 0.4, -0.9]], dtype=torch.float32)
    flat = layer(root, torch.zeros(3, 45), betas)
    wrist = flat.joints[:, 0]  # = J_regressor[0] @ v_shaped: the chain's rest wrist joint
    torch.testing.assert_close(wrist[1:], wrist[:1].expand(2, 3), atol=1e-3, rtol=0)  # the wrist stays put
    fingers = torch.as_tensor(rng.normal(0, 0.4, (1, 45)), dtype=torch.float32).expand(3, 45)
    posed = layer(root, fingers, betas).vertices - wrist[:1, None]
    for b in (1, 2):  # with bent fingers too, the root acts as one rigid turn about the wrist joint
        torch.testing.assert_close(posed[b].norm(dim=-1), posed[0].norm(dim=-1), atol=1e-3, rtol=0)
        rot = torch.as_tensor(rodrigues_np(root[b].double().numpy()), dtype=torch.float32)
        torch.testing.assert_close(posed[b], posed[0] @ rot.T, atol=1e-3, rtol=0)


def test_gradcheck_double(mano_model):
    layer = ManoLayer(mano_model).double()
    rng = np.random.default_rng(3)

    def as_input(shape, sigma):
        return torch.as_tensor(rng.normal(0, sigma, shape), dtype=torch.float64).requires_grad_()

    root, pose, betas, transl = as_input((2, 3), 1.0), as_input((2, 45), 0.5), as_input((2, 10), 1.0), \
        as_input((2, 3), 10.0)

    def f(*args):
        out = layer(*args)
        return out.vertices, out.joints

    assert torch.autograd.gradcheck(f, (root, pose, betas, transl), fast_mode=True, atol=1e-5, rtol=1e-4)
    params = as_input((2, 62), 0.5)

    def g(p):
        out = layer.forward_dsf(p, DSF_GLOBAL_SCALE)
        return out.vertices, out.joints, out.rotations

    assert torch.autograd.gradcheck(g, (params,), fast_mode=True, atol=1e-5, rtol=1e-4)


def test_rodrigues_and_quaternions_match_closed_forms():
    rng = np.random.default_rng(4)
    aa = np.concatenate([rng.normal(0, 1.5, (50, 3)), np.zeros((1, 3)), [[np.pi, 0, 0]]])
    rot = batch_rodrigues(torch.as_tensor(aa))
    np.testing.assert_allclose(rot.numpy(), rodrigues_np(aa), atol=1e-7)
    quat = rng.normal(0, 1, (20, 4))
    r1 = quat_to_rotmat(torch.as_tensor(quat)).numpy()
    r_scaled = quat_to_rotmat(torch.as_tensor(3.5 * quat)).numpy()
    np.testing.assert_allclose(r_scaled, r1, atol=1e-12)  # the quaternion is normalised first
    half = np.arccos(np.clip(quat[:, :1] / np.linalg.norm(quat, axis=1, keepdims=True), -1, 1))
    axis = quat[:, 1:] / np.linalg.norm(quat[:, 1:], axis=1, keepdims=True)
    np.testing.assert_allclose(r1, rodrigues_np(2 * half * axis), atol=1e-10)


# --------------------------------------------------------------------------------------------------
# DSF parameterisation and buffers: faithfulness to the official code (oracle README §2)


@pytest.mark.parametrize("case, params_key, g, atol, has_rs", [
    ("a", "params_a", None, 2e-3, True),
    ("b", "params_b", DSF_GLOBAL_SCALE, 1e-5, True),
    ("c", "params_c_quat", None, 2e-3, False),
])
def test_forward_dsf_reproduces_the_official_code(oracle_layer, oracle_forward, case, params_key, g, atol,
                                                  has_rs):
    out = oracle_layer.forward_dsf(torch.from_numpy(oracle_forward[params_key]), global_scale=g)
    np.testing.assert_allclose(out.vertices.numpy(), oracle_forward[f"verts_{case}"], atol=atol, rtol=0)
    np.testing.assert_allclose(out.joints.numpy(), oracle_forward[f"joints_{case}"], atol=atol, rtol=0)
    if has_rs:
        np.testing.assert_allclose(out.rotations.numpy(), oracle_forward[f"Rs_{case}"], atol=1e-5, rtol=0)


def test_official_buffers(oracle_layer, oracle_forward):
    np.testing.assert_array_equal(oracle_layer.faces_closed.numpy(), oracle_forward["faces1554"])
    np.testing.assert_array_equal(oracle_layer.J_regressor21.numpy(), oracle_forward["J_regressor21"])
    assert list(oracle_layer.parents) == oracle_forward["parents"].tolist()


def test_forward_dsf_is_forward_with_pca_mean_scale_and_translation(mano_model):
    rng = np.random.default_rng(5)
    vec = torch.as_tensor(rng.normal(0, 0.5, (3, 62)), dtype=torch.float64)
    p = ManoParams.from_vector(vec)
    layer = ManoLayer(mano_model).double()
    dsf = layer.forward_dsf(vec, global_scale=DSF_GLOBAL_SCALE)
    comps, mean = torch.as_tensor(mano_model.hands_components), torch.as_tensor(mano_model.hands_mean)
    fingers = p.pose_pca @ comps + mean
    plain = layer(p.global_orient, fingers, p.betas)
    s, t = p.scale[:, None], p.transl[:, None]
    torch.testing.assert_close(dsf.vertices[:, :778], s * plain.vertices / 125 + t)
    torch.testing.assert_close(dsf.joints, s * plain.joints / 125 + t)
    torch.testing.assert_close(dsf.vertices[:, 778], dsf.vertices[:, list(WRIST_LOOP)].mean(1))
    expected_rot = rodrigues_np(fingers.reshape(3, 15, 3).numpy())
    torch.testing.assert_close(dsf.rotations, torch.as_tensor(expected_rot))


def test_quaternion_root_equals_axis_angle_root(layer):
    rng = np.random.default_rng(6)
    vec = torch.as_tensor(rng.normal(0, 0.5, (4, 62)), dtype=torch.float32)
    p = ManoParams.from_vector(vec)
    aa = p.global_orient.double()
    angle = aa.norm(dim=1, keepdim=True)
    quat = torch.cat([torch.cos(angle / 2), torch.sin(angle / 2) * aa / angle], 1) * 2.0  # not normalised
    q = dataclasses.replace(p, global_orient=quat.float()).to_vector()
    torch.testing.assert_close(layer.forward_dsf(q).vertices, layer.forward_dsf(vec).vertices,
                               atol=2e-3, rtol=0)


def test_part_faces_and_regressor_support(layer, mano_model):
    faces = layer.faces_closed.numpy()
    parts = layer.part_face_ids
    bits = layer.part_bits
    assert len(parts) == 15 and bits.shape == (1554,) and bits.dtype == torch.long
    for k, part in enumerate(parts, start=1):
        members = set(np.flatnonzero(mano_model.weights[:, k] > 0.1).tolist())
        expected = [i for i, f in enumerate(faces.tolist()) if members & set(f)]
        assert part.tolist() == expected
        assert [i for i, b in enumerate(bits.tolist()) if b >> k & 1] == expected
    assert (bits & 1).all() and int(bits.max()) < 1 << 16
    support = layer.regressor_support
    assert support.shape == (16, 778) and support.dtype == torch.bool
    assert (support.sum(1) >= 10).all()
    moved = ManoLayer(mano_model).to(torch.float64)  # index buffers keep their dtype
    assert moved.part_bits.dtype == torch.long and moved.v_template.dtype == torch.float64


def test_construction_errors(mano_model):
    regressor = mano_model.J_regressor.copy()
    support = np.flatnonzero(regressor[3] > 0)
    regressor[3] = 0.0
    regressor[3, support[:6]] = 1 / 6  # only 6 regressor vertices for joint 3
    with pytest.raises(ManoFormatError, match="joint 3 has 6 vertices"):
        ManoLayer(dataclasses.replace(mano_model, J_regressor=regressor))
    weights = mano_model.weights.copy()
    weights[:, 0] += weights[:, 7]
    weights[:, 7] = 0.0
    with pytest.raises(ManoFormatError, match="for joint 7"):
        ManoLayer(dataclasses.replace(mano_model, weights=weights))
    parents = mano_model.parents.copy()
    parents[4] = 1
    with pytest.raises(ManoFormatError, match="not MANO's"):
        ManoLayer(dataclasses.replace(mano_model, parents=parents))


def test_input_validation(layer):
    with pytest.raises(ValueError, match=r"hand_pose must have shape \(2, 45\)"):
        layer(torch.zeros(2, 3), torch.zeros(2, 10), torch.zeros(2, 10))
    with pytest.raises(ValueError, match="62 .* or 63"):
        layer.forward_dsf(torch.zeros(2, 61))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(oracle_model, oracle_forward):
    layer = ManoLayer(oracle_model)
    params = torch.from_numpy(oracle_forward["params_a"])
    cpu = layer.forward_dsf(params)
    gpu = layer.to("cuda").forward_dsf(params.cuda())
    torch.testing.assert_close(gpu.vertices.cpu(), cpu.vertices, atol=2e-3, rtol=0)


# --------------------------------------------------------------------------------------------------
# parameter layout and joint maps


def test_mano_params_round_trip_and_slices():
    vec = torch.randn(5, 62)
    p = ManoParams.from_vector(vec)
    assert not p.is_quaternion
    expected = (("global_orient", 3, 0), ("pose_pca", 45, 3), ("betas", 10, 48), ("scale", 1, 58),
                ("transl", 3, 59))
    for name, width, start in expected:
        torch.testing.assert_close(getattr(p, name), vec[:, start:start + width])
    torch.testing.assert_close(p.to_vector(), vec)
    vec63 = torch.randn(2, 7, 63)
    q = ManoParams.from_vector(vec63)
    assert q.is_quaternion and q.global_orient.shape == (2, 7, 4) and q.scale.shape == (2, 7, 1)
    torch.testing.assert_close(q.transl, vec63[..., 60:63])
    torch.testing.assert_close(q.to_vector(), vec63)
    assert (LAYOUT_AXIS_ANGLE.dim, LAYOUT_QUATERNION.dim) == (62, 63)
    with pytest.raises(ValueError, match="62 .* or 63"):
        ManoParams.from_vector(torch.zeros(3, 64))
    with pytest.raises(ValueError, match="betas must have 10"):
        dataclasses.replace(p, betas=torch.zeros(5, 9)).to_vector()


def test_to_dataset_order():
    joints = torch.arange(21.0)[None, :, None].expand(2, 21, 3)
    nyu = to_dataset_order(joints, "nyu")
    assert nyu.shape == (2, 12, 3)
    assert nyu[0, :, 0].tolist() == [18, 8, 19, 11, 17, 5, 16, 2, 20, 15, 14, 0]  # pinky tip first, wrist last
    assert to_dataset_order(joints, "msra").shape == (2, 21, 3)
    assert to_dataset_order(joints, "icvl").shape == (2, 16, 3)
    with pytest.raises(ValueError, match="dataset must be one of"):
        to_dataset_order(joints, "hands2017")
