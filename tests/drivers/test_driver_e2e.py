"""Both reference drivers against a real WebSocket server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid

import pytest

from conformance.drivers import schemas
from conformance.drivers.client import (
    CommandFailed,
    DriverCrashed,
    DriverTimeout,
    start_driver,
)
from conformance.sdk import custom_driver_spec, install


def _gone(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _name(sdk) -> str:
    return f"conf-{sdk.spec.language}-{uuid.uuid4().hex[:6]}"


async def test_invoke_trigger_state_shutdown(sdk, engine):
    name = _name(sdk)
    async with start_driver(sdk) as drv:
        ready = drv.ready
        assert ready["sdk"]["language"] == sdk.spec.language
        assert ready["sdk"]["version"] == sdk.sdk_version
        assert isinstance(ready["t_ns"], int)

        conn = await drv.connect(engine.url, name=name, invocation_timeout_ms=3000)
        schemas.validate_result("connect", conn)
        await drv.register_function("conf::echo", "echo")
        await drv.register_function("conf::boom", {"kind": "fail", "message": "boom"})
        await engine.wait_function(name, "conf::boom")

        # engine -> worker invocation comes back as the handler result
        mark = drv.mark()
        result, error = await engine.invoke("conf::echo", {"hello": "world", "n": [1, 2]})
        assert error is None
        assert result == {"hello": "world", "n": [1, 2]} or (
            isinstance(result, dict) and result.get("hello") == "world"
        )
        ev = await drv.wait_event("invoked", 5, what="invoked conf::echo", since=mark)
        assert ev["function_id"] == "conf::echo"
        assert ev["payload"]["hello"] == "world"
        assert ev["t_ns"] > ready["t_ns"]

        _result, error = await engine.invoke("conf::boom", {})
        assert error is not None and error["code"] == "invocation_failed"
        assert "boom" in error["message"]

        # a call nobody answers times out in the SDK with TIMEOUT
        engine.blackhole("conf::blackhole")
        out = await drv.trigger("conf::blackhole", {"x": 1}, timeout_ms=500)
        schemas.validate_result("trigger", dict(out.raw))
        assert not out.ok
        assert out.code == "TIMEOUT"
        assert 450 <= out.elapsed_ms < 2000
        assert out.t_end_ns - out.t_start_ns == pytest.approx(out.elapsed_ms * 1e6, rel=0.01)

        void = await drv.trigger("conf::blackhole", {"x": 2}, void=True)
        assert void.ok and void.result is None and void.elapsed_ms < 500

        state = await drv.state()
        if drv.capabilities["state"]:
            assert state == "connected"
            assert any(e["event"] == "state_changed" for e in drv.events)
        else:
            assert state == "unsupported"

        for e in drv.events:
            schemas.validate_event(e)
        pid = drv.pid
        await drv.shutdown()
        assert drv.returncode == 0
    assert _gone(pid)


async def test_routed_trigger_and_triggers(sdk, engine):
    if engine.kind != "fake_engine":
        pytest.skip("needs fake_engine routing")
    name = _name(sdk)
    async with start_driver(sdk) as drv:
        await drv.connect(engine.url, name=name, invocation_timeout_ms=3000)
        await drv.register_function("conf::rec", "record")
        await drv.register_function("conf::slow", "sleep:200")
        await engine.wait_function(name, "conf::slow")
        out = await drv.trigger("conf::rec", {"via": "engine"}, timeout_ms=3000)
        assert out.ok, out
        assert out.result["via"] == "engine"
        recs = await drv.records("conf::rec")
        assert recs["conf::rec"][0]["via"] == "engine"
        slow = await drv.trigger("conf::slow", {"s": 1}, timeout_ms=3000)
        assert slow.ok and slow.elapsed_ms >= 190
        missing = await drv.trigger("conf::nope", {}, timeout_ms=3000)
        assert not missing.ok and missing.code == "function_not_found"
        trig = await drv.register_trigger(
            "http", "conf::rec", {"api_path": "/r", "http_method": "POST"}
        )
        assert trig.handle and (trig.trigger_id is None or isinstance(trig.trigger_id, str))
        await drv.unregister_trigger(trig)

        # a trigger type this worker provides: the engine forwards registrations to it
        await drv.register_trigger_type("conf-type", "conformance test type")
        mark = drv.mark()
        own = await drv.register_trigger("conf-type", "conf::rec", {"k": 1})
        call = await drv.wait_event(
            {"event": "trigger_type_call", "op": "register"},
            5,
            what="trigger_type_call",
            since=mark,
        )
        assert call["trigger_type"] == "conf-type"
        assert call["trigger"]["function_id"] == "conf::rec"
        assert call["trigger"]["config"] == {"k": 1}
        await drv.unregister_trigger(own)
        await drv.wait_event(
            {"event": "trigger_type_call", "op": "unregister"},
            5,
            what="unregister call",
            since=mark,
        )
        await drv.unregister_trigger_type("conf-type")
        await drv.unregister_function("conf::slow")
        with pytest.raises(CommandFailed, match="not registered"):
            await drv.unregister_function("conf::slow")
        for e in drv.events:
            schemas.validate_event(e)


async def test_commands_before_connect_fail_cleanly(sdk):
    async with start_driver(sdk) as drv:
        assert await drv.state() == "not_connected"
        with pytest.raises(CommandFailed, match="not connected"):
            await drv.register_function("conf::x", "echo")
        with pytest.raises(CommandFailed, match="unknown command"):
            await drv.command("bogus")


async def test_killed_driver_raises_crashed(sdk):
    async with start_driver(sdk) as drv:
        os.killpg(drv.pid, signal.SIGKILL)
        with pytest.raises(DriverCrashed) as ei:
            await drv.wait_event("never", 10, what="never")
        assert ei.value.returncode == -signal.SIGKILL
        with pytest.raises(DriverCrashed):
            await drv.state()


# --- misbehaving custom drivers ---------------------------------------------------------------


def _script_driver(code: str):
    return install(custom_driver_spec([sys.executable, "-c", code]))


async def test_driver_exiting_at_start_reports_exit_code_and_stderr():
    sdk = _script_driver("import sys; sys.stderr.write('kaboom at start\\n'); sys.exit(7)")
    with pytest.raises(DriverCrashed) as ei:
        async with start_driver(sdk):
            pass
    assert ei.value.returncode == 7
    assert "kaboom at start" in ei.value.stderr_tail


async def test_driver_printing_garbage_is_a_crash():
    code = (
        "import json,time,sys\n"
        "print(json.dumps({'event':'ready','t_ns':time.monotonic_ns(),'protocol':1,'pid':0,"
        "'sdk':{'language':'x','version':None},'capabilities':{}}), flush=True)\n"
        "sys.stdin.readline(); print('hello I am a log line', flush=True); time.sleep(30)\n"
    )
    sdk = _script_driver(code)
    async with start_driver(sdk) as drv:
        with pytest.raises(DriverCrashed, match="non-protocol output"):
            await drv.state()
        pid = drv.pid
    assert _gone(pid)


async def test_silent_driver_times_out_naming_the_wait():
    code = (
        "import json,time,sys\n"
        "print(json.dumps({'event':'ready','t_ns':time.monotonic_ns(),'protocol':1,'pid':0,"
        "'sdk':{'language':'x','version':None},'capabilities':{}}), flush=True)\n"
        "import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "time.sleep(60)\n"
    )
    sdk = _script_driver(code)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    async with start_driver(sdk) as drv:
        with pytest.raises(DriverTimeout, match="reply to 'state'"):
            await drv.command("state", timeout=0.5)
        with pytest.raises(DriverTimeout, match="the moon"):
            await drv.wait_event("invoked", 0.2, what="the moon")
        pid = drv.pid
    # shutdown (ignored) -> SIGTERM (ignored) -> SIGKILL, all bounded
    assert loop.time() - t0 < 20
    assert _gone(pid)


async def test_never_ready_driver_times_out():
    sdk = _script_driver("import time; time.sleep(60)")
    with pytest.raises(DriverTimeout, match="'ready'"):
        async with start_driver(sdk, ready_timeout=0.5):
            pass


async def test_connect_without_wait_to_a_dead_engine(sdk):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with start_driver(sdk) as drv:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        r = await drv.connect(
            f"ws://127.0.0.1:{port}",
            name=_name(sdk),
            reconnection={"initial_delay_ms": 50, "max_delay_ms": 100},
            wait=False,
        )
        assert loop.time() - t0 < 2
        expected = {"pending"} if drv.capabilities["connect_blocks"] else {"unsupported"}
        assert r["state"] in expected | {"connecting", "reconnecting"}
        assert await drv.state() in expected | {"connecting", "reconnecting"}
        pid = drv.pid
    assert _gone(pid)


async def test_cancellation_inside_start_driver_cleans_up(python_sdk):
    started: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def body() -> None:
        async with start_driver(python_sdk) as drv:
            started.set_result(drv.pid)
            await asyncio.sleep(60)

    task = asyncio.create_task(body())
    pid = await asyncio.wait_for(started, 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 20)
    assert _gone(pid)
