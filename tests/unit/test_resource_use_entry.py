"""An attempt's resource use is written without building its model, and reads back as that model."""

from __future__ import annotations

import pytest

from pennflow.engine.resource_use import AttemptUse, use_entry


@pytest.mark.parametrize(
    "figures",
    [(1, None, 0.012, 0.004, 3_145_728, 0), (2, 7, 61.5, None, None, 137), (3, 0, 0.0, 0.0, 0, -9)],
)
def test_the_entry_is_the_models_camelcase_dump(figures) -> None:
    attempt, batch, seconds, cpu, peak, code = figures
    entry = use_entry(attempt, batch, seconds, cpu, peak, code)
    model = AttemptUse(
        attempt=attempt, batch=batch, seconds=seconds, cpu_seconds=cpu, peak_rss_bytes=peak, exit_code=code
    )
    assert entry == model.model_dump(by_alias=True)
    assert AttemptUse.model_validate(entry) == model
