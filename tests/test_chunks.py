"""A small vector network runs its loss-and-gradient pass in chunks of the batch
(symnet.plan.schedule.halves): every per-example op on the examples of a chunk, the
bias gradients summed per chunk and added in the order of the chunks, then the weight
gradients over the whole batch with their rows shared among jobs.  The numbers agree
with an independent numpy back-propagation, are the same bit for bit on one thread and
on two, and the same with targets as rows and as class labels; a network with a product
too large keeps its passes as they are."""

import numpy as np
import pytest

import numpy_reference as ref
import symnet as sn
from symnet.plan import schedule
from symnet.plan.lower import plan

SIZES, ACTS = (20, 48, 24, 5), ("relu", "tanh", "linear")


def _net(sizes=SIZES, acts=ACTS, loss="softmax_cross_entropy"):
    layers = [sn.Input(sizes[0])] + [sn.Dense(w, a) for w, a in zip(sizes[1:], acts)]
    return sn.Network(*layers, loss=loss)


def _data(batch, n_out=SIZES[-1], seed=0):
    rng = np.random.default_rng(seed + batch)
    X = rng.normal(size=(batch, SIZES[0]))
    T = np.eye(n_out)[rng.integers(0, n_out, batch)]
    return X, T


def _compiled(monkeypatch, thread_min, dtype="float64", blas="0", **net):
    """The model with its kernels told that ``thread_min`` multiply-adds pay for a thread
    (1: threads for every run; 1e300: never), on two threads at most; ``blas="0"``: every
    product on symnet's own kernels (the BLAS's parts of a product cut for threads may
    round differently from the whole)."""
    monkeypatch.setenv("SYMNET_PARALLEL_MIN", str(thread_min))
    monkeypatch.setenv("SYMNET_BLAS", blas)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    model = _net(**net).compile(dtype=dtype, seed=1)
    rng = np.random.default_rng(2)
    for k in model.params:
        model.params[k] = rng.normal(0, 0.3, model.params[k].shape).astype(dtype)
    return model


def test_small_vector_network_is_planned_in_chunks():
    p = plan(_net().graph())
    h = p.halves
    assert h is not None
    # every weight gradient summed over the whole batch after the chunks; the bias
    # gradients per chunk; the rows of the work hold the chunks' partial sums after the rest
    assert [op.C for op in h.sums] == ["g_W3", "g_W2", "g_W1"]
    assert [g for g, _, _ in h.grads] == ["g_b3", "g_b2", "g_b1"]
    assert h.size == 5 + 24 + 48 and p.work_per_row >= p.part_offset + h.size
    assert not any(op in h.rows for op in h.sums)
    # the ops after the loss, the same for targets as rows and as class labels, once
    assert h.tail and not any(op in h.tail for op in h.rows + h.rows_labels)
    src = _net().compile(dtype="float64").c_source
    assert "static void sn_chunk(void *arg, int c)" in src and "sn_chunk_sums" in src
    assert src.count("sn_chunk_tail(a, c);") == 2
    # and the forward pass, the same in both, once too
    assert h.head and not any(op in h.head for op in h.rows + h.rows_labels)
    assert src.count("sn_chunk_head(a, c);") == 2


def test_a_network_with_a_large_product_keeps_its_passes():
    wide = _net(sizes=(784, 256, 10), acts=("relu", "linear"))
    assert plan(wide.graph()).halves is None
    assert "sn_chunk(" not in wide.compile(dtype="float32").c_source


@pytest.mark.parametrize("batch", [1, 15, 16, 33, 64])
def test_chunked_gradients_agree_with_numpy(monkeypatch, batch):
    model = _compiled(monkeypatch, 1, blas="1")
    X, T = _data(batch)
    params = {k: v.copy() for k, v in model.params.items()}
    L, grads = model.loss_and_grad(X, T)
    L_ref, g_ref = ref.loss_and_grad(params, X, T, list(ACTS), "softmax_cross_entropy")
    assert L == pytest.approx(L_ref, rel=1e-12)
    for k in params:
        np.testing.assert_allclose(grads[k], g_ref[k], rtol=1e-9, atol=1e-12, err_msg=k)


@pytest.mark.parametrize("loss", ["mse", "softmax_cross_entropy"])
@pytest.mark.parametrize("batch", [16, 40])
def test_same_bits_on_one_thread_and_on_two(monkeypatch, batch, loss):
    X, T = _data(batch)
    one = _compiled(monkeypatch, 1e300, dtype="float32", loss=loss)
    want = one.loss_and_grad(X.astype(np.float32), T.astype(np.float32))
    steps = [one.params[k].copy() for k in one.params]
    one.step(X.astype(np.float32), T.astype(np.float32), 0.1)
    stepped = {k: v.copy() for k, v in one.params.items()}
    many = _compiled(monkeypatch, 1, dtype="float32", loss=loss)   # the same module: now on threads
    for _ in range(5):
        got = many.loss_and_grad(X.astype(np.float32), T.astype(np.float32))
        assert got[0] == want[0]
        for k in want[1]:
            np.testing.assert_array_equal(got[1][k], want[1][k], err_msg=k)
    for k, v in zip(many.params, steps):
        many.params[k] = v
    many.step(X.astype(np.float32), T.astype(np.float32), 0.1)
    for k in stepped:
        np.testing.assert_array_equal(many.params[k], stepped[k], err_msg=k)


def test_class_labels_give_the_gradients_of_one_hot_rows(monkeypatch):
    model = _compiled(monkeypatch, 1)
    X, T = _data(37)
    L_rows, g_rows = model.loss_and_grad(X, T)
    L_labels, g_labels = model.loss_and_grad(X, T.argmax(1))
    assert L_labels == pytest.approx(L_rows, rel=1e-14)
    for k in g_rows:
        np.testing.assert_allclose(g_labels[k], g_rows[k], rtol=1e-13, atol=1e-15, err_msg=k)


def test_training_in_chunks_reduces_the_loss(monkeypatch):
    model = _compiled(monkeypatch, 1)
    X, _ = _data(256, seed=5)
    T = np.eye(SIZES[-1])[X[:, :SIZES[-1]].argmax(1)]      # a class the inputs tell
    before = model.loss(X, T)
    model.fit(X, T, method="minibatch", batch_size=32, epochs=5, lr=0.05, progress=False)
    assert model.loss(X, T) < 0.8 * before


def test_the_threshold_of_the_plan(monkeypatch):
    # the same network with its products made too large for chunks: passes as they are
    monkeypatch.setattr(schedule, "HALVES_MAX", 10)
    assert plan(_net().graph()).halves is None


def test_a_step_with_an_infinite_gradient_leaves_the_parameters(monkeypatch):
    # a finite loss whose back propagation overflows: tanh(z) of z ≈ 1e-30 makes the
    # output finite, W3 of 1e37 makes ∂L/∂H2 ≈ 1e35 and ∂L/∂W2 = Σ_b δ·H1 overflow
    model = _compiled(monkeypatch, 1, dtype="float32", acts=("relu", "tanh", "linear"))
    X, T = (a.astype(np.float32) for a in _data(64))
    model.params["W1"] = np.full_like(model.params["W1"], 50.0)
    model.params["W2"] = np.full_like(model.params["W2"], 1e-33)
    model.params["b2"] = np.zeros_like(model.params["b2"])
    model.params["W3"] = np.full_like(model.params["W3"], 1e37)
    assert np.isfinite(model.loss(X, T))
    before = {k: v.copy() for k, v in model.params.items()}
    with pytest.warns(RuntimeWarning, match="the step was not taken"):
        assert np.isnan(model.step(X, T, 0.1))
    for k in before:
        np.testing.assert_array_equal(model.params[k], before[k], err_msg=k)
    # and a step that can be taken still is, by the same jobs
    model.params["W3"] = np.full_like(model.params["W3"], 0.1)
    assert np.isfinite(model.step(X, T, 0.1))
    assert not np.array_equal(model.params["W3"], before["W3"])


@pytest.mark.parametrize("optimizer", ["sgd", "momentum"])
def test_an_epoch_in_one_call_gives_the_steps_bit_for_bit(monkeypatch, optimizer):
    # fit's loop in C takes plain gradient descent's update in the chunks' jobs, other
    # optimizers after the pass: either way the numbers of one step call per batch
    X, T = (a.astype(np.float32) for a in _data(96, seed=7))
    a = _compiled(monkeypatch, 1, dtype="float32", blas="1")
    b = _compiled(monkeypatch, 1, dtype="float32", blas="1")
    kw = {} if optimizer == "sgd" else {"momentum": 0.9}
    a.fit(X, T, method="minibatch", batch_size=32, epochs=2, lr=0.05, shuffle=False,
          optimizer=optimizer, progress=False, **kw)
    for _ in range(2):
        for s in range(0, 96, 32):
            b.step(X[s:s + 32], T[s:s + 32], 0.05, optimizer=None if optimizer == "sgd"
                   else optimizer, **kw)
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k], err_msg=k)


# ------------------------------------------------ the choice of threads for the passes
_HARNESS = r"""
#include <stdio.h>
#include <stdlib.h>
CHOOSER
/* passes of `alone` and `with` seconds (with2 from pass `at` on; `wake` more for a pass
   with threads after one without, or the first after a pause every `pause` passes):
   the choices, '0' or '1' a pass */
int main(int argc, char **argv)
{
    const double alone = atof(argv[1]), with = atof(argv[2]), with2 = atof(argv[4]);
    const double wake = atof(argv[6]);
    const long n = atol(argv[5]), at = atol(argv[3]), pause = atol(argv[7]);
    int before = 1;
    for (long i = 0; i < n; i++) {
        const int t = sn_choose();
        const int woken = !before || (i > 0 && i % pause == 0);
        sn_took_now(t, t ? (i < at ? with : with2) + (woken ? wake : 0) : alone);
        putchar('0' + t);
        before = t;
    }
    return 0;
}
"""


def _choices(tmp_path, alone, with_, at, with2, n, wake=0.0, pause=10**9):
    """The choices (threads or not) of the emitted chooser (sn_choose, sn_took_now) over
    n passes whose times are given: a string of 0 and 1."""
    import re
    import subprocess
    from symnet.backend.c import build
    src = _net().compile(dtype="float64").c_source
    m = re.search(r"#define SN_RETRY .*?\nstatic void sn_took_now\(.*?\n}\n", src, re.S)
    assert m, "the chooser is not in the emitted C"
    c, exe = tmp_path / "chooser.c", tmp_path / "chooser"
    c.write_text(_HARNESS.replace("CHOOSER", m.group(0)))
    subprocess.run([*build.compiler(), "-O1", "-o", str(exe), str(c)], check=True)
    out = subprocess.run([str(exe), *map(str, (alone, with_, at, with2, n, wake, pause))],
                         check=True, capture_output=True, text=True).stdout
    assert len(out) == n
    return out


def test_the_passes_keep_the_faster_choice_and_try_the_other_rarely(tmp_path):
    # threads faster (quiet machine: 1.15 against 1.7 µs per example): after the first
    # trials nearly every pass takes threads; a trial alone costs 3 passes now and then,
    # and the pass with threads after it, which wakes the pool's thread (3.9 µs per
    # example more), does not make the threads look slower, nor does the first pass after
    # each pause (the bench's turns: about 700 steps, then 30 ms of other programs)
    for wake, pause in ((0.0, 10**9), (3.9e-6, 10**9), (3.9e-6, 700)):
        quiet = _choices(tmp_path, 1.7e-6, 1.15e-6, 10**9, 0, 4000, wake, pause)
        assert quiet[:7] == "0000111"
        assert quiet[7:].count("0") <= 0.05 * 4000
    # threads five times slower (a busy machine whose other core another program holds:
    # 280 µs a pass with threads against 55 alone): a trial with threads ends after its
    # second pass, and the trials come at most every SN_RETRY_MAX passes, so threads cost
    # few passes (three every 67 passes before, 180 of 4000)
    busy = _choices(tmp_path, 1.7e-6, 8.8e-6, 10**9, 0, 4000)
    assert busy[7:].count("1") <= 45
    assert "111" not in busy[7:]
    # the machine becomes quiet: threads are taken again within SN_RETRY_MAX passes, even
    # though the first pass of each trial with threads wakes the pool's thread (3.9 µs
    # per example more): that pass alone does not end a trial
    for wake in (0.0, 3.9e-6):
        later = _choices(tmp_path, 1.7e-6, 8.8e-6, 2000, 1.15e-6, 4000, wake)
        assert later[2000 + 2 * 256:].count("0") <= 0.05 * len(later[2000 + 2 * 256:])


def test_the_kept_threads_try_a_pass_alone_seldom_and_judge_it_at_once(tmp_path):
    # the transformer's step on two cores: 25 ms a pass alone against 12.5 with threads
    # (0.78 and 0.39 ms per example).  After the first seven passes the threads are kept
    # for SN_RETRY_MAX passes before a pass alone is tried, and that trial ends at its
    # first pass (nothing to wake when alone): once it tried three passes alone after 16,
    # two after 32, and so on, 25 ms each, within a benchmark's first 60 steps
    quiet = _choices(tmp_path, 7.8e-4, 3.9e-4, 10**9, 0, 1200)
    assert quiet[:7] == "0000111"
    assert quiet[7:7 + 256] == "1" * 256
    assert "00" not in quiet[7:]
    assert 1 <= quiet[7:].count("0") <= 5
    # the other core taken from pass 600 (threads now twice as slow as alone): the
    # threads' own figure shows it, and the passes go alone without waiting for a trial
    busy = _choices(tmp_path, 7.8e-4, 3.9e-4, 600, 1.6e-3, 1200)
    assert busy[600 + 3:600 + 20] == "0" * 17
