"""The network's C compiled in two parts side by side (symnet/backend/c/split.py): the
parts give the module of the whole text the same results, bit for bit; the cached C is
the whole text; text the splitter does not read is compiled whole; parts that do not
compile fall back to the whole text."""

import doctest
import importlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import symnet as sn
from symnet.backend.c import build, split
from symnet.backend.c.runtime import render
from symnet.plan.lower import plan

LR = 0.05


def _logging_cc(tmp_path) -> Path:
    """A compiler command that logs every call, then runs gcc."""
    log = tmp_path / "cc.log"
    cc = tmp_path / "cc"
    cc.write_text(f'#!/bin/sh\necho "$*" >> {log}\nexec gcc "$@"\n')
    cc.chmod(0o755)
    return cc


def _part_compiles(log: Path) -> int:
    return sum(1 for line in log.read_text().splitlines() if ".part" in line and " -c " in line)


def _networks():
    """An MLP with class labels (two variants of every pass), a convolution with
    pooling (runs over chunks of the batch, OpenMP regions), a gated recurrence."""
    mlp = sn.Network(sn.Input(30), sn.Dense(40, "relu"), sn.Dense(20, "tanh"), sn.Dense(5),
                     loss="softmax_cross_entropy")
    conv = sn.Network(sn.Input((1, 8, 8)), sn.Conv2d(4, 3, activation="relu"), sn.MaxPool2d(2),
                      sn.Flatten(), sn.Dense(3), loss="softmax_cross_entropy")
    return {"mlp": (mlp, (30,), 5), "conv": (conv, (1, 8, 8), 3)}


def _run(model, X, T, labels):
    """Everything a model's C computes that training and prediction use: outputs, loss
    and gradients, steps (SGD, Adam), a whole epoch."""
    out = {"forward": model.forward(X).copy()}
    out["loss"] = model.loss(X, T)
    out["grad"] = np.concatenate([g.ravel() for g in model.loss_and_grad(X, T)[1].values()])
    out["step"] = model.step(X, T, LR)
    out["theta_step"] = model.theta.copy()
    out["label_step"] = model.step(X, labels, LR)
    model.fit(X, T, epochs=2, batch_size=4, lr=LR, optimizer="adam", shuffle=False)
    out["theta_fit"] = model.theta.copy()
    return out


@pytest.mark.parametrize("name", ["mlp", "conv"])
def test_two_parts_give_the_results_of_the_whole(tmp_path, monkeypatch, name):
    """The module built from the two parts (checked: two compiles of parts in the log)
    computes bit for bit what the module built from the whole text computes, from the
    same parameters: forward, loss, gradients, steps with targets as rows and as class
    labels, an Adam epoch."""
    net, shape, n_out = _networks()[name]
    rng = np.random.default_rng(3)
    X = rng.normal(size=(9, *shape))
    labels = rng.integers(0, n_out, size=(9, 1)).astype(np.float64)
    T = np.eye(n_out)[labels[:, 0].astype(int)]
    monkeypatch.setenv("CC", str(_logging_cc(tmp_path)))
    # every product on symnet's tiles: each build's cache times its products afresh, and
    # could send one to OpenBLAS that the other runs on the tiles (other bits)
    monkeypatch.setenv("SYMNET_BLAS", "0")
    results = {}
    for mode in ("0", "1"):
        monkeypatch.setenv("SYMNET_SPLIT", mode)
        monkeypatch.setenv("SYMNET_CACHE_DIR", str(tmp_path / f"cache{mode}"))
        model = net.compile(dtype="float64", seed=5)
        assert "SN_HIDDEN" not in model.c_source, "the cached C is the whole text"
        assert model.c_source == render(plan(net.graph()), "float64", hooks=True)[0]
        results[mode] = _run(model, X, T, labels)
    assert _part_compiles(tmp_path / "cc.log") == 2
    whole, parts = results["0"], results["1"]
    assert whole.keys() == parts.keys()
    for key in whole:
        np.testing.assert_array_equal(parts[key], whole[key], err_msg=key)


@pytest.mark.skipif(not build._ALIASES, reason="hidden names: GCC and Clang on Linux")
def test_parts_keep_their_names_to_themselves(tmp_path, monkeypatch):
    """Two networks built in parts, loaded into the global scope (where an exported
    sn_forward of one would bind the other's calls): each computes its own outputs,
    and the module exports no name of the parts' shared functions."""
    monkeypatch.setenv("SYMNET_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("SYMNET_SPLIT", "1")
    X = np.random.default_rng(0).normal(size=(6, 7))
    flags = sys.getdlopenflags()
    try:
        sys.setdlopenflags(os.RTLD_NOW | os.RTLD_GLOBAL)
        models = [sn.Network(sn.Input(7), sn.Dense(w, "tanh"), sn.Dense(2),
                             loss="mse").compile(dtype="float64", seed=s)
                  for w, s in ((5, 1), (11, 2))]
    finally:
        sys.setdlopenflags(flags)
    for m in models:
        p = m.params
        want = np.tanh(X @ p["W1"].T + p["b1"]) @ p["W2"].T + p["b2"]
        np.testing.assert_allclose(m.forward(X), want, rtol=1e-12, atol=1e-12)
        exported = subprocess.run(["nm", "-D", "--defined-only", m.runtime.meta["so_path"]],
                                  capture_output=True, text=True).stdout
        assert " sn_forward" not in exported and " sn_backprop" not in exported, exported


def test_a_part_that_does_not_compile_falls_back_to_the_whole(tmp_path, monkeypatch):
    """Parts that the compiler rejects (a wrong reading of the text) do not fail the
    build: the whole text is compiled, and the model works."""
    monkeypatch.setenv("SYMNET_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("SYMNET_SPLIT", "1")
    monkeypatch.setattr(split, "split", lambda text, weights=None: ("int broken(;\n", text))
    net = sn.Network(sn.Input(3), sn.Dense(4, "tanh"), sn.Dense(1), loss="mse")
    m = net.compile(dtype="float64", seed=1)
    X = np.ones((2, 3))
    p = m.params
    want = np.tanh(X @ p["W1"].T + p["b1"]) @ p["W2"].T + p["b2"]
    np.testing.assert_allclose(m.forward(X), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("text, why", [
    ("#if A\nstatic int f(void) {\n#else\nstatic int f(int x) {\n#endif\n return 0; }\n"
     "int g(void) { return 1; }\n", "a brace in a preprocessor branch"),
    ("int table[2] = {1, 2};\nint f(void) { return table[0]; }\nint g(void) { return 1; }\n",
     "a variable other files could see"),
    ("static int f(void) { return 1; }\n", "one function"),
    ("int f(void) { return 1; }\nint g(void) { /* open\n", "an unterminated comment"),
    ("static int (*pick)(int) = 0;\nint f(void) { return 1; }\nint g(void) { return 2; }\n",
     "a declaration with parentheses"),
    ("static inline int next(void) { static int n; return ++n; }\n"
     "int f(void) { return next(); }\nint g(void) { return next(); }\n",
     "a static variable of an inline function (one per part)"),
])
def test_text_it_does_not_read_is_not_split(text, why):
    assert split.split(text) is None, why


def test_a_split_text_keeps_every_piece_once():
    """Every function definition of a real network's C is in exactly one part; what a
    part does not define, it declares (or does not use); both parts compile."""
    net = _networks()["mlp"][0]
    text = render(plan(net.graph()), "float32", hooks=True)[0]
    parts = split.split(text)
    assert parts is not None
    defined = [{it.name for it in split.items(p) if it.kind == "func"} for p in parts]
    whole = {it.name for it in split.items(text) if it.kind == "func"}
    inline = {it.name for it in split.items(text) if it.kind == "func"
              and ("inline" in it.head or "SN_INLINE" in it.head)}
    assert defined[0] | defined[1] == whole
    assert defined[0] & defined[1] == inline, "a function defined in both parts"
    assert defined[0] - inline and defined[1] - inline, "a part without functions of its own"


def test_docstring_examples():
    result = doctest.testmod(importlib.import_module("symnet.backend.c.split"))
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize("name", ["mlp", "conv"])
def test_parts_compile_without_warnings(name, tmp_path):
    """Each part is as clean as the whole text (tests/test_warnings.py): -Wall -Wextra
    -pedantic, no warning (a declaration left without its definition, an unused static
    function would show)."""
    net = _networks()[name][0]
    parts = split.split(render(plan(net.graph()), "float32", hooks=True)[0])
    assert parts is not None
    for i, text in enumerate(parts):
        src = tmp_path / f"part{i}.c"
        src.write_text(text)
        out = subprocess.run(["gcc", "-std=c99", "-pedantic", "-Wall", "-Wextra", "-Werror",
                              "-O2", "-fopenmp", "-DSN_USE_BLAS", "-c", str(src), "-o",
                              str(src.with_suffix(".o"))], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr


def test_a_large_forward_pass_goes_to_the_second_part():
    """A recurrence's forward pass (functions of its own, a fifth of the text) is compiled
    beside the step, not after it: the step's functions stay together in the first part,
    the forward pass's in the second; a small one stays with the step."""
    S = sn.Input((12, 3), name="S")
    net = sn.Network(S, sn.GRU(6, name="G"), sn.Dense(2, name="O"), loss="mse")
    text = render(plan(net.graph()), "float32", hooks=True)[0]
    parts = split.split(text)
    assert parts is not None
    defined = [{it.name for it in split.items(p) if it.kind == "func"
                and not ("inline" in it.head or "SN_INLINE" in it.head)} for p in parts]
    assert "sn_chunk" in defined[0], defined
    assert "sn_forward" in defined[1], defined
    sizes = [len(p) for p in parts]
    assert min(sizes) > 0.3 * max(sizes), sizes
    mlp = split.split(render(plan(_networks()["mlp"][0].graph()), "float32", hooks=True)[0])
    assert "sn_forward" in {it.name for it in split.items(mlp[0]) if it.kind == "func"}
