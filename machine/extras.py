"""Which pip extra brings each optional SDK, and the one line a user sees when one is missing.

Cloud and hypervisor SDKs are imported lazily, inside the driver that needs
them, so ``env`` and ``ls`` stay lean and a user installs only what their
drivers use.  When such an import fails, the CLI turns the
``ModuleNotFoundError`` into one line naming the exact command, e.g.
``pip install 'pymachine-cli[vsphere]'``.  ``EXTRAS`` mirrors pyproject's
``[project.optional-dependencies]``; tests/unit/test_layers.py checks that
the two agree and that every listed package is imported by the code.
"""

from __future__ import annotations

#: extra -> the top-level modules it provides (pyproject lists their distributions).
EXTRAS: dict[str, tuple[str, ...]] = {
    "aws": ("boto3",),
    "azure": ("azure",),
    "qemu": ("pycdlib",),  # the cloud-init seed ISO
    "virtualbox": ("pycdlib",),  # the seed ISO of pymachine's base image
    "vmware": ("pycdlib",),  # vmwareworkstation, vmwarefusion: the same seed
    "vsphere": ("pyVmomi", "pycdlib"),
    "hyperv": ("pycdlib",),
}

#: driver -> its extra (drivers missing here need nothing beyond the core dependencies).
DRIVER_EXTRA: dict[str, str] = {
    "amazonec2": "aws",
    "azure": "azure",
    "qemu": "qemu",
    "virtualbox": "virtualbox",
    "vmwareworkstation": "vmware",
    "vmwarefusion": "vmware",
    "vmwarevsphere": "vsphere",
    "hyperv": "hyperv",
}

FALLBACK_DISTRIBUTION = "pymachine-cli"  # pyproject's [project] name


def distribution() -> str:
    """The installed distribution that provides the ``pymachine`` package (it may be renamed)."""
    try:
        from importlib.metadata import packages_distributions

        names = packages_distributions().get("pymachine") or []
    except Exception:  # noqa: BLE001 -- broken metadata must not hide the real error
        names = []
    return names[0] if names else FALLBACK_DISTRIBUTION


def install_hint(module: str, driver: str | None = None) -> str | None:
    """One line for a missing optional SDK ``module``; None if no extra provides it."""
    top = module.partition(".")[0]
    extras = [extra for extra, modules in EXTRAS.items() if top in modules]
    if not extras:
        return None
    extra = DRIVER_EXTRA.get(driver or "")
    if extra not in extras:
        extra = extras[0]
    also = [e for e in extras if e != extra]
    tail = f" (or [{'], ['.join(also)}], the extra named after your driver)" if also and not driver else ""
    return (f"Error: the Python package {top!r} is not installed: "
            f"pip install '{distribution()}[{extra}]'{tail}")
