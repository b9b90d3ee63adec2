"""Result records: plain dataclasses that say what was tested and what it conditions on.

A quantity that cannot be computed is None, with the reason in `undefined`; reports print
"undefined (reason)" instead of a number. `to_dict()` gives JSON-ready plain data.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from biasbench.formats import json_ready as plain  # the reports' name for it


def _fmt(value, digits=4) -> str:
    return "undefined" if value is None else f"{value:.{digits}g}"


@dataclass
class TestResult:
    """One hypothesis test. `conditions_on` says what is held fixed, i.e. what it generalises to."""

    __test__ = False  # not a pytest test class, despite the name

    test: str
    statistic: float | None
    p_value: float | None
    conditions_on: str
    n_voices: int
    n_items: int
    method: str = ""
    details: dict = field(default_factory=dict)
    undefined: str | None = None

    @property
    def defined(self) -> bool:
        return self.undefined is None

    def to_dict(self) -> dict:
        return plain(asdict(self))

    def __str__(self) -> str:
        if self.undefined:
            return f"{self.test}: undefined ({self.undefined})"
        return f"{self.test}: statistic {_fmt(self.statistic)}, p = {_fmt(self.p_value)} [{self.method}]"


@dataclass
class PairGap:
    """Group a minus group b, with a bootstrap CI, a voice-level permutation p and effect sizes."""

    a: str
    b: str
    a_minus_b: float | None
    ci: tuple | None
    p_value: float | None
    p_holm: float | None
    effect_sizes: dict = field(default_factory=dict)


@dataclass
class GapResult:
    """Group estimates (mean of voice means), the largest-minus-smallest gap, its CI and test."""

    group: str
    outcome: str
    kind: str                      # "binary" or "numeric"
    estimates: dict                # label -> mean of its voices' means
    ci_by_group: dict              # label -> (low, high) or None
    n_voices_by_group: dict
    invalid_rate: dict             # label -> share of responses not valid
    gap: float | None              # largest minus smallest estimate
    highest: str | None
    lowest: str | None
    ci: tuple | None
    p_value: float | None
    test: str
    conditions_on: str
    ci_method: str
    level: float
    effect_sizes: dict             # highest vs lowest
    pairwise: list                 # of PairGap
    n_voices: int
    n_items: int
    n_responses: int
    permutation: TestResult | None = None
    undefined: str | None = None
    notes: list = field(default_factory=list)
    items: dict | None = None          # the common-item restriction (None: every item, as answered)
    mc_se: float | None = None         # Monte Carlo SE of p_value (None when exact)

    def to_dict(self) -> dict:
        return plain(asdict(self))

    def __str__(self) -> str:
        groups = ", ".join(f"{k} {_fmt(v)}" for k, v in self.estimates.items())
        head = f"{self.outcome} by {self.group}: {groups}"
        if self.gap is None:
            return f"{head}; gap undefined ({self.undefined})"
        ci = "undefined" if self.ci is None else f"[{_fmt(self.ci[0])}, {_fmt(self.ci[1])}]"
        p = f"undefined ({self.undefined})" if self.p_value is None else _fmt(self.p_value)
        return (f"{head}; gap {self.highest} - {self.lowest} = {_fmt(self.gap)}, "
                f"{int(self.level * 100)}% CI {ci}, {self.test} p = {p}")


@dataclass
class CorrectionResult:
    """Adjusted p-values for one named family of tests."""

    family: str
    method: str
    alpha: float
    labels: list
    p_values: list
    p_adjusted: list
    reject: list
    left_out: list                 # labels whose p-value was undefined (not in the family)

    def to_dict(self) -> dict:
        return plain(asdict(self))

    def as_mapping(self) -> dict:
        return dict(zip(self.labels, self.p_adjusted))


@dataclass
class CategoricalResult:
    """Distributions of a categorical outcome per group, and the tests of their difference."""

    group: str
    outcome: str
    categories: list
    counts: dict                   # label -> {category: count}
    distributions: dict            # label -> {category: mean over voices of the voice's share}
    invalid_rate: dict
    jsd: float | None              # base 2, generalised to k groups with equal weights
    tv: float | None               # max pairwise total variation distance
    tests: dict                    # name -> TestResult
    n_voices: int
    n_items: int
    undefined: str | None = None
    notes: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return plain(asdict(self))


@dataclass
class PowerResult:
    """Rejection rate of the primary test on simulated designs, with its Monte Carlo SE."""

    power: float
    mc_se: float
    effect_logit: float
    gap: float                     # population-averaged probability gap the effect implies
    alpha: float
    n_sims: int
    design: dict

    def to_dict(self) -> dict:
        return plain(asdict(self))


@dataclass
class DetectableGap:
    """Smallest planted effect the primary test detects with the target power."""

    gap: float | None              # on the probability scale (population-averaged)
    effect_logit: float | None
    power: float | None            # simulated power at that effect
    target_power: float
    alpha: float
    n_sims: int
    design: dict
    undefined: str | None = None

    def to_dict(self) -> dict:
        return plain(asdict(self))
