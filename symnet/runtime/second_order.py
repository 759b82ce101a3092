"""Compiled input derivatives and Hessian-vector products of a model.

``Kernels(model, kind)`` turns the model's IR into a jet program
(``symnet.derive.jets``), prints it as C, builds it with the model's compiler and
flags (``symnet.backend.c.build``, cached like every kernel) and calls it on the model's
own parameter array, so the values always follow training.

- ``"jacobian"``: forward jets of order 1 for every input column → (batch, n_out, n_in);
- ``"hessian"``: order 2 for every pair of columns (one-output networks);
- ``"grad"``: the loss, ∂L/∂θ and ∂L/∂X in one pass; with it the exact Hessian of
  the mean loss times v (the tangent of that pass along v, R-operator) and the
  Gauss–Newton product.

Networks the jets do not cover (convolutions and pooling, tensor or several inputs,
sums that are not contractions, softmax cross-entropy) get ``input_grad`` and
``jacobian`` from ``Reverse``: the network's own kernels derived with its inputs
needing a gradient, the Jacobian by seeding the loss o·t with unit vectors.
"""

from __future__ import annotations

import numpy as np

from .. import guards
from ..backend.c import jets as jets_c
from ..backend.c.jets import build_program_module, call_kernel
from ..derive import jets


#: what each call derives, for the messages of the networks the jets do not cover
PURPOSE = {"model.jacobian": "the Jacobian by the jets is",
           "model.hessian": "the input Hessian is",
           "model.input_grad": "∂L/∂X by the jets is",
           "model.hessian_vector": "the parameter Hessian-vector product is",
           "model.gauss_newton_vector": "the Gauss–Newton product is",
           "fit(method='newton_cg')": "the parameter Hessian-vector product (Newton-CG's "
                                      "H·v) is"}


class Kernels:
    """The compiled jets of one model for one purpose (see the module text).
    ``what``: the call they are built for, named in a refusal."""

    def __init__(self, model, kind: str, what: str | None = None):
        self.model, self.kind = model, kind
        graph = model.network.graph()
        params = model.meta["params"]
        dtype = model.dtype.name
        what = what or {"jacobian": "model.jacobian", "hessian": "model.hessian",
                        "grad": "model.input_grad"}[kind]
        purpose = PURPOSE.get(what, "the jets are")
        if model.stateful:
            raise NotImplementedError(f"{what}: {purpose} not derived for networks with "
                                      "Dropout or BatchNorm (a training mode)")
        n_in = graph.n_in
        if kind == "jacobian":
            alphas = [(c,) for c in range(n_in)]
        elif kind == "hessian":
            alphas = [(c, d) for c in range(n_in) for d in range(c, n_in)]
        else:
            alphas = [()]
        try:
            prog, jet = jets.forward_program(graph, params, alphas)
        except jets.Unsupported as exc:
            raise NotImplementedError(exc.message(what, purpose)) from None
        self.program, self.jets = prog, jet
        functions = []
        if kind in ("jacobian", "hessian"):
            self.layout = []     # (output, alpha, offset in the row, count)
            outputs = []
            pos = 0
            for out in graph.outputs:
                node = graph.node(out)
                for a in jets.closure(alphas):
                    if len(a) == (1 if kind == "jacobian" else 2) and a in jet[out]:
                        outputs.append((jet[out][a], 0, node.n_out))
                        self.layout.append((out, a, pos, node.n_out))
                        pos += node.n_out
            self.width = pos
            functions.append(("sn_jets", jets_c.emit_function(prog, prog.ops, "sn_jets", dtype,
                                                             outputs)))
        else:
            try:
                loss_ops = jets.data_loss_ops(prog, graph, jet)
            except jets.Unsupported as exc:
                raise NotImplementedError(exc.message(what, purpose)) from None
            fwd = prog.ops + loss_ops
            prog.ops = fwd
            active = {p["name"] for p in params if p.get("trainable", True)}
            rev = jets.reverse(prog, active | {graph.input_name})
            functions.append(("sn_grad_x", jets_c.emit_function(prog, fwd + rev, "sn_grad_x",
                                                               dtype)))
            rev_p = jets.reverse(prog, active)
            functions.append(("sn_grad", jets_c.emit_function(prog, fwd + rev_p, "sn_grad",
                                                             dtype)))
            hv = jets.tangent(prog, fwd + rev_p, active)
            functions.append(("sn_hvp", jets_c.emit_function(prog, hv, "sn_hvp", dtype)))
            gn = jets.tangent(prog, fwd + rev_p, active, gauss_newton_from=len(fwd))
            functions.append(("sn_gnvp", jets_c.emit_function(prog, gn, "sn_gnvp", dtype)))
        tag = kind
        self.lib, self.ffi, self.c_source = build_program_module(functions, dtype, tag)

    # -------------------------------------------------------------- calls
    def call(self, name, X, T=None, scale=1.0, want_gx=False, vec=None, out=None):
        return call_kernel(self.lib, self.ffi, name, self.model, X, T, scale, want_gx, vec, out)


# --------------------------------------------- ∂L/∂X by the network's own reverse pass

class Reverse:
    """The network's own kernels (``symnet.plan.lower``, ``symnet.backend.c``) derived
    with its inputs counted as needing a gradient (``ir.Graph.grad_inputs``): one
    ``loss_grad`` call leaves ∂L/∂X in its work buffer ``dL_d<input>``.  First order,
    for every layer the reverse pass knows (convolutions, pooling, tensor shapes,
    several inputs, softmax cross-entropy).

    ``seed=True``: every output's loss replaced by ℓ(o, t) = o·t (weight 1), so that
    ∂L/∂X = (1/n)·Σ_k t_k ∂o_k/∂X: with t = e_k, row k of the Jacobian."""

    def __init__(self, model, seed: bool):
        import dataclasses
        import hashlib

        from ..backend.c import build, tuning
        from ..backend.c.emit import cdef, kernels_source, universal_cdef
        from ..backend.c.runtime import Runtime, network_key, render
        from ..backend.common import plan_meta
        from ..derive.chain import upstream_name
        from ..plan.lower import plan as make_plan
        from ..scalar.primitives import Loss

        self.model, self.seed = model, seed
        if model.stateful:
            raise NotImplementedError("input derivatives of networks with Dropout or "
                                      "BatchNorm (a training mode) are not derived")
        description, dtype = model.network.describe(), model.dtype.name
        key = hashlib.sha256(f"{network_key(description, dtype)} grad_inputs "
                             f"seed={seed}".encode()).hexdigest()[:24]
        hit = build.lookup(key)
        if hit is None:
            graph = model.network.graph()
            change = {"grad_inputs": True}
            if seed:
                dot = Loss("seed", lambda o, t, n: o * t)
                change.update(loss=dot, losses={o: dot for o in graph.outputs},
                              weights={o: 1.0 for o in graph.outputs})
            graph = dataclasses.replace(graph, **change)
            plan = make_plan(graph)
            source, header, prefix = render(plan, dtype, hooks=True)
            meta = dict(plan_meta(plan, description, dtype), prefix=prefix,
                        products=tuning.products_of(plan), tile=None,
                        input_grads=[[name, plan.buffers[upstream_name(name)].offset, width]
                                     for name, width in graph.inputs])
            hit = build.build(key, source, cdef(header), meta,   # as backend.c.runtime.load
                              kernels=kernels_source(dtype), shared=universal_cdef(dtype))
        self.rt = Runtime(*hit)
        mine = [(p["name"], p["offset"]) for p in self.rt.meta["params"]]
        theirs = [(p["name"], p["offset"]) for p in model.meta["params"]]
        if mine != theirs:       # the same graph lays its parameters out the same way
            raise RuntimeError("the input-gradient kernels lay out the parameters "
                               f"differently from the model's: {mine} vs {theirs}")

    def grad_x(self, X, T) -> np.ndarray:
        """(batch, n_in): ∂(Σ_b ℓ_b / n)/∂X for rows X (``as_inputs``) and T."""
        rt, model = self.rt, self.model
        n = X.shape[0]
        out = np.empty((n, model.n_in), model.dtype)
        with model.lock:
            rt.params = model.theta                    # the model's current parameters
            rt._p_params = rt.buffer(model.theta)
            rt.loss_grad(X, T)
            work, col = rt.work, 0
            for _, offset, width in rt.meta["input_grads"]:
                out[:, col:col + width] = work[n * offset:n * (offset + width)] \
                    .reshape(n, width)
                col += width
        return out


def _reverse(model, seed: bool) -> Reverse:
    cache = model.__dict__.setdefault("_jet_kernels", {})
    key = "reverse-seed" if seed else "reverse"
    if key not in cache:
        cache[key] = Reverse(model, seed)
    return cache[key]


def _shaped_like(model, X, G):
    """∂/∂X rows (batch, n_in) in the form X was given: (batch, *shape) for a tensor
    input, a list or dict per input for several."""
    net = model.network
    n = G.shape[0]
    if len(net.inputs) == 1:
        return G.reshape((n, *model.in_shape)) if len(model.in_shape) > 1 else G
    if isinstance(X, np.ndarray) and X.ndim == 2 and X.shape[1] == model.n_in:
        return G
    parts, col = [], 0
    for x in net.inputs:
        parts.append(G[:, col:col + x.n].reshape((n, *x.shape)) if len(x.shape) > 1
                     else G[:, col:col + x.n])
        col += x.n
    if isinstance(X, dict):
        return dict(zip(net.input_names, parts))
    return parts


def _jets_apply(model) -> bool:
    """Vector input, vector layers, element-wise losses: the jet kernels; otherwise
    the network's own reverse pass (``Reverse``)."""
    if len(model.network.inputs) != 1 or len(model.in_shape) != 1:
        return False
    graph = model.network.graph()
    return all(len(node.space) == 1 and node.kind != "flatten" and all(
        r.contraction is not None and r.op == "sum" and not r.space
        for r in node.reductions) for node in graph.nodes) and \
        all(graph.losses[o].element is not None for o in graph.outputs)


# ------------------------------------------------------------------ the calls

def _kernels(model, kind: str, what: str | None = None) -> Kernels:
    """The model's compiled jets of ``kind``, built once (``what``: the call, for a
    refusal's message)."""
    cache = model.__dict__.setdefault("_jet_kernels", {})
    if kind not in cache:
        cache[kind] = Kernels(model, kind, what)
    return cache[kind]


def _vector_input(model, X, what: str):
    if len(model.network.inputs) != 1 or len(model.in_shape) != 1:
        net = model.network
        have = ", ".join(f"{n!r} of shape {tuple(x.shape)}"
                         for n, x in zip(net.input_names, net.inputs))
        raise NotImplementedError(
            f"{what}: {PURPOSE.get(what, 'this is')} not derived for this network: the "
            f"jets are derived for networks of one vector input (input_grad and jacobian "
            f"also for others), and it has input{'s' if len(net.inputs) > 1 else ''} "
            f"{have}")
    return model.as_inputs(X)


def input_grad(model, X, T) -> np.ndarray:
    """∂L/∂X of the mean loss L, shape of X (one row per example)."""
    if not _jets_apply(model):
        return _input_grad_reverse(model, X, T)
    X = _vector_input(model, X, "model.input_grad")
    T = _targets(model, T, X.shape[0])
    try:
        k = _kernels(model, "grad")
    except NotImplementedError:          # a layer the jets do not cover
        return _input_grad_reverse(model, X, T)
    _, _, gx, _ = k.call("sn_grad_x", X, T, scale=1.0 / X.shape[0], want_gx=True)
    return gx


def _input_grad_reverse(model, X, T) -> np.ndarray:
    rows = model.as_inputs(X)
    return _shaped_like(model, X, _reverse(model, False).grad_x(
        rows, model.as_targets(T, rows.shape[0])))


def _targets(model, T, n):
    T = model.as_targets(T, n)
    if T.shape[1] != model.n_out:
        raise ValueError(f"T must be (batch, {model.n_out}) rows of targets here, "
                         f"got shape {T.shape}")
    return T


def loss_and_grad(model, X, T):
    """(mean loss, ∂L/∂θ as a flat array) from the jet kernels (the same values as
    ``model.loss_and_grad``; used by the tests as a cross-check)."""
    X = _vector_input(model, X, "loss_and_grad")
    T = _targets(model, T, X.shape[0])
    loss, grad, _, _ = _kernels(model, "grad").call("sn_grad", X, T, scale=1.0 / X.shape[0])
    return loss / X.shape[0], grad


def jacobian(model, X) -> np.ndarray:
    """∂O/∂X per example: (batch, n_out, n_in) (outputs side by side; a tensor input
    keeps its shape: (batch, n_out, *shape)).  Vector networks: forward jets; others
    (convolutions, several inputs): the reverse pass once per output unit, all units
    in one call (the batch repeated, seeded with the unit vectors)."""
    if not _jets_apply(model):
        return _jacobian_reverse(model, X)
    X = _vector_input(model, X, "model.jacobian")
    try:
        k = _kernels(model, "jacobian")
    except NotImplementedError:          # a layer the jets do not cover
        return _jacobian_reverse(model, X)
    n = X.shape[0]
    raw = np.zeros((n, max(k.width, 1)), model.dtype)
    if k.width:
        k.call("sn_jets", X, out=raw)
    J = np.zeros((n, model.n_out, model.n_in), model.dtype)
    graph = model.network.graph()
    for out, a, pos, cnt in k.layout:
        off = graph.target_offset(out)
        J[:, off:off + cnt, a[0]] = raw[:, pos:pos + cnt]
    return J


def _jacobian_reverse(model, X) -> np.ndarray:
    """The reverse pass once per output unit, all units in one call (the batch
    repeated, seeded with the unit vectors)."""
    rows = model.as_inputs(X)
    n, k = rows.shape[0], model.n_out
    rev = _reverse(model, True)
    J = np.empty((n, k, model.n_in), model.dtype)
    step = max(1, 4096 // k)         # examples per call: k copies of each
    eye = np.eye(k, dtype=model.dtype)
    for s in range(0, n, step):
        b = min(step, n - s)
        Xs = np.repeat(rows[s:s + b], k, axis=0)
        Ts = np.ascontiguousarray(np.tile(eye, (b, 1)))
        G = rev.grad_x(Xs, Ts) * (b * k)      # the kernels' mean: 1/(b·k)
        J[s:s + b] = G.reshape(b, k, model.n_in)
    if len(model.network.inputs) > 1:
        return J
    return J.reshape((n, k, *model.in_shape))


def hessian(model, X) -> np.ndarray:
    """∂²O/∂X² per example for a one-output network: (batch, n_in, n_in)."""
    if model.n_out != 1:
        raise ValueError(f"model.hessian is for networks with one output; this one has "
                         f"{model.n_out} (use model.jacobian, or a network per output)")
    X = _vector_input(model, X, "model.hessian")
    k = _kernels(model, "hessian")
    n = X.shape[0]
    raw = np.zeros((n, max(k.width, 1)), model.dtype)
    if k.width:
        k.call("sn_jets", X, out=raw)
    H = np.zeros((n, model.n_in, model.n_in), model.dtype)
    for _, (c, d), pos, _ in k.layout:
        H[:, c, d] = H[:, d, c] = raw[:, pos]
    return H


def flat_vector(model, v, what="v") -> np.ndarray:
    """A dict like ``params`` (missing names: zero) as one array aligned with θ."""
    if not isinstance(v, dict):
        raise ValueError(f"{what} must be a dict like model.params (name -> array), "
                         f"got {type(v).__name__}")
    unknown = sorted(set(v) - set(model.params))
    if unknown:
        raise ValueError(f"{what} names {unknown}, which are not parameters "
                         f"({', '.join(model.params)})")
    flat = np.zeros_like(model.theta)
    for p in model.meta["params"]:
        if p["name"] in v:
            a = np.asarray(v[p["name"]], dtype=model.dtype)
            if a.shape != tuple(p["shape"]):
                raise ValueError(f"{what}[{p['name']!r}] has shape {a.shape}, the parameter "
                                 f"has {tuple(p['shape'])}")
            flat[p["offset"]:p["offset"] + a.size] = a.ravel()
    return flat


def as_dict(model, flat) -> dict:
    return {p["name"]: flat[p["offset"]:p["offset"] + int(np.prod(p["shape"]))]
            .reshape(p["shape"]).copy() for p in model.meta["params"]}


def hessian_vector(model, X, T, v, gauss_newton: bool = False) -> dict:
    """H·v with H the Hessian of the mean loss in the parameters (exact: the
    R-operator of the compiled gradient), or the Gauss–Newton Jᵀ·H_L·J·v."""
    what = "model.gauss_newton_vector" if gauss_newton else "model.hessian_vector"
    X = _vector_input(model, X, what)
    k = _kernels(model, "grad", what)    # a network it is not derived for: said first
    T = _targets(model, T, X.shape[0])
    # refused as loss refuses them: the product sums over every row, so one NaN made
    # all of it NaN (input_grad and jacobian give NaN in that row only)
    after = f"{what} sums over every row, so nothing is computed from it"
    guards.finite(X, "X", after)
    guards.finite(T, "T", after)
    vec = flat_vector(model, v)
    _, _, _, hv = k.call("sn_gnvp" if gauss_newton else "sn_hvp", X, T,
                         scale=1.0 / X.shape[0], vec=vec)
    return as_dict(model, hv)
