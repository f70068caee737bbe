"""pytest plugin: the harness's fixtures are its public API.

Options: ``--iii-sdk SPEC`` (repeatable: ``python@0.25.0``, ``node@0.22.1``, ``python@PATH``),
``--iii-driver "CMD ..."`` (repeatable), ``--iii-profile gate|nightly``.
Fixtures: ``fake_engine``, ``iii_sdk`` (parametrised over the selected SDKs), ``sdk_worker`` (one
connected worker) and ``sdk_worker_factory`` (several workers, each with its own options).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import pytest_asyncio

from fake_engine import FakeEngine

DEFAULT_SDKS = ("python@0.25.0", "node@0.22.1")
PROFILES = ("gate", "nightly")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("iii", "iii-conformance")
    group.addoption(
        "--iii-sdk",
        action="append",
        default=[],
        metavar="SPEC",
        help="SDK under test: python@VERSION, node@VERSION, LANG@PATH (repeatable)",
    )
    group.addoption(
        "--iii-driver",
        action="append",
        default=[],
        metavar="CMD",
        help="a custom driver command speaking the driver protocol (repeatable)",
    )
    group.addoption(
        "--iii-profile",
        choices=PROFILES,
        default=None,
        help="hypothesis profile and check depth: gate (default) or nightly",
    )
    group.addoption(
        "--iii-check",
        action="append",
        default=[],
        metavar="ID",
        help="run only checks whose id matches (a family, an id, or a glob)",
    )
    group.addoption(
        "--iii-report-dir",
        default=None,
        metavar="DIR",
        help="write results.json, JUnit XML and summaries of the checks here",
    )
    group.addoption(
        "--iii-manifest",
        action="append",
        default=[],
        metavar="FILE",
        help="extra expectation manifest (known deviations) to apply",
    )
    parser.addini("iii_sdks", "default SDK specs when --iii-sdk is not given", type="linelist")


def _selected_specs(config: pytest.Config) -> list[Any]:
    from conformance.sdk import SdkSpecError, custom_driver_spec, parse_sdk_spec

    raw = config.getoption("--iii-sdk") or []
    drivers = config.getoption("--iii-driver") or []
    if not raw and not drivers:
        env = os.environ.get("III_CONFORMANCE_SDKS")
        raw = env.split(",") if env else (config.getini("iii_sdks") or list(DEFAULT_SDKS))
    try:
        specs = [parse_sdk_spec(s.strip()) for s in raw if s.strip()]
        specs += [custom_driver_spec(d) for d in drivers]
    except SdkSpecError as exc:
        raise pytest.UsageError(f"iii-conformance: {exc}") from exc
    return specs


def profile(config: pytest.Config) -> str:
    return config.getoption("--iii-profile") or os.environ.get("III_CONFORMANCE_PROFILE") or "gate"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "iii_sdk(spec): run only against SDKs matching spec")
    config.addinivalue_line("markers", "nightly: runs only in the nightly profile")
    config.addinivalue_line(
        "markers", "iii_check(id, title, contract): a conformance check and the contract line"
    )
    from conformance.profiles import register_hypothesis_profiles

    # Load a profile only when asked: the plugin is active in every pytest run of the env.
    register_hypothesis_profiles(config.getoption("--iii-profile"))
    import conformance.profiles

    conformance.profiles.ACTIVE = profile(config)
    config._iii_specs = _selected_specs(config)  # type: ignore[attr-defined]
    from conformance.collect import Collector

    config.pluginmanager.register(Collector(config), "iii_collector")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "iii_sdk_spec" in metafunc.fixturenames:
        specs = metafunc.config._iii_specs  # type: ignore[attr-defined]
        marker = metafunc.definition.get_closest_marker("iii_sdk")
        if marker is not None:
            wanted = marker.args[0]
            specs = [s for s in specs if s.language == wanted or str(s) == wanted]
        metafunc.parametrize("iii_sdk_spec", specs, ids=[s.label for s in specs], scope="session")


def _check_selected(check_id: str, patterns: list[str]) -> bool:
    import fnmatch

    return any(
        check_id == p or check_id.startswith(p + ".") or fnmatch.fnmatchcase(check_id, p)
        for p in patterns
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    patterns = config.getoption("--iii-check")
    if patterns:
        keep, drop = [], []
        for item in items:
            m = item.get_closest_marker("iii_check")
            (keep if m is not None and _check_selected(m.args[0], patterns) else drop).append(item)
        if drop:
            config.hook.pytest_deselected(items=drop)
            items[:] = keep
    if profile(config) == "nightly":
        return
    skip = pytest.mark.skip(reason="nightly profile only (--iii-profile nightly)")
    for item in items:
        if item.get_closest_marker("nightly") is not None:
            item.add_marker(skip)


_installed: dict[Any, Any] = {}


@pytest.fixture(scope="session")
def iii_sdk(iii_sdk_spec: Any) -> Any:
    """The SDK under test, installed (or reused from the cache): an ``InstalledSdk``."""
    from conformance.sdk import SdkInstallError, install

    if iii_sdk_spec not in _installed:
        try:
            _installed[iii_sdk_spec] = install(iii_sdk_spec)
        except SdkInstallError as exc:
            pytest.exit(f"iii-conformance: cannot install {iii_sdk_spec}: {exc}", returncode=2)
    return _installed[iii_sdk_spec]


@pytest.fixture
def verdict(request: pytest.FixtureRequest) -> Any:
    """The check's verdict recorder: ``verdict.evidence(...)``, ``verdict.non_strict(...)``."""
    from conformance.verdict import VerdictRecorder

    rec = VerdictRecorder()
    request.node._iii_verdict = rec
    return rec


@pytest_asyncio.fixture
async def fake_engine() -> AsyncIterator[FakeEngine]:
    """A fresh fake engine on an ephemeral loopback port, stopped after the test."""
    async with FakeEngine() as engine:
        yield engine


WorkerFactory = Callable[..., Awaitable[Any]]


@pytest_asyncio.fixture
async def sdk_worker_factory(iii_sdk: Any, fake_engine: FakeEngine) -> AsyncIterator[WorkerFactory]:
    """``await sdk_worker_factory(name=..., reconnection=..., functions={...}, url=...)``.

    Starts a driver for the SDK under test and connects it to ``url`` (the fake engine by
    default); with ``functions`` it registers them and waits until the engine has them. Every
    worker is shut down and its process group killed after the test.
    """
    from conformance.scenario import Scenario

    async with contextlib.AsyncExitStack() as stack:
        scene = Scenario(fake_engine, iii_sdk, stack)

        async def make(
            name: str | None = None, *, wait_registered: bool | None = None, **kw: Any
        ) -> Any:
            if wait_registered is None:
                wait_registered = bool(kw.get("functions"))
            return await scene.worker(name, wait_registered=wait_registered, **kw)

        yield make


@pytest_asyncio.fixture
async def sdk_worker(sdk_worker_factory: WorkerFactory) -> Any:
    """One worker of the SDK under test, connected to ``fake_engine``."""
    return await sdk_worker_factory()
