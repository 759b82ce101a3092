"""Each example reaches its stated result (digits with fewer epochs, a lower bar)."""

import runpy
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _main(name):
    return runpy.run_path(str(EXAMPLES / f"{name}.py"), run_name="example")["main"]


def test_xor_all_three_methods():
    outputs = _main("xor")(verbose=False)
    assert set(outputs) == {"sd", "sgd", "minibatch"}
    for method, out in outputs.items():
        np.testing.assert_array_equal(out.ravel() > 0.5, [False, True, True, False],
                                      err_msg=method)


def test_moons_accuracy():
    assert _main("moons")(verbose=False) >= 0.95


def test_regression_fits_the_curve():
    assert _main("regression")(verbose=False) < 0.01


@pytest.mark.slow
def test_digits_accuracy_and_loss_curve(tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "loss.png"
    acc = _main("digits")(epochs=15, png=str(png), verbose=False)
    assert acc >= 0.93
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_sequence_counts_bits():
    assert _main("sequence")(epochs=30, verbose=False) >= 0.95


@pytest.mark.slow
def test_two_heads_classify_and_regress():
    acc, rmse = _main("two_heads")(epochs=100, verbose=False)
    assert acc >= 0.97
    assert rmse < 0.1


@pytest.mark.slow
def test_digits_conv_accuracy():
    """The convolutional network on the bundled digits as 1×8×8 images (README figure)."""
    assert _main("digits_conv")(png=None, verbose=False) >= 0.985


def test_poisson_pinn_error():
    """The Poisson PINN with a short run (the full one prints its error)."""
    assert _main("poisson")(["--adam", "200", "--lbfgs", "300", "--points", "500"]) < 0.05


def test_burgers_exact_solution_and_quick_run(tmp_path):
    """Cole–Hopf by Gauss–Hermite against a fine trapezoid rule in η; the quick
    run trains and writes its picture (the full run is the README figure)."""
    ns = runpy.run_path(str(EXAMPLES / "burgers.py"), run_name="example")
    t, x = np.array([0.25, 0.5, 1.0]), np.array([0.3, -0.5, 0.01])
    nu = ns["NU"]
    for tt, xx, got in zip(t, x, ns["exact"](t, x)):
        eta = np.linspace(-3, 3, 200001)
        y = xx - eta
        lf = -np.cos(np.pi * y) / (2 * np.pi * nu)
        f = np.exp(lf - lf.max() - eta ** 2 / (4 * nu * tt))
        want = -np.sum(np.sin(np.pi * y) * f) / np.sum(f)
        assert got == pytest.approx(want, rel=1e-8)
    pytest.importorskip("matplotlib")
    png = tmp_path / "b.png"
    err = ns["main"](["--quick", "--adam", "50", "--lbfgs", "50", "--picture", str(png)])
    assert err < 1.0 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_gru_names_the_first_symbol():
    assert _main("gru")(verbose=False) >= 0.95


@pytest.mark.slow
def test_transformer_reverses_digit_strings():
    assert _main("transformer")(verbose=False) >= 0.95
