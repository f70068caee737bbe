"""Hypothesis strategies for fault schedules; they shrink towards fewer, earlier, milder faults."""

from __future__ import annotations

from hypothesis import strategies as st

from .schedule import Fault, Schedule

streams = st.sampled_from(["downstream", "upstream"])


def network_fault(at: st.SearchStrategy[int]) -> st.SearchStrategy[Fault]:
    return st.one_of(
        st.builds(
            lambda t, lat, jit, s: Fault.make(t, "latency", latency=lat, jitter=jit, stream=s),
            at,
            st.integers(0, 150),
            st.integers(0, 50),
            streams,
        ),
        st.builds(
            lambda t, avg, var, d, s: Fault.make(
                t, "slicer", average_size=avg, size_variation=min(var, avg - 1), delay=d, stream=s
            ),
            at,
            st.integers(2, 64),
            st.integers(0, 32),
            st.integers(0, 500),
            streams,
        ),
        st.builds(lambda t, s: Fault.make(t, "reset_peer", timeout=0, stream=s), at, streams),
        st.builds(
            lambda t, side, d: Fault.make(t, "half_open", side=side, delay=d),
            at,
            st.sampled_from(["client", "upstream"]),
            st.integers(0, 1500),
        ),
        st.builds(lambda t, ms: Fault.make(t, "down", for_ms=ms), at, st.integers(50, 1500)),
    )


def protocol_fault(at: st.SearchStrategy[int]) -> st.SearchStrategy[Fault]:
    frame_types = st.sampled_from(
        ["workerregistered", "invokefunction", "invocationresult", "pong"]
    )
    return st.one_of(
        st.builds(
            lambda t, ty, n: Fault.make(t, "drop", type=ty, times=n),
            at,
            frame_types,
            st.integers(1, 3),
        ),
        st.builds(
            lambda t, ty, ms: Fault.make(t, "delay", type=ty, ms=ms),
            at,
            frame_types,
            st.integers(10, 500),
        ),
        st.builds(lambda t, ty: Fault.make(t, "duplicate", type=ty), at, frame_types),
        st.builds(lambda t, k: Fault.make(t, "close_mid_replay", after=k), at, st.integers(1, 4)),
        st.builds(lambda t, n: Fault.make(t, "refuse", status=503, times=n), at, st.integers(1, 3)),
        st.builds(
            lambda t, m: Fault.make(t, "disconnect", mode=m),
            at,
            st.sampled_from(["close", "abort", "reset"]),
        ),
        st.builds(lambda t: Fault.make(t, "restart"), at),
        st.builds(
            lambda t, txt: Fault.make(t, "malformed", payload=txt),
            at,
            st.sampled_from(["not-json", "{}", '{"type":"error"}']),
        ),
    )


def schedules(
    *, network: bool = True, protocol: bool = True, max_faults: int = 3, horizon_ms: int = 2000
) -> st.SearchStrategy[Schedule]:
    """Schedules of up to ``max_faults`` faults within ``horizon_ms`` of the start."""
    at = st.integers(0, horizon_ms)
    kinds = []
    if network:
        kinds.append(network_fault(at))
    if protocol:
        kinds.append(protocol_fault(at))
    if not kinds:
        raise ValueError("a schedule needs network or protocol faults")
    return st.lists(st.one_of(*kinds), max_size=max_faults).map(lambda fs: Schedule(tuple(fs)))
