"""``python -m conformance.sdk install python@0.25.0 node@0.22.1`` (CI pre-install)."""

from __future__ import annotations

import argparse
import sys
import time

from .installer import cache_dir, install
from .spec import SdkInstallError, parse_sdk_spec


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m conformance.sdk")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p_inst = sub.add_parser("install", help="install SDKs into the cache (reused if present)")
    p_inst.add_argument("specs", nargs="+", metavar="LANG@VERSION|LANG@PATH")
    p_inst.add_argument("--force", action="store_true", help="reinstall even if cached")
    sub.add_parser("where", help="print the cache directory")
    args = ap.parse_args(argv)

    if args.cmd == "where":
        print(cache_dir())
        return 0
    try:
        specs = [parse_sdk_spec(s) for s in args.specs]
    except SdkInstallError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rc = 0
    for spec in specs:
        t0 = time.monotonic()
        try:
            sdk = install(spec, force=args.force)
        except SdkInstallError as e:
            print(f"error: {e}", file=sys.stderr)
            rc = 1
            continue
        dt = time.monotonic() - t0
        print(f"{sdk.label}: iii-sdk {sdk.sdk_version or '?'} at {sdk.location} ({dt:.1f}s)")
    return rc


if __name__ == "__main__":
    sys.exit(main())
