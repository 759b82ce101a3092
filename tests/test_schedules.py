"""Step-size schedules: values, and which satisfy Robbins–Monro."""

import numpy as np
import pytest

from symnet.runtime import schedules as S


@pytest.mark.parametrize("sched,t,value", [
    (S.Constant(0.3), 1000, 0.3),
    (S.RobbinsMonro(0.1, tau=100), 300, 0.1 / 4),
    (S.PowerDecay(1.0, tau=1, p=0.75), 15, 16 ** -0.75),
    (S.StepDecay(1.0, drop=0.5, every=10), 29, 0.25),
    (S.Exponential(2.0, gamma=0.5), 3, 0.25),
    (S.Cosine(1.0, total_steps=10), 5, 0.5),
    (S.Cosine(1.0, total_steps=10), 50, 0.0),
])
def test_values(sched, t, value):
    assert sched(t) == pytest.approx(value, rel=1e-12)
    assert sched.values(t, 1)[0] == pytest.approx(value, rel=1e-12)


@pytest.mark.parametrize("sched,rm", [
    (S.Constant(0.1), False),
    (S.RobbinsMonro(0.1, tau=10), True),
    (S.PowerDecay(0.1, tau=10, p=0.75), True),
    (S.PowerDecay(0.1, tau=10, p=0.5), False),
    (S.StepDecay(0.1, drop=0.5, every=10), False),
    (S.Exponential(0.1, gamma=0.99), False),
    (S.Cosine(0.1, total_steps=100), False),
])
def test_robbins_monro_classification(sched, rm):
    assert sched.robbins_monro is rm
    assert ("[Robbins–Monro" in str(sched)) is rm


def test_robbins_monro_sums_numerically():
    """Σ η_t grows without bound and Σ η_t² converges for 0.1/(1 + t/10)."""
    v = S.RobbinsMonro(0.1, tau=10).values(0, 10 ** 6)
    assert v[: 10 ** 5].sum() * 1.1 < v.sum()            # still growing (like log t)
    assert (v ** 2).sum() < 0.1 ** 2 * 10 * 1.1          # bounded by η0² τ (1 + 1/τ)


def test_bad_schedule_arguments():
    with pytest.raises(ValueError, match="p must be"):
        S.PowerDecay(0.1, tau=1, p=1.5)
    with pytest.raises(TypeError, match="step size"):
        S.as_schedule("0.1")
    assert np.array_equal(S.as_schedule(0.2).values(0, 3), [0.2, 0.2, 0.2])
