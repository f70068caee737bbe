"""Harness side of the driver contract (SPEC.md): spawn a driver, send commands, read events.

    async with start_driver(install(parse_sdk_spec("python@0.25.0"))) as drv:
        await drv.connect(engine.url, name="conf-py")
        await drv.register_function("conf::echo", "echo")
        out = await drv.trigger("conf::missing", {}, timeout_ms=500)
        assert out.code == "TIMEOUT"

Every wait is bounded. A driver that exits, or prints anything but JSON
objects on stdout, raises :class:`DriverCrashed` (exit code + stderr tail) in
every pending and later call instead of hanging.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import shutil
import signal
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..sdk import InstalledSdk

__all__ = [
    "Behaviour",
    "CommandFailed",
    "Driver",
    "DriverCrashed",
    "DriverError",
    "DriverTimeout",
    "RegisteredTrigger",
    "TriggerOutcome",
    "echo",
    "fail",
    "record",
    "sleep",
    "start_driver",
]

STDERR_KEEP_LINES = 2000
DEFAULT_COMMAND_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 45.0  # Python's register_worker may block 30 s
TRIGGER_SLACK_S = 10.0


class DriverError(Exception):
    """Base class of everything this module raises about a driver."""


class DriverTimeout(DriverError, TimeoutError):
    """A bounded wait on a driver ran out. ``what`` names what was awaited."""

    def __init__(self, what: str, timeout: float, stderr_tail: str = "") -> None:
        self.what = what
        self.timeout = timeout
        self.stderr_tail = stderr_tail
        msg = f"timed out after {timeout:.2f}s waiting for {what}"
        if stderr_tail:
            msg += f"\n--- driver stderr tail ---\n{stderr_tail}"
        super().__init__(msg)


class DriverCrashed(DriverError):
    """The driver exited unexpectedly or broke the protocol."""

    def __init__(self, reason: str, returncode: int | None, stderr_tail: str) -> None:
        self.reason = reason
        self.returncode = returncode
        self.stderr_tail = stderr_tail
        super().__init__(
            f"driver crashed: {reason} (exit code {returncode})\n"
            f"--- driver stderr tail ---\n{stderr_tail or '(empty)'}"
        )


class CommandFailed(DriverError):
    """The driver answered a command with ``ok: false``."""

    def __init__(self, cmd: str, error: Mapping[str, Any]) -> None:
        self.cmd = cmd
        self.error = dict(error)
        super().__init__(f"driver command {cmd!r} failed: {self.error.get('message')}")


Behaviour = dict[str, Any]


def echo() -> Behaviour:
    return {"kind": "echo"}


def record() -> Behaviour:
    return {"kind": "record"}


def fail(message: str = "driver-induced failure") -> Behaviour:
    return {"kind": "fail", "message": message}


def sleep(ms: float) -> Behaviour:
    return {"kind": "sleep", "ms": ms}


def _behaviour(b: str | Behaviour | None) -> Behaviour:
    if b is None:
        return echo()
    if isinstance(b, str):
        if b in ("echo", "record", "fail"):
            return {"kind": b}
        if b.startswith("sleep:"):
            return sleep(float(b.split(":", 1)[1]))
        raise ValueError(f"unknown behaviour {b!r} (echo, record, fail, sleep:MS or a dict)")
    return dict(b)


@dataclass(frozen=True)
class TriggerOutcome:
    """What a worker-side ``trigger()`` produced, as measured inside the driver."""

    ok: bool
    result: Any = None
    code: str | None = None
    message: str | None = None
    error_class: str | None = None
    elapsed_ms: float = 0.0
    t_start_ns: int | None = None
    t_end_ns: int | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_result(cls, r: Mapping[str, Any]) -> TriggerOutcome:
        err = r.get("error") or {}
        return cls(
            ok=r.get("outcome") == "ok",
            result=r.get("result"),
            code=err.get("code"),
            message=err.get("message"),
            error_class=err.get("class"),
            elapsed_ms=float(r.get("elapsed_ms") or 0.0),
            t_start_ns=r.get("t_start_ns"),
            t_end_ns=r.get("t_end_ns"),
            raw=dict(r),
        )


@dataclass(frozen=True)
class RegisteredTrigger:
    handle: str
    trigger_id: str | None  # None when the SDK does not expose it


def _opt(**fields: Any) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


EventPredicate = Callable[[dict[str, Any]], bool] | str | Mapping[str, Any]


def _matcher(pred: EventPredicate) -> Callable[[dict[str, Any]], bool]:
    if callable(pred):
        return pred
    if isinstance(pred, str):
        return lambda e: e.get("event") == pred
    items = dict(pred)
    return lambda e: all(e.get(k) == v for k, v in items.items())


class Driver:
    """A running driver process. Create with :func:`start_driver`."""

    def __init__(self, sdk: InstalledSdk, proc: asyncio.subprocess.Process) -> None:
        self.sdk = sdk
        self.proc = proc
        self.pid = proc.pid
        self.events: list[dict[str, Any]] = []
        self.ready: dict[str, Any] | None = None
        self._stderr: collections.deque[str] = collections.deque(maxlen=STDERR_KEEP_LINES)
        self._pending: dict[str, tuple[str, asyncio.Future[dict[str, Any]]]] = {}
        self._next_id = 0
        self._changed = asyncio.Condition()
        self._dead: DriverCrashed | None = None
        self._expect_exit = False
        self._unresponsive = False
        self._invocation_timeout_ms: float | None = None
        self._stdout_task = asyncio.create_task(self._read_stdout(), name=f"drv-{proc.pid}-out")
        self._stderr_task = asyncio.create_task(self._read_stderr(), name=f"drv-{proc.pid}-err")

    # --- properties ------------------------------------------------------------------
    @property
    def label(self) -> str:
        return self.sdk.label

    @property
    def capabilities(self) -> dict[str, Any]:
        return dict((self.ready or {}).get("capabilities") or {})

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    def stderr_tail(self, n: int = 40) -> str:
        return "\n".join(list(self._stderr)[-n:])

    def stderr_lines(self) -> list[str]:
        return list(self._stderr)

    def mark(self) -> int:
        """Index to pass as ``since=`` to only see events that arrive after now."""
        return len(self.events)

    def invocations(self, function_id: str | None = None) -> list[dict[str, Any]]:
        return [
            e
            for e in self.events
            if e.get("event") == "invoked"
            and (function_id is None or e.get("function_id") == function_id)
        ]

    # --- readers ---------------------------------------------------------------------
    async def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        reason = "stdout closed"
        try:
            while True:
                try:
                    raw = await self.proc.stdout.readline()
                except ValueError:  # line longer than the stream limit
                    reason = "stdout line exceeds the size limit"
                    break
                if not raw:
                    break
                line = raw.decode("utf-8", errors="replace").strip()
                if not line:
                    continue
                try:
                    ev = json.loads(line)
                    if not isinstance(ev, dict) or not isinstance(ev.get("event"), str):
                        raise ValueError("not an event object")
                except ValueError:
                    reason = f"non-protocol output on stdout: {line[:300]!r}"
                    self._kill_now()
                    break
                await self._dispatch(ev)
        finally:
            rc = None
            with contextlib.suppress(asyncio.TimeoutError, ProcessLookupError):
                rc = await asyncio.wait_for(self.proc.wait(), timeout=5)
            if self._dead is None:
                await self._stderr_settle()
                if self._expect_exit and reason == "stdout closed":
                    reason = "driver exited after shutdown"
                self._dead = DriverCrashed(reason, rc, self.stderr_tail())
            for _cmd, fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(self._dead)
            self._pending.clear()
            async with self._changed:
                self._changed.notify_all()

    async def _stderr_settle(self) -> None:
        with contextlib.suppress(asyncio.TimeoutError, Exception):
            await asyncio.wait_for(asyncio.shield(self._stderr_task), timeout=1)

    async def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        while True:
            try:
                raw = await self.proc.stderr.readline()
            except ValueError:
                self._stderr.append("[stderr line too long, truncated]")
                continue
            if not raw:
                return
            self._stderr.append(raw.decode("utf-8", errors="replace").rstrip("\n"))

    async def _dispatch(self, ev: dict[str, Any]) -> None:
        ev.setdefault("_recv_ns", time.monotonic_ns())
        self.events.append(ev)
        kind = ev["event"]
        if kind == "ready" and self.ready is None:
            self.ready = ev
        elif kind == "reply":
            entry = self._pending.pop(str(ev.get("id")), None)
            if entry is not None and not entry[1].done():
                entry[1].set_result(ev)
        elif kind == "fatal":
            self._stderr.append(f"[driver fatal] {ev.get('message')}")
        async with self._changed:
            self._changed.notify_all()

    def _kill_now(self) -> None:
        for sig in (signal.SIGKILL,):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, sig)

    # --- waiting ---------------------------------------------------------------------
    def _check_alive(self) -> None:
        if self._dead is not None and not self._expect_exit:
            raise self._dead

    async def wait_event(
        self,
        predicate: EventPredicate,
        timeout: float,
        what: str = "event",
        *,
        since: int = 0,
    ) -> dict[str, Any]:
        """First event at index >= ``since`` matching ``predicate``.

        ``predicate`` is a callable, an event name, or a dict of fields that must
        all be equal. Raises :class:`DriverTimeout` naming ``what``, or
        :class:`DriverCrashed` if the driver died before a match.
        """
        match = _matcher(predicate)
        deadline = time.monotonic() + timeout
        idx = since
        async with self._changed:
            while True:
                while idx < len(self.events):
                    ev = self.events[idx]
                    idx += 1
                    if match(ev):
                        return ev
                if self._dead is not None:
                    raise self._dead
                left = deadline - time.monotonic()
                if left <= 0:
                    raise DriverTimeout(what, timeout, self.stderr_tail())
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), timeout=left)

    async def wait_ready(self, timeout: float = 30.0) -> dict[str, Any]:
        return await self.wait_event("ready", timeout, what=f"'ready' from {self.label} driver")

    # --- commands --------------------------------------------------------------------
    async def command(
        self, cmd: str, fields: Mapping[str, Any] | None = None, *, timeout: float | None = None
    ) -> Any:
        """Send one command (``fields`` verbatim) and return its ``result``.

        Raises :class:`CommandFailed` on ``ok: false``, :class:`DriverTimeout` when
        no reply arrives within ``timeout`` seconds, :class:`DriverCrashed` if the
        driver dies first.
        """
        self._check_alive()
        if self._dead is not None:
            raise self._dead
        self._next_id += 1
        cid = f"c{self._next_id}"
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[cid] = (cmd, fut)
        msg = {"id": cid, "cmd": cmd, **(fields or {})}
        line = (json.dumps(msg, separators=(",", ":")) + "\n").encode()
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(line)
            await asyncio.wait_for(self.proc.stdin.drain(), timeout=5)
        except (BrokenPipeError, ConnectionResetError, asyncio.TimeoutError) as e:
            self._pending.pop(cid, None)
            await asyncio.sleep(0.05)  # let the stdout reader record the exit
            if self._dead is not None:
                raise self._dead from e
            raise DriverCrashed(
                f"cannot write {cmd!r} to driver stdin: {e!r}", self.returncode, self.stderr_tail()
            ) from e
        t = DEFAULT_COMMAND_TIMEOUT_S if timeout is None else timeout
        try:
            reply = await asyncio.wait_for(asyncio.shield(fut), timeout=t)
        except asyncio.TimeoutError:
            self._pending.pop(cid, None)
            self._unresponsive = True
            raise DriverTimeout(f"reply to {cmd!r} (id {cid})", t, self.stderr_tail()) from None
        if not reply.get("ok"):
            raise CommandFailed(cmd, reply.get("error") or {})
        return reply.get("result")

    async def connect(
        self,
        url: str,
        *,
        name: str | None = None,
        reconnection: Mapping[str, Any] | None = None,
        invocation_timeout_ms: int | None = None,
        otel: bool = False,
        wait: bool = True,
        timeout: float = CONNECT_TIMEOUT_S,
    ) -> dict[str, Any]:
        """Create the SDK worker. Returns ``{"state", "blocked_ms"}``.

        With ``wait=False`` a driver whose SDK blocks on connect (Python) replies at
        once with state ``"pending"``; later commands wait for the worker.
        """
        if invocation_timeout_ms is not None:
            self._invocation_timeout_ms = invocation_timeout_ms
        fields = _opt(
            url=url,
            name=name,
            reconnection=dict(reconnection) if reconnection else None,
            invocation_timeout_ms=invocation_timeout_ms,
        )
        fields["otel"] = bool(otel)
        if not wait:
            fields["wait"] = False
        return await self.command("connect", fields, timeout=timeout)

    async def register_function(
        self,
        function_id: str,
        behaviour: str | Behaviour | None = "echo",
        *,
        description: str | None = None,
    ) -> None:
        await self.command(
            "register_function",
            _opt(function_id=function_id, behaviour=_behaviour(behaviour), description=description),
        )

    async def unregister_function(self, function_id: str) -> None:
        await self.command("unregister_function", {"function_id": function_id})

    async def register_trigger_type(
        self, trigger_type: str, description: str | None = None
    ) -> None:
        await self.command(
            "register_trigger_type", _opt(trigger_type=trigger_type, description=description)
        )

    async def unregister_trigger_type(self, trigger_type: str) -> None:
        await self.command("unregister_trigger_type", {"trigger_type": trigger_type})

    async def register_trigger(
        self, trigger_type: str, function_id: str, config: Any = None
    ) -> RegisteredTrigger:
        r = await self.command(
            "register_trigger",
            {
                "trigger_type": trigger_type,
                "function_id": function_id,
                "config": {} if config is None else config,
            },
        )
        return RegisteredTrigger(handle=r["handle"], trigger_id=r.get("trigger_id"))

    async def unregister_trigger(self, trigger: RegisteredTrigger | str) -> None:
        handle = trigger.handle if isinstance(trigger, RegisteredTrigger) else trigger
        await self.command("unregister_trigger", {"handle": handle})

    async def trigger(
        self,
        function_id: str,
        payload: Any,
        timeout_ms: int | None = None,
        void: bool = False,
        *,
        wait_timeout: float | None = None,
    ) -> TriggerOutcome:
        """Run ``trigger()`` inside the worker and report what it returned or raised.

        ``payload`` is required: ``None`` is sent as JSON null, which Python omits
        from the frame (iii-protocol.md §5.6). ``wait_timeout`` bounds the wait for
        the reply; default ``timeout_ms`` (or the connect default, or 30 s) + 10 s.
        """
        if wait_timeout is None:
            ms = timeout_ms if timeout_ms and timeout_ms > 0 else None
            ms = ms or self._invocation_timeout_ms or 30000
            wait_timeout = ms / 1000.0 + TRIGGER_SLACK_S
        fields: dict[str, Any] = {"function_id": function_id, "payload": payload}
        if timeout_ms is not None:
            fields["timeout_ms"] = timeout_ms
        if void:
            fields["action"] = "void"
        r = await self.command("trigger", fields, timeout=wait_timeout)
        return TriggerOutcome.from_result(r)

    async def state(self) -> str:
        """Connection state as the SDK reports it, or ``"unsupported"``/``"not_connected"``."""
        r = await self.command("state")
        return r["state"]

    async def records(self, function_id: str | None = None) -> dict[str, list[Any]]:
        r = await self.command("records", _opt(function_id=function_id))
        return r["records"]

    async def shutdown(self, timeout: float = 15.0) -> None:
        """Ask the SDK to shut down; the driver exits afterwards."""
        self._expect_exit = True
        try:
            await self.command("shutdown", timeout=timeout)
        except DriverCrashed:
            if self.returncode not in (0, None):
                raise
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.proc.wait(), timeout=5)

    # --- teardown ----------------------------------------------------------------------
    async def aclose(self, *, graceful: bool = True, timeout: float = 5.0) -> None:
        """Stop the driver: shutdown command, then SIGTERM, then SIGKILL of its group."""
        try:
            responsive = self.ready is not None and not self._unresponsive
            if self.proc.returncode is None and graceful and responsive and self._dead is None:
                with contextlib.suppress(DriverError, OSError):
                    await self.shutdown(timeout=timeout)
            if self.proc.returncode is None:
                with contextlib.suppress(Exception):
                    assert self.proc.stdin is not None
                    self.proc.stdin.close()
                await self._signal_and_wait(signal.SIGTERM, 2.0)
            if self.proc.returncode is None:
                await self._signal_and_wait(signal.SIGKILL, 5.0)
        except asyncio.CancelledError:
            self._kill_now()
            raise
        finally:
            self._expect_exit = True
            # Also take down anything the driver spawned into its group.
            self._kill_now()
            for t in (self._stdout_task, self._stderr_task):
                if not t.done():
                    t.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(
                    asyncio.gather(self._stdout_task, self._stderr_task, return_exceptions=True),
                    timeout=2,
                )

    async def _signal_and_wait(self, sig: signal.Signals, wait: float) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.proc.wait(), timeout=wait)


@contextlib.asynccontextmanager
async def start_driver(
    sdk: InstalledSdk,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    *,
    ready_timeout: float = 30.0,
) -> AsyncIterator[Driver]:
    """Spawn the driver for ``sdk`` in a new process group and wait for ``ready``.

    ``env`` is merged over ``os.environ`` and the SDK's own driver env. On exit
    (normal, error or cancellation) the driver is shut down, then SIGTERM'd,
    then SIGKILL'd, each step bounded.
    """
    full_env = dict(os.environ)
    full_env.update(sdk.env)
    # A private HOME: SDKs write files there (Python's ~/.iii/run process markers), and a
    # killed worker must not leave them behind in the user's home.
    home = tempfile.mkdtemp(prefix="iii-driver-home-")
    full_env["HOME"] = home
    if env:
        full_env.update(env)
    try:
        proc = await asyncio.create_subprocess_exec(
            *sdk.command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=full_env,
            cwd=cwd,
            start_new_session=True,
            limit=16 * 1024 * 1024,
        )
    except OSError as e:
        shutil.rmtree(home, ignore_errors=True)
        raise DriverCrashed(f"cannot start {list(sdk.command)}: {e}", None, "") from e
    drv = Driver(sdk, proc)
    try:
        await drv.wait_ready(ready_timeout)
        yield drv
    finally:
        try:
            await drv.aclose()
        finally:
            shutil.rmtree(home, ignore_errors=True)
