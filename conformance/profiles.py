"""Hypothesis profiles: ``gate`` is small and derandomised (identical verdicts run to run),
``nightly`` explores more and prints the seed of any failure."""

from __future__ import annotations

from hypothesis import HealthCheck, settings

_SUPPRESS = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large]


def register_hypothesis_profiles(active: str | None = None) -> None:
    settings.register_profile(
        "gate",
        max_examples=4,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=_SUPPRESS,
        print_blob=True,
    )
    settings.register_profile(
        "nightly",
        max_examples=40,
        deadline=None,
        suppress_health_check=_SUPPRESS,
        print_blob=True,
    )
    if active:
        settings.load_profile(active)
