"""What runs on a machine: engine options, daemon configuration and proxy settings.

Pure code: options in, file contents and argv out.  Provisioners decide where
the files go and run the commands.
"""

from pymachine.engine.config import (
    EngineConfigError,
    daemon_args,
    daemon_env,
    default_storage_driver,
    systemd_dropin,
    sysv_default,
)
from pymachine.engine.options import EngineOptions
from pymachine.engine.proxy import ProxySettings

__all__ = [
    "EngineConfigError",
    "EngineOptions",
    "ProxySettings",
    "daemon_args",
    "daemon_env",
    "default_storage_driver",
    "systemd_dropin",
    "sysv_default",
]
