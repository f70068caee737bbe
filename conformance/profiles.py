"""Hypothesis settings per profile: ``gate`` is small and derandomised (identical verdicts run to
run), ``nightly`` explores more, randomly, and prints the seed and blob of any failure."""

from __future__ import annotations

from hypothesis import HealthCheck, settings

ACTIVE = "gate"  # set by the pytest plugin from --iii-profile
_SUPPRESS = [
    HealthCheck.too_slow,
    HealthCheck.function_scoped_fixture,
    HealthCheck.data_too_large,
    HealthCheck.filter_too_much,
]


def register_hypothesis_profiles(active: str | None = None) -> None:
    global ACTIVE
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
        "nightly", max_examples=40, deadline=None, suppress_health_check=_SUPPRESS, print_blob=True
    )
    if active:
        ACTIVE = active
        settings.load_profile(active)


def examples(gate: int, nightly: int | None = None) -> settings:
    """Settings for a check's ``@given``: ``gate`` examples in the gate, more at night.

    Each example of a conformance check starts real worker processes, so counts stay small.
    """
    is_gate = ACTIVE == "gate"
    return settings(
        max_examples=gate if is_gate else (nightly or gate * 8),
        derandomize=is_gate,
        deadline=None,
        database=None,
        suppress_health_check=_SUPPRESS,
        print_blob=True,
    )
