"""The numpy backend runs the same plan as the C backend: on every example network and
the convolution / pooling shapes, the same outputs, loss, gradients and five-step
trajectory (float64, 1e-12 relative), and the model's calls work on it unchanged.
It needs no compiler: a process without ``cc`` on its PATH trains with it."""

import os
import runpy
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import symnet as sn

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
RTOL = 1e-12


def _example(name):
    return lambda: runpy.run_path(str(EXAMPLES / f"{name}.py"), run_name="example")["network"]()


def _two_inputs():
    a, b = sn.Input(3, name="A"), sn.Input(2, name="B")
    h = sn.Concatenate(name="C")([sn.Dense(4, "tanh", name="HA")(a),
                                  sn.Dense(3, "relu", name="HB")(b)])
    s = sn.Add(name="S")([sn.Dense(3, "sigmoid", name="P")(h), sn.Dense(3, name="Q")(h)])
    return sn.Network([a, b], sn.Dense(2, name="O")(s), loss="softmax_cross_entropy")


def _seq(shape, layers, loss="mse"):
    return lambda: sn.Network(sn.Input(shape), *layers(), loss=loss)


def _tags_and_total():
    """A GRU's sequence read by a class per position and, through Flatten, by a sum: the
    NumPy backend failed on the GRU's steps (G_1[b,i,x] of a (batch, 4) buffer)."""
    S = sn.Input((5, 2), name="S")
    x = sn.GRU(4, return_sequences=True, name="G")(S)
    tags = sn.Pointwise(3, name="tags")(x)
    total = sn.Dense(1, name="total")(sn.Flatten()(x))
    return sn.Network(S, [tags, total], loss={"tags": "softmax_cross_entropy",
                                              "total": "mse"})


NETWORKS = {
    **{name: _example(name) for name in ("xor", "moons", "regression", "digits", "rbf",
                                          "gated", "sequence", "two_heads", "digits_conv")},
    "two_inputs_merges": _two_inputs,
    "gru_tags_and_total": _tags_and_total,
    "gru_tags": _seq((5, 2), lambda: [sn.GRU(4, return_sequences=True), sn.Pointwise(3)],
                     loss="softmax_cross_entropy"),
    "frozen_first_layer": _seq(4, lambda: [sn.Dense(5, "softplus", trainable=False),
                                           sn.Dense(3, "elu"), sn.Dense(2, "sigmoid")],
                               loss="bce"),
    "batchnorm_layernorm_dropout": _seq(5, lambda: [
        sn.Dense(6, "tanh"), sn.BatchNorm1d(), sn.Dense(6, "relu"), sn.LayerNorm(),
        sn.Dropout(0.3), sn.Dense(2)]),
    "swish_gelu_softmax": _seq(3, lambda: [sn.Dense(6, "swish"), sn.Dense(5, "gelu"),
                                           sn.Dense(4)], loss="softmax_cross_entropy"),
    "conv_stride2_pad1": _seq((2, 7, 6), lambda: [
        sn.Conv2d(3, 3, stride=2, padding=1, activation="tanh"), sn.Flatten(), sn.Dense(2)]),
    "conv_pool_conv": _seq((2, 8, 8), lambda: [
        sn.Conv2d(3, 3, padding="same", activation="relu"), sn.MaxPool2d(2),
        sn.Conv2d(2, 2, activation="tanh"), sn.AvgPool2d(3, stride=1), sn.Flatten(),
        sn.Dense(3)]),
    "wide_channels": _seq((2, 16, 18), lambda: [
        sn.Conv2d(10, 3, padding="same", activation="relu"), sn.MaxPool2d(2),
        sn.Conv2d(9, 3, padding=1, activation="tanh"), sn.MaxPool2d(2), sn.Flatten(),
        sn.Dense(3)]),
    "max2d_k3_s2_p1": _seq((2, 7, 6), lambda: [
        sn.Conv2d(3, 2, activation="tanh"), sn.MaxPool2d(3, stride=2, padding=1),
        sn.Flatten(), sn.Dense(2)]),
    "max_first_dilated": _seq((1, 9, 8), lambda: [
        sn.MaxPool2d(2, stride=1, padding=1), sn.Conv2d(2, 3, dilation=2, padding=2,
                                                        activation="relu"),
        sn.AvgPool2d(3, stride=2, padding=1), sn.Flatten(), sn.Dense(2)]),
    "conv1d_pools": _seq((3, 17), lambda: [
        sn.Conv1d(4, 3, stride=2, padding=2, activation="tanh"), sn.MaxPool1d(2, padding=1),
        sn.Conv1d(2, 2, activation="relu"), sn.AvgPool1d(2), sn.Flatten(), sn.Dense(2)]),
}


def _data(net, model, rng, n=6):
    X = [rng.normal(size=(n, *x.shape)) for x in net.inputs]
    shapes = [net._shapes[id(o)] for o in net.outputs]
    T = []
    for loss, shape in zip(net.loss_names, shapes):
        width = int(np.prod(shape))
        if loss == "softmax_cross_entropy" and len(shape) > 1:      # a class per position
            T.append(np.eye(shape[-1])[rng.integers(0, shape[-1], (n, *shape[:-1]))])
        elif loss == "softmax_cross_entropy":
            T.append(np.eye(width)[rng.integers(0, width, n)].reshape(n, *shape))
        elif loss == "bce":
            T.append((rng.random((n, *shape)) > 0.5).astype(float))
        else:
            T.append(rng.normal(size=(n, *shape)))
    return (X[0] if len(X) == 1 else X), (T[0] if len(T) == 1 else T)


def _close(a, b, what):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = max(float(np.abs(b).max(initial=0.0)), 1e-300)
    np.testing.assert_allclose(a, b, rtol=RTOL, atol=RTOL * scale, err_msg=what)


@pytest.mark.parametrize("name", list(NETWORKS))
def test_numpy_backend_equals_the_c_backend(name):
    net = NETWORKS[name]()
    c = net.compile(dtype="float64", seed=3)
    npy = net.compile(dtype="float64", seed=3, backend="numpy")
    assert npy.backend == "numpy" and c.backend == "c"
    rng = np.random.default_rng(7)
    for k in c.params:     # every parameter random, biases too
        c.params[k] = npy.params[k] = rng.normal(0, 0.5, c.params[k].shape)
    X, T = _data(net, c, rng)
    outs_c, outs_n = c.forward(X), npy.forward(X)
    for a, b in zip(outs_n if isinstance(outs_n, list) else [outs_n],
                    outs_c if isinstance(outs_c, list) else [outs_c]):
        _close(a, b, f"{name}: forward")
    (lc, gc), (ln, gn) = c.loss_and_grad(X, T), npy.loss_and_grad(X, T)
    assert ln == pytest.approx(lc, rel=RTOL), name
    assert set(gn) == set(gc)
    for k in gc:
        _close(gn[k], gc[k], f"{name}: gradient {k}")
    for s in range(5):                 # the five-step trajectory
        l1, l2 = c.step(X, T, lr=0.05), npy.step(X, T, lr=0.05)
        assert l2 == pytest.approx(l1, rel=RTOL), (name, s)
        _close(npy.theta, c.theta, f"{name}: θ after step {s + 1}")


def test_class_labels_and_a_whole_epoch_with_adam_match():
    net = _seq(4, lambda: [sn.Dense(8, "tanh"), sn.Dense(3)],
               loss="softmax_cross_entropy")()
    c = net.compile(dtype="float64", seed=1)
    npy = net.compile(dtype="float64", seed=1, backend="numpy")
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(50, 4)), rng.integers(0, 3, 50)
    assert npy.loss(X, y) == pytest.approx(c.loss(X, y), rel=RTOL)
    _close(npy.loss_and_grad(X, y)[1]["W1"], c.loss_and_grad(X, y)[1]["W1"], "labels")
    kw = dict(method="minibatch", batch_size=8, epochs=3, lr=0.05, seed=4, progress=False,
              optimizer="adam", weight_decay=0.01, clip_norm=1.0)
    hc, hn = c.fit(X, y, **kw), npy.fit(X, y, **kw)
    _close(hn.loss, hc.loss, "epoch losses")
    _close(hn.accuracy, hc.accuracy, "training accuracy")
    _close(npy.theta, c.theta, "θ after fit")


def test_model_calls_work_on_the_numpy_backend(tmp_path):
    X, T = sn.datasets.xor()
    net = sn.Network(sn.Input(2), sn.Dense(8, "tanh"), sn.Dense(1, "sigmoid"), loss="bce")
    model = net.compile(dtype="float64", seed=0, backend="numpy")
    hist = model.fit(X, T, method="sd", epochs=400, lr=2.0, progress=False,
                     early_stopping=50)
    assert hist.final_loss < hist.loss[0] / 4
    assert model.predict_classes(X).ravel().tolist() == [0, 1, 1, 0]
    assert set(model.evaluate(X, T)) >= {"loss", "accuracy"}
    path = tmp_path / "m.npz"
    model.save(path)
    back = sn.load(path, backend="numpy")
    assert back.backend == "numpy"
    np.testing.assert_array_equal(back.theta, model.theta)
    assert "symnet_" in model.c_source     # the C the C backend would build
    with pytest.raises(AttributeError, match="numpy backend"):
        model.so_path
    import copy
    twin = copy.deepcopy(model)
    assert twin.backend == "numpy" and np.array_equal(twin.theta, model.theta)


def test_an_unknown_backend_is_refused():
    net = sn.Network(sn.Input(2), sn.Dense(1), loss="mse")
    with pytest.raises(ValueError, match="backend must be one of 'c', 'numpy', got 'cuda'"):
        net.compile(backend="cuda")


def test_numpy_backend_needs_no_compiler(tmp_path):
    """PATH stripped (no cc, no gcc) and an empty cache: the numpy backend compiles,
    trains and predicts; nothing is written to the cache."""
    script = textwrap.dedent("""
        import shutil, numpy as np, symnet as sn
        assert shutil.which("cc") is None and shutil.which("gcc") is None
        X, T = sn.datasets.xor()
        net = sn.Network(sn.Input(2), sn.Dense(8, "tanh"), sn.Dense(1, "sigmoid"),
                         loss="bce")
        model = net.compile(dtype="float64", seed=0, backend="numpy")
        hist = model.fit(X, T, method="minibatch", batch_size=2, epochs=20, lr=0.5,
                         seed=0, progress=False)
        assert hist.final_loss < hist.loss[0], hist.loss
        print("trained", model.predict(X).shape)
    """)
    cache = tmp_path / "cache"
    env = {"PATH": str(tmp_path / "nothing"), "PYTHONPATH": str(ROOT),
           "SYMNET_CACHE_DIR": str(cache), "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "trained (4, 1)" in out.stdout
    assert not cache.exists() or not any(cache.rglob("*.so"))


def test_distributed_fit_on_the_numpy_backend_equals_the_c_one(tmp_path):
    """Two MPI processes train the same network on each backend: the same History
    and parameters (float64, 1e-12)."""
    pytest.importorskip("mpi4py")
    from symnet.runtime.distributed import mpiexec
    try:
        launcher = mpiexec(2)
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    script = tmp_path / "both.py"
    script.write_text(textwrap.dedent("""
        import numpy as np, symnet as sn
        from mpi4py import MPI
        comm = MPI.COMM_WORLD
        r, P = comm.rank, comm.size
        X, y = sn.datasets.make_moons(60, seed=0)
        T = y.reshape(-1, 1).astype(float)
        net = sn.Network(sn.Input(2), sn.Dense(6, "tanh"), sn.Dense(1, "sigmoid"), loss="bce")
        out = []
        for backend in ("c", "numpy"):
            m = net.compile(dtype="float64", seed=0, backend=backend)
            h = m.fit(X[r::P], T[r::P], method="minibatch", batch_size=5, epochs=3, lr=0.5,
                      seed=1, progress=False, optimizer="momentum", comm=comm)
            out.append((np.array(h.loss), m.theta.copy()))
        (lc, tc), (ln, tn) = out
        assert np.allclose(ln, lc, rtol=1e-12, atol=0), (ln, lc)
        assert np.allclose(tn, tc, rtol=1e-12, atol=1e-14), np.abs(tn - tc).max()
        ok = comm.gather(True)
        if r == 0:
            print("same on", len(ok), "processes", flush=True)
    """))
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run(launcher + [sys.executable, "-m", "mpi4py", str(script)], env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert "same on 2 processes" in out.stdout
