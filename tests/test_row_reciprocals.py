"""A row's divisor as one reciprocal per row (``Emitter.reciprocals``,
symnet.backend.c.emit): where a loop divides by something the same all along its
innermost index (a softmax's Σ in p = e/Σ, its backward's dP/Σ and e·dP/Σ²), the C
computes 1/Σ once before the innermost loop and the row multiplies by it.  Which loops
get one, what the C says, and the values against an independent numpy computation
(float64 at 1e-12, float32) and central differences."""

import re

import numpy as np
import pytest
from gradcheck import check
from norm_reference import mlp

import symnet as sn

L, D, HEADS = 8, 8, 2


def _attention():
    S = sn.Input((L, D), name="S")
    A = sn.MultiHeadAttention(HEADS, name="A")(S)
    return sn.Network(S, sn.Dense(2, name="O")(sn.Flatten(name="F")(A)), loss="mse")


def _softmax_mlp():
    X = sn.Input((5,), name="X")
    return sn.Network(X, sn.Dense(6, "tanh"), sn.Softmax(), sn.Dense(3), loss="mse")


def _block(src: str, head: str) -> str:
    """The C of the loop whose comment starts with ``head``, up to the next comment."""
    at = src.index(f"/* {head}")
    end = src.find("\n    /*", at + 1)
    return src[at:end if end > 0 else len(src)]


def test_softmax_rows_multiply_by_the_reciprocal_of_their_sum():
    src = _attention().compile(dtype="float32").c_source
    norm = _block(src, "A_p[b,hd,tq,tk] = A_e[b,hd,tq,tk]/A_z[b,hd,tq]")
    # once per row, before the loop over tk, and the row multiplies
    assert re.search(r"for \(int tq = 0; tq < 8; tq\+\+\) \{\n\s+const real sn_inv0 = "
                     r"1/A_z\[b \* 16 \+ hd \* 8 \+ tq\];\n(#.*\n)*\s+for \(int tk", norm), norm
    assert "*sn_inv0;" in norm and "/A_z[" not in norm.split("sn_inv0 =")[1].split(";", 1)[1]
    back = _block(src, "dL_dA_e[b,hd,tq,tk] = dL_dA_p[b,hd,tq,tk]/A_z[b,hd,tq]")
    assert "const real sn_inv0 = 1/A_z[" in back
    assert "const real sn_inv1 = 1/(A_z[b * 16 + hd * 8 + tq]*A_z[b * 16 + hd * 8 + tq]);" in back
    inner = back[back.index("for (int tk"):]
    assert "/A_z[" not in inner and "/(A_z[" not in inner


def test_a_divisor_that_moves_along_the_row_stays_a_division():
    X = sn.Input((5,), name="X")
    net = sn.Network(X, sn.Dense(6, lambda z: z / (1 + z ** 2), name="H"), sn.Dense(3),
                     loss="mse")
    src = net.compile(dtype="float32").c_source
    assert "sn_inv" not in src
    assert "sn_u_H[b * 6 + i] = t0/(t0*t0 + 1);" in src   # divides, element by element


def test_a_vector_softmax_has_its_reciprocal_too():
    src = _softmax_mlp().compile(dtype="float64").c_source
    assert "const real sn_inv0 = 1/" in src


def test_softmax_values_against_numpy(rng):
    model = _softmax_mlp().compile(dtype="float64")
    for k, v in model.params.items():
        v[...] = rng.normal(size=v.shape) * 0.7
    X, T = rng.normal(size=(6, 5)), rng.normal(size=(6, 3))
    L_ref, g_ref = mlp({k: v.copy() for k, v in model.params.items()}, X, T, "softmax")
    loss, g = model.loss_and_grad(X, T)
    assert loss == pytest.approx(L_ref, rel=1e-12)
    for k in g:
        np.testing.assert_allclose(g[k], g_ref[k], rtol=1e-12, atol=1e-14, err_msg=k)


def _mha_ref(X, p):
    """Multi-head self-attention (PyTorch's formulas) and Dense, in numpy."""
    B = X.shape[0]
    d = D // HEADS
    Y = X @ p["W1"].T + p["c1"]

    def split(part):
        return part.reshape(B, L, HEADS, d).transpose(0, 2, 1, 3)
    q, k, v = (split(Y[..., m * D:(m + 1) * D]) for m in range(3))
    S = q @ k.transpose(0, 1, 3, 2) / np.sqrt(d)
    P = np.exp(S - S.max(-1, keepdims=True))
    P /= P.sum(-1, keepdims=True)
    A = (P @ v).transpose(0, 2, 1, 3).reshape(B, L, D) @ p["Wo1"].T + p["co1"]
    return A.reshape(B, -1) @ p["W3"].T + p["b3"]


@pytest.mark.parametrize("dtype,rtol", [("float64", 1e-12), ("float32", 2e-5)])
def test_attention_values_against_numpy(dtype, rtol, rng):
    model = _attention().compile(dtype=dtype)
    for k, v in model.params.items():
        model.params[k] = rng.normal(scale=0.5, size=v.shape)
    X = rng.normal(size=(4, L, D))
    p = {k: v.astype(np.float64) for k, v in model.params.items()}
    want = _mha_ref(X.astype(dtype).astype(np.float64), p)
    np.testing.assert_allclose(model.forward(X.astype(dtype)), want, rtol=rtol,
                               atol=rtol * np.abs(want).max())


def test_attention_gradients_central_differences(rng):
    model = _attention().compile(dtype="float64")
    for k, v in model.params.items():
        model.params[k] = rng.normal(scale=0.5, size=v.shape)
    check(model, rng.normal(size=(3, L, D)), rng.normal(size=(3, 2)))
