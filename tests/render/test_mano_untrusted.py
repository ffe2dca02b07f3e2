"""Hostile MANO files (issue 11): no hang, no crash, no multi-GB allocation, no silently absurd model."""
from __future__ import annotations

import dataclasses
import io
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

import render.mano_io as mano_io
import render.mano_unpickler as mano_unpickler
from render.mano_io import ManoFormatError, load_mano, save_mano_npz
from render.mano_unpickler import MAX_TUPLE_DEPTH, check_opcodes, read_pickle

REPO = Path(__file__).resolve().parents[2]
SET_GLOBAL = b"c__builtin__\nset\n"


def _shared_nested_list(fan_out: int, depth: int) -> list:
    """depth levels of lists, each holding the level below fan_out times (one object per level)."""
    level: list = [1.5]
    for _ in range(depth):
        level = [level] * fan_out
    return level


def _deep_tuple_ops(depth: int) -> bytes:
    """Opcodes pushing a tuple nested ``depth`` deep (0 inside)."""
    return b"K\x00" + b"\x85" * depth  # BININT1 0, then TUPLE1 depth times


def _hostile(kind: str, depth: int) -> bytes:
    """Protocol-2 pickles that hash a ``depth``-deep tuple while unpickling (set(), dict key, frozenset)."""
    deep = _deep_tuple_ops(depth)
    if kind == "set":  # set((deep,)) through the allowed global: REDUCE with args ((deep,),)
        return b"\x80\x02" + SET_GLOBAL + deep + b"\x85\x85R."
    if kind == "dict_key":
        return b"\x80\x02}" + deep + b"K\x01s."  # EMPTY_DICT, key, value, SETITEM
    if kind == "frozenset":  # protocol 4: MARK deep FROZENSET
        return b"\x80\x04(" + deep + b"\x91."
    raise ValueError(kind)


# --- memo-shared lists ----------------------------------------------------------------------------------------
def test_memo_shared_lists_are_materialised_once(tmp_path):
    path = tmp_path / "MANO_RIGHT.pkl"
    path.write_bytes(pickle.dumps({"v_template": _shared_nested_list(30, 6)}, protocol=2))
    assert path.stat().st_size < 1000  # 30^6 = 729 million references in under a kilobyte
    raw = read_pickle(path)
    level = raw["v_template"]
    for _ in range(5):  # sharing survives: one object per level, not 30^k copies
        assert len(level) == 30 and all(item is level[0] for item in level)
        level = level[0]
    with pytest.raises(ManoFormatError, match=r"MANO_RIGHT\.pkl: key 'v_template': expected a numeric array .* "
                                              r"got list"):
        load_mano(path)  # refused before numpy could expand it


def test_element_budget_stops_a_large_structure(tmp_path, monkeypatch):
    monkeypatch.setattr(mano_unpickler, "MAX_ELEMENTS", 500)
    path = tmp_path / "MANO_RIGHT.pkl"
    path.write_bytes(pickle.dumps({"k": [[i, i + 1] for i in range(300)]}, protocol=2))  # 901 visits
    with pytest.raises(ManoFormatError, match=r"MANO_RIGHT\.pkl: more than 500 values in containers"):
        read_pickle(path)
    path.write_bytes(pickle.dumps({"k": [[i, i + 1] for i in range(100)]}, protocol=2))  # 301 visits
    assert len(read_pickle(path)["k"]) == 100


@pytest.mark.slow
def test_memo_bomb_under_a_memory_cap(tmp_path):
    """The 619-byte-class bomb loaded end to end in a process capped at 2 GB: a clear error, promptly."""
    path = tmp_path / "bomb.pkl"
    inner = {"v_template": _shared_nested_list(30, 6), "shapedirs": _shared_nested_list(30, 6)}
    path.write_bytes(pickle.dumps(inner, protocol=2))
    out = _run_capped(f"from render.mano_io import load_mano\nload_mano({str(path)!r})", 2_000_000_000)
    assert "ManoFormatError" in out and "bomb.pkl" in out and "expected a numeric array" in out, out


# --- deep tuples --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["set", "dict_key", "frozenset"])
def test_tuple_depth_is_bounded_before_unpickling(tmp_path, kind):
    ok = _hostile(kind, MAX_TUPLE_DEPTH - 2)  # the argument tuples of set() add two levels
    check_opcodes(ok)
    with pytest.raises(ManoFormatError, match=rf"tuples nested deeper than {MAX_TUPLE_DEPTH}"):
        check_opcodes(_hostile(kind, MAX_TUPLE_DEPTH + 1))
    path = tmp_path / "MANO_RIGHT.pkl"
    path.write_bytes(_hostile(kind, 200_000))
    with pytest.raises(ManoFormatError, match=r"MANO_RIGHT\.pkl: tuples nested deeper"):
        read_pickle(path)


def test_opcode_check_follows_the_memo_and_passes_real_layouts(standin_pkl):
    check_opcodes(standin_pkl.read_bytes())  # the stand-in has the official layout (docs/formats.md §2.3)
    # a deep tuple stored in the memo and fetched again is still deep
    chain = b"\x80\x02" + _deep_tuple_ops(10) + b"q\x01" + b"0" + b"h\x01" + b"\x85" * 10 + b"."
    with pytest.raises(ManoFormatError, match="tuples nested deeper"):
        check_opcodes(chain)
    with pytest.raises(ValueError):  # a memo key that was never stored: refused like the unpickler would
        check_opcodes(b"\x80\x02h\x05.")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["set", "dict_key", "frozenset"])
def test_deep_tuple_does_not_crash_the_interpreter(tmp_path, kind):
    path = tmp_path / "MANO_RIGHT.pkl"
    path.write_bytes(_hostile(kind, 200_000))
    out = _run_capped(f"from render.mano_io import load_mano\nload_mano({str(path)!r})", 2_000_000_000)
    assert "ManoFormatError" in out and "tuples nested deeper" in out, out


def _run_capped(code: str, address_space: int) -> str:
    """Run ``code`` in a fresh interpreter with an address-space cap; stdout + stderr + the exit status."""
    prog = ("import resource\n"
            f"resource.setrlimit(resource.RLIMIT_AS, ({address_space}, {address_space}))\n"
            "try:\n" + "".join(f"    {line}\n" for line in code.splitlines())
            + "except Exception as e:\n    print(type(e).__name__, e)\n")
    res = subprocess.run([sys.executable, "-c", prog], cwd=REPO, capture_output=True, text=True, timeout=60)
    return f"{res.stdout}{res.stderr} rc={res.returncode}"


# --- npz members ---------------------------------------------------------------------------------------------
def _npy_header_only(shape: tuple, dtype: str = "<f8") -> bytes:
    """A .npy member whose header declares ``shape`` but which holds only a few data bytes."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buf.getvalue() + b"\0" * 64


@pytest.fixture()
def model_npz(tmp_path, oracle_model) -> Path:
    path = tmp_path / "model.npz"
    save_mano_npz(oracle_model, path)
    return path


def test_unused_npz_member_is_never_read(model_npz, oracle_model, monkeypatch):
    with zipfile.ZipFile(model_npz, "a") as zf:
        zf.writestr("junk.npy", _npy_header_only((3 * 10**9,), "|u1"))  # "3 GB", never needed
    read = []
    real_read_array = np.lib.format.read_array
    monkeypatch.setattr(np.lib.format, "read_array",
                        lambda fh, **kw: read.append(fh.name) or real_read_array(fh, **kw))
    model = load_mano(model_npz)
    np.testing.assert_array_equal(model.v_template, oracle_model.v_template)
    assert "junk.npy" not in read and "J.npy" not in read  # only members the model uses
    assert set(read) == {f"{k}.npy" for k in ("v_template", "shapedirs", "posedirs", "J_regressor", "weights",
                                              "hands_components", "hands_mean", "f", "kintree_table",
                                              "hands_coeffs", "bs_style", "bs_type")}


@pytest.mark.parametrize("member,header,message", [
    ("v_template", ((10**9, 3), "<f8"), r"key 'v_template': expected shape \(778, 3\), got \(1000000000, 3\)"),
    ("hands_coeffs", ((10**8, 45), "<f8"), r"member 'hands_coeffs\.npy' holds 36000000000 bytes, more than"),
    ("posedirs", ((778, 3, 135), "|O"), r"member 'posedirs\.npy': dtype object is not allowed"),
    ("f", ((1538, 3), "<f4"), r"member 'f\.npy': dtype float32 is not allowed"),
])
def test_npz_member_header_is_checked_before_its_data(tmp_path, oracle_model, member, header, message):
    arrays = {}
    save_mano_npz(oracle_model, tmp_path / "good.npz")
    with zipfile.ZipFile(tmp_path / "good.npz") as zf:
        arrays = {name: zf.read(name) for name in zf.namelist()}
    arrays[f"{member}.npy"] = _npy_header_only(*header)
    path = tmp_path / "bad.npz"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in arrays.items():
            zf.writestr(name, data)
    with pytest.raises(ManoFormatError, match=rf"bad\.npz: {message}"):
        load_mano(path)


def test_oversized_file_is_refused_before_reading(tmp_path):
    path = tmp_path / "MANO_RIGHT.pkl"
    with open(path, "wb") as fh:
        fh.truncate(mano_unpickler.MAX_FILE_BYTES + 1)  # sparse: no disk used
    with pytest.raises(ManoFormatError, match=r"MANO_RIGHT\.pkl: \d+ bytes, more than a MANO model can need"):
        load_mano(path)


# --- absurd values -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("edit,message", [
    (lambda m: {"v_template": np.full_like(m.v_template, 1e308)}, r"key 'v_template': \|values\| must be <= 1"),
    (lambda m: {"shapedirs": m.shapedirs * 1e300}, r"key 'shapedirs': \|values\| must be <= 1"),
    (lambda m: {"v_template": m.v_template * 1000.0}, r"key 'v_template'.*entry \(\d+, \d\) is"),  # a model in mm
    (lambda m: {"posedirs": m.posedirs + 5.0}, r"key 'posedirs'"),
    (lambda m: {"hands_mean": m.hands_mean + 100.0}, r"key 'hands_mean'"),
    (lambda m: {"hands_coeffs": m.hands_coeffs * 1e9}, r"key 'hands_coeffs'"),
    (lambda m: {"hands_components": np.zeros_like(m.hands_components)},
     r"key 'hands_components': every PCA component \(row\) must be non-zero; 45 of 45"),
    (lambda m: {"hands_components": np.where(np.arange(45)[:, None] == 7, 0.0, m.hands_components)},
     r"key .hands_components.* 1 of 45 rows are all zero"),
])
def test_finite_but_absurd_values_are_refused(tmp_path, oracle_model, edit, message):
    path = tmp_path / "absurd.npz"
    save_mano_npz(dataclasses.replace(oracle_model, **edit(oracle_model)), path)
    with pytest.raises(ManoFormatError, match=rf"absurd\.npz: {message}"):
        load_mano(path)


def test_magnitude_limits_leave_room_for_real_models(oracle_model, standin_model):
    for model in (oracle_model, standin_model):
        for key, limit in mano_io.MAX_ABS_VALUE.items():
            value = getattr(model, key)
            if value is not None:
                assert np.abs(value).max() < limit / 5, key  # a real-scale model sits far inside each bound


def test_opcode_check_is_linear_in_marks_and_stack():
    """2e5 stacked items under 1e5 MARK ... TUPLE groups: a quadratic scan would take minutes here."""
    n = 100_000
    body = b"(" + b"K\x00" * (2 * n) + b"(K\x01t0" * n + b"t."  # one outer mark, many inner tuples popped
    check_opcodes(b"\x80\x02" + body)
    with pytest.raises(ValueError):
        check_opcodes(b"\x80\x02(2.")  # DUP right after MARK: nothing to duplicate
