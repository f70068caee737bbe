"""Isolated, cached SDK installs.

Layout under the cache dir (``$III_CONFORMANCE_CACHE`` or ``~/.cache/iii-conformance``)::

    sdks/python-0.25.0-cp311/      a venv with iii-sdk==0.25.0
    sdks/python-path-<hash>-cp311/ a venv with an editable install of a checkout
    sdks/node-0.22.1/              an npm prefix with node_modules/iii-sdk
    sdks/<key>.lock                flock(2) serialising installers of <key>

An install is built in a sibling temp dir, a marker file is written last, and
the dir is renamed into place, so a final dir without a marker never exists
and a Ctrl-C leaves at most a ``.tmp-*`` dir that the next install removes.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .spec import SdkInstallError, SdkSpec, parse_sdk_spec

MARKER = ".iii-conformance-installed.json"
DRIVERS_DIR = Path(__file__).resolve().parent.parent / "drivers"
PYTHON_DRIVER = DRIVERS_DIR / "python_driver.py"
NODE_DRIVER = DRIVERS_DIR / "node_driver.mjs"

#: Environment every driver gets unless the caller overrides it.
BASE_DRIVER_ENV = {"OTEL_ENABLED": "false", "PYTHONUNBUFFERED": "1"}

INSTALL_TIMEOUT_S = float(os.environ.get("III_CONFORMANCE_INSTALL_TIMEOUT", "600"))
LOCK_TIMEOUT_S = INSTALL_TIMEOUT_S + 60
TAIL_LINES = 40


@dataclass(frozen=True)
class InstalledSdk:
    """An SDK ready to be driven: how to launch its driver."""

    spec: SdkSpec
    label: str  # "python@0.25.0", "node@/src/checkout", "custom:./drv"
    command: tuple[str, ...]  # exact argv that starts the driver
    env: Mapping[str, str] = field(default_factory=dict)  # extra env for the driver
    sdk_version: str | None = None  # version actually installed, when known
    location: Path | None = None  # venv / npm prefix, None for custom drivers


def cache_dir() -> Path:
    env = os.environ.get("III_CONFORMANCE_CACHE")
    base = Path(env).expanduser() if env else Path.home() / ".cache" / "iii-conformance"
    return base


def _tail(text: str, n: int = TAIL_LINES) -> str:
    lines = [ln if len(ln) <= 400 else ln[:400] + " ..." for ln in text.splitlines() if ln.strip()]
    return "\n".join(lines[-n:])


def _run(argv: list[str], what: str, *, cwd: Path | None = None, timeout: float | None = None):
    env = dict(os.environ)
    env.setdefault("PIP_DISABLE_PIP_VERSION_CHECK", "1")
    env.setdefault("npm_config_update_notifier", "false")
    try:
        proc = subprocess.run(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout or INSTALL_TIMEOUT_S,
        )
    except FileNotFoundError as e:
        raise SdkInstallError(f"{what}: {argv[0]} not found ({e})") from e
    except subprocess.TimeoutExpired as e:
        out = e.output.decode(errors="replace") if isinstance(e.output, bytes) else e.output or ""
        raise SdkInstallError(
            f"{what}: timed out after {e.timeout:.0f}s: {' '.join(argv)}\n--- output tail ---\n"
            f"{_tail(out)}"
        ) from e
    if proc.returncode != 0:
        hint = ""
        low = proc.stdout.lower()
        if "no matching distribution" in low or "no matching version" in low or "etarget" in low:
            hint = " (no such version in the registry)"
        elif "e404" in low or "404 not found" in low:
            hint = " (package not found in the registry)"
        raise SdkInstallError(
            f"{what} failed{hint}: exit {proc.returncode}: {' '.join(argv)}\n"
            f"--- output tail ---\n{_tail(proc.stdout)}"
        )
    return proc.stdout


class _Lock:
    def __init__(self, path: Path, timeout: float) -> None:
        self.path = path
        self.timeout = timeout
        self.fd: int | None = None

    def __enter__(self) -> _Lock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(self.fd)
                    self.fd = None
                    raise SdkInstallError(
                        f"timed out after {self.timeout:.0f}s waiting for install lock {self.path}"
                    ) from None
                time.sleep(0.2)

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def _py_tag(python: str) -> str:
    if python == sys.executable:
        return f"cp{sys.version_info.major}{sys.version_info.minor}"
    out = subprocess.run(
        [python, "-c", "import sys;print(f'cp{sys.version_info[0]}{sys.version_info[1]}')"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if out.returncode != 0:
        raise SdkInstallError(f"cannot run python interpreter {python}: {out.stderr.strip()}")
    return out.stdout.strip()


def _path_hash(path: str) -> str:
    return hashlib.sha256(path.encode()).hexdigest()[:12]


def _base_python() -> str:
    return os.environ.get("III_CONFORMANCE_PYTHON") or sys.executable


def install_key(spec: SdkSpec) -> str:
    """Cache directory name for a spec."""
    if spec.language == "python":
        tag = _py_tag(_base_python())
        if spec.path:
            return f"python-path-{_path_hash(spec.path)}-{tag}"
        return f"python-{spec.version}-{tag}"
    if spec.language == "node":
        if spec.path:
            return f"node-path-{_path_hash(spec.path)}"
        return f"node-{spec.version}"
    raise SdkInstallError(f"no install key for {spec.label}")


def _venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def _build_python(spec: SdkSpec, tmp: Path) -> str:
    _run([_base_python(), "-m", "venv", str(tmp)], f"creating venv for {spec.label}", timeout=300)
    py = str(_venv_python(tmp))
    if spec.path:
        # Editable, so later edits to the checkout are picked up without reinstalling.
        target = ["-e", spec.path]
    else:
        target = [f"iii-sdk=={spec.version}"]
    _run(
        [py, "-m", "pip", "install", "--no-input", "--disable-pip-version-check", *target],
        f"pip install {' '.join(target)} for {spec.label}",
    )
    out = _run(
        [py, "-c", "import importlib.metadata as m; print(m.version('iii-sdk'))"],
        f"checking installed iii-sdk for {spec.label}",
        timeout=60,
    )
    version = out.strip().splitlines()[-1] if out.strip() else None
    _run([py, "-c", "import iii"], f"importing iii from {spec.label}", timeout=60)
    return version or ""


def _node_package_name(spec: SdkSpec) -> str:
    if spec.path:
        try:
            return json.loads(Path(spec.path, "package.json").read_text())["name"]
        except (OSError, ValueError, KeyError) as e:
            raise SdkInstallError(f"{spec.label}: cannot read package name: {e}") from e
    return "iii-sdk"


def _build_node(spec: SdkSpec, tmp: Path) -> str:
    tmp.mkdir(parents=True)
    (tmp / "package.json").write_text(
        json.dumps({"name": "iii-conformance-node-sdk", "private": True, "type": "module"}) + "\n"
    )
    target = spec.path if spec.path else f"iii-sdk@{spec.version}"
    _run(
        ["npm", "install", "--no-audit", "--no-fund", target],
        f"npm install {target} for {spec.label}",
        cwd=tmp,
    )
    name = _node_package_name(spec)
    pkg = tmp / "node_modules" / name / "package.json"
    try:
        return json.loads(pkg.read_text()).get("version", "")
    except (OSError, ValueError) as e:
        raise SdkInstallError(
            f"{spec.label}: npm reported success but {pkg} is unreadable: {e}"
        ) from e


def _read_marker(final: Path) -> dict | None:
    try:
        return json.loads((final / MARKER).read_text())
    except (OSError, ValueError):
        return None


def _launch(spec: SdkSpec, final: Path, meta: dict) -> InstalledSdk:
    version = meta.get("sdk_version") or None
    env = dict(BASE_DRIVER_ENV)
    if spec.language == "python":
        command = (str(_venv_python(final)), "-u", str(PYTHON_DRIVER))
    else:
        node = os.environ.get("III_CONFORMANCE_NODE") or shutil.which("node") or "node"
        command = (node, str(NODE_DRIVER))
        env["III_SDK_NODE_PREFIX"] = str(final)
        env["III_SDK_NODE_PACKAGE"] = meta.get("package") or "iii-sdk"
    return InstalledSdk(
        spec=spec,
        label=spec.label,
        command=command,
        env=env,
        sdk_version=version,
        location=final,
    )


def install(spec: SdkSpec | str, *, force: bool = False) -> InstalledSdk:
    """Install (or reuse from the cache) the SDK named by ``spec``.

    Raises :class:`SdkInstallError` with the installer's output tail on a bad
    spec, an unknown version or any failed install step.
    """
    if isinstance(spec, str):
        spec = parse_sdk_spec(spec)
    if spec.language == "custom":
        if not spec.command:
            raise SdkInstallError("custom driver without a command")
        exe = spec.command[0]
        if os.sep not in exe and shutil.which(exe) is None:
            raise SdkInstallError(f"custom driver {exe!r} not found on PATH")
        return InstalledSdk(
            spec=spec, label=spec.label, command=tuple(spec.command), env=dict(BASE_DRIVER_ENV)
        )
    if spec.language not in ("python", "node"):
        raise SdkInstallError(f"unsupported SDK language {spec.language!r}")
    if spec.language == "node" and shutil.which("npm") is None:
        raise SdkInstallError("npm not found on PATH; needed to install Node SDKs")

    root = cache_dir() / "sdks"
    key = install_key(spec)
    final = root / key
    if not force:
        meta = _read_marker(final)
        if meta is not None:
            return _launch(spec, final, meta)

    with _Lock(root / f"{key}.lock", LOCK_TIMEOUT_S):
        meta = _read_marker(final)
        if meta is not None and not force:
            return _launch(spec, final, meta)
        # Leftovers of interrupted installs of this key (we hold the lock, so none is live).
        for stale in root.glob(f".tmp-{key}-*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = root / f".tmp-{key}-{os.getpid()}-{time.monotonic_ns()}"
        try:
            if spec.language == "python":
                version = _build_python(spec, tmp)
                meta = {"spec": spec.label, "sdk_version": version, "package": "iii-sdk"}
            else:
                version = _build_node(spec, tmp)
                meta = {
                    "spec": spec.label,
                    "sdk_version": version,
                    "package": _node_package_name(spec),
                }
            if spec.version and version and version != spec.version:
                raise SdkInstallError(
                    f"{spec.label}: asked for {spec.version} but {version} got installed"
                )
            meta["installed_at"] = time.time()
            (tmp / MARKER).write_text(json.dumps(meta, indent=2) + "\n")
            if final.exists():
                old = root / f".tmp-{key}-old-{os.getpid()}-{time.monotonic_ns()}"
                final.rename(old)
                shutil.rmtree(old, ignore_errors=True)
            tmp.rename(final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return _launch(spec, final, meta)


def install_all(specs: list[SdkSpec | str], *, force: bool = False) -> list[InstalledSdk]:
    """Install every spec before anything runs; the first failure raises."""
    parsed = [parse_sdk_spec(s) if isinstance(s, str) else s for s in specs]
    return [install(s, force=force) for s in parsed]
