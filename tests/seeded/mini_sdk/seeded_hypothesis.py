"""pytest plugin for the seeded-fault runs (``-p seeded_hypothesis``): no shrinking.

A seeded bug makes a check fail; Hypothesis would then shrink the failing example, re-running
real worker processes dozens of times (measured: 52 s for one check). Only the verdict matters
here, and it is decided in the generate phase: the examples generated are the same with or
without the shrink phase (the gate profile is derandomised), so dropping ``shrink`` and
``explain`` changes the cost of a FAILED verdict, never the verdict.
"""

from __future__ import annotations

import pytest
from hypothesis import Phase, settings

PROFILE = "iii-seeded-no-shrink"


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    # Loaded before the suite is imported, so the checks' own settings(...) inherit it.
    settings.register_profile(
        PROFILE, settings.default, phases=(Phase.explicit, Phase.reuse, Phase.generate)
    )
    settings.load_profile(PROFILE)
