"""The exact distillation loss T**2 KL(softmax(t/T) || softmax(s/T)) and its gradient T (q - p) against
mpmath at 256 bits: a converging student (student = teacher + delta * noise, delta down to 1e-12, where
KL is about 1e-25 and every sum of p log p and p log q cancels 80 bits), vocabularies of 32,000 and
128,000, underflowing probabilities, and a teacher with -inf logits (p = 0, 0 log 0 = 0)."""

import mpmath
import numpy as np
import pytest

from harness.losses.kl_divergence.exact import exact_kl_divergence, exact_kl_divergence_gradient

RELATIVE = mpmath.mpf(2) ** -60


def held(value, index) -> mpmath.mpf:
    hi, lo, exponent = (np.asarray(part)[index] for part in value)
    return (mpmath.mpf(float(hi)) + mpmath.mpf(float(lo))) * mpmath.mpf(2) ** int(exponent)


def mp_log_softmax(row, temperature):
    """(log p, p) per entry, one exp each; None where the logit is -inf."""
    z = [None if v == -np.inf else mpmath.mpf(float(v)) / temperature for v in row]
    top = max(v for v in z if v is not None)
    e = [None if v is None else mpmath.exp(v - top) for v in z]
    total = mpmath.fsum(v for v in e if v is not None)
    log_total = mpmath.log(total) + top
    return [None if v is None else v - log_total for v in z], [0 if v is None else v / total for v in e]


def mp_kl_and_gradient(teacher_row, student_row, temperature, entries):
    """T**2 sum p (log p - log q) and T (q - p) at the entries, from the definition (at 256 bits, 170 are
    left after the 80 that cancel at delta = 1e-12)."""
    temperature = mpmath.mpf(temperature)
    log_p, p = mp_log_softmax(teacher_row, temperature)
    log_q, q = mp_log_softmax(student_row, temperature)
    kl = mpmath.fsum(pj * (lp - lq) for pj, lp, lq in zip(p, log_p, log_q, strict=True) if lp is not None)
    return temperature**2 * kl, {j: temperature * (q[j] - p[j]) for j in entries}


def check(teacher, student, temperature=1.0, entries=None, bits=256):
    kl = exact_kl_divergence(teacher, student, temperature=temperature)
    gradient = exact_kl_divergence_gradient(teacher, student, temperature=temperature)
    entries = range(teacher.shape[1]) if entries is None else entries
    with mpmath.workprec(bits):
        for i in range(teacher.shape[0]):
            exact_kl, exact_gradient = mp_kl_and_gradient(teacher[i], student[i], temperature, entries)
            assert exact_kl > 0
            assert abs(held(kl, i) - exact_kl) <= RELATIVE * exact_kl, float(abs(held(kl, i) / exact_kl - 1))
            for j, exact in exact_gradient.items():
                error = abs(held(gradient, (i, j)) - exact)
                assert error <= RELATIVE * abs(exact), (j, float(error / abs(exact)))
    return kl, gradient


@pytest.mark.parametrize("delta", [1e-2, 1e-4, 1e-6, 1e-8, 1e-10, 1e-12])
@pytest.mark.parametrize("temperature", [1.0, 2.0, 0.5])
def test_near_family(delta, temperature):
    rng = np.random.default_rng(int(-np.log10(delta)))
    teacher = rng.standard_normal((2, 300)) * 3
    student = teacher + delta * rng.standard_normal(teacher.shape)
    kl, _ = check(teacher, student, temperature)
    # second order: KL = T**2 Var_p(u) / 2 with u = (s - t) / T, to within delta of itself
    p = np.exp(teacher / temperature - np.logaddexp.reduce(teacher / temperature, axis=1, keepdims=True))
    u = (student - teacher) / temperature
    variance = (p * u**2).sum(axis=1) - (p * u).sum(axis=1) ** 2
    assert kl.to_float64() == pytest.approx(temperature**2 * variance / 2, rel=max(1e-9, 100 * delta))


@pytest.mark.slow
@pytest.mark.parametrize("classes", [32_000, 128_000])
def test_large_vocabularies_near_convergence(classes):
    rng = np.random.default_rng(classes)
    teacher = rng.standard_normal((1, classes)) * 4
    student = teacher + 1e-12 * rng.standard_normal(teacher.shape)
    entries = [0, 1, int(np.argmax(teacher)), int(np.argmin(teacher)), classes - 1]
    check(teacher, student, entries=entries)  # 80 bits cancel: 176 are left


def test_independent_teacher_and_student():
    rng = np.random.default_rng(3)
    teacher, student = rng.standard_normal((2, 3, 500)) * 5
    check(teacher, student)
    check(teacher, student, temperature=4.0)


def test_underflowing_probabilities():
    # logits spread over +-1200: most probabilities are far below 2**-1075 (exp(-2400) in the tails)
    rng = np.random.default_rng(4)
    teacher = rng.standard_normal((2, 400)) * 400
    check(teacher, teacher + 1e-9 * rng.standard_normal(teacher.shape))
    check(teacher, rng.standard_normal(teacher.shape) * 400)


def test_teacher_with_minus_infinity_logits():
    # p = 0 where the teacher's logit is -inf: those terms are 0 (0 log 0 = 0); the gradient there is T q
    rng = np.random.default_rng(5)
    teacher = rng.standard_normal((2, 60)) * 3
    student = teacher + 1e-6 * rng.standard_normal(teacher.shape)
    teacher[:, ::3] = -np.inf
    _, gradient = check(teacher, student, temperature=2.0)
    assert (gradient.hi[:, ::3] > 0).all()


def test_hand_values():
    # p = (1/2, 1/2), q = (1/4, 3/4): KL = (1/2) ln 2 + (1/2) ln(2/3) = (1/2) ln(4/3); gradient q - p = (-1/4, 1/4)
    teacher = np.zeros((2, 2))
    student = np.array([[0.0, np.log(3.0)], [0.0, 2 * np.log(3.0)]])
    kl = exact_kl_divergence(teacher[:1], student[:1]).to_float64()
    assert kl[0] == pytest.approx(0.5 * np.log(4 / 3), rel=1e-15)
    gradient = exact_kl_divergence_gradient(teacher[:1], student[:1]).to_float64()
    assert gradient[0] == pytest.approx([-0.25, 0.25], rel=1e-15)
    # T = 2 on logits 2 ln 3: the same distributions, the loss times T**2 = 4 and the gradient times T = 2
    assert exact_kl_divergence(teacher[1:], student[1:], temperature=2.0).to_float64()[0] == pytest.approx(
        2 * np.log(4 / 3)
    )
    assert exact_kl_divergence_gradient(teacher[1:], student[1:], temperature=2.0).to_float64()[0] == pytest.approx(
        [-0.5, 0.5]
    )


def test_identical_distributions_give_zero():
    teacher = np.array([[1.0, -2.0, 3.5], [0.0, 0.0, 0.0]])
    assert exact_kl_divergence(teacher, teacher).to_float64().tolist() == [0.0, 0.0]
    assert (exact_kl_divergence_gradient(teacher, teacher).to_float64() == 0).all()
    # a shifted student is the same distribution
    assert exact_kl_divergence(teacher, teacher + 7.0).to_float64().tolist() == [0.0, 0.0]


@pytest.mark.parametrize(
    ("teacher", "student", "temperature", "message"),
    [
        (np.zeros((1, 3)), np.zeros((1, 4)), 1.0, "share a"),
        (np.zeros((1, 3)), np.zeros((1, 3)), 0.0, "temperature must be positive"),
        (np.zeros((1, 3)), np.zeros((1, 3)), -1.0, "temperature must be positive"),
        (np.zeros((1, 3)), np.array([[0.0, -np.inf, 1.0]]), 1.0, "finite student"),
        (np.full((1, 3), -np.inf), np.zeros((1, 3)), 1.0, "a finite one in every row"),
        (np.array([[0.0, np.nan, 1.0]]), np.zeros((1, 3)), 1.0, "teacher logits must be finite or -inf"),
    ],
)
def test_bad_inputs_are_refused(teacher, student, temperature, message):
    with pytest.raises(ValueError, match=message):
        exact_kl_divergence(teacher, student, temperature=temperature)


def test_float64_route_for_outputs_of_24_bits_agrees_to_2_to_the_minus_44():
    """Independent and near families at scales 0.1 to 400, deltas 1e-1 to 1e-12, T = 0.5, 1, 2, with and
    without -inf teacher logits: the float64 route within 2**-44 of the double-double one (measured 2**-46.3)."""
    from harness.losses.kl_divergence import inputs

    base = inputs.draw(4, 300, seed=9)
    cases = [inputs.independent(base, scale) for scale in (0.1, 1.0, 10.0, 400.0)]
    cases += [inputs.near(base, scale, delta) for scale in (1.0, 100.0) for delta in (1e-1, 1e-4, 1e-8, 1e-12)]
    for masked in (False, True):
        for arrays in cases:
            teacher, student = arrays["teacher"].copy(), arrays["student"]
            if masked:
                teacher[:, ::7] = -np.inf
            for temperature in (0.5, 1.0, 2.0):
                exact = exact_kl_divergence(teacher, student, temperature=temperature).to_float64()
                fast = exact_kl_divergence(teacher, student, 24, temperature=temperature).to_float64()
                assert np.all(np.abs(fast - exact) <= 2.0**-44 * exact), (masked, temperature)


def test_float64_route_hands_tiny_and_far_rows_to_double_double():
    # teacher [0, -800]: p_2 = e**-800, student [0, -801]: KL ~ e**-801, below float64; a far row (|S| > 1/2)
    teacher = np.array([[0.0, -800.0], [0.0, 5.0]])
    student = np.array([[0.0, -801.0], [0.0, -5.0]])
    fast = exact_kl_divergence(teacher, student, 24)
    exact = exact_kl_divergence(teacher, student)
    assert fast.exponent[0] < 0 and all((a == b).all() for a, b in zip(fast, exact, strict=True))
