"""Per-column overrides of the default drift tests, as ``modelci.yaml`` will hold them.

The ``monitoring:`` section embeds ``DriftSettings``::

    monitoring:
      drift_share: 0.5            # the dataset drifts when at least this share of columns do
      columns:
        age: {test: ks, threshold: 0.01}
        zip_code: {kind: categorical}
        notes: {skip: true}

A column without an entry gets Evidently's default: its kind inferred from the
reference, its test chosen by reference size and distinct values.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["ColumnOverride", "DriftSettings", "Kind", "TestName"]

# Here, not in stattests (scipy): modelci.yaml is parsed by every command.
TestName = Literal["ks", "chisquare", "z", "wasserstein", "jensenshannon"]

Kind = Literal["numeric", "categorical"]

_NUMERIC_ONLY = {"ks", "wasserstein"}


class ColumnOverride(BaseModel):
    """One column's test, threshold, kind, or that it is not tested at all."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    test: TestName | None = None
    threshold: float | None = Field(default=None, gt=0)
    kind: Kind | None = None
    skip: bool = False

    @model_validator(mode="after")
    def _test_fits_kind(self) -> ColumnOverride:
        if self.kind == "categorical" and self.test in _NUMERIC_ONLY:
            raise ValueError(
                f"test {self.test} compares numbers; a categorical column takes "
                "chisquare, z or jensenshannon"
            )
        return self


class DriftSettings(BaseModel):
    """The drift share and the per-column overrides."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    drift_share: float = Field(default=0.5, gt=0, le=1)
    columns: dict[str, ColumnOverride] = Field(default_factory=dict)

    def column(self, name: str) -> ColumnOverride:
        return self.columns.get(name) or ColumnOverride()
