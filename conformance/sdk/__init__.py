"""SDK selection and isolated, cached installs.

from conformance.sdk import parse_sdk_spec, install
sdk = install(parse_sdk_spec("python@0.25.0"))   # -> InstalledSdk
sdk.command, sdk.env, sdk.label                   # how to launch its driver
"""

from .installer import (
    BASE_DRIVER_ENV,
    NODE_DRIVER,
    PYTHON_DRIVER,
    InstalledSdk,
    cache_dir,
    install,
    install_all,
    install_key,
)
from .spec import SdkInstallError, SdkSpec, SdkSpecError, custom_driver_spec, parse_sdk_spec

__all__ = [
    "BASE_DRIVER_ENV",
    "NODE_DRIVER",
    "PYTHON_DRIVER",
    "InstalledSdk",
    "SdkInstallError",
    "SdkSpec",
    "SdkSpecError",
    "cache_dir",
    "custom_driver_spec",
    "install",
    "install_all",
    "install_key",
    "parse_sdk_spec",
]
