"""Feature drift: one test per feature, then correction and effect floors, once, above them.

The tests in this package each turn two sketches into a statistic, a p-value
and an effect size. This module decides what that means for the model:

1. pick the test for each feature (`pick_test`);
2. skip features whose current window has too few values to say anything;
3. correct the p-values for testing many features at once
   (`correction.adjusted`, over the features that have a p-value);
4. require the effect to be large enough to matter. With 10^6 values per window
   a shift of 0.02 standard deviations is "significant" at p < 1e-6, and
   nobody should be paged for it: a feature drifts only if it is significant
   after correction AND its effect size reaches the floor.

Distance-only tests (Wasserstein, PSI, Jensen-Shannon) have no p-value, so for
them the floor is the whole decision: drifted when the distance reaches it.
Their value under no drift shrinks with window size (for 10 bins roughly
PSI ~ 9 (1/n_ref + 1/n_cur)), so on small windows (a few hundred values) they
alarm on noise; "auto" therefore picks KS and chi-square.

Defaults (`DEFAULT_MIN_EFFECT`, overridden by the settings' `min_effect`):

    ks             D >= 0.05: the CDFs differ by 5 percentage points somewhere;
                   a mean shift of about 0.125 standard deviations, or a scale
                   change of 1.25x, of a normal feature (a 0.02 sd shift is
                   D = 0.008). Was 0.1 until the drift benchmark showed it
                   missing a 1.5x scale change (D = 0.097).
    chisquare      total variation distance (TVD) >= 0.05, the same floor as KS D
                   and on its scale: TVD is the largest difference in the share
                   of any set of categories (KS D: of any half-line), and for a
                   binary column it is |p - q|, the KS D of the 0/1 coding. So a
                   rate moving 0.30 -> 0.36 (TVD 0.06) drifts like a numeric D
                   of 0.06, and a category gaining a point or two does not.
                   (Was Cramér's V >= 0.1 until issue 19: 0.30 -> 0.36 is
                   V = 0.064 and was never flagged.)
    wasserstein    W >= 0.1 reference standard deviations
    psi            PSI >= 0.2: between the conventional "moderate" (0.1) and
                   "major" (0.25) shift
    jensenshannon  JS distance (base 2) >= 0.1

`DEFAULT_THRESHOLD` holds the distance-only subset of these numbers. Hysteresis
(fire after N failing evaluations) lives in the detector, not here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final, Protocol

from mlwarden.stats import chisquare, jensenshannon, ks, psi, wasserstein
from mlwarden.stats.correction import adjusted
from mlwarden.stats.result import TestResult
from mlwarden.stats.sketch import CategoricalSketch, NumericSketch, Sketch

Score = Callable[[Sketch, Sketch], TestResult]

SCORES: Final[Mapping[str, Score]] = {
    "ks": ks.score,
    "wasserstein": wasserstein.score,
    "psi": psi.score,
    "jensenshannon": jensenshannon.score,
    "chisquare": chisquare.score,
}
TESTS_FOR_TYPE: Final[Mapping[str, tuple[str, ...]]] = {
    "numeric": ("ks", "wasserstein", "psi", "jensenshannon"),
    "categorical": ("chisquare", "psi", "jensenshannon"),
}
AUTO_TEST: Final[Mapping[str, str]] = {"numeric": "ks", "categorical": "chisquare"}

DEFAULT_THRESHOLD: Final[Mapping[str, float]] = {
    "wasserstein": 0.1,
    "psi": 0.2,
    "jensenshannon": 0.1,
}
DEFAULT_MIN_EFFECT: Final[Mapping[str, float]] = {
    "ks": 0.05,
    "chisquare": 0.05,
    **DEFAULT_THRESHOLD,
}

_LABEL: Final = {
    "ks": ("KS", "D"),
    "chisquare": ("chi-square", "TVD"),
    "wasserstein": ("Wasserstein", "W/std"),
    "psi": ("PSI", "PSI"),
    "jensenshannon": ("Jensen-Shannon", "JS"),
}
_CORRECTION_LABEL: Final = {
    "bonferroni": "Bonferroni",
    "benjamini-hochberg": "Benjamini-Hochberg",
    "none": "uncorrected",
}


class DriftSettings(Protocol):
    """What `evaluate_drift` reads from a drift check's settings.

    The ObservedModel's `spec.DriftCheck` has these fields; stats, the lowest pure core,
    names what it reads instead of importing the spec.
    """

    @property
    def enabled(self) -> bool: ...
    @property
    def test(self) -> str: ...  # "auto" or a key of SCORES
    @property
    def p_value(self) -> float: ...
    @property
    def correction(self) -> str: ...  # "bonferroni" | "benjamini-hochberg" | "none"
    @property
    def min_effect(self) -> float | None: ...  # None: DEFAULT_MIN_EFFECT of the test


@dataclass(frozen=True)
class FeatureDrift:
    """The drift verdict for one feature, with the numbers and words behind it."""

    feature: str
    result: TestResult
    adjusted_p: float | None
    drifted: bool
    reason: str


def pick_test(feature_type: str, requested: str) -> str:
    """The test to run for a feature: "auto" resolves by type; a misfit raises ValueError."""
    if feature_type not in TESTS_FOR_TYPE:
        raise ValueError(
            f"unknown feature type {feature_type!r}; expected one of {', '.join(TESTS_FOR_TYPE)}"
        )
    if requested == "auto":
        return AUTO_TEST[feature_type]
    if requested not in SCORES:
        raise ValueError(
            f"unknown drift test {requested!r}; expected auto or one of {', '.join(SCORES)}"
        )
    fitting = TESTS_FOR_TYPE[feature_type]
    if requested not in fitting:
        raise ValueError(
            f"drift test {requested!r} does not apply to {feature_type} features; "
            f"use auto or one of {', '.join(fitting)}"
        )
    return requested


def _fmt(x: float) -> str:
    return f"{x:.2g}"


def _skip(feature: str, test: str, n_ref: int, n_cur: int, why: str) -> FeatureDrift:
    empty = TestResult(test, 0.0, None, 0.0, n_ref, n_cur)
    return FeatureDrift(feature, empty, None, False, f"skipped: {why}")


def evaluate_drift(
    reference: Mapping[str, Sketch],
    current: Mapping[str, Sketch],
    types: Mapping[str, str],
    check: DriftSettings,
    min_current: int = 30,
    *,
    family: str = "feature",
    scores: Mapping[str, Score] = SCORES,
) -> list[FeatureDrift]:
    """Drift verdicts for every feature in `types` (in its order); [] if the check is off.

    Each feature needs a sketch in both `reference` and `current` of the kind its
    type says (ValueError otherwise: a wiring bug, not data). Features with fewer
    than `min_current` current values, or an empty reference, are skipped (not
    drifted). The correction runs over the features that produced a p-value; `family`
    names what one of them is in the verdicts' words ("Bonferroni over 25 features");
    `scores` maps a test's name to its function (the segments' KS takes Kolmogorov's limit).
    """
    if not check.enabled:
        return []
    absent = [f for f in types if f not in reference or f not in current]
    if absent:
        raise ValueError(f"no reference or current sketch for feature(s): {', '.join(absent)}")

    verdicts: dict[str, FeatureDrift] = {}
    results: dict[str, TestResult] = {}
    for feature, feature_type in types.items():
        test = pick_test(feature_type, check.test)
        ref, cur = reference[feature], current[feature]
        kind = NumericSketch if feature_type == "numeric" else CategoricalSketch
        if not isinstance(ref, kind) or not isinstance(cur, kind):
            raise ValueError(
                f"feature {feature!r} is {feature_type} but its sketches are "
                f"{type(ref).__name__} and {type(cur).__name__}"
            )
        if ref.total == 0:
            verdicts[feature] = _skip(feature, test, 0, cur.total, "the reference has no values")
        elif cur.total < min_current:
            verdicts[feature] = _skip(
                feature,
                test,
                ref.total,
                cur.total,
                f"{cur.total} current values, fewer than the {min_current} needed",
            )
        else:
            results[feature] = scores[test](ref, cur)

    names = list(results)
    adjusted_ps = adjusted([results[f].p_value for f in names], check.correction)
    m = sum(p is not None for p in adjusted_ps)
    over = f"{_CORRECTION_LABEL[check.correction]} over {m} {family}{'s' if m != 1 else ''}"
    for feature, adj in zip(names, adjusted_ps, strict=True):
        result = results[feature]
        name, effect_name = _LABEL[result.test]
        floor = DEFAULT_MIN_EFFECT[result.test] if check.min_effect is None else check.min_effect
        effect = f"{effect_name}={_fmt(result.effect)}"
        big = result.effect >= floor
        if adj is None:
            drifted = big
            reason = f"{name} {effect} {'≥' if big else '<'} threshold {_fmt(floor)}"
        else:
            significant = adj <= check.p_value
            drifted = significant and big
            p = f"adjusted p={_fmt(adj)}"
            alpha = f"{_fmt(check.p_value)} ({over})"
            if drifted:
                reason = f"{name} {p} ≤ {alpha} and {effect} ≥ {_fmt(floor)}"
            elif significant:
                reason = (
                    f"significant ({name} {p} ≤ {alpha}) but {effect} is below "
                    f"the effect floor {_fmt(floor)}"
                )
            else:
                reason = f"not significant: {name} {p} > {alpha}; {effect}"
        verdicts[feature] = FeatureDrift(feature, result, adj, drifted, reason)
    return [verdicts[f] for f in types]
