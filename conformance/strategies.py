"""Hypothesis strategies shared by the conformance families.

Strategies here generate *inputs to a scenario* (operation lists, fault choices); the family
module interprets them against the SDK and a model. Keep each strategy's simplest example
meaningful: the gate runs few derandomised examples and Hypothesis tries the simplest first.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

# --- replay: register/unregister/disconnect operation sequences ------------------------------

#: How the engine ends a connection: close frame 1000 / 1001, abort (no close frame), TCP RST.
DROP_MODES = ("close1000", "close1001", "abort", "reset")

#: One operation, a tuple whose first item is its kind:
#:   ("reg", fid)                register a function (echo)       ("unreg", fid)
#:   ("regtype", type_id)        register a trigger type         ("unregtype", type_id)
#:   ("trig", name, fid)         register an http trigger ``name`` on the live ``fid``
#:   ("untrig", name)            unregister that trigger
#:   ("drop", mode)              the engine drops the connection (one of DROP_MODES)
#:   ("restart",)                the engine restarts: every identity and registration forgotten
#:   ("mid_drop", k)             drop, then abort the reconnection after its (k mod n)-th frame
Op = tuple[Any, ...]

DISCONNECTS = ("drop", "restart", "mid_drop")
_REGISTRATION_KINDS = ("reg", "unreg", "regtype", "unregtype", "trig", "untrig")


def fn_id(i: int) -> str:
    return f"rp::f{i}"


def type_id(i: int) -> str:
    return f"rp-type-{i}"


@st.composite
def replay_ops(
    draw: st.DrawFn,
    *,
    min_ops: int = 2,
    max_ops: int = 7,
    n_functions: int = 3,
    n_types: int = 1,
    drop_modes: tuple[str, ...] = DROP_MODES,
    restart: bool = True,
    mid_replay: bool = False,
    require: tuple[str, ...] = (),
) -> list[Op]:
    """A valid operation list, generated against a model of what is live.

    Only applicable operations are drawn (unregister a live function that no live trigger
    targets; trigger a live function), so every op has a definite expected effect. The list
    always ends with a disconnect, so the effect of every operation shows in a replay.
    ``require`` names op kinds that must appear (any kind above); a required registration
    change is followed by a disconnect, so its effect is replayed (or not) right away.
    """
    fns: set[str] = set()
    types: set[str] = set()
    trigs: dict[str, str] = {}
    n_trig = 0
    ops: list[Op] = []

    def applicable() -> list[str]:
        kinds = []
        if len(fns) < n_functions:
            kinds.append("reg")
        if fns:
            kinds.append("trig")
        kinds.append("drop")
        if any(f not in trigs.values() for f in fns):
            kinds.append("unreg")
        if trigs:
            kinds.append("untrig")
        if len(types) < n_types:
            kinds.append("regtype")
        if types:
            kinds.append("unregtype")
        if restart:
            kinds.append("restart")
        if mid_replay:
            kinds.append("mid_drop")
        return kinds

    def apply(kind: str) -> Op:
        nonlocal n_trig
        if kind == "reg":
            free = [fn_id(i) for i in range(n_functions) if fn_id(i) not in fns]
            f = draw(st.sampled_from(free))
            fns.add(f)
            return ("reg", f)
        if kind == "unreg":
            f = draw(st.sampled_from(sorted(f for f in fns if f not in trigs.values())))
            fns.discard(f)
            return ("unreg", f)
        if kind == "regtype":
            t = draw(
                st.sampled_from([type_id(i) for i in range(n_types) if type_id(i) not in types])
            )
            types.add(t)
            return ("regtype", t)
        if kind == "unregtype":
            t = draw(st.sampled_from(sorted(types)))
            types.discard(t)
            return ("unregtype", t)
        if kind == "trig":
            f = draw(st.sampled_from(sorted(fns)))
            n_trig += 1
            name = f"t{n_trig}"
            trigs[name] = f
            return ("trig", name, f)
        if kind == "untrig":
            name = draw(st.sampled_from(sorted(trigs)))
            del trigs[name]
            return ("untrig", name)
        if kind == "drop":
            return ("drop", draw(st.sampled_from(drop_modes)))
        if kind == "restart":
            return ("restart",)
        return ("mid_drop", draw(st.integers(0, 7)))

    for _ in range(draw(st.integers(min_ops, max_ops))):
        ops.append(apply(draw(st.sampled_from(applicable()))))
    for kind in require:
        if not any(op[0] == kind for op in ops):
            _ensure_applicable(kind, ops, apply, fns, trigs, types)
            ops.append(apply(kind))
            if kind in _REGISTRATION_KINDS:
                ops.append(("drop", draw(st.sampled_from(drop_modes))))
    if ops[-1][0] not in DISCONNECTS:
        ops.append(("drop", draw(st.sampled_from(drop_modes))))
    return ops


def _ensure_applicable(
    kind: str,
    ops: list[Op],
    apply: Any,
    fns: set[str],
    trigs: dict[str, str],
    types: set[str],
) -> None:
    """Add the registrations a required unregistration (or trigger) needs first."""
    if kind == "unreg" and not any(f not in trigs.values() for f in fns):
        if not fns:
            ops.append(apply("reg"))
        else:  # every live function is a trigger target: free one
            target = sorted(fns)[0]
            for name in sorted(n for n, f in trigs.items() if f == target):
                ops.append(("untrig", name))
                del trigs[name]
    if kind in ("untrig", "trig") and not fns:
        ops.append(apply("reg"))
    if kind == "untrig" and not trigs:
        ops.append(apply("trig"))
    if kind == "unregtype" and not types:
        ops.append(apply("regtype"))


def live_after(ops: list[Op]) -> dict[str, Any]:
    """What the model says is live after ``ops``: functions, trigger types and triggers."""
    fns: set[str] = set()
    types: set[str] = set()
    trigs: dict[str, str] = {}
    for op in ops:
        kind = op[0]
        if kind == "reg":
            fns.add(op[1])
        elif kind == "unreg":
            fns.discard(op[1])
        elif kind == "regtype":
            types.add(op[1])
        elif kind == "unregtype":
            types.discard(op[1])
        elif kind == "trig":
            trigs[op[1]] = op[2]
        elif kind == "untrig":
            trigs.pop(op[1], None)
    return {"functions": fns, "trigger_types": types, "triggers": trigs}


# --- backoff / jitter: reconnection configs -----------------------------------------------------


@st.composite
def reconnection_configs(
    draw: st.DrawFn,
    *,
    initial: tuple[int, int] = (50, 200),
    multiplier: tuple[float, float] = (1.5, 3.0),
    max_delay: tuple[int, int] = (300, 1500),
    jitter: tuple[float, float] = (0.0, 0.5),
    max_retries: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """A worker ``reconnection`` config (driver field names) with small delays, so a check sees
    growth, the cap and jitter within a few seconds. Multipliers are drawn in steps of 0.05 and
    jitter factors in steps of 0.05, so examples print readably; the simplest example is the
    smallest initial delay, multiplier and cap with the default jitter 0.3."""
    cfg: dict[str, Any] = {
        "initial_delay_ms": draw(st.integers(*initial)),
        "backoff_multiplier": draw(
            st.integers(round(multiplier[0] * 20), round(multiplier[1] * 20))
        )
        / 20,
        "max_delay_ms": draw(st.integers(*max_delay)),
        "jitter_factor": draw(_jitter_factors(*jitter)),
    }
    if max_retries is not None:
        cfg["max_retries"] = draw(st.integers(*max_retries))
    return cfg


def _jitter_factors(lo: float, hi: float) -> st.SearchStrategy[float]:
    """Jitter factors in [lo, hi] in steps of 0.05; shrinks towards the SDK default 0.3 (jitter
    0 is a schedule without randomness: backoff.no_jitter covers it)."""
    grid = st.integers(round(lo * 20), round(hi * 20)).map(lambda k: k / 20)
    return st.one_of(st.just(0.3), grid) if lo <= 0.3 <= hi else grid
