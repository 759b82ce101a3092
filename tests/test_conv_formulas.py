"""Golden derivation of a small convolution network: text, LaTeX and the C comments."""

import symnet as sn


def _net():
    return sn.Network(sn.Input((1, 5, 5), name="I"),
                      sn.Conv2d(2, 3, padding=1, activation="relu", name="C1"),
                      sn.MaxPool2d(2, name="P"), sn.Conv2d(2, 2, name="C2"),
                      sn.Flatten(name="F"), sn.Dense(2, name="O"), loss="mse")


GOLDEN_BACKWARD = """\
  ∂L/∂O = inv_batch·∂ℓ/∂o
    dL_dO[b,i] = inv_batch·(O[b,i] - T[b,i])   (not stored: fused into delta_O below)
  δ_O = ∂L/∂z_O = ∂L/∂O ⊙ linear′(z_O + b5)   (loss fused with the output activation)
    delta_O[b,i] = inv_batch·(-T[b,i] + b5[i] + z_O[b,i])
  ∂L/∂b5 = ∂L/∂O · ∂O/∂b5 = Σ_b δ_O
    g_b5[i] = Σ_b inv_batch·(-T[b,i] + b5[i] + z_O[b,i])
  ∂L/∂W5 = ∂L/∂O · ∂O/∂W5 = δ_Oᵀ·F
    g_W5[i,j] = Σ_b delta_O[b,i]·F[b,j]
  ∂L/∂F = ∂L/∂O · ∂O/∂F = δ_O·W5
    dL_dF[b,j] = Σ_i delta_O[b,i]·W5[i,j]
  ∂L/∂C2 = ∂L/∂F   (the same numbers: Flatten is a view)
  δ_C2 = ∂L/∂z_C2 = ∂L/∂C2 ⊙ ∂C2/∂z_C2
    delta_C2[b,c,y,x] = dL_dC2[b,c,y,x]
  ∂L/∂b3 = ∂L/∂C2 · ∂C2/∂b3 = Σ_b Σ_y Σ_x δ_C2
    g_b3[c] = Σ_b Σ_y Σ_x dL_dC2[b,c,y,x]
  ∂L/∂P = ∂L/∂C2 · ∂C2/∂P
    dL_dP[b,k,y + u,x + v] += Σ_c W3[c,k,u,v]·delta_C2[b,c,y,x]
    i.e. dL_dP[b,k,y′,x′] = Σ_c Σ_u Σ_v W3[c,k,u,v]·delta_C2[b,c,y′ - u,x′ - v]   (correlation with the flipped kernel; terms outside delta_C2 are 0)
  ∂L/∂W3 = ∂L/∂C2 · ∂C2/∂W3
    g_W3[c,k,u,v] = Σ_b Σ_y Σ_x P[b,k,y + u,x + v]·delta_C2[b,c,y,x]
  δ_P = ∂L/∂z_P = ∂L/∂P ⊙ ∂P/∂z_P
    delta_P[b,c,y,x] = dL_dP[b,c,y,x]
  ∂L/∂C1 = ∂L/∂P · ∂P/∂C1
    dL_dC1[b,c,y*2 + u,x*2 + v] += delta_P[b,c,y,x]   at the first (u,v) where C1[b,c,y*2 + u,x*2 + v] = z_P[b,c,y,x], for every z_P[b,c,y,x]
  δ_C1 = ∂L/∂z_C1 = ∂L/∂C1 ⊙ ∂C1/∂z_C1
    delta_C1[b,c,y,x] = dL_dC1[b,c,y,x]·(1 if C1[b,c,y,x] > 0 else 0)
  ∂L/∂b1 = ∂L/∂C1 · ∂C1/∂b1 = Σ_b Σ_y Σ_x δ_C1
    g_b1[c] = Σ_b Σ_y Σ_x dL_dC1[b,c,y,x]·(1 if C1[b,c,y,x] > 0 else 0)
  ∂L/∂W1 = ∂L/∂C1 · ∂C1/∂W1
    g_W1[c,k,u,v] = Σ_b Σ_y Σ_x I[b,k,y + u - 1,x + v - 1]·delta_C1[b,c,y,x]"""


def test_golden_backward_derivation():
    text = str(_net().formulas())
    assert text.split("Backward, from the output down\n")[1] == GOLDEN_BACKWARD.rstrip("\n")


def test_forward_lines_show_the_index_maps():
    text = str(_net().formulas())
    assert "z_C1[b,c,y,x] = Σ_k Σ_u Σ_v I[b,k,y + u - 1,x + v - 1]·W1[c,k,u,v]" in text
    assert "z_P[b,c,y,x] = max_u,v C1[b,c,y*2 + u,x*2 + v]" in text


def test_c_comments_show_the_same_formulas():
    src = _net().compile(dtype="float64").c_source
    assert "g_W1[c,k,u,v] += Σ_b Σ_y Σ_x I[b,k,y + u - 1,x + v - 1]·delta_C1[b,c,y,x]" in src
    assert "dL_dP[b,k,y + u,x + v] += Σ_c W3[c,k,u,v]·delta_C2[b,c,y,x]" in src
    assert "first on ties" in src
    assert "z_C1[b,c,y,x] = Σ_k Σ_u Σ_v I[b,k,y + u - 1,x + v - 1]·W1[c,k,u,v]" in src


def test_latex_has_every_line():
    f = _net().formulas()
    tex = f.latex()
    assert tex.count("\\\\") + 1 == sum(1 for line in f.lines if line.latex is not None)
    assert r"\max_{u,v}" in tex and r"\text{(flipped kernel)}" in tex


def test_latex_renders_with_mathtext():
    import pytest
    pytest.importorskip("matplotlib")
    from test_formulas import _mathtext_lines
    f = _net().formulas()
    assert len(_mathtext_lines(f.latex())) == sum(1 for line in f.lines
                                                  if line.latex is not None)


def test_explicit_sympy_gradients_equal_the_compiled_ones():
    """f.lambdify runs the derived rules over explicit elements (max pooling as a
    product of steps): a third evaluation of the same derivation, checked against the C."""
    import numpy as np
    net = sn.Network(sn.Input((2, 5, 5), name="I"),
                     sn.Conv2d(2, 3, stride=2, padding=1, activation="tanh"),
                     sn.MaxPool2d(2, stride=1), sn.Conv2d(1, 1), sn.Flatten(), sn.Dense(2),
                     loss="mse")
    f = net.formulas()
    model = net.compile(dtype="float64", seed=3)
    rng = np.random.default_rng(1)
    X, T = rng.normal(size=(2, 2, 5, 5)), rng.normal(size=(2, 2))
    L, g = model.loss_and_grad(X, T)
    args = [X, T] + [model.params[k] for k in model.params]
    assert abs(f.lambdify("L", batch=2)(*args) - L) <= 1e-12 * abs(L)
    for name in model.params:
        np.testing.assert_allclose(f.lambdify("g_" + name, batch=2)(*args), g[name],
                                   rtol=1e-10, atol=1e-14, err_msg=name)
