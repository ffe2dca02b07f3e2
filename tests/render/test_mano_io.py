"""MANO file reader: round trips, the restricted unpickler, and every kind of corrupt file (docs/formats.md §1)."""
from __future__ import annotations

import dataclasses
import io
import os
import pickle
import pickletools
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse

import render.mano_format as mano_format
import render.mano_io as mano_io
import render.mano_unpickler as mano_unpickler
from render.mano_io import ManoFormatError, ManoModel, load_mano, save_mano_npz

#: the globals of the official MANO v1.2 pickle (docs/formats.md §1.1)
OFFICIAL_GLOBALS = {
    "numpy.core.multiarray _reconstruct", "numpy ndarray", "numpy dtype", "__builtin__ set",
    "chumpy.ch Ch", "chumpy.reordering Select", "scipy.sparse.csc csc_matrix",
}
MODEL_FIELDS = [f.name for f in dataclasses.fields(ManoModel) if f.name != "source"]


# --------------------------------------------------------------------------------------------------
# an independent writer of official-style pickles (Py2 layout: str payloads, chumpy + csc objects)


def _marker_class(module: str, name: str) -> type:
    cls = type(name, (), {})
    cls.__module__ = module
    return cls


def _fake_modules() -> dict[str, types.ModuleType]:
    mods = {}
    classes = (("chumpy.ch", "Ch"), ("chumpy.reordering", "Select"), ("scipy.sparse.csc", "csc_matrix"))
    for module, name in classes:
        mod = types.ModuleType(module)
        setattr(mod, name, _marker_class(module, name))
        mods[module] = mod
    mods["chumpy"] = types.ModuleType("chumpy")
    return mods


class _Py2StylePickler(pickle.Pickler):
    """Writes ndarrays as numpy's legacy reduce with a latin1 ``str`` payload, like a Python-2 cPickle."""

    def reducer_override(self, obj):
        if isinstance(obj, np.ndarray):
            raw = np.ascontiguousarray(obj).tobytes().decode("latin1")
            return np.empty(0).__reduce__()[0], (np.ndarray, (0,), "b"), (1, obj.shape, obj.dtype, False, raw)
        return NotImplemented


class CscState(dict):
    """A value written as an old-scipy ``csc_matrix`` object with exactly this state (for corrupt files)."""


def csc_state(dense: np.ndarray) -> CscState:
    csc = scipy.sparse.csc_matrix(dense)
    return CscState(_shape=csc.shape, data=csc.data, indices=csc.indices, indptr=csc.indptr, maxprint=50)


def official_style_pickle(raw: dict) -> bytes:
    """Pickle a MANO key dict like the v1.2 file: shapedirs a chumpy Select(Ch), J_regressor a csc_matrix.

    A :class:`CscState` value (any key) is written as a csc_matrix with exactly that state.
    """
    mods = _fake_modules()
    with pytest.MonkeyPatch.context() as mp:
        for name, mod in mods.items():
            mp.setitem(sys.modules, name, mod)
        obj = dict(raw)
        if "shapedirs" in obj:
            sd = np.asarray(obj["shapedirs"])
            stored = np.concatenate([sd, 0.5 * sd[:, :, ::-1]], axis=2)  # 20 stored comps, the first 10 used
            ch = mods["chumpy.ch"].Ch()
            ch.__dict__.update(x=stored, _dirty_vars=set(), _itr=None, _depends_on_deps={})
            sel = mods["chumpy.reordering"].Select()
            idxs = np.arange(stored.size).reshape(stored.shape)[:, :, : sd.shape[2]].ravel()
            sel.__dict__.update(a=ch, idxs=idxs, preferred_shape=sd.shape, _dirty_vars=set())
            obj["shapedirs"] = sel
        if "J_regressor" in obj and isinstance(obj["J_regressor"], np.ndarray):
            obj["J_regressor"] = csc_state(obj["J_regressor"])
        for key, value in obj.items():
            if isinstance(value, CscState):
                marker = mods["scipy.sparse.csc"].csc_matrix()
                marker.__dict__.update(value)
                obj[key] = marker
        buf = io.BytesIO()
        _Py2StylePickler(buf, protocol=2).dump(obj)
    # numpy 2 names its module numpy._core; the Py2 file says numpy.core (GLOBAL is text: replacing is safe)
    return buf.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def pickle_globals(data: bytes) -> set[str]:
    return {str(arg) for op, arg, _ in pickletools.genops(data) if op.name in ("GLOBAL", "STACK_GLOBAL")}


@pytest.fixture(scope="module")
def oracle_raw(shared_dir) -> dict:
    """The key dict of the oracle's random MANO-format model (float32 values, int64 indices)."""
    with np.load(shared_dir / "oracle" / "mano_synth_model.npz") as npz:
        raw = {k: npz[k] for k in npz.files}
    raw.update(bs_style="lbs", bs_type="lrotmin")
    return raw


def _write(tmp_path: Path, raw: dict, name: str = "MANO_RIGHT.pkl") -> Path:
    path = tmp_path / name
    path.write_bytes(official_style_pickle(raw))
    return path


def assert_models_equal(a: ManoModel, b: ManoModel) -> None:
    for name in MODEL_FIELDS:
        va, vb = getattr(a, name), getattr(b, name)
        if va is None or vb is None:
            assert va is None and vb is None, name
        else:
            np.testing.assert_array_equal(va, vb, err_msg=name)


# --------------------------------------------------------------------------------------------------
# round trips


def test_oracle_npz_reads_with_expected_shapes_and_dtypes(oracle_model, oracle_raw):
    m = oracle_model
    expected = {"v_template": (778, 3), "shapedirs": (778, 3, 10), "posedirs": (778, 3, 135),
                "J_regressor": (16, 778), "weights": (778, 16), "faces": (1538, 3), "parents": (16,),
                "hands_components": (45, 45), "hands_mean": (45,), "hands_coeffs": (64, 45)}
    for name, shape in expected.items():
        arr = getattr(m, name)
        assert arr.shape == shape, name
        assert arr.dtype == (np.int64 if name in ("faces", "parents") else np.float64), name
    assert m.parents.tolist() == [-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14]
    np.testing.assert_array_equal(m.v_template, oracle_raw["v_template"].astype(np.float64))
    np.testing.assert_array_equal(m.faces, oracle_raw["f"])


def test_official_style_pickle_has_the_seven_globals_and_reads_back_exactly(tmp_path, oracle_raw,
                                                                             oracle_model):
    data = official_style_pickle(oracle_raw)
    assert data[:2] == b"\x80\x02"
    assert pickle_globals(data) == OFFICIAL_GLOBALS
    path = tmp_path / "MANO_RIGHT.pkl"
    path.write_bytes(data)
    model = load_mano(path)
    assert model.source == str(path)
    assert_models_equal(model, oracle_model)  # Select -> first 10 comps, csc densified, parents from kintree


def test_save_npz_round_trip(tmp_path, mano_model):
    out = tmp_path / "copy.npz"
    save_mano_npz(mano_model, out)
    with np.load(out, allow_pickle=False) as npz:  # chumpy-free, pickle-free, MANO key names
        assert {"f", "kintree_table", "J_regressor", "J"} <= set(npz.files)
        assert npz["kintree_table"][0, 0] == 2**32 - 1
    assert_models_equal(load_mano(out), mano_model)


def test_optional_hands_coeffs(tmp_path, oracle_raw):
    raw = {k: v for k, v in oracle_raw.items() if k != "hands_coeffs"}
    model = load_mano(_write(tmp_path, raw))
    assert model.hands_coeffs is None
    save_mano_npz(model, tmp_path / "m.npz")
    assert load_mano(tmp_path / "m.npz").hands_coeffs is None


def test_uint32_faces_and_kintree_are_accepted(tmp_path, oracle_raw):
    raw = dict(oracle_raw, f=oracle_raw["f"].astype(np.uint32),
               kintree_table=oracle_raw["kintree_table"].astype(np.uint32))
    model = load_mano(_write(tmp_path, raw))
    assert model.faces.dtype == np.int64 and model.parents[0] == -1


def test_standin_round_trip(standin_pkl, standin_model, tmp_path):
    assert pickle_globals(standin_pkl.read_bytes()) == OFFICIAL_GLOBALS
    out = tmp_path / "standin.npz"
    save_mano_npz(standin_model, out)
    assert_models_equal(load_mano(out), standin_model)


# --------------------------------------------------------------------------------------------------
# hostile pickles: refused before anything runs


class _SystemCall:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class _ExecCall:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').close()",)


@pytest.mark.parametrize("payload", [_SystemCall, _ExecCall])
@pytest.mark.parametrize("protocol", [2, 4])
def test_malicious_pickle_is_refused_without_side_effects(tmp_path, oracle_raw, payload, protocol):
    marker = tmp_path / "pwned"
    raw = dict(oracle_raw, v_template=payload(marker))
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(raw, protocol=protocol))
    with pytest.raises(ManoFormatError, match=r"evil\.pkl.*refusing global"):
        load_mano(path)
    assert not marker.exists()


def test_exec_payload_is_live_under_plain_pickle(tmp_path):
    """Control for the test above: the payload really would run under an unrestricted loader."""
    marker = tmp_path / "control"
    pickle.loads(pickle.dumps({"x": _ExecCall(marker)}, protocol=2))
    assert marker.exists()


def test_other_numpy_globals_are_refused(tmp_path):
    path = tmp_path / "scalar.pkl"
    path.write_bytes(pickle.dumps({"hands_mean": np.float64(1.0)}, protocol=2))  # numpy ... scalar
    with pytest.raises(ManoFormatError, match="refusing global numpy"):
        load_mano(path)


# pickles written opcode by opcode: what a hostile file can do with the globals the reader does allow
ALLOWED = [("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
           ("numpy", "ndarray"), ("numpy", "dtype"), ("__builtin__", "set"), ("builtins", "set"),
           ("chumpy.ch", "Ch"), ("chumpy.reordering", "Select"), ("scipy.sparse.csc", "csc_matrix")]
#: BUILD with a slot-state (None, {'pwned': 'yes'}): setattr(obj, 'pwned', 'yes') unless obj has __setstate__
SET_PWNED = b"N}U\x05pwnedU\x03yess\x86b"


def _global(module: str, name: str) -> bytes:
    return b"c" + f"{module}\n{name}\n".encode()


#: the modules of the MANO reader: a hostile pickle must not change anything in them
READER_MODULES = (mano_io, mano_unpickler, mano_format)


def _module_snapshot() -> dict:
    """Every module-level object of the reader modules and, for classes, a copy of their attributes."""
    return {(mod.__name__, name): (obj, dict(vars(obj)) if isinstance(obj, type) else None)
            for mod in READER_MODULES for name, obj in vars(mod).items()}


def _assert_unchanged(before: dict) -> None:
    after = _module_snapshot()
    assert after.keys() == before.keys()
    for name, (obj, attrs) in before.items():
        assert after[name][0] is obj, name
        if attrs is not None:
            assert after[name][1].keys() == attrs.keys(), name
            assert all(after[name][1][k] is v for k, v in attrs.items()), name
    for mod in READER_MODULES:
        for obj in vars(mod).values():
            assert not hasattr(obj, "pwned")


def test_build_on_the_ndarray_global_cannot_touch_the_reader(tmp_path):
    """GLOBAL numpy.ndarray, then BUILD (None, {...}): setattr on whatever the global resolved to."""
    data = b"\x80\x02" + _global("numpy", "ndarray") + SET_PWNED + b"."
    assert len(data) == 35

    class Mutable:  # control: resolved to an ordinary class, the same bytes do set an attribute on it
        pass

    class Control(pickle.Unpickler):
        def find_class(self, module, name):
            return Mutable

    assert Control(io.BytesIO(data)).load() is Mutable and Mutable.pwned == "yes"

    before = _module_snapshot()
    path = tmp_path / "evil.pkl"
    path.write_bytes(data)
    with pytest.raises(ManoFormatError, match=r"evil\.pkl: refusing BUILD on the global numpy\.ndarray"):
        load_mano(path)
    _assert_unchanged(before)


@pytest.mark.parametrize("module,name", ALLOWED)
@pytest.mark.parametrize("attack", ["slotstate", "dictstate", "newobj", "reduce+build", "newobj+2builds",
                                    "setitem", "append"])
def test_allowed_globals_cannot_be_mutated_or_abused(tmp_path, module, name, attack):
    g = _global(module, name)
    body = {
        "slotstate": g + SET_PWNED,                                  # setattr on the resolved object
        "dictstate": g + b"}U\x05pwnedU\x03yessb",                   # __dict__.update on it
        "newobj": g + b")\x81" + SET_PWNED,                          # a new object, then setattr on it
        "reduce+build": g + b")R" + SET_PWNED,                        # call it, then setattr on the result
        "newobj+2builds": g + b")\x81}b}b",                           # two states for one object
        "setitem": g + b"U\x05pwnedU\x03yess",                        # item assignment on it
        "append": g + b"U\x03yesa",                                   # .append on it
    }[attack]
    data = b"\x80\x02}U\nv_template" + body + b"s."                   # {'v_template': <attack>}
    before = _module_snapshot()
    path = tmp_path / "evil.pkl"
    path.write_bytes(data)
    refused = "refusing BUILD on the global" if attack in ("slotstate", "dictstate") else ""
    with pytest.raises(ManoFormatError, match=rf"evil\.pkl: {refused}"):
        load_mano(path)
    _assert_unchanged(before)


def test_allowed_globals_only_make_fresh_inert_records():
    """NEWOBJ / REDUCE on an allowed global give a new slot-only record each time, never a shared object."""
    ch = _global("chumpy.ch", "Ch")
    rec = _global("numpy.core.multiarray", "_reconstruct")
    data = (b"\x80\x02(" + ch + b")\x81" + ch + b")\x81" + ch + b")R" + rec + b")R" + rec + b")R"
            + _global("builtins", "set") + b")R" + _global("numpy", "ndarray") + b"t.")
    unpickler = mano_unpickler._RestrictedUnpickler(io.BytesIO(data), encoding="latin1")
    *records, fresh_set, ndarray = unpickler.load()
    assert len({id(r) for r in records}) == 5
    assert [type(r).__name__ for r in records] == ["_ChumpyCh"] * 3 + ["_ArrayRecord"] * 2
    for r in records:
        assert not hasattr(r, "__dict__") and r.args == () and r.state is None
    assert fresh_set == set()
    assert ndarray is unpickler.ndarray and not hasattr(ndarray, "__dict__")
    other = mano_unpickler._RestrictedUnpickler(io.BytesIO(b"\x80\x02" + _global("numpy", "ndarray") + b"."))
    assert other.load() is not ndarray  # sentinels are per unpickler


def test_only_the_globals_formats_md_names_are_allowed(tmp_path):
    assert {f"{m} {n}" for m, n in ALLOWED} == OFFICIAL_GLOBALS | {"numpy._core.multiarray _reconstruct",
                                                                   "builtins set"}
    for module, name in [("scipy.sparse._csc", "csc_matrix"), ("scipy.sparse", "csc_matrix"),
                         ("numpy.core.multiarray", "scalar"), ("builtins", "getattr")]:
        path = tmp_path / "other.pkl"
        path.write_bytes(b"\x80\x02" + _global(module, name) + b")R.")
        with pytest.raises(ManoFormatError, match=rf"refusing global {module}\.{name}"):
            load_mano(path)


#: single-byte opcodes without arguments: swapping one for another keeps the byte stream parseable
_STRUCTURAL = {"REDUCE": b"R", "BUILD": b"b", "NEWOBJ": b"\x81", "TUPLE1": b"\x85", "TUPLE2": b"\x86",
               "TUPLE3": b"\x87", "EMPTY_DICT": b"}", "EMPTY_TUPLE": b")", "EMPTY_LIST": b"]",
               "SETITEM": b"s", "SETITEMS": b"u", "MARK": b"(", "APPEND": b"a", "APPENDS": b"e",
               "TUPLE": b"t", "NONE": b"N", "DICT": b"d", "LIST": b"l", "POP": b"0", "DUP": b"2",
               "NEWTRUE": b"\x88"}


def test_opcode_mutations_give_a_model_or_mano_format_error(tmp_path, oracle_raw):
    """Any structurally mangled official-style pickle is either read or refused: never another exception."""
    data = official_style_pickle({k: oracle_raw[k] for k in ("J_regressor", "shapedirs", "weights")})
    spots = [pos for op, _, pos in pickletools.genops(data) if op.name in _STRUCTURAL]
    rng = np.random.default_rng(7)
    path = tmp_path / "mutant.pkl"
    codes = list(_STRUCTURAL.values())
    for pos in rng.choice(spots, size=120):
        mutant = bytearray(data)
        mutant[pos:pos + 1] = codes[rng.integers(len(codes))]
        path.write_bytes(bytes(mutant))
        with pytest.raises(ManoFormatError, match=r"mutant\.pkl: "):  # 3 of the 13 keys: never a full model
            load_mano(path)


# --------------------------------------------------------------------------------------------------
# corrupt files


def _drop(key):
    return lambda raw: {k: v for k, v in raw.items() if k != key}


def _set(key, fn):
    return lambda raw: dict(raw, **{key: fn(raw[key].copy())})


def _scale_row(arr, row, factor):
    arr[row] *= factor
    return arr


def _put(arr, index, value):
    arr[index] = value
    return arr


def _make_negative(arr, row, amount):
    """Row ``row`` gets one entry of -amount, the row sum unchanged (only the sign check can catch it)."""
    low, high = int(arr[row].argmin()), int(arr[row].argmax())
    shift = arr[row, low] + amount
    arr[row, low] -= shift
    arr[row, high] += shift
    return arr


def _csc(edit, key="J_regressor"):
    """Write ``key`` as a csc_matrix whose state ``edit`` changed."""
    return lambda raw: dict(raw, **{key: CscState(edit(csc_state(raw[key])))})


def _csc_set(name, fn):
    return _csc(lambda st: dict(st, **{name: fn(st[name].copy())}))


CORRUPTIONS = {
    "missing key": (_drop("weights"), r"missing key 'weights'"),
    "wrong shape": (_set("v_template", lambda a: a[:777]),
                    r"'v_template': expected shape \(778, 3\), got \(777, 3\)"),
    "wrong rank": (_set("hands_mean", lambda a: a[None]), r"'hands_mean': expected shape \(45,\)"),
    "too few shape comps": (_set("shapedirs", lambda a: a[:, :, :8]), r"'shapedirs': expected at least 10"),
    "weights row sum": (_set("weights", lambda a: _scale_row(a, 5, 1.5)),
                        r"'weights': every row must sum to 1.*row 5"),
    "regressor row sum": (_set("J_regressor", lambda a: _scale_row(a, 3, 0.9)),
                          r"'J_regressor': every row must sum to 1.*row 3"),
    "parents order": (_set("kintree_table", lambda a: _put(a, (0, 2), 5)), r"parents must precede.*joint 2"),
    "root not first": (_set("kintree_table", lambda a: _put(a, (0, 0), 0)), r"joint 0 must be the root"),
    "kintree row 1": (_set("kintree_table", lambda a: _put(a, (1, 4), 9)), r"row 1 must be 0\.\.15"),
    "face index": (_set("f", lambda a: _put(a, (7, 1), 778)), r"'f': vertex indices must lie in 0\.\.777"),
    "float faces": (_set("f", lambda a: a.astype(np.float64)), r"'f': expected an integer array"),
    "non-numeric": (lambda raw: dict(raw, hands_mean=np.array(["x"] * 45)),
                    r"'hands_mean': unsupported array dtype"),
    "not an array": (lambda raw: dict(raw, posedirs="lbs"), r"'posedirs': expected a numeric"),
    "nan": (_set("posedirs", lambda a: _put(a, (1, 2, 3), np.nan)), r"'posedirs': contains NaN"),
    "bs_type": (lambda raw: dict(raw, bs_type="lrotmin2"), r"'bs_type': expected 'lrotmin'"),
    "negative weight": (_set("weights", lambda a: _make_negative(a, 5, 0.05)),
                        r"'weights': entries must be >= 0 \(tolerance 1e-06\); entry \(5, \d+\) is -0\.05"),
    "negative regressor": (_set("J_regressor", lambda a: _make_negative(a, 3, 0.02)),
                           r"'J_regressor': entries must be >= 0 .*entry \(3, \d+\) is -0\.02"),
    # the sparse regressor's state is checked against (16, 778) before anything is allocated
    "csc negative shape": (_csc(lambda st: dict(st, _shape=(-1, 778))),
                           r"'J_regressor': csc_matrix '_shape' must be \(16, 778\), got \(-1, 778\)"),
    "csc huge shape": (_csc(lambda st: dict(st, _shape=(10**12, 778))),
                       r"'J_regressor': csc_matrix '_shape' must be \(16, 778\), got \(1000000000000, 778\)"),
    "csc float shape": (_csc(lambda st: dict(st, _shape=(16.0, 778))), r"'_shape' must be \(16, 778\)"),
    "csc without shape": (_csc(lambda st: {k: v for k, v in st.items() if k != "_shape"}),
                          r"'_shape' must be \(16, 778\), got None"),
    "csc no indptr": (_csc(lambda st: {k: v for k, v in st.items() if k != "indptr"}),
                      r"'J_regressor': csc_matrix without data/indices/indptr"),
    "csc indptr length": (_csc_set("indptr", lambda a: a[:-1]),
                          r"'indptr' of 779 entries, got int32\(778,\)"),
    "csc indptr order": (_csc_set("indptr", lambda a: _put(a, 100, a[101] + 1)),
                         r"'indptr' must rise monotonically from 0 to \d+"),
    "csc indptr end": (_csc_set("indptr", lambda a: _put(a, -1, a[-1] - 1)),
                       r"'indptr' must rise monotonically"),
    "csc row index": (_csc_set("indices", lambda a: _put(a, 7, 16)), r"row indices must lie in 0\.\.15"),
    "csc data length": (_csc_set("data", lambda a: a[:-1]),
                        r"'data' and integer 'indices' of the same length"),
    "csc float indices": (_csc_set("indices", lambda a: a.astype(np.float64)), r"integer 'indices'"),
    "csc elsewhere": (_csc(lambda st: st, key="weights"), r"'weights': unexpected csc_matrix"),
}


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_corrupt_pickle_is_refused_with_its_message(tmp_path, oracle_raw, case):
    corrupt, message = CORRUPTIONS[case]
    path = _write(tmp_path, corrupt(oracle_raw))
    with pytest.raises(ManoFormatError, match=rf"MANO_RIGHT\.pkl: .*{message}"):
        load_mano(path)


def test_tiny_negative_rounding_noise_is_accepted(tmp_path, oracle_raw):
    weights = oracle_raw["weights"].astype(np.float64)
    _make_negative(weights, 5, 5e-7)  # below the 1e-6 tolerance: float noise, not a broken file
    assert weights.min() < 0
    model = load_mano(_write(tmp_path, dict(oracle_raw, weights=weights)))
    np.testing.assert_array_equal(model.weights, weights)


def test_corrupt_npz_is_refused(tmp_path, oracle_raw):
    path = tmp_path / "m.npz"
    np.savez(path, **_drop("J_regressor")(oracle_raw))
    with pytest.raises(ManoFormatError, match=r"m\.npz: missing key 'J_regressor'"):
        load_mano(path)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(path.read_bytes()[:100_000])
    with pytest.raises(ManoFormatError, match=r"truncated\.npz: not a readable MANO \.npz"):
        load_mano(truncated)
    with zipfile.ZipFile(tmp_path / "bad.npz", "w") as zf:  # numpy hands back raw bytes for a non-npy member
        zf.writestr("v_template.npy", b"not an npy file")
    with pytest.raises(ManoFormatError, match=r"bad\.npz: member 'v_template\.npy' is not a \.npy array"):
        load_mano(tmp_path / "bad.npz")


def test_bad_chumpy_select_indices_are_refused(tmp_path, oracle_raw):
    with pytest.MonkeyPatch.context() as mp:  # build a Select whose indices point past its array
        mods = _fake_modules()
        for name, mod in mods.items():
            mp.setitem(sys.modules, name, mod)
        ch = mods["chumpy.ch"].Ch()
        ch.__dict__.update(x=np.zeros((778, 3, 10)))
        sel = mods["chumpy.reordering"].Select()
        sel.__dict__.update(a=ch, idxs=np.arange(23340) + 1, preferred_shape=(778, 3, 10))
        buf = io.BytesIO()
        _Py2StylePickler(buf, protocol=2).dump(dict(oracle_raw, shapedirs=sel))
    path = tmp_path / "sel.pkl"
    path.write_bytes(buf.getvalue())
    with pytest.raises(ManoFormatError, match=r"'shapedirs': chumpy Select indices out of range"):
        load_mano(path)


def test_garbage_truncated_and_wrong_top_level_are_refused(tmp_path, oracle_raw):
    garbage = tmp_path / "garbage.pkl"
    garbage.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ManoFormatError, match=r"garbage\.pkl: not a readable MANO pickle"):
        load_mano(garbage)
    full = official_style_pickle(oracle_raw)
    truncated = tmp_path / "truncated.pkl"
    truncated.write_bytes(full[: len(full) // 2])
    with pytest.raises(ManoFormatError, match=r"truncated\.pkl: not a readable MANO pickle"):
        load_mano(truncated)
    as_list = tmp_path / "list.pkl"
    as_list.write_bytes(pickle.dumps([1, 2], protocol=2))
    with pytest.raises(ManoFormatError, match=r"list\.pkl: top-level object is list, expected a dict"):
        load_mano(as_list)


def test_missing_file_says_where_to_get_the_model(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        load_mano(tmp_path / "MANO" / "MANO_RIGHT.pkl")
    msg = str(info.value)
    for needle in ("https://mano.is.tue.mpg.de", "mano_v1_2/models/MANO_RIGHT.pkl", "MANO/MANO_RIGHT.pkl",
                   "mano_path=", "python -m render.standin --out PATH"):
        assert needle in msg
