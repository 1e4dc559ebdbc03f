"""The on-disk store: the only code that reads or writes it.

The layout is Docker Machine 0.16's, so stores move freely between the two
tools: ``certs/`` for the CA and client certificate, ``machines/NAME/`` for
each machine with its ``config.json`` (ConfigVersion 3).  pymachine keeps its
own extras where docker-machine never looks: per-machine locks under
``locks/`` (a sibling of ``machines/``, so ``docker-machine ls`` never sees
them) and a small ``pymachine-state.json`` cache beside ``config.json``.

Writes are atomic (temp file in the same directory, fsync, rename); files are
0600 and directories 0700.  A machine directory whose config cannot be read
is reported as a :class:`BrokenHost`, never a crash, so one bad machine does
not hide the others.
"""

from __future__ import annotations

import contextlib
import json
import ntpath
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pymachine.machine import layout
from pymachine.machine.atomic import write_atomic
from pymachine.machine.errors import MachineError, MachineNotFound

CONFIG_VERSION = 3
NAME_RE = re.compile(r"\A[a-zA-Z0-9][a-zA-Z0-9\-\.]*\Z")  # \Z: "name\n" is not a name
#: A new name is at most a hostname label long, so every path made from it
#: (``locks/NAME.lock``, ``.removing-NAME-PID``, a Docker context) fits a file name.
MAX_NAME = 63
#: Names an older pymachine let through (up to 200 characters) still load and remove.
MAX_EXISTING_NAME = 200
INVALID_NAME = (
    "Error creating machine: Invalid hostname specified. "
    "Allowed hostname chars are: 0-9a-zA-Z . -"
)
NAME_TOO_LONG = f"Error creating machine: Invalid hostname specified. A name has at most {MAX_NAME} characters"
STATE_FILE = layout.STATE
TOMB_PREFIX = ".removing-"
#: Deeper JSON than this in a config.json is refused (one error row), never recursed into.
MAX_CONFIG_DEPTH = 32


class StoreError(MachineError):
    """The store or one of its files cannot be read or written."""


def default_storage_path(environ: dict[str, str] | None = None, platform: str | None = None) -> Path:
    """MACHINE_STORAGE_PATH, else ``<home>/.docker/machine``.

    Home is docker-machine's: %USERPROFILE% on Windows (where Git Bash's HOME must not
    move the store away from what the installer seeded), else $HOME.
    """
    env = os.environ if environ is None else environ
    if env.get("MACHINE_STORAGE_PATH"):
        return Path(env["MACHINE_STORAGE_PATH"]).expanduser()
    if (sys.platform if platform is None else platform).startswith("win"):
        home = env.get("USERPROFILE") or env.get("HOME") or str(Path.home())
        return Path(ntpath.join(home, ".docker", "machine"))
    home = env.get("HOME") or env.get("USERPROFILE") or str(Path.home())
    return Path(home) / ".docker" / "machine"


def valid_name(name: str) -> bool:
    """A name ``create`` accepts: hostname characters, at most MAX_NAME long."""
    return isinstance(name, str) and len(name) <= MAX_NAME and bool(NAME_RE.match(name))


def valid_existing_name(name: str) -> bool:
    """A name that may already be in a store (older versions allowed longer ones)."""
    return isinstance(name, str) and len(name) <= MAX_EXISTING_NAME and bool(NAME_RE.match(name))


def check_new_name(name: str) -> None:
    """Raise the one-line create error for a name no machine may have."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise MachineError(INVALID_NAME)
    if len(name) > MAX_NAME:
        raise MachineError(NAME_TOO_LONG)


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (POSIX signal 0; Windows asks the kernel)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    if pid == os.getpid():
        return True
    if os.name == "nt":  # os.kill(pid, 0) would send CTRL_C_EVENT there
        import ctypes

        kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
        handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return False
        code = ctypes.c_ulong()
        try:
            ok = kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
        finally:
            kernel32.CloseHandle(handle)
        return bool(ok) and code.value == 259  # STILL_ACTIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, owned by someone else
    except OSError:
        return False
    return True


def describe_os_error(exc: OSError, where: Path | str | None = None) -> str:
    """'Read-only file system: /path' rather than an OSError's repr."""
    what = exc.strerror or str(exc) or exc.__class__.__name__
    place = exc.filename or where or ""
    return f"{what}: {place}" if place else what


@contextlib.contextmanager
def os_errors_as_messages(doing: str, where: Path | str | None = None) -> Iterator[None]:
    """Turn an OSError (read-only store, full disk) into one line saying what and where."""
    try:
        yield
    except OSError as exc:
        raise StoreError(f"cannot {doing}: {describe_os_error(exc, where)}") from None


def json_depth_ok(data: Any, limit: int = MAX_CONFIG_DEPTH) -> bool:
    """Whether ``data`` nests at most ``limit`` levels (checked without recursion)."""
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children = list(value.values())
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth > limit:
            return False
        stack.extend((child, depth + 1) for child in children)
    return True


def dump_json(obj: Any) -> bytes:
    """docker-machine's ``json.MarshalIndent(v, "", "    ")``."""
    return json.dumps(obj, indent=4, ensure_ascii=False).encode()


class Host:
    """One machine's ``config.json``: the field names and order are docker-machine's.

    ``driver`` is the driver's raw JSON; unknown top-level keys are kept in
    ``extra`` and written back, so a config edited by another tool survives.
    (A plain class: this module is on ``env``'s path and dataclasses cost start-up time.)
    """

    def __init__(
        self,
        name: str,
        driver_name: str,
        driver: dict[str, Any],
        host_options: dict[str, Any],
        config_version: int = CONFIG_VERSION,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.driver_name = driver_name
        self.driver = driver
        self.host_options = host_options
        self.config_version = config_version
        self.extra = {} if extra is None else extra

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "ConfigVersion": self.config_version,
            "Driver": self.driver,
            "DriverName": self.driver_name,
            "HostOptions": self.host_options,
            "Name": self.name,
        }
        data.update(self.extra)
        return data

    @classmethod
    def from_json(cls, data: Any, dir_name: str) -> Host:
        if not isinstance(data, dict):
            raise StoreError("config.json is not a JSON object")
        version = data.get("ConfigVersion", 0)
        if not isinstance(version, int) or version > CONFIG_VERSION:
            raise StoreError(f"unsupported ConfigVersion {version!r} (this pymachine reads up to 3)")
        driver_name = data.get("DriverName")
        if not isinstance(driver_name, str) or not driver_name:
            raise StoreError("config.json has no DriverName")
        driver = data.get("Driver") or {}
        if not isinstance(driver, dict):
            raise StoreError("config.json field Driver is not an object")
        options = data.get("HostOptions") or {}
        if not isinstance(options, dict):
            raise StoreError("config.json field HostOptions is not an object")
        for key in ("AuthOptions", "EngineOptions", "SwarmOptions"):
            if options.get(key) is not None and not isinstance(options[key], dict):
                raise StoreError(f"config.json field HostOptions.{key} is not an object")
        if data.get("Pymachine") is not None and not isinstance(data["Pymachine"], dict):
            raise StoreError("config.json field Pymachine is not an object")
        # The directory name is the machine's identity: a Name (or the driver's
        # MachineName) that disagrees is a copied or crafted config, never a path.
        name = data.get("Name") or dir_name
        if name != dir_name:
            raise StoreError(f"config.json names the machine {str(name)[:80]!r}, not {dir_name!r} "
                             f"(a copied directory? remove it with 'pymachine rm -f {dir_name}')")
        if driver.get("MachineName") not in (None, "", dir_name):
            raise StoreError(f"config.json field Driver.MachineName is not {dir_name!r} "
                             f"(a copied directory? remove it with 'pymachine rm -f {dir_name}')")
        known = {"ConfigVersion", "Driver", "DriverName", "HostOptions", "Name"}
        extra = {k: v for k, v in data.items() if k not in known}
        return cls(name, driver_name, driver, options, CONFIG_VERSION, extra)

    # Convenience views over HostOptions -------------------------------------------------
    @property
    def auth_options(self) -> dict[str, Any]:
        return self.host_options.setdefault("AuthOptions", {}) or {}

    @property
    def engine_options(self) -> dict[str, Any]:
        return self.host_options.setdefault("EngineOptions", {}) or {}

    @property
    def swarm_options(self) -> dict[str, Any]:
        return self.host_options.setdefault("SwarmOptions", {}) or {}


class MachineRemoved(StoreError):
    """The machine's directory went away under us: a concurrent ``rm`` won."""

    def __init__(self, name: str) -> None:
        super().__init__(f'machine "{name}" was removed while this command ran')
        self.name = name


def driver_config(store: Store, host: Host) -> dict[str, Any]:
    """The driver's config with its paths pinned to this store and the directory name.

    A driver finds its files (disks, pidfiles, keys) under StorePath/machines/MachineName;
    taking those from the file would let a copied or crafted config reach outside the store.
    """
    return {**host.driver, "MachineName": host.name, "StorePath": str(store.path)}


class BrokenHost:
    """A machine directory whose config could not be loaded: shown as an error row."""

    def __init__(self, name: str, error: str, driver_name: str = "not found") -> None:
        self.name = name
        self.error = error
        self.driver_name = driver_name


class Store:
    """A pymachine (and Docker Machine) store rooted at ``path``."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path).expanduser().absolute()

    # Paths ---------------------------------------------------------------------------------
    @property
    def certs_dir(self) -> Path:
        return self.path / "certs"

    @property
    def machines_dir(self) -> Path:
        return self.path / "machines"

    @property
    def cache_dir(self) -> Path:
        return self.path / "cache"

    def machine_dir(self, name: str) -> Path:
        return self.machines_dir / name

    def config_path(self, name: str) -> Path:
        return self.machine_dir(name) / layout.CONFIG

    # Reading -------------------------------------------------------------------------------
    def list_names(self) -> list[str]:
        """Machine names in directory order (alphabetical, as Go's ReadDir)."""
        try:
            entries = os.listdir(self.machines_dir)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StoreError(f"cannot read {self.machines_dir}: {exc.strerror}") from None
        self.sweep_removals(entries)
        return sorted(e for e in entries if not e.startswith(".") and (self.machines_dir / e).is_dir())

    def sweep_removals(self, entries: list[str] | None = None) -> None:
        """Finish removals a killed ``rm`` left behind (``.removing-NAME-PID``, PID gone)."""
        import shutil

        if entries is None:
            try:
                entries = os.listdir(self.machines_dir)
            except OSError:
                return
        for entry in entries:
            if not entry.startswith(TOMB_PREFIX):
                continue
            name, _, pid = entry[len(TOMB_PREFIX):].rpartition("-")
            if pid.isdigit() and pid_alive(int(pid)):
                continue  # that rm is still running
            shutil.rmtree(self.machines_dir / entry, ignore_errors=True)
            if valid_existing_name(name) and not (self.machines_dir / name).exists():
                with contextlib.suppress(OSError):  # the killed rm's last step
                    os.unlink(self.path / "locks" / f"{name}.lock")

    def exists(self, name: str) -> bool:
        return valid_existing_name(name) and self.machine_dir(name).is_dir()

    def require(self, name: str) -> None:
        """Raise MachineNotFound unless ``name`` is a machine here; touches nothing.

        Commands call this before taking a lock, so a name like ``/tmp/x`` or
        ``../x`` never makes a lock file anywhere.
        """
        if not self.exists(name):
            raise MachineNotFound(name)

    def load(self, name: str) -> Host:
        self.require(name)
        path = self.config_path(name)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise StoreError(
                f"machine {name!r} has no config.json (half-created? remove it with 'pymachine rm -f {name}')"
            ) from None
        except OSError as exc:
            raise StoreError(f"cannot read {path}: {exc.strerror}") from None
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise StoreError(f"corrupt config.json for {name!r}: {exc}") from None
        except RecursionError:
            data = None
        if data is None or not json_depth_ok(data):
            raise StoreError(f"config.json of {name!r} nests deeper than {MAX_CONFIG_DEPTH} levels")
        return Host.from_json(data, name)

    def load_all(self) -> list[Host | BrokenHost]:
        out: list[Host | BrokenHost] = []
        for name in self.list_names():
            try:
                out.append(self.load(name))
            except MachineError as exc:
                out.append(BrokenHost(name, str(exc)))
            except Exception as exc:  # noqa: BLE001 -- one bad machine must not take down the store
                out.append(BrokenHost(name, f"cannot load config.json: {exc.__class__.__name__}"))
        return out

    # Writing -------------------------------------------------------------------------------
    def ensure(self) -> None:
        """Create the store's directories (0700), with a clear error if impossible."""
        for d in (self.path, self.machines_dir, self.certs_dir):
            try:
                d.mkdir(parents=True, exist_ok=True, mode=0o700)
            except OSError as exc:
                raise StoreError(f"cannot create storage path {d}: {exc.strerror}") from None
            if not os.access(d, os.W_OK | os.X_OK):
                raise StoreError(f"storage path {d} is not writable")

    def reserve(self, name: str) -> Path:
        """Create the machine directory; exactly one concurrent caller wins a name."""
        check_new_name(name)
        self.ensure()
        self.sweep_removals()
        d = self.machine_dir(name)
        try:
            os.mkdir(d, 0o700)
        except FileExistsError:
            raise MachineError(f'Docker machine "{name}" already exists') from None
        except OSError as exc:
            raise StoreError(f"cannot create {d}: {exc.strerror}") from None
        return d

    def save(self, host: Host, *, must_exist: bool = False) -> None:
        """Write the config.  With ``must_exist`` (every save of a live machine) a
        removed directory is never re-made: a concurrent ``rm`` stays won."""
        d = self.machine_dir(host.name)
        if not valid_existing_name(host.name):
            raise MachineNotFound(str(host.name))
        if not d.is_dir():
            if must_exist:
                raise MachineRemoved(host.name)
            try:
                d.mkdir(parents=True, mode=0o700)
            except OSError as exc:
                raise StoreError(f"cannot create {d}: {exc.strerror}") from None
        try:
            write_atomic(self.config_path(host.name), dump_json(host.to_json()), dir_mode=None)
        except FileNotFoundError:
            raise MachineRemoved(host.name) from None
        except OSError as exc:
            raise StoreError(f"cannot save {self.config_path(host.name)}: {exc.strerror}") from None

    def remove(self, name: str) -> None:
        import shutil

        if not valid_existing_name(name):
            raise MachineNotFound(name)
        d = self.machine_dir(name)
        self.sweep_removals()
        if not d.exists():
            return
        # Rename first so a crash mid-delete never leaves a half machine that looks alive;
        # a later command finishes a tomb whose rm was killed (sweep_removals).
        tomb = self.machines_dir / f"{TOMB_PREFIX}{name}-{os.getpid()}"
        try:
            os.replace(d, tomb)
        except FileNotFoundError:
            return  # someone else removed it first
        except OSError as exc:
            raise StoreError(f"cannot remove {d}: {exc.strerror}") from None
        shutil.rmtree(tomb, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path / "locks" / f"{name}.lock")

    @contextlib.contextmanager
    def lock(self, name: str, timeout: float = 60.0) -> Iterator[None]:
        """An exclusive per-machine lock, so two commands never write one config at once."""
        from pymachine.machine.locking import exclusive

        locks = self.path / "locks"
        busy = f'machine "{name}" is busy: another pymachine command holds its lock'
        with contextlib.ExitStack() as held:
            try:
                locks.mkdir(parents=True, exist_ok=True, mode=0o700)
                held.enter_context(exclusive(locks / f"{name}.lock", timeout=timeout, busy_message=busy, poll=0.05))
            except OSError as exc:  # a read-only or full store: say what and where
                raise StoreError(f"cannot lock machine {name!r} in {locks}: {exc.strerror or exc}") from None
            yield

    # pymachine's own per-machine cache (last state and engine version seen) ----------------
    def read_state(self, name: str) -> dict[str, Any]:
        try:
            data = json.loads((self.machine_dir(name) / STATE_FILE).read_bytes())
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def write_state(self, name: str, **values: Any) -> None:
        current = self.read_state(name)
        merged = {**current, **values}
        if merged == current or not self.exists(name):
            return
        with contextlib.suppress(OSError):
            write_atomic(self.machine_dir(name) / STATE_FILE, json.dumps(merged, indent=1).encode())
