"""SPEC.md examples vs the JSON Schemas; SDK spec parsing; fast install failures."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import jsonschema
import pytest

from conformance.drivers import schemas
from conformance.sdk import (
    SdkInstallError,
    SdkSpec,
    SdkSpecError,
    custom_driver_spec,
    install,
    parse_sdk_spec,
)

SPEC_MD = Path(schemas.SCHEMA_DIR).parent / "SPEC.md"


def spec_examples() -> list[dict]:
    text = SPEC_MD.read_text()
    blocks = re.findall(r"```json\n(.*?)```", text, re.S)
    assert blocks, "SPEC.md has no ```json example block"
    out = []
    for block in blocks:
        for line in block.splitlines():
            if line.strip():
                out.append(json.loads(line))
    return out


def test_all_schemas_are_valid_schemas():
    for key, schema in schemas.load_schemas().items():
        cls = jsonschema.validators.validator_for(schema)
        cls.check_schema(schema)
        assert schema.get("$id", "").endswith(f"{key}.json")


def test_every_spec_example_validates_and_covers_every_schema():
    seen_cmds, seen_events = set(), set()
    for ex in spec_examples():
        if "cmd" in ex:
            schemas.validate_command(ex)
            seen_cmds.add(ex["cmd"])
        else:
            schemas.validate_event(ex)
            seen_events.add(ex["event"])
            if ex["event"] == "reply" and ex["ok"] and "outcome" in ex["result"]:
                schemas.validate_result("trigger", ex["result"])
    assert seen_cmds == set(schemas.command_names())
    assert seen_events == set(schemas.event_names())


@pytest.mark.parametrize(
    "bad",
    [
        {"cmd": "state"},  # no id
        {"id": "c1", "cmd": "connect"},  # no url
        {"id": "c1", "cmd": "connect", "url": "http://x"},
        {"id": "c1", "cmd": "connect", "url": "ws://x", "reconnection": {"bogus": 1}},
        {"id": "c1", "cmd": "connect", "url": "ws://x", "reconnection": {"jitter_factor": 2}},
        {"id": "c1", "cmd": "register_function", "function_id": "f", "behaviour": {"kind": "x"}},
        {
            "id": "c1",
            "cmd": "register_function",
            "function_id": "f",
            "behaviour": {"kind": "sleep"},
        },
        {"id": "c1", "cmd": "trigger", "function_id": "f"},  # payload required
        {"id": "c1", "cmd": "trigger", "function_id": "f", "payload": 1, "action": "enqueue"},
    ],
)
def test_schema_rejects_bad_commands(bad):
    with pytest.raises(jsonschema.ValidationError):
        schemas.validate_command(bad)


@pytest.mark.parametrize(
    "bad",
    [
        {"event": "reply", "id": "c1", "ok": True, "result": {}},  # no t_ns
        {"event": "reply", "t_ns": 1, "id": "c1", "ok": False},  # no error
        {"event": "reply", "t_ns": 1.5, "id": "c1", "ok": True, "result": {}},
        {"event": "invoked", "t_ns": 1, "function_id": "f", "payload": {}},
    ],
)
def test_schema_rejects_bad_events(bad):
    with pytest.raises(jsonschema.ValidationError):
        schemas.validate_event(bad)


def test_unknown_command_has_no_schema():
    with pytest.raises(ValueError):
        schemas.validate_command({"id": "c", "cmd": "launch_missiles"})


# --- SDK spec parsing -----------------------------------------------------------------------


def test_parse_versions():
    assert parse_sdk_spec("python@0.25.0") == SdkSpec("python", version="0.25.0")
    assert parse_sdk_spec("node@0.22.1") == SdkSpec("node", version="0.22.1")
    assert parse_sdk_spec(" Python@0.25.0rc1 ").version == "0.25.0rc1"
    assert parse_sdk_spec("node@1.0.0-beta.2").version == "1.0.0-beta.2"
    assert parse_sdk_spec("python@0.25.0").label == "python@0.25.0"
    hash(parse_sdk_spec("python@0.25.0"))  # frozen


def test_parse_paths(tmp_path):
    py = tmp_path / "py"
    py.mkdir()
    (py / "pyproject.toml").write_text("[project]\nname='iii-sdk'\n")
    nd = tmp_path / "nd"
    nd.mkdir()
    (nd / "package.json").write_text('{"name":"iii-sdk"}')
    s = parse_sdk_spec(f"python@{py}")
    assert s == SdkSpec("python", path=str(py))
    assert s.label == f"python@{py}"
    assert parse_sdk_spec(f"node@{nd}").path == str(nd)


@pytest.mark.parametrize(
    "text",
    [
        "python",
        "python@",
        "ruby@1.0.0",
        "@0.25.0",
        "python@0.0.0-nope",
        "python@>=0.25",
        "node@latest",
        "node@0.22",
        "node@/definitely/not/here",
        "python@./nope-missing-dir",
    ],
)
def test_parse_errors(text):
    with pytest.raises(SdkSpecError) as ei:
        parse_sdk_spec(text)
    assert isinstance(ei.value, SdkInstallError)
    assert text.strip() in str(ei.value) or "spec" in str(ei.value)


def test_parse_path_without_package_marker(tmp_path):
    with pytest.raises(SdkSpecError, match="not a python package checkout"):
        parse_sdk_spec(f"python@{tmp_path}")
    with pytest.raises(SdkSpecError, match="package.json"):
        parse_sdk_spec(f"node@{tmp_path}")


def test_custom_driver_spec():
    s = custom_driver_spec("./target/release/iii-rust-driver --verbose 'a b'")
    assert s.language == "custom"
    assert s.command == ("./target/release/iii-rust-driver", "--verbose", "a b")
    assert custom_driver_spec(["x", "y"]).command == ("x", "y")
    with pytest.raises(SdkSpecError):
        custom_driver_spec("")
    with pytest.raises(SdkInstallError, match="not found"):
        install(custom_driver_spec("no-such-driver-binary-xyz"))


# --- install failures are quick and clear -----------------------------------------------------


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("III_CONFORMANCE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_install_bad_spec_string_raises_before_anything(empty_cache):
    t0 = time.monotonic()
    with pytest.raises(SdkInstallError, match="0.0.0-nope"):
        install("python@0.0.0-nope")
    assert time.monotonic() - t0 < 1
    assert not empty_cache.exists()


def test_install_missing_node_version(empty_cache):
    import shutil

    if shutil.which("npm") is None:
        pytest.skip("npm not installed")
    t0 = time.monotonic()
    with pytest.raises(SdkInstallError) as ei:
        install("node@999.0.0")
    assert time.monotonic() - t0 < 60
    msg = str(ei.value)
    assert "no such version" in msg and "999.0.0" in msg
    assert "output tail" in msg
    leftovers = [p.name for p in (empty_cache / "sdks").iterdir() if not p.name.endswith(".lock")]
    assert leftovers == []


def test_install_missing_python_version(empty_cache):
    t0 = time.monotonic()
    with pytest.raises(SdkInstallError) as ei:
        install("python@99.0.0")
    assert time.monotonic() - t0 < 90
    msg = str(ei.value)
    assert "no such version" in msg and "iii-sdk==99.0.0" in msg
    leftovers = [p.name for p in (empty_cache / "sdks").iterdir() if not p.name.endswith(".lock")]
    assert leftovers == []


def test_cached_install_is_reused(python_sdk):
    t0 = time.monotonic()
    again = install("python@0.25.0")
    assert time.monotonic() - t0 < 2
    assert again.command == python_sdk.command
    assert again.sdk_version == "0.25.0"
    assert again.env["OTEL_ENABLED"] == "false"


def test_interrupted_install_leaves_nothing(empty_cache, monkeypatch):
    import conformance.sdk.installer as inst

    def boom(spec, tmp):
        tmp.mkdir(parents=True)
        (tmp / "half-written").write_text("x")
        raise KeyboardInterrupt

    monkeypatch.setattr(inst, "_build_python", boom)
    with pytest.raises(KeyboardInterrupt):
        inst.install("python@0.25.0")
    sdks = empty_cache / "sdks"
    assert [p.name for p in sdks.iterdir() if not p.name.endswith(".lock")] == []


def test_install_lock_is_exclusive(tmp_path, monkeypatch):
    import conformance.sdk.installer as inst

    with inst._Lock(tmp_path / "k.lock", 5):
        with pytest.raises(SdkInstallError, match="waiting for install lock"):
            with inst._Lock(tmp_path / "k.lock", 0.3):
                pass
    with inst._Lock(tmp_path / "k.lock", 0.3):
        pass


def test_cli_install_uses_cache(python_sdk):
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "conformance.sdk", "install", "python@0.25.0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "python@0.25.0: iii-sdk 0.25.0" in out.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "conformance.sdk", "install", "ruby@1.0.0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "unknown language" in bad.stderr
