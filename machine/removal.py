"""``rm`` as one library call: a Python caller removing a machine gets what the command does.

Under the machine's lock: load it (a directory no driver can read is removed
only with ``force``), take a swarm node out of its cluster (drain, leave,
forget; the last manager only after ``confirm``), remove the box through its
driver and the machine from the store, then delete the Docker context ``use``
made for it, so the Docker CLI never points at a machine that is gone.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping

from pymachine.machine.errors import MachineError
from pymachine.machine.store import Store

Log = Callable[[str], None]


def _never(_prompt: str) -> bool:
    return False


def remove_machine(
    store: Store,
    name: str,
    *,
    force: bool = False,
    log: Log = lambda _m: None,
    confirm: Callable[[str], bool] = _never,
    assume_yes: bool = False,
    environ: Mapping[str, str] | None = None,
) -> None:
    """Remove machine ``name``; MachineError says why it could not (nothing half-removed)."""
    from pymachine.machine import swarm
    from pymachine.machine.host import Machine

    store.sweep_removals()  # finish what a killed rm left behind
    store.require(name)  # validated before the lock touches the disk
    with store.lock(name):
        store.require(name)  # a concurrent rm may have won while we waited
        try:
            machine = Machine.load(store, name)
        except MachineError:
            if not force:
                raise
            store.remove(name)  # a broken directory: -f removes what is there, nothing else
            return
        except Exception as exc:  # noqa: BLE001 -- a config no driver can read is broken too
            if not force:
                raise MachineError(f"cannot load machine {name!r}: {exc.__class__.__name__} "
                                   f"(remove it with 'pymachine rm -f {name}')") from None
            store.remove(name)
            return
        if not swarm.before_remove(machine, log, confirm, assume_yes):
            raise MachineError("removal cancelled: it is the last swarm manager")
        machine.remove(log, force=force)
    forget_context(name, environ)


def forget_context(name: str, environ: Mapping[str, str] | None = None) -> None:
    """Delete the Docker context pymachine made for ``name``; a broken Docker config is not rm's problem."""
    from pymachine.machine import docker_context

    with contextlib.suppress(OSError, MachineError):
        docker_context.remove_context(name, environ=environ)
