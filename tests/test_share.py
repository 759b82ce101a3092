"""Work buffers that are never alive at once share their place (symnet.plan.share).

Checked three ways on networks of every kind of op (attention and LayerNorm in chunks,
a GRU's and an LSTM's steps stacked, convolution with BatchNorm, pooling and Dropout,
Embedding, a graph with two inputs and two outputs):

- a simulation of the work array, independent of the rewrite's own bookkeeping: every
  pass in the order its ops run, each place owned by the buffer that last wrote it; a
  read of a buffer whose place another buffer has written since fails;
- the same bits as the same network laid out as before (every buffer a place of its
  own): loss, gradients, two steps, an epoch of ``fit`` (BatchNorm's running statistics)
  and the forward pass, float32 on two threads, every product on symnet's tiles;
- and the transformer of the benchmark keeps under 60 % of the numbers its buffers
  add up to.
"""

import math

import numpy as np
import plan_reads
import pytest

import symnet as sn
from symnet.plan import lower
from symnet.plan.ops import Rows
from own_cache import own_cache


def _transformer():
    S = sn.Input((6, 8), name="S")
    x = sn.TransformerBlock(2, 16, name="B1")(S)
    x = sn.TransformerBlock(2, 16, causal=True, name="B2")(x)
    x = sn.Dropout(0.2, name="D")(sn.Flatten(name="F")(x))
    return sn.Network(S, sn.Dense(3, name="O")(x), loss="softmax_cross_entropy")


def _gru():
    S = sn.Input((7, 3), name="S")
    return sn.Network(S, sn.GRU(5), sn.Dense(3, name="O"), loss="softmax_cross_entropy")


def _lstm():
    S = sn.Input((6, 3), name="S")
    return sn.Network(S, sn.LSTM(4, return_sequences=True), sn.GRU(3), sn.Dense(3, name="O"),
                      loss="mse")


def _conv():
    return sn.Network(sn.Input((2, 8, 8)), sn.Conv2d(3, 3, activation="relu"),
                      sn.BatchNorm2d(name="N"), sn.MaxPool2d(2), sn.Flatten(),
                      sn.Dropout(0.25), sn.Dense(5, "tanh"), sn.Dense(3, name="O"),
                      loss="softmax_cross_entropy")


def _embedding():
    return sn.Network(sn.Input(6, dtype="int"), sn.Embedding(9, 8, name="E"),
                      sn.MultiHeadAttention(2, name="A"), sn.LayerNorm(), sn.Flatten(),
                      sn.Dense(3, name="O"), loss="softmax_cross_entropy")


def _graph():
    a, b = sn.Input(4, name="a"), sn.Input(3, name="b")
    h = sn.Dense(6, "tanh", name="H")(a)
    g = sn.Dense(6, "sigmoid", name="G")(b)
    s = sn.Add(name="S")([h, g])
    o1 = sn.Dense(2, name="O1")(sn.Dense(6, "relu", name="R")(s))
    o2 = sn.Dense(1, "sigmoid", name="O2")(s)
    return sn.Network([a, b], [o1, o2], loss=["mse", "bce"], loss_weights=[1.0, 0.5])


NETS = {"transformer": _transformer, "gru": _gru, "lstm": _lstm, "conv": _conv,
        "embedding": _embedding, "graph": _graph}


def _flat(ops):
    for op in ops:
        yield from (_flat(op.ops) if isinstance(op, Rows) else [op])


def _orders(p):
    """The passes, each in the order its ops run (a chunk's, for a pass in chunks)."""
    out = [("forward + loss", p.forward + p.loss), ("forward + backward", p.forward + p.backward)]
    if p.backward_labels:
        out.append(("forward + backward (labels)", p.forward + p.backward_labels))
    h = p.halves
    if h is not None:
        for rows in (h.rows, h.rows_labels):
            if rows is not None:
                out.append(("chunk", list(h.head) + list(rows) + list(h.tail) + list(h.sums)))
    return [(name, list(_flat(ops))) for name, ops in out]


def _owners_hold(p):
    """Every read finds its buffer where it left it: a place (offset, size) is owned by
    the buffer that last wrote it, and a read of a buffer whose place another wrote since
    is a clobbered read."""
    place = {}
    for name, b in p.buffers.items():
        root = name
        while p.buffers[root].alias:
            root = p.buffers[root].alias
        if p.buffers[root].kind == "work":
            place[name] = (p.buffers[root].offset, math.prod(p.buffers[root].shape[1:]), root)
    bad = []
    for order, ops in _orders(p):
        owner = {}
        for op in ops:
            for x in plan_reads._read(p, op):
                if x in place:
                    at, size, root = place[x]
                    if owner.get((at, size), root) != root:
                        bad.append(f"{order}: {op.comment[:60]!r} reads {x}, "
                                   f"whose place {owner[(at, size)]} wrote")
            for x in plan_reads._writes(op):
                if x in place:
                    at, size, root = place[x]
                    owner[(at, size)] = root
    return bad


@pytest.mark.parametrize("name", sorted(NETS))
def test_no_pass_reads_a_buffer_another_overwrote(name):
    p = lower.plan(NETS[name]().graph())
    assert p.shared > 0          # buffers do share places here
    places = {}
    for b in p.buffers.values():
        if b.kind == "work":
            places.setdefault(b.offset, set()).add(math.prod(b.shape[1:]))
    # two buffers overlap only where they share their place whole: the same offset
    # and size (a buffer keeps example b at batch·offset + b·size)
    spans = sorted((at, at + size) for at, sizes in places.items() for size in sizes)
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:])), spans
    assert _owners_hold(p) == []


def test_the_simulation_sees_a_clobbered_read():
    """The check above can fail: the second block's ∂L/∂ of its attention weights put in
    the place of the first block's attention weights, which the backward pass reads after
    (for the first block's ∂L/∂ of its scores)."""
    p = lower.plan(_transformer().graph())
    B = p.buffers
    victim, thief = "B1_att_p", "dL_dB2_att_p"
    assert math.prod(B[victim].shape[1:]) == math.prod(B[thief].shape[1:])
    assert _owners_hold(p) == []
    B[thief].offset = B[victim].offset
    assert any("reads B1_att_p, whose place dL_dB2_att_p wrote" in line
               for line in _owners_hold(p))


def _data(name, batch, seed):
    rng = np.random.default_rng(seed)
    if name == "graph":
        X = [rng.normal(size=(batch, 4)), rng.normal(size=(batch, 3))]
        T = [rng.normal(size=(batch, 2)), rng.uniform(0.1, 0.9, size=(batch, 1))]
        return [x.astype(np.float32) for x in X], [t.astype(np.float32) for t in T]
    if name == "embedding":
        X = rng.integers(0, 9, size=(batch, 6))
    else:
        X = rng.normal(size=(batch, *NETS[name]().graph().in_shape)).astype(np.float32)
    return X, np.eye(3, dtype=np.float32)[rng.integers(0, 3, batch)]


def _compiled(monkeypatch, tmp_path, name, shared):
    """NETS[name] compiled in float32 on two threads (every pass), each product on
    symnet's tiles (the check of the BLAS picks products by time: two builds could round
    differently); ``shared`` False: every buffer a place of its own (a cache of its own)."""
    monkeypatch.setenv("SYMNET_BLAS", "0")
    monkeypatch.setenv("SYMNET_PARALLEL_MIN", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    with monkeypatch.context() as m:
        if not shared:
            m.setattr(lower, "share", lambda p: None)
            m.setenv("SYMNET_CACHE_DIR", own_cache(tmp_path))
        return NETS[name]().compile(dtype="float32", seed=3)


@pytest.mark.parametrize("name", [n if n == "conv" else
                                  pytest.param(n, marks=pytest.mark.slow)   # two builds each
                                  for n in sorted(NETS)])
def test_shared_places_give_the_same_bits(monkeypatch, tmp_path, name):
    new = _compiled(monkeypatch, tmp_path, name, True)
    old = _compiled(monkeypatch, tmp_path, name, False)
    assert new.meta["work_per_row"] < old.meta["work_per_row"]
    for k in new.params:
        np.testing.assert_array_equal(old.params[k], new.params[k], err_msg=k)
    X, T = _data(name, 19, 1)
    got, want = new.loss_and_grad(X, T), old.loss_and_grad(X, T)
    assert got[0] == want[0]
    for k in want[1]:
        np.testing.assert_array_equal(got[1][k], want[1][k], err_msg=k)
    for _ in range(2):
        new.step(X, T, 0.05)
        old.step(X, T, 0.05)
    new.fit(X, T, epochs=1, batch_size=8, lr=0.05, progress=False, seed=4)
    old.fit(X, T, epochs=1, batch_size=8, lr=0.05, progress=False, seed=4)
    for k in old.params:
        np.testing.assert_array_equal(new.params[k], old.params[k], err_msg=k)
    got, want = new.forward(X), old.forward(X)
    for a, b in zip(*((got, want) if isinstance(got, list) else ([got], [want]))):
        np.testing.assert_array_equal(a, b)


def test_the_benchmark_transformer_keeps_under_60_percent():
    from symnet.bench import seq
    p = lower.plan(seq.transformer_network().graph())
    work = [b for b in p.buffers.values() if b.kind == "work" and not b.alias]
    own = sum(math.prod(b.shape[1:]) for b in work)        # each a place of its own
    used = max(b.offset + math.prod(b.shape[1:]) for b in work)
    assert used < 0.6 * own, (used, own)
