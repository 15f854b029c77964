"""The one shape every statistical check returns."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TestResult:
    """The outcome of one two-sample comparison (reference vs current) of one feature.

    `statistic` is the test's own statistic (KS D, chi-square, PSI...); `p_value`
    is None for distance-only tests; `effect` is an effect size on the test's
    own documented scale (KS: D; Wasserstein: distance in reference standard
    deviations; PSI: PSI; Jensen-Shannon: distance in [0, 1]; chi-square:
    total variation distance), which the effect-size floor is compared against.
    """

    __test__ = False  # not a pytest test class, despite the name

    test: str
    statistic: float
    p_value: float | None
    effect: float
    n_reference: int
    n_current: int
