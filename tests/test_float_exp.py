"""The float32 exponential of the generated C (templates/expf.c.j2): vectorisable, and
within 1.5 ulp of exp in double (libm's expf: 1 ulp), with exp's limits."""

import numpy as np
import sympy

import symnet as sn


def exp_model():
    """O = exp(1·x + 0): the layer's exponential of the input itself (one input, so that
    no 0·∞ of a product spoils the special values)."""
    net = sn.Network(sn.Input(1), sn.Dense(1, lambda z: sympy.exp(z), name="E"), loss="mse")
    model = net.compile(dtype="float32")
    model.params["W1"] = np.ones((1, 1), np.float32)
    model.params["b1"] = np.zeros(1, np.float32)
    return model


def test_float_exp_is_within_1_5_ulp_of_exp():
    model = exp_model()
    assert "sn_expf(" in model.runtime.c_source
    x = np.linspace(-110, 88.72, 400_001).astype(np.float32)
    x = np.concatenate([x, np.float32(np.log(2)) * np.arange(-149, 128, dtype=np.float32),
                        [-103.97, -87.34, -0.35, 0.35, 88.72, 88.7228]]).astype(np.float32)
    got = model.forward(x[:, None])[:, 0].astype(np.float64)
    want = np.exp(x.astype(np.float64))
    # relative error, and below the smallest normal float against it (subnormal spacing)
    err = np.abs(got - want) / np.maximum(want, 2.0 ** -126)
    assert err.max() < 9e-8, (err.max(), x[err.argmax()])


def test_float_exp_limits():
    model = exp_model()
    x = np.array([0, 1, -np.inf, np.inf, np.nan, 88.73, 1000, -104.5, -1000], np.float32)
    got = model.forward(x[:, None])[:, 0]
    assert got[0] == 1 and abs(got[1] - np.e) <= 2 * np.spacing(np.float32(np.e))
    assert got[2] == 0 and got[3] == np.inf and np.isnan(got[4])
    assert got[5] == np.inf and got[6] == np.inf            # beyond float's largest
    assert got[7] == 0 and got[8] == 0                      # below the least subnormal
