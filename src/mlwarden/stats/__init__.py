"""Statistics for drift detection: sketches, one module per test, and the layer above.

    sketch.py         bounded, mergeable, subtractable summaries of a feature's values
                      (NumericSketch over fixed edges, CategoricalSketch with a bound)
    result.py         TestResult, the one shape every test returns
    ks.py             Kolmogorov-Smirnov (numeric): D, asymptotic p-value
    wasserstein.py    Wasserstein-1 (numeric): distance, in reference stds as effect
    psi.py            population stability index (numeric or categorical)
    jensenshannon.py  Jensen-Shannon distance, base 2 (numeric or categorical)
    chisquare.py      chi-square homogeneity (categorical): p-value, total variation distance
    correction.py     Bonferroni and Benjamini-Hochberg across features
    distributions.py  Kolmogorov's and chi-square's tails, rel_entr (scipy's, without scipy)
    sequential.py     drift decided as records arrive, false alarms bounded per record
    drift.py          per feature: pick the test, correct, apply the effect floor
    performance.py    model performance from labels, or estimated without them (CBPE)
    embedding.py      vectors: bounded samples, projection, sequential MMD test, topic mix

Each test module exposes one `score(reference, current) -> TestResult` over two
sketches; correction and effect floors live only in `drift.py`.
"""

from mlwarden.stats.correction import adjusted, benjamini_hochberg, bonferroni
from mlwarden.stats.drift import (
    DEFAULT_MIN_EFFECT,
    DEFAULT_THRESHOLD,
    DriftSettings,
    FeatureDrift,
    evaluate_drift,
    pick_test,
)
from mlwarden.stats.result import TestResult
from mlwarden.stats.sketch import CategoricalSketch, NumericSketch, Sketch, numeric_edges

__all__ = [
    "DEFAULT_MIN_EFFECT",
    "DEFAULT_THRESHOLD",
    "CategoricalSketch",
    "DriftSettings",
    "FeatureDrift",
    "NumericSketch",
    "Sketch",
    "TestResult",
    "adjusted",
    "benjamini_hochberg",
    "bonferroni",
    "evaluate_drift",
    "numeric_edges",
    "pick_test",
]
