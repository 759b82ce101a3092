"""model.save / sn.load: round trips, and every way a file can be wrong."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import sympy
from sympy.codegen import cfunctions

import symnet as sn
from symnet.io import files as io


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    net = sn.Network(sn.Input(3, name="I"), sn.Dense(5, "relu", name="A"), sn.Dense(2),
                     loss="softmax_cross_entropy")
    model = net.compile(dtype="float32", seed=3)
    path = tmp_path_factory.mktemp("io") / "model.npz"
    model.save(path)
    return model, path


def _rewrite(src, dst, change):
    """Copy a model file with ``change(arrays)`` applied (checksum left as is)."""
    with np.load(src, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    change(arrays)
    with open(dst, "wb") as fh:
        np.savez(fh, **arrays)


X = np.random.default_rng(0).normal(size=(7, 3))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_round_trip_predicts_identically(tmp_path, dtype):
    net = sn.Network(sn.Input(3), sn.Dense(4, "tanh"), sn.Dense(2, "sigmoid"), loss="bce")
    model = net.compile(dtype=dtype, seed=5)
    model.fit(X, np.full((7, 2), 0.3), epochs=3, progress=False, seed=0)
    model.save(tmp_path / "m.npz")
    loaded = sn.load(tmp_path / "m.npz")
    assert loaded.dtype == model.dtype
    assert loaded.network.describe() == net.describe()
    np.testing.assert_array_equal(loaded.forward(X), model.forward(X))
    assert os.listdir(tmp_path) == ["m.npz"]          # no temporary file left


def test_custom_sympy_activation_round_trips(tmp_path):
    mish = sn.Dense(4, lambda z: z * sympy.tanh(sympy.log(1 + sympy.exp(z))))
    net = sn.Network(sn.Input(3), mish, sn.Dense(1), loss="mse")
    model = net.compile(dtype="float64", seed=2)
    model.save(tmp_path / "mish.npz")
    loaded = sn.load(tmp_path / "mish.npz")
    np.testing.assert_array_equal(loaded.forward(X), model.forward(X))


@pytest.mark.parametrize("activation", [
    lambda z: sympy.asin(sympy.tanh(z)), lambda z: sympy.acosh(z ** 2 + 2),
    lambda z: sympy.sech(z) + sympy.atanh(sympy.tanh(z) / 2), lambda z: sympy.erfc(z),
    lambda z: sympy.cot(z ** 2 + 1), lambda z: cfunctions.log1p(z ** 2),
    lambda z: cfunctions.expm1(-z ** 2), lambda z: cfunctions.hypot(z, 1),
], ids=["asin", "acosh", "sech+atanh", "erfc", "cot", "log1p", "expm1", "hypot"])
def test_every_function_a_formula_may_use_loads_back(tmp_path, activation):
    # declared, derived and compiled, so the saved file must read back too
    net = sn.Network(sn.Input(3), sn.Dense(4, activation), sn.Dense(1), loss="mse")
    model = net.compile(dtype="float64", seed=2)
    model.save(tmp_path / "m.npz")
    loaded = sn.load(tmp_path / "m.npz")
    assert loaded.network.describe() == net.describe()
    np.testing.assert_array_equal(loaded.forward(X), model.forward(X))


@pytest.mark.parametrize("text", [
    "__import__('os').system('echo hacked')",
    "Symbol('z').__class__",
    "Add(Symbol('z'), open('/etc/passwd'))",
    "Function('f')(Symbol('z'))",
    "Add(*[Symbol('z')])",
    "lambda: 0",
])
def test_srepr_reader_refuses_anything_but_sympy_constructors(text):
    with pytest.raises(ValueError, match="not an allowed sympy constructor|could not be"):
        io.parse_srepr(text)


def test_srepr_reader_rebuilds_expressions_exactly():
    z = sympy.Symbol("z", real=True)
    for e in (z * sympy.tanh(sympy.log(1 + sympy.exp(z))), sympy.Float(0.25) * z ** 3 - 1,
              sympy.Piecewise((z, z > 0), (sympy.exp(z) - 1, True))):
        assert sympy.srepr(io.parse_srepr(sympy.srepr(e))) == sympy.srepr(e)


def test_truncated_file(saved, tmp_path):
    data = saved[1].read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a readable symnet model file"):
        sn.load(tmp_path / "cut.npz")


def test_garbage_file(tmp_path):
    (tmp_path / "junk.npz").write_bytes(b"this is not a zip file at all" * 10)
    with pytest.raises(ValueError, match="not a readable symnet model file"):
        sn.load(tmp_path / "junk.npz")


def test_a_text_file_is_not_a_model_and_unsafe_loading_is_not_offered(tmp_path):
    """numpy took a text file for pickled data and pointed to allow_pickle=True."""
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match=r"notes.txt is not a readable symnet model file "
                                         r"\(an .npz that model.save writes\): it is not an "
                                         r"\.npz \(zip\) archive") as info:
        sn.load(tmp_path / "notes.txt")
    assert "pickle" not in str(info.value)
    np.savez(tmp_path / "objects.npz", a=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match=r"objects.npz is not a readable symnet model file "
                                         r".*: it holds Python objects") as info:
        sn.load(tmp_path / "objects.npz")
    assert "allow_pickle" not in str(info.value)


def test_network_that_is_not_a_network_is_refused_by_name(saved):
    with pytest.raises(TypeError, match=r"symnet.load: network must be an sn.Network \(the "
                                        r"network the file was saved from\), got str 'abc'"):
        sn.load(saved[1], network="abc")


def test_plain_npz_is_not_a_model(tmp_path):
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(ValueError, match="missing format"):
        sn.load(tmp_path / "other.npz")


def test_tampered_parameters_fail_the_checksum(saved, tmp_path):
    def change(a):
        a["param/W1"] = a["param/W1"] + 1
    _rewrite(saved[1], tmp_path / "t.npz", change)
    with pytest.raises(ValueError, match="checksum does not match"):
        sn.load(tmp_path / "t.npz")


def test_tampered_checksum(saved, tmp_path):
    def change(a):
        a["checksum"] = np.array("0" * 64)
    _rewrite(saved[1], tmp_path / "c.npz", change)
    with pytest.raises(ValueError, match="checksum does not match"):
        sn.load(tmp_path / "c.npz")


def test_other_format_version(saved, tmp_path):
    def change(a):
        a["format"] = np.array(["symnet-model", "99", "float32"])
    _rewrite(saved[1], tmp_path / "v.npz", change)
    with pytest.raises(ValueError, match="format version 99"):
        sn.load(tmp_path / "v.npz")


def test_consistent_but_unloadable_description(saved, tmp_path):
    """A description rewritten with a matching checksum is still checked."""
    def change(a):
        desc = json.loads(str(a["description"][()]))
        desc["layers"][0]["kind"] = "conv"
        a["description"] = np.array(json.dumps(desc, sort_keys=True))
        params = {k[6:]: v for k, v in a.items() if k.startswith("param/")}
        a["checksum"] = np.array(io._checksum(a["format"], str(a["description"][()]), params))
    _rewrite(saved[1], tmp_path / "d.npz", change)
    with pytest.raises(ValueError, match="layer kind 'conv' cannot be loaded"):
        sn.load(tmp_path / "d.npz")


def test_wrong_parameter_shape_with_matching_checksum(saved, tmp_path):
    def change(a):
        a["param/W1"] = np.zeros((2, 2), np.float32)
        params = {k[6:]: v for k, v in a.items() if k.startswith("param/")}
        a["checksum"] = np.array(io._checksum(a["format"], str(a["description"][()]), params))
    _rewrite(saved[1], tmp_path / "s.npz", change)
    with pytest.raises(ValueError, match="parameter W1 has shape"):
        sn.load(tmp_path / "s.npz")


def test_file_of_another_network(saved):
    other = sn.Network(sn.Input(3, name="I"), sn.Dense(6, "relu", name="A"), sn.Dense(2),
                       loss="softmax_cross_entropy")
    with pytest.raises(ValueError, match="holds a different network"):
        sn.load(saved[1], network=other)
    model, path = saved
    again = sn.load(path, network=model.network)
    np.testing.assert_array_equal(again.forward(X), model.forward(X))


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        sn.load(tmp_path / "nope.npz")


def test_failed_write_keeps_the_old_file(saved, tmp_path, monkeypatch):
    model, _path = saved
    target = tmp_path / "keep.npz"
    model.save(target)
    before = target.read_bytes()

    def crash(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(OSError, match="disk full"):
        model.save(target)
    assert target.read_bytes() == before
    assert os.listdir(tmp_path) == ["keep.npz"]


def _tampered_formula(path, out, formula):
    def change(a):
        desc = json.loads(str(a["description"][()]))
        desc["layers"][0]["formula"] = formula
        a["description"] = np.array(json.dumps(desc, sort_keys=True))
        params = {k[6:]: v for k, v in a.items() if k.startswith("param/")}
        a["checksum"] = np.array(io._checksum(a["format"], str(a["description"][()]), params))
    _rewrite(path, out, change)


def test_rbf_network_round_trips(tmp_path):
    """sn.Layer networks are rebuilt from the file: the formula is stored as srepr
    text and read back by the whitelisted reader."""
    import runpy
    net = runpy.run_path(str(Path(sn.__path__[0]).parent / "examples" / "rbf.py"),
                         run_name="x")["network"]()
    model = net.compile(dtype="float64", seed=5)
    X = np.random.default_rng(0).normal(size=(7, 2))
    model.save(tmp_path / "rbf.npz")
    loaded = sn.load(tmp_path / "rbf.npz")
    assert loaded.network.describe() == net.describe()
    np.testing.assert_array_equal(loaded.forward(X), model.forward(X))
    T = (X[:, :1] > 0).astype(float)
    (l1, g1), (l2, g2) = model.loss_and_grad(X, T), loaded.loss_and_grad(X, T)
    assert l1 == l2 and all(np.array_equal(g1[k], g2[k]) for k in g1)
    # a formula that is not sympy srepr text is refused, never run
    _tampered_formula(tmp_path / "rbf.npz", tmp_path / "evil.npz",
                      "__import__('os').system('echo hacked')")
    with pytest.raises(ValueError, match="not an allowed sympy constructor"):
        sn.load(tmp_path / "evil.npz")


def test_linear_layer_frozen_and_init_round_trip(tmp_path):
    norm = sn.Layer(3, lambda z, i, j: z[i] / sympy.sqrt(sn.sum_j(z[j] ** 2) + 1), linear="W",
                    trainable=False)
    net = sn.Network(sn.Input(2), norm, sn.Dense(2, "relu", init="he", bias=False),
                     sn.Dense(1, "sigmoid", init=0.5, trainable=False), loss="bce")
    model = net.compile(dtype="float32", seed=1)
    model.save(tmp_path / "n.npz")
    loaded = sn.load(tmp_path / "n.npz")
    assert repr(loaded.network.layers[1]) == repr(net.layers[1].__class__(
        2, "relu", name="H2", init="he", bias=False))
    assert not loaded.network.layers[2].trainable and not loaded.network.layers[0].trainable
    X = np.random.default_rng(0).normal(size=(4, 2))
    np.testing.assert_array_equal(loaded.forward(X), model.forward(X))


def test_saving_to_a_folder_names_the_folder_and_leaves_nothing_behind(saved, tmp_path):
    model, _ = saved
    with pytest.raises(IsADirectoryError, match=rf"^model.save: {tmp_path} is a folder; give "
                                                r"the file's path, e.g. .*model.npz$"):
        model.save(tmp_path)
    assert list(tmp_path.iterdir()) == []          # no temporary file left in it


def test_saving_into_a_missing_folder_names_the_folder(saved, tmp_path):
    """It named the temporary file (.symnet-save-....npz) that could not be made."""
    model, _ = saved
    missing = tmp_path / "missing"
    with pytest.raises(FileNotFoundError, match=r"model.save: no such folder to write m.npz "
                                                r"into \(create it first") as info:
        model.save(missing / "m.npz")
    assert info.value.filename == str(missing) and ".symnet-save" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_every_layer_rebuilds_from_its_description_as_the_docs_say():
    """docs/training.md said only Dense, sn.Layer, convolution, pooling and Flatten load."""
    nets = {
        ("LayerNorm", "RMSNorm", "BatchNorm", "Dropout", "Softmax"): sn.Network(
            sn.Input(6), sn.Dense(8), sn.LayerNorm(), sn.RMSNorm(), sn.BatchNorm1d(),
            sn.Dropout(0.2), sn.Dense(3), sn.Softmax(), loss="mse"),
        ("Embedding", "MultiHeadAttention", "Pointwise", "PositionalEmbedding",
         "TransformerBlock"): sn.Network(
            sn.Input(5, dtype="int"), sn.Embedding(10, 8), sn.PositionalEmbedding(),
            sn.MultiHeadAttention(2), sn.TransformerBlock(2, 16), sn.Pointwise(4, "relu"),
            sn.Flatten(), sn.Dense(2), loss="mse"),
        ("GRU", "LSTM"): sn.Network(sn.Input((5, 3)), sn.LSTM(8, return_sequences=True),
                                    sn.GRU(4), sn.Dense(2), loss="mse"),
    }
    page = (Path(__file__).resolve().parent.parent / "docs" / "training.md").read_text()
    saving = " ".join(page.split("## Saving")[1].split("##")[0].split())
    for names, net in nets.items():
        d = net.describe()
        assert io.network_from_description(d).describe() == d, names
        for name in names:
            assert name in saving, name


def test_a_layer_of_several_named_inputs_round_trips(tmp_path):
    # the graph's description keeps each node's sources under "inputs"; the layer's own
    # argument names (x, y) must survive beside them (they were overwritten by X, Y)
    Xi, Yi = sn.Input(2, name="X"), sn.Input(3, name="Y")
    bilinear = sn.Layer(3, lambda x, y, W, i, j, k: sn.sum_j(sn.sum_k(x[j] * W[i, j, k] * y[k])),
                        params={"W": ("out", "x", "y")}, inputs=("x", "y"))
    net = sn.Network([Xi, Yi], sn.Dense(1, name="O")(bilinear([Xi, Yi])), loss="mse")
    model = net.compile(dtype="float64", seed=1)
    model.save(tmp_path / "bilinear.npz")
    loaded = sn.load(tmp_path / "bilinear.npz")
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(5, 2)), rng.normal(size=(5, 3))
    p = loaded.params
    h = np.einsum("bj,ijk,bk->bi", x, p["W1"], y)          # x^T W_i y, by numpy
    np.testing.assert_allclose(loaded.forward([x, y]), h @ p["W2"].T + p["b2"], rtol=1e-12)
    np.testing.assert_array_equal(loaded.params["W1"], model.params["W1"])
