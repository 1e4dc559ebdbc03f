"""OS provisioners: turn an engine plan into commands and files for one OS family.

``detect(runner)`` reads ``/etc/os-release`` and returns a provisioner;
``provisioner.provision(runner, plan, log=...)`` runs the sequence.
"""

from pymachine.provisioners.base import Provisioner, ProvisionError, ProvisionPlan
from pymachine.provisioners.detect import UnknownOSError, detect, parse_os_release, select_provisioner

__all__ = [
    "ProvisionError",
    "ProvisionPlan",
    "Provisioner",
    "UnknownOSError",
    "detect",
    "parse_os_release",
    "select_provisioner",
]
