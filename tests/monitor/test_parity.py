"""modelci's verdicts against Evidently's DataDriftPreset on the same generated data.

Per column the test, the verdict and the threshold are equal and the score agrees
to 1e-6 (or, for a sketched reference, within its stated error bound); so do the
share of drifted columns and the dataset's verdict.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("evidently", exc_type=ImportError)
pd = pytest.importorskip("pandas")

from modelci.monitor import Profile, drift, profile_table  # noqa: E402
from tests.monitor.evidently_ref import evidently_drift  # noqa: E402


def frame(rows: int, shift: float, seed: int) -> pd.DataFrame:
    """Mixed types: continuous, wide integers, few-valued numbers, binary, categories."""
    rng = np.random.default_rng(seed)
    probs = np.array([0.4, 0.3, 0.2, 0.1]) * (1 - shift) + 0.25 * shift
    return pd.DataFrame(
        {
            "income": rng.lognormal(10 + shift, 0.5, rows),
            "age": rng.integers(18, 90, rows) + int(shift * 8),
            "score": np.round(rng.normal(shift, 1, rows), 1),
            "rating": rng.integers(0, 4, rows).astype(float) + (rng.random(rows) < shift / 2),
            "churned": (rng.random(rows) < 0.3 + shift / 5).astype(float),
            "plan": rng.choice(["free", "basic", "pro", "team"], rows, p=probs),
            "region": rng.choice(["eu", "us"], rows, p=[0.5 + shift / 4, 0.5 - shift / 4]),
            "children": rng.integers(0, 4, rows),
            "active": rng.random(rows) < 0.6 - shift / 5,
        }
    )


def assert_parity(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    profile: Profile | None = None,
    tolerance: float = 1e-6,
) -> None:
    expected = evidently_drift(reference, current)
    report = drift(profile or profile_table(reference), current)
    got = {col.name: col for col in report.columns}
    assert set(got) == set(expected.columns)
    for name, want in expected.columns.items():
        col = got[name]
        assert (col.test, col.threshold, col.drifted) == (
            want.test,
            want.threshold,
            want.drifted,
        ), name
        allowed = max(tolerance, col.error_bound)
        assert abs(col.score - want.score) <= allowed, (name, col.score, want.score, allowed)
    assert report.share_drifted == pytest.approx(expected.share_drifted, abs=1e-12)
    assert report.dataset_drifted == expected.dataset_drifted


@pytest.mark.parametrize(
    ("ref_rows", "cur_rows", "shift"),
    [
        (400, 300, 0.0),  # small reference: ks, chisquare, z
        (800, 600, 0.6),
        (4000, 1500, 0.0),  # large reference: wasserstein, jensenshannon
        (4000, 1500, 0.6),
        (1000, 1000, 0.3),  # the boundary: 1,000 rows is still "small"
        (1001, 1000, 0.3),
    ],
)
def test_verdicts_and_scores_equal_evidentlys(ref_rows: int, cur_rows: int, shift: float) -> None:
    assert_parity(frame(ref_rows, 0.0, 1), frame(cur_rows, shift, 2))


def test_both_sides_of_the_verdicts_are_covered() -> None:
    """The cases above see drifted and clean columns of every test (not all one way)."""
    seen: set[tuple[str, bool]] = set()
    for ref_rows, cur_rows, shift in [
        (800, 600, 0.6),
        (400, 300, 0.0),
        (4000, 1500, 0.6),
        (4000, 1500, 0.0),
    ]:
        report = drift(profile_table(frame(ref_rows, 0.0, 1)), frame(cur_rows, shift, 2))
        seen |= {(col.test, col.drifted) for col in report.columns}
    for test in ("ks", "chisquare", "z", "wasserstein", "jensenshannon"):
        assert (test, True) in seen and (test, False) in seen, test


def test_a_sketched_reference_stays_within_its_bound_and_gives_the_same_verdicts() -> None:
    """50,000 continuous values: more than the 3,072 a profile keeps exactly."""
    rng = np.random.default_rng(5)
    reference = pd.DataFrame({"x": rng.normal(0, 1, 50_000), "y": rng.lognormal(0, 1, 50_000)})
    profile = Profile.from_bytes(profile_table(reference).to_bytes())
    assert not profile.column("x").numeric.exact  # type: ignore[union-attr]
    for shift in (0.0, 0.05, 0.3):
        current = pd.DataFrame(
            {"x": rng.normal(shift, 1, 5000), "y": rng.lognormal(shift, 1, 5000)}
        )
        assert_parity(reference, current, profile=profile, tolerance=1e-4)


def test_missing_values_infinities_and_unseen_categories() -> None:
    rng = np.random.default_rng(7)
    reference = pd.DataFrame(
        {
            "x": np.where(rng.random(500) < 0.1, np.nan, rng.normal(0, 1, 500)),
            "c": rng.choice(["a", "b", "c"], 500),
        }
    )
    x = rng.normal(0.1, 1, 400)
    x[:5] = np.inf
    x[5:40] = np.nan
    current = pd.DataFrame({"x": x, "c": rng.choice(["a", "b", "c", "d"], 400)})
    assert_parity(reference, current)
    assert_parity(reference.iloc[:300], current.iloc[:300].assign(c="a"))
