"""A tensor network whose loss-and-gradient pass takes each example alone up to the
weight gradients (a transformer: LayerNorm, attention per example, Linears at each
position) runs that pass in chunks of examples (symnet.plan.schedule.halves with
``tensor=True``): the products of a chunk's batch·positions rows, the per-example small
products and element loops of each chunk in one job, the bias and LayerNorm gradients
summed per chunk, then every weight gradient as one whole product over the batch.

Checked against the same network's passes as they were before (regions of element loops
between products shared among threads), float64 central differences with several chunks,
a numpy forward pass, bit for bit on one thread and on two, and targets as rows against
class labels."""

import numpy as np
import plan_reads
import pytest
from gradcheck import check
from own_cache import own_cache
from test_attention import HEADS, D, L, block_ref

import symnet as sn
from symnet.plan import schedule
from symnet.plan.lower import plan
from symnet.plan.ops import MatMul


def _net(loss="mse", classes=3, dropout=None):
    S = sn.Input((L, D), name="S")
    x = sn.TransformerBlock(HEADS, 8, name="B1")(S)
    x = sn.TransformerBlock(HEADS, 8, causal=True, name="B2")(x)
    x = sn.Flatten(name="F")(x)
    if dropout:
        x = sn.Dropout(dropout, name="D")(x)
    return sn.Network(S, sn.Dense(classes, name="O")(x), loss=loss)


def _data(batch, classes=3, seed=0):
    rng = np.random.default_rng(seed + batch)
    X = rng.normal(size=(batch, L, D))
    T = np.eye(classes)[rng.integers(0, classes, batch)]
    return X, T


def _compiled(monkeypatch, net, dtype="float64", threads=True, old=None, scale=0.4, seed=2):
    """``net`` compiled with threads for every run (or never), on two threads at most, its
    parameters drawn from N(0, scale²) (Dropout's random state stays as seeded); ``old``
    (a folder for its own compile cache): the loss-and-gradient pass planned as before."""
    monkeypatch.setenv("SYMNET_PARALLEL_MIN", "1" if threads else "1e300")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    with monkeypatch.context() as m:
        if old is not None:
            vector_only = schedule.halves
            m.setattr(schedule, "halves",
                      lambda p, tensor=False: None if tensor else vector_only(p))
            m.setenv("SYMNET_CACHE_DIR", own_cache(old))
        model = net.compile(dtype=dtype, seed=1)
    rng = np.random.default_rng(seed)
    for k in model.params:
        if not k.startswith("rng"):
            model.params[k] = rng.normal(0, scale, model.params[k].shape).astype(dtype)
    return model


def _model(monkeypatch, dtype="float64", threads=True, old=None, **net):
    return _compiled(monkeypatch, _net(**net), dtype, threads, old)


def _agree(new, old, X, T):
    """The chunked pass (new) gives the loss and gradients of the passes as before (old)."""
    assert "sn_chunk(" in new.c_source and "sn_chunk(" not in old.c_source
    L_new, g_new = new.loss_and_grad(X, T)
    L_old, g_old = old.loss_and_grad(X, T)
    assert L_new == pytest.approx(L_old, rel=1e-13)
    for k in g_old:
        np.testing.assert_allclose(g_new[k], g_old[k], rtol=1e-11, atol=1e-14, err_msg=k)


def test_a_transformer_is_planned_in_chunks():
    p = plan(_net().graph())
    h = p.halves
    assert h is not None and h.tensor
    # the Linears at each position run on the chunk's rows inside the chunk's job, and so
    # does each chunk's part of every weight gradient (Σ over its rows)
    per_chunk = [op for op in h.head + h.rows + h.tail if isinstance(op, MatMul)]
    assert {op.M for op in per_chunk if op.kind != "tn"} == {"batch * 5", "batch"}
    assert {op.K for op in per_chunk if op.kind == "tn"} == {"batch * 5", "batch"}
    assert {op.kind for op in per_chunk} == {"nt", "nn", "tn"}
    weights = {g for g in p.buffers if g.startswith("g_W")}
    assert {op.C for op in h.sums} == {op.C for op in per_chunk if op.kind == "tn"} == weights
    # the partial sums of chunks 1, 2, … after the rest of a row: 1/8 of them per example
    assert h.psize == sum(np.prod(p.buffers[g].shape) for g in weights)
    assert sorted(h.parts.values()) == sorted({0} | {h.parts[op.C] + op.M * op.N
                                                      for op in h.sums} - {h.psize})
    assert p.work_per_row == h.parts_offset + -(-h.psize // h.chunk)
    # the LayerNorm scales and shifts and the biases summed per chunk
    assert {g for g, *_ in h.grads} >= {"g_gamma1", "g_beta1", "g_b5"}
    # the forward pass alone (forward, predict) keeps its regions
    assert p.regions and not any(r.backward for r in p.regions)
    plan_reads.check(p)
    src = _net().compile(dtype="float64").c_source
    assert "(sn_hi - sn_lo) * 5" in src and "c == 0 ? g_W" in src


def test_a_vector_network_with_a_large_product_is_not_taken_for_a_tensor_one():
    wide = sn.Network(sn.Input(784), sn.Dense(256, "relu"), sn.Dense(10), loss="mse")
    assert plan(wide.graph()).halves is None


@pytest.mark.parametrize("batch", [1, 11, 24])
def test_chunks_agree_with_the_passes_as_they_were(monkeypatch, tmp_path, batch):
    X, T = _data(batch)
    new = _model(monkeypatch)
    old = _model(monkeypatch, old=tmp_path)
    _agree(new, old, X, T)
    new.step(X, T, 0.1)
    old.step(X, T, 0.1)
    for k in old.params:
        np.testing.assert_allclose(new.params[k], old.params[k], rtol=1e-12, atol=1e-15,
                                   err_msg=k)


def test_several_chunks_equal_numpy_and_central_differences(monkeypatch):
    model = _model(monkeypatch)
    X, T = _data(19)          # three chunks of 6 or 7 examples
    p, names = model.params, _net().names
    h = block_ref(block_ref(X, p, names, "B1", False), p, names, "B2", True)
    W = f"W{names.index('O') + 1}"
    out = h.reshape(len(X), -1) @ p[W].T + p["b" + W[1:]]
    assert model.loss(X, T) == pytest.approx(((out - T) ** 2).mean(), rel=1e-12)
    check(model, X, T)


@pytest.mark.parametrize("batch", [13, 40])
def test_same_bits_on_one_thread_and_on_two(monkeypatch, batch):
    X, T = (a.astype(np.float32) for a in _data(batch))
    one = _model(monkeypatch, dtype="float32", threads=False)
    want = one.loss_and_grad(X, T)
    start = {k: v.copy() for k, v in one.params.items()}
    one.step(X, T, 0.1)
    stepped = {k: v.copy() for k, v in one.params.items()}
    many = _model(monkeypatch, dtype="float32")
    for k in start:
        many.params[k] = start[k]
    for _ in range(3):
        got = many.loss_and_grad(X, T)
        assert got[0] == want[0]
        for k in want[1]:
            np.testing.assert_array_equal(got[1][k], want[1][k], err_msg=k)
    many.step(X, T, 0.1)
    for k in stepped:
        np.testing.assert_array_equal(many.params[k], stepped[k], err_msg=k)


def _rows_of_their_own(monkeypatch, tmp_path, net, own):
    """``net`` compiled on two threads (float32), its chunks kept in rows of each thread's
    own (``own``) or each in its own rows as before (a build of its own cache)."""
    from symnet.backend.c import emit
    if not own:
        with monkeypatch.context() as m:
            before = emit.Emitter.reuse
            m.setattr(emit.Emitter, "reuse", lambda self: dict(before(self), reuse_rows=False))
            m.setenv("SYMNET_CACHE_DIR", own_cache(tmp_path))
            return _compiled(monkeypatch, net, "float32")
    return _compiled(monkeypatch, net, "float32")


def _rows(model, name, batch):
    """Buffer ``name``'s rows in the scratch of the model's last call: (batch, row)."""
    buf = plan(model.network.graph()).buffers[name]
    row = int(np.prod(buf.shape[1:]))
    return model.runtime.work[batch * buf.offset:batch * (buf.offset + row)].reshape(batch, row)


def test_threads_keep_their_chunks_in_rows_of_their_own(monkeypatch, tmp_path):
    """Each thread of the chunked pass keeps the chunks it takes in rows of its own (batch
    40: 5 chunks of 8, two threads: rows 0-15), so the rest of the batch's scratch is never
    written; the output stays in every example's row (the training loop's accuracy reads
    it); the numbers are those of chunks in their own rows, bit for bit."""
    net = _net(loss="softmax_cross_entropy", dropout=0.25)
    mine = _rows_of_their_own(monkeypatch, tmp_path, net, own=True)
    theirs = _rows_of_their_own(monkeypatch, tmp_path, net, own=False)
    assert "this thread's rows" in mine.c_source
    assert "this thread's rows" not in theirs.c_source
    for k in mine.params:
        theirs.params[k] = mine.params[k]
    X, T = (a.astype(np.float32) for a in _data(40))
    got, want = mine.loss_and_grad(X, T), theirs.loss_and_grad(X, T)
    assert got[0] == want[0]
    for k in want[1]:
        np.testing.assert_array_equal(got[1][k], want[1][k], err_msg=k)
    qkv = _rows(mine, "B1_att_qkv", 40)
    assert np.any(qkv[:8] != 0) and not np.any(qkv[16:])
    assert np.all(np.any(_rows(theirs, "B1_att_qkv", 40) != 0, axis=1))
    assert np.all(np.any(_rows(mine, plan(net.graph()).output, 40) != 0, axis=1))
    h_mine = mine.fit(X, T, epochs=3, batch_size=40, lr=0.05, seed=0)
    h_theirs = theirs.fit(X, T, epochs=3, batch_size=40, lr=0.05, seed=0)
    assert h_mine.loss == h_theirs.loss and len(h_mine.loss) == 3
    assert h_mine.accuracy == h_theirs.accuracy and len(h_mine.accuracy) == 3
    for k in mine.params:
        np.testing.assert_array_equal(mine.params[k], theirs.params[k], err_msg=k)


def test_rows_read_after_the_pass_stay_in_their_place():
    """A recurrence (its stacked steps' products run after the chunks), BatchNorm (its sums
    are read for the running statistics) and the gradients with respect to the inputs keep
    every example's rows; a transformer's output too."""
    from symnet.backend.c.emit import Emitter
    S = sn.Input((6, 3), name="S")
    gru = sn.Network(S, sn.GRU(8), sn.Dense(2, name="O"), loss="mse")
    x = sn.Input(4, name="x")
    bn = sn.Network(x, sn.Dense(8), sn.BatchNorm1d(), sn.Dense(2, name="O"), loss="mse")
    for net in (gru, bn):
        assert Emitter(plan(net.graph()), "float32").reuse()["reuse_rows"] is False
    import dataclasses
    g = _net().graph()
    assert Emitter(plan(g), "float32").reuse()["reuse_rows"] is True
    assert Emitter(plan(dataclasses.replace(g, grad_inputs=True)), "float32") \
        .reuse()["reuse_rows"] is False
    p = plan(g)
    assert p.output in Emitter(p, "float32").reuse()["reuse_keep"]


def test_class_labels_give_the_gradients_of_one_hot_rows(monkeypatch):
    model = _model(monkeypatch, loss="softmax_cross_entropy")
    X, T = _data(21)
    L_rows, g_rows = model.loss_and_grad(X, T)
    L_labels, g_labels = model.loss_and_grad(X, T.argmax(1))
    assert L_labels == pytest.approx(L_rows, rel=1e-14)
    for k in g_rows:
        np.testing.assert_allclose(g_labels[k], g_rows[k], rtol=1e-13, atol=1e-15, err_msg=k)


def test_dropout_masks_do_not_depend_on_the_chunks(monkeypatch, tmp_path):
    # the masks come from each example's index in the batch, not from its chunk: the
    # chunked pass drops what the passes as they were drop
    X, T = _data(17)
    new = _model(monkeypatch, dropout=0.3)
    old = _model(monkeypatch, old=tmp_path, dropout=0.3)
    _agree(new, old, X, T)


def test_training_in_chunks_reduces_the_loss(monkeypatch):
    model = _model(monkeypatch, loss="softmax_cross_entropy")
    X, _ = _data(96, seed=3)
    T = np.eye(3)[X[:, 0, :3].argmax(1)]        # a class the first position tells
    before = model.loss(X, T)
    model.fit(X, T, method="minibatch", batch_size=32, epochs=8, lr=0.05, progress=False)
    assert model.loss(X, T) < 0.7 * before


def test_a_step_with_an_infinite_gradient_leaves_the_parameters(monkeypatch):
    # every example zero, every bias and shift zero but the first LayerNorm's (one), the
    # first attention's output weights zero: every layer's output from there on is zero and
    # the loss finite whatever the output layer's weights.  W of 1e37 there sends ∂L/∂F of
    # about 1e36 back, which LayerNorm's 1/σ = 1/√eps ≈ 316 overflows: ∂L/∂Wo2 = Σ δ·a is
    # inf or NaN, and its numbers lie in the share of the last of the five jobs that add up
    # the chunks' parts (each job checks its own share)
    model = _model(monkeypatch, dtype="float32")
    X, T = (a.astype(np.float32) for a in _data(40))
    X[:] = 0
    for k in model.params:
        if k.startswith(("b", "c")):            # b…, beta…, c…, co…
            model.params[k] = np.zeros_like(model.params[k])
    model.params["beta1"] = np.ones_like(model.params["beta1"])
    model.params["Wo2"] = np.zeros_like(model.params["Wo2"])
    W = f"W{_net().names.index('O') + 1}"
    model.params[W] = np.full_like(model.params[W], 1e37)
    L, grads = model.loss_and_grad(X, T)
    assert np.isfinite(L) and not np.isfinite(grads["Wo2"]).all()
    assert np.isfinite(grads["W2"]).all() and np.isfinite(grads["W13"]).all()
    before = {k: v.copy() for k, v in model.params.items()}
    with pytest.warns(RuntimeWarning, match="the step was not taken"):
        assert np.isnan(model.step(X, T, 0.1))
    for k in before:
        np.testing.assert_array_equal(model.params[k], before[k], err_msg=k)
    # and a step that can be taken still is
    model.params[W] = np.full_like(model.params[W], 0.1)
    assert np.isfinite(model.step(X, T, 0.1))
    assert not np.array_equal(model.params[W], before[W])


# ------------------------------------------------------------ a recurrence in chunks

def _recurrent(cell="GRU", loss="softmax_cross_entropy"):
    S = sn.Input((6, 3), name="S")
    h = getattr(sn, cell)(5, name="R")(S)
    return sn.Network(S, sn.Dense(3, name="O")(h), loss=loss)


def _recurrent_model(monkeypatch, cell, dtype="float64", threads=True, old=None):
    return _compiled(monkeypatch, _recurrent(cell), dtype, threads, old, scale=0.5, seed=4)


def test_a_recurrence_is_planned_in_chunks_of_32():
    p = plan(_recurrent().graph())
    h = p.halves
    assert h is not None and h.tensor and h.chunk == schedule.CHUNK_STEPS
    # each step's products of one row per example, in the chunks
    assert any(isinstance(op, MatMul) and op.M == "batch" and op.accumulate
               for op in h.head + h.rows + h.tail)
    # the recurrent weight's gradient: one product over the stacked steps, after the chunks
    assert [op.C for op in h.late] == [g for g in p.buffers if g.startswith("g_U")]
    assert all(op.parts for op in h.late)
    assert not any(op is late for op in h.head + h.rows + h.tail for late in h.late)
    plan_reads.check(p)


@pytest.mark.parametrize("cell", ["GRU", "LSTM"])
@pytest.mark.parametrize("batch", [1, 45, 100])
def test_recurrent_chunks_agree_with_the_passes_as_they_were(monkeypatch, tmp_path, cell, batch):
    rng = np.random.default_rng(batch)
    X, T = rng.normal(size=(batch, 6, 3)), np.eye(3)[rng.integers(0, 3, batch)]
    new = _recurrent_model(monkeypatch, cell)
    old = _recurrent_model(monkeypatch, cell, old=tmp_path)
    _agree(new, old, X, T)
    new.step(X, T.argmax(1), 0.1)
    old.step(X, T.argmax(1), 0.1)
    for k in old.params:
        np.testing.assert_allclose(new.params[k], old.params[k], rtol=1e-12, atol=1e-15,
                                   err_msg=k)


def test_a_recurrence_in_three_chunks_equals_central_differences(monkeypatch):
    model = _recurrent_model(monkeypatch, "GRU")
    rng = np.random.default_rng(7)
    X, T = rng.normal(size=(70, 6, 3)), np.eye(3)[rng.integers(0, 3, 70)]
    check(model, X, T)


@pytest.mark.parametrize("cell", ["GRU", "LSTM"])
def test_a_recurrence_gives_the_same_bits_on_one_thread_and_on_two(monkeypatch, cell):
    rng = np.random.default_rng(3)
    X = rng.normal(size=(100, 6, 3)).astype(np.float32)
    T = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 100)]
    one = _recurrent_model(monkeypatch, cell, dtype="float32", threads=False)
    want = one.loss_and_grad(X, T)
    many = _recurrent_model(monkeypatch, cell, dtype="float32")
    for _ in range(3):
        got = many.loss_and_grad(X, T)
        assert got[0] == want[0]
        for k in want[1]:
            np.testing.assert_array_equal(got[1][k], want[1][k], err_msg=k)


# ------------------------------------------------------------ weights packed once per pass

def _packed_or_not(monkeypatch, tmp_path, net, packed):
    """``net`` compiled (float32, two threads) with its chunks' weights packed once per pass
    (``packed``) or copied by each product as before (a build of its own cache); every
    product on symnet's tiles (the check of the BLAS picks by time which products it takes,
    so two builds could round differently)."""
    monkeypatch.setenv("SYMNET_BLAS", "0")
    if not packed:
        with monkeypatch.context() as m:
            m.setattr(schedule, "packs", lambda h, B: None)
            m.setenv("SYMNET_CACHE_DIR", own_cache(tmp_path))
            return _compiled(monkeypatch, net, "float32", scale=0.2)
    return _compiled(monkeypatch, net, "float32", scale=0.2)


def _wide_transformer():
    S = sn.Input((10, 32), name="S")      # Flatten: 320 features, two panels deep
    x = sn.TransformerBlock(2, 64, name="B1")(S)
    return sn.Network(S, sn.Dense(3, name="O")(sn.Flatten(name="F")(x)),
                      loss="softmax_cross_entropy")


def _wide_gru():
    S = sn.Input((6, 8), name="S")
    return sn.Network(S, sn.Dense(3, name="O")(sn.GRU(32, name="R")(S)),
                      loss="softmax_cross_entropy")


@pytest.mark.slow   # four builds; the quick tests above take the packed path too (batch 40)
@pytest.mark.parametrize("make, shape, batch", [(_wide_transformer, (10, 32), 24),
                                               (_wide_gru, (6, 8), 70)])
def test_weights_packed_once_per_pass_give_the_same_bits(monkeypatch, tmp_path, make, shape,
                                                         batch):
    """The weights the chunks' products read (a Linear's W as Wᵀ forward and as W backward,
    a recurrence's U at every step) are packed once per pass into the panels the tiles
    read; the loss, every gradient and two steps are those of products that copy their
    panels themselves, bit for bit, with several chunks (the transformer's 3 of 8
    examples, its output layer's K two panels deep; the GRU's 3 of about 23) on two
    threads; the products are large enough to take the tiles."""
    net = make()
    packed = _packed_or_not(monkeypatch, tmp_path, net, True)
    copied = _packed_or_not(monkeypatch, tmp_path, net, False)
    h = plan(net.graph()).halves
    assert h is not None and h.tensor and h.packs
    assert "a->packed[" in packed.c_source and "symnet_pack_float(" in packed.c_source
    assert "a->packed[" not in copied.c_source
    assert f"#define SN_SMALL {schedule.SMALL} " in packed.c_source   # the plan's figure is the C's
    for k in packed.params:
        copied.params[k] = packed.params[k].copy()
    rng = np.random.default_rng(batch)
    X = rng.normal(size=(batch, *shape)).astype(np.float32)
    T = np.eye(3, dtype=np.float32)[rng.integers(0, 3, batch)]
    got, want = packed.loss_and_grad(X, T), copied.loss_and_grad(X, T)
    assert got[0] == want[0]
    for k in want[1]:
        np.testing.assert_array_equal(got[1][k], want[1][k], err_msg=k)
    for _ in range(2):
        packed.step(X, T, 0.05)
        copied.step(X, T, 0.05)
    for k in copied.params:
        np.testing.assert_array_equal(packed.params[k], copied.params[k], err_msg=k)


@pytest.mark.slow   # a build of the wide transformer
def test_packed_weights_leave_the_gradients_of_a_shorter_last_batch(monkeypatch):
    """The packed weights' room lies after the gradients' in `train`'s scratch, also where
    the pass is not the fused update's (a frozen layer) and the last batch is shorter than
    batch_size (its rows then end one example's rows before the gradients, less than the
    room the gradients and the packs take): an epoch of ``fit`` (batches of 24 and 23 of 47
    examples, in order) gives the parameters of the same two ``step``s."""
    S = sn.Input((10, 32), name="S")
    x = sn.TransformerBlock(2, 64, name="B1")(S)
    net = sn.Network(S, sn.Dense(3, name="O", trainable=False)(sn.Flatten(name="F")(x)),
                     loss="softmax_cross_entropy")
    monkeypatch.setenv("SYMNET_BLAS", "0")
    fitted = _compiled(monkeypatch, net, "float32", scale=0.2)
    stepped = _compiled(monkeypatch, net, "float32", scale=0.2)
    h = plan(net.graph()).halves
    assert h.packs and not h.update and "a->packed[" in fitted.c_source
    rng = np.random.default_rng(5)
    X = rng.normal(size=(47, 10, 32)).astype(np.float32)
    T = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 47)]
    fitted.fit(X, T, epochs=1, batch_size=24, lr=0.05, shuffle=False, progress=False)
    stepped.step(X[:24], T[:24], 0.05)
    stepped.step(X[24:], T[24:], 0.05)
    for k in stepped.params:
        np.testing.assert_allclose(fitted.params[k], stepped.params[k], rtol=1e-5, atol=1e-6,
                                   err_msg=k)
    assert not np.array_equal(fitted.params["W2"], _compiled(monkeypatch, net, "float32",
                                                             scale=0.2).params["W2"])
