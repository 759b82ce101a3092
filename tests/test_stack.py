"""symnet.plan.stack: a weight gradient summed over the steps of a recurrence,
Σ_t δ_tᵀ·h_{t−1}, lowered as one product over batch·steps rows.

Checked on the plan (one product where there were one per step, its operands laid out
one after the other, the forward's buffers still first), against the same plan without
the rewrite (C, float64), against the NumPy backend (which sums the pairs one by one),
against a numpy loop of the recurrence's gradient written here, and by central
differences.
"""

import numpy as np
import pytest
from gradcheck import check

import symnet as sn
import symnet.plan.lower as lower
from symnet.backend.c.emit import forward_per_row
from symnet.plan.ops import MatMul

L, D, H = 5, 3, 4


def rnn():
    S = sn.Input((L, D), name="S")
    h = sn.recurrent.unroll(sn.recurrent.RNNCell(H, "tanh"), steps=L)(S)
    return sn.Network(S, sn.Dense(2, name="O")(h), loss="mse")


def gru():
    S = sn.Input((L, D), name="S")
    return sn.Network(S, sn.GRU(H), sn.Dense(2, name="O"), loss="mse")


def stacked(p) -> list:
    return [op for op in p.backward if isinstance(op, MatMul) and op.parts]


@pytest.mark.parametrize("make", [rnn, gru])
def test_one_product_over_the_steps_laid_out_in_a_row(make):
    """The GRU's ∂L/∂U over steps 2..L (h_0 = 0: step 1 has no U·h product); the simple
    recurrence's ∂L/∂W over its L inputs x_t (its U shares W's δ_t, an alias: kept per
    step)."""
    net = make()
    p = lower.plan(net.graph())
    ops = stacked(p)
    U = next(n for n in p.buffers if n.startswith("U")) if make is gru else \
        next(n for n in p.buffers if p.buffers[n].kind == "param"
             and p.buffers[n].shape == (H, D))
    n = L - 1 if make is gru else L
    mine = [op for op in ops if op.C == f"g_{U}"]
    assert len(mine) == 1, [op.comment for op in ops]
    op = mine[0]
    assert len(op.parts) == n and op.K == f"batch * {n}"
    # no product per step into g_U is left
    assert not [o for o in p.backward if isinstance(o, MatMul) and o.C == op.C
                and o is not op]
    # A_t and B_t follow each other in the work array by their widths, in one order
    for j, (A, B) in enumerate(op.parts):
        assert p.buffers[A].offset == p.buffers[op.A].offset + j * op.M
        assert p.buffers[B].offset == p.buffers[op.B].offset + j * op.N
    # δ_t pairs with h_{t−1} (GRU) or x_t (the simple recurrence's W)
    steps = [(int(A.split("_")[-2]) if make is gru else int(A.split("_")[-1]),
              int(B.split("_")[-1])) for A, B in op.parts]
    assert all(t == s + (make is gru) for t, s in steps), steps
    # the forward's buffers still come first, and two buffers overlap only where they
    # share their place whole (symnet.plan.share: the same offset and size)
    fwd = forward_per_row(p)
    spans = sorted({(b.offset, b.offset + int(np.prod(b.shape[1:])))
                    for b in p.buffers.values() if b.kind == "work"})
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:])), spans
    names = {n.name for n in p.graph.nodes} | {r.name for n in p.graph.nodes
                                               for r in n.reductions}
    assert all(b.offset + int(np.prod(b.shape[1:])) <= fwd for b in p.buffers.values()
               if b.kind == "work" and b.name in names)
    assert "one product of batch" in p.backward[p.backward.index(op)].comment
    # and the C runs it as one call (in a pass in chunks: after the chunks, each job its
    # rows m0 ≤ m < m1 of it)
    src = net.compile(dtype="float64").c_source
    if p.halves is not None:
        assert op in p.halves.late
        assert f"sn_gemm(m1 - m0, {op.N}, batch * {n}, {op.A} + m0, 1, {op.M}, {op.B}, " \
            f"{op.N}, 1, g_{U} + (size_t)m0 * {op.N}, 0)" in src
    else:
        assert f"batch * {n}, {op.A}, {op.B}, g_{U}" in src


def test_not_stacked_when_an_operand_is_written_before_the_product(monkeypatch):
    """The rewrite refuses when the one product would read an operand that an op after
    its own product overwrote: built by hand on the GRU's plan."""
    from symnet.plan import stack as stack_mod
    monkeypatch.setattr(lower, "stack", lambda p: None)
    p = lower.plan(gru().graph())
    U = next(n for n in p.buffers if n.startswith("U"))
    ks = [k for k, op in enumerate(p.backward) if isinstance(op, MatMul) and
          op.C == f"g_{U}"]
    assert len(ks) == L - 1
    assert stack_mod._groups(p, p.backward)        # as lowered: it stacks
    first = p.backward[ks[0]]
    from symnet.plan.ops import Zero
    clobber = p.backward[:ks[0] + 1] + [Zero(first.B, None)] + p.backward[ks[0] + 1:]
    assert not [g for g in stack_mod._groups(p, clobber)
                if any(clobber[k].C == f"g_{U}" for k in g)]


def _numpy_rnn_grads(model, X, T):
    """∂L/∂(W, U, b) of the tanh recurrence and the head, by a loop written here."""
    P = model.params
    k = next(n for n in P if n.startswith("U"))[1:]
    W, U, b = P[f"W{k}"], P[f"U{k}"], P[f"b{k}"]
    Wo = next(n for n in P if n.startswith("W") and P[n].shape[0] == 2)
    hs = [np.zeros((len(X), H))]
    for t in range(L):
        hs.append(np.tanh(X[:, t] @ W.T + hs[-1] @ U.T + b))
    O = hs[-1] @ P[Wo].T + P["b" + Wo[1:]]
    dO = 2 * (O - T) / (O.shape[1] * len(X))
    dh = dO @ P[Wo]
    gW, gU, gb = np.zeros_like(W), np.zeros_like(U), np.zeros_like(b)
    for t in range(L, 0, -1):
        delta = dh * (1 - hs[t] ** 2)
        gW += delta.T @ X[:, t - 1]
        gU += delta.T @ hs[t - 1]
        gb += delta.sum(0)
        dh = delta @ U
    return {f"W{k}": gW, f"U{k}": gU, f"b{k}": gb}


def test_gradients_equal_unstacked_numpy_backend_and_a_numpy_loop(rng, monkeypatch):
    X, T = rng.normal(size=(7, L, D)), rng.normal(size=(7, 2))
    model = rnn().compile(dtype="float64", seed=0)
    for k, v in model.params.items():
        model.params[k] = rng.normal(scale=0.5, size=v.shape)
    theta = {k: v.copy() for k, v in model.params.items()}
    _, g = model.loss_and_grad(X, T)
    ref = _numpy_rnn_grads(model, X, T)
    for k, v in ref.items():
        np.testing.assert_allclose(g[k], v, rtol=1e-11, atol=1e-13)
    check(model, X, T)
    npy = rnn().compile(backend="numpy", dtype="float64", seed=0)
    npy.params.update(theta)
    _, gn = npy.loss_and_grad(X, T)
    for k in g:
        np.testing.assert_allclose(g[k], gn[k], rtol=1e-12, atol=1e-14)
    # the same network planned without the rewrite: the same gradients (another order
    # of the same sum)
    monkeypatch.setattr(lower, "stack", lambda p: None)
    S = sn.Input((L, D), name="S2")   # another description: another compiled module
    h = sn.recurrent.unroll(sn.recurrent.RNNCell(H, "tanh"), steps=L)(S)
    plain = sn.Network(S, sn.Dense(2, name="O")(h), loss="mse").compile(dtype="float64")
    assert "one product of batch" not in plain.c_source
    plain.params.update(theta)
    _, gp = plain.loss_and_grad(X, T)
    for k in g:
        np.testing.assert_allclose(g[k], gp[k], rtol=1e-12, atol=1e-14)


def _tensor_only(graph, node, t, g):
    """symnet.plan.lower's rule before vector nodes shared ∂L/∂node: tensors only."""
    return len(node.space) > 1 and t.target.startswith("delta_") and t.expr == g.upstream


def test_gru_gates_delta_is_their_gradient_itself_and_still_stacks(rng, monkeypatch):
    """δ of U·h_{t−1} + c is ∂L/∂(U·h_{t−1} + c) element for element: the plan names
    that buffer (no copy loop), the stacked ∂L/∂U reads it in place, and the gradients
    equal a plan that copies (the rule for tensor nodes only), the NumPy backend and
    central differences; a Dense without activation between two layers likewise."""
    p = lower.plan(gru().graph())
    deltas = [b for n, b in p.buffers.items() if n.startswith("delta_") and
              n.endswith("_gh")]
    assert len(deltas) == L - 1
    assert all(b.kind == "alias" and b.alias == "dL_d" + b.name[len("delta_"):]
               for b in deltas)
    written = {t for op in p.backward if hasattr(op, "stmts") for t, *_ in op.stmts}
    assert not {b.name for b in deltas} & written
    assert len([op for op in stacked(p) if op.C.startswith("g_U")]) == 1

    def nets(tag=""):     # another tag: another description, another compiled module
        S = sn.Input((L, D), name="S" + tag)
        x = sn.Input(D, name="x" + tag)
        h = sn.Dense(5, activation="tanh", name="A")(x)
        h = sn.Dense(4, name="B")(h)            # no activation: δ_B is ∂L/∂B
        return (sn.Network(S, sn.GRU(H), sn.Dense(2, name="O"), loss="mse"),
                sn.Network(x, sn.Dense(2, activation="tanh", name="O")(h), loss="mse"))

    X, T = rng.normal(size=(6, L, D)), rng.normal(size=(6, 2))
    x = rng.normal(size=(6, D))
    shared = [m.compile(dtype="float64", seed=0) for m in nets()]
    for m in shared:
        for k, v in m.params.items():
            m.params[k] = rng.normal(scale=0.5, size=v.shape)
    assert "real *delta_B = dL_dB;" in shared[1].c_source
    monkeypatch.setattr(lower, "_delta_is_upstream", _tensor_only)
    copied = [m.compile(dtype="float64", seed=0) for m in nets("2")]
    for a, b, (XX, TT) in zip(shared, copied, [(X, T), (x, T)]):
        assert a.c_source.count(" itself: (batch") > b.c_source.count(" itself: (batch")
        b.params.update({k: v.copy() for k, v in a.params.items()})
        la, ga = a.loss_and_grad(XX, TT)
        lb, gb = b.loss_and_grad(XX, TT)
        assert la == pytest.approx(lb, rel=1e-14)
        for k in ga:
            np.testing.assert_allclose(ga[k], gb[k], rtol=1e-12, atol=1e-14)
        check(a, XX, TT)
