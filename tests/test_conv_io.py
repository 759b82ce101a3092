"""model.save / sn.load for networks with tensor layers: user formulas (sums, indexed
arrays, affine offsets, padding), convolutions and pools mixed with them, graph form."""

import json

import numpy as np
import pytest
import sympy as sp

import symnet as sn
from symnet.io import files as io

c, y, x, u, v = sn.indices("c y x u v")


def _depthwise(name="D", shape=(3, 4, 5), kernel=(3, 2)):
    """h[c,y,x] = Σ_u Σ_v K[c,u,v]·x[c,y+u,x+v] (the README's depthwise convolution)."""
    return sn.Layer(shape, lambda X, K: sp.Sum(K[c, u, v] * X[c, y + u, x + v],
                                               (u, 0, kernel[0] - 1), (v, 0, kernel[1] - 1)),
                    index=(c, y, x), params={"K": (shape[0], *kernel)}, name=name)


def _padded_1d():
    """A 1-D formula with a negative offset (zero padding), a bias and a non-linear summand."""
    return sn.Layer((2, 5), lambda x, A, a: sp.tanh(sp.Sum(A[c, u] * x[c, y + u - 1] ** 3,
                                                           (u, 0, 2)) + a[c]),
                    index=(c, y), params={"A": (2, 3), "a": (2,)}, init={"a": 0.1})


NETS = {
    "depthwise": lambda: sn.Network(sn.Input((3, 6, 6)), _depthwise(), sn.Flatten(),
                                    sn.Dense(2), loss="mse"),
    "padded_1d": lambda: sn.Network(sn.Input((2, 5)), _padded_1d(), sn.Flatten(),
                                    sn.Dense(2, "tanh"), loss="mse"),
    # convolution, user formula, pools and dense in one sequence
    "conv_mix": lambda: sn.Network(
        sn.Input((2, 8, 8)), sn.Conv2d(3, 3, padding=1, activation="relu"),
        _depthwise("D", (3, 6, 7), (3, 2)), sn.MaxPool2d(2, stride=(2, 3)),
        sn.AvgPool2d((1, 2)), sn.Flatten(), sn.Dense(2), loss="mse"),
}


def _data(net, seed=0, batch=4):
    rng = np.random.default_rng(seed)
    shape = net.describe()["input"]["n"]
    X = rng.normal(size=(batch, *shape))
    return X, rng.normal(size=(batch, 2))


def _perturb(model, seed):
    rng = np.random.default_rng(seed)
    for k in model.params:      # non-zero biases: every parameter reaches the output
        model.params[k] = model.params[k] + rng.normal(0, 0.3, model.params[k].shape)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", sorted(NETS))
def test_tensor_networks_round_trip_and_train_on(tmp_path, name, dtype):
    net = NETS[name]()
    model = net.compile(dtype=dtype, seed=3)
    _perturb(model, 3)
    X, T = _data(net)
    X = X.astype(dtype)
    path = tmp_path / "m.npz"
    model.save(path)
    loaded = sn.load(path)
    assert loaded.dtype == model.dtype
    assert loaded.network.describe() == net.describe()
    assert str(loaded.network.formulas()) == str(net.formulas())
    for k in model.params:
        np.testing.assert_array_equal(loaded.params[k], model.params[k], err_msg=k)
    np.testing.assert_array_equal(loaded.forward(X), model.forward(X))
    L0, g0 = model.loss_and_grad(X, T)
    L1, g1 = loaded.loss_and_grad(X, T)
    assert L0 == L1
    for k in g0:
        np.testing.assert_array_equal(g1[k], g0[k], err_msg=k)
    # training goes on from where it was: the same steps give the same parameters
    for m in (model, loaded):
        m.fit(X, T, method="minibatch", batch_size=2, epochs=4, lr=0.02, seed=1,
              progress=False)
    for k in model.params:
        np.testing.assert_array_equal(loaded.params[k], model.params[k], err_msg=k)
    assert loaded.loss(X, T) < L0


def test_pickle_and_deepcopy_of_tensor_networks():
    """Both go through the same description as the model files."""
    import copy
    import pickle
    net = NETS["conv_mix"]()
    model = net.compile(dtype="float64", seed=1)
    _perturb(model, 1)
    X, _ = _data(net)
    for other in (pickle.loads(pickle.dumps(model)), copy.deepcopy(model)):
        assert other.network.describe() == net.describe()
        np.testing.assert_array_equal(other.forward(X), model.forward(X))


def test_loaded_tensor_layer_equals_the_numpy_formula(tmp_path):
    """The loaded network computes the formula itself (not only what the saved one did)."""
    net = NETS["padded_1d"]()
    model = net.compile(dtype="float64", seed=1)
    _perturb(model, 1)
    model.save(tmp_path / "p.npz")
    loaded = sn.load(tmp_path / "p.npz")
    X, _ = _data(net, seed=2)
    A, a = model.params["A1"], model.params["a1"]
    H = np.zeros((len(X), 2, 5))
    for n in range(len(X)):
        for ch in range(2):
            for yy in range(5):
                H[n, ch, yy] = np.tanh(sum(A[ch, k] * X[n, ch, yy + k - 1] ** 3
                                           for k in range(3) if 0 <= yy + k - 1 < 5) + a[ch])
    expect = np.tanh(H.reshape(len(X), -1) @ model.params["W3"].T + model.params["b3"])
    np.testing.assert_allclose(loaded.forward(X), expect, rtol=1e-12)


def test_graph_network_with_shared_tensor_layer_round_trips(tmp_path):
    """Functional form: a convolution and a user formula added, the formula's layer
    applied twice (one parameter set), with two outputs."""
    I = sn.Input((2, 6, 6), name="I")
    a = sn.Conv2d(2, 3, activation="tanh", name="A")(I)
    dw = _depthwise("D", (2, 4, 4), (3, 3))
    s = sn.Add(name="S")([a, dw(I)])
    p = sn.MaxPool2d(2, name="P")(s)
    o1 = sn.Dense(2, name="O1")(sn.Flatten(name="F")(p))
    J = sn.Input((2, 6, 6), name="J")
    o2 = sn.Dense(1, "sigmoid", name="O2")(sn.Flatten(name="G")(dw(J)))
    net = sn.Network([I, J], [o1, o2], loss=["mse", "bce"], loss_weights=[1.0, 0.5])
    assert [k for k in net.param_shapes() if k.startswith("K")] == ["K2"]
    model = net.compile(dtype="float64", seed=2)
    _perturb(model, 2)
    model.save(tmp_path / "g.npz")
    loaded = sn.load(tmp_path / "g.npz")
    assert loaded.network.describe() == net.describe()
    rng = np.random.default_rng(5)
    Xs = [rng.normal(size=(3, 2, 6, 6)), rng.normal(size=(3, 2, 6, 6))]
    Ts = [rng.normal(size=(3, 2)), rng.uniform(0.1, 0.9, size=(3, 1))]
    for out0, out1 in zip(model.forward(Xs), loaded.forward(Xs)):
        np.testing.assert_array_equal(out1, out0)
    L0, g0 = model.loss_and_grad(Xs, Ts)
    L1, g1 = loaded.loss_and_grad(Xs, Ts)
    assert L0 == L1
    for k in g0:
        np.testing.assert_array_equal(g1[k], g0[k], err_msg=k)
    loaded.fit(Xs, Ts, method="sd", epochs=5, lr=0.05, progress=False)
    assert loaded.loss(Xs, Ts) < L0


def test_load_into_the_same_tensor_network(tmp_path):
    net = NETS["depthwise"]()
    model = net.compile(dtype="float64", seed=0)
    model.save(tmp_path / "m.npz")
    loaded = sn.load(tmp_path / "m.npz", network=NETS["depthwise"]())
    X, _ = _data(net)
    np.testing.assert_array_equal(loaded.forward(X), model.forward(X))
    other = sn.Network(sn.Input((3, 6, 6)), _depthwise(kernel=(3, 2), shape=(3, 4, 5)),
                       sn.Flatten(), sn.Dense(3), loss="mse")
    with pytest.raises(ValueError, match="holds a different network"):
        sn.load(tmp_path / "m.npz", network=other)


# ------------------------------------------------------------------ tampered files

def _retell(src, dst, change):
    """Copy a model file with its description changed and the checksum recomputed to
    match (what a deliberate forger would do)."""
    with np.load(src, allow_pickle=False) as z:
        a = {k: z[k] for k in z.files}
    desc = json.loads(str(a["description"][()]))
    change(desc["layers"][0])
    a["description"] = np.array(json.dumps(desc, sort_keys=True))
    params = {k[6:]: w for k, w in a.items() if k.startswith("param/")}
    a["checksum"] = np.array(io._checksum(a["format"], str(a["description"][()]), params))
    with open(dst, "wb") as fh:
        np.savez(fh, **a)


@pytest.fixture(scope="module")
def saved_depthwise(tmp_path_factory):
    model = NETS["depthwise"]().compile(dtype="float64", seed=0)
    path = tmp_path_factory.mktemp("tensor_io") / "dw.npz"
    model.save(path)
    return path


K_AT = "Indexed(IndexedBase(Symbol('K', real=True)), Symbol('c', integer=True), " \
       "Symbol('u', integer=True), Symbol('v', integer=True))"
LIMITS = "Tuple(Symbol('u', integer=True), Integer(0), Integer(2)), " \
         "Tuple(Symbol('v', integer=True), Integer(0), Integer(1))"


def _x_at(y_pos="Add(Symbol('u', integer=True), Symbol('y', integer=True))"):
    return ("Indexed(IndexedBase(Symbol('x', real=True)), Symbol('c', integer=True), "
            f"{y_pos}, Add(Symbol('v', integer=True), Symbol('x', integer=True)))")


IDX_X = _x_at("Idx(Symbol('u'), Integer(3))")
FAR_K = K_AT.replace("Symbol('u', integer=True)",
                     "Add(Symbol('u', integer=True), Integer(1))")


@pytest.mark.parametrize("formula", [
    # a call that is not a sympy constructor inside each of the tensor layer's names
    f"Sum(Mul({K_AT}, __import__('os').system('echo hacked')), {LIMITS})",
    f"Sum(Mul({K_AT}, {_x_at()}), Tuple(Symbol('u', integer=True), Integer(0), "
    "eval('2')), Tuple(Symbol('v', integer=True), Integer(0), Integer(1)))",
    f"Sum(Mul({K_AT}, Indexed(IndexedBase(open('/etc/passwd')), Symbol('c', "
    f"integer=True))), {LIMITS})",
    f"Sum(Mul({K_AT}, {IDX_X}), {LIMITS})",
    f"Sum(Mul({K_AT}, {_x_at()}), {LIMITS}).doit()",
    f"Sum(Mul({K_AT}, Lambda(Symbol('c'), {_x_at()})), {LIMITS})",
    f"Sum(Mul({K_AT}, Function('x')(Symbol('c'))), {LIMITS})",
    f"Sum(Mul({K_AT}, {_x_at()}), *[{LIMITS}])",
])
def test_tampered_tensor_formula_is_refused(saved_depthwise, tmp_path, formula):
    def change(d):
        d["formula"] = formula
    _retell(saved_depthwise, tmp_path / "t.npz", change)
    with pytest.raises(ValueError, match="not an allowed sympy constructor"):
        sn.load(tmp_path / "t.npz")


def test_untampered_formula_text_is_what_the_tests_above_change(saved_depthwise):
    """The forged formulas above differ from the saved one only by the injected call."""
    with np.load(saved_depthwise, allow_pickle=False) as z:
        desc = json.loads(str(z["description"][()]))
    assert desc["layers"][0]["formula"] == f"Sum(Mul({K_AT}, {_x_at()}), {LIMITS})"


@pytest.mark.parametrize("change, message", [
    # whitelisted constructors, but a formula the layer refuses: K[c, u + 1, v] leaves K
    (lambda d: d.update(formula=f"Sum(Mul({FAR_K}, {_x_at()}), {LIMITS})"),
     r"reaches positions 1\.\.3 of a dimension of length 3; an index offset must stay"),
    (lambda d: d.update(index=["c", "y", "__class__"]), r"index name '__class__' is not allowed"),
    (lambda d: d.update(index=["c", "y", 3]), r"index names must be strings"),
    (lambda d: d.update(shape=[3, 4, -5]), r"shape must be a tuple of positive integers"),
    (lambda d: d.update(params={"K": [3, 3]}), r"has 3 indices but K has shape \(3, 3\)"),
    (lambda d: d.update(init={"K": "os.system"}), r"init 'K': 'os.system' must name"),
    (lambda d: d.update(formula=123), r"the formula must be srepr text"),
])
def test_forged_tensor_descriptions_are_refused(saved_depthwise, tmp_path, change, message):
    _retell(saved_depthwise, tmp_path / "f.npz", change)
    with pytest.raises(ValueError, match=message):
        sn.load(tmp_path / "f.npz")
