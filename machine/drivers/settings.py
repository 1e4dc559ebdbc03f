"""A driver's settings: the ``Driver`` object of config.json as a typed dataclass.

Why: raw dict lookups let a misspelt key or a hand-edited wrong type slip through
until some later ``int(...)`` raised a traceback.  Each driver declares its fields
once (Python name, the JSON key docker-machine writes, the type given by the
default); loading checks the types, so a wrong one is one clear error (an error row
in ``ls``), and assigning a wrong type fails at the line that does it.

The store format must not change: keys this version does not know are kept, and
``to_json`` writes every key in the order it was read (new machines: the declared
order, which is docker-machine's), so a load/save round trip writes the same bytes.
A field declared ``absent`` is written only once something sets it (keys pymachine
adds during create), and a key missing from an older config stays missing until set.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any, TypeVar

from pymachine.machine.errors import MachineError

S = TypeVar("S", bound="Settings")

_KINDS: dict[type, str] = {
    str: "a string",
    bool: "true or false",
    int: "a whole number",
    float: "a number",
    list: "a list",
    dict: "an object",
}


class SettingsError(MachineError):
    """A stored (or assigned) driver setting of the wrong type."""


class DriverJSON(dict[str, Any]):
    """``to_json``'s answer: a plain dict to read and serialise, refusing changes, so code
    that still writes ``driver.config[...]`` fails instead of losing the write."""

    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("a driver's config is its settings' JSON: change driver.settings instead")

    __setitem__ = __delitem__ = update = pop = popitem = setdefault = clear = __ior__ = _refuse

    def __reduce__(self) -> Any:  # copies and pickles are plain (writable) dicts
        return (dict, (dict(self),))


def setting(key: str, default: Any, *, kind: type | None = None, item: type | None = None,
            absent: bool = False) -> Any:
    """A field stored under ``key``.  Its type is the default's (``kind`` when the default
    is None: such a field may also be null); list items are checked against ``item``.
    A list or object stored as null (Go writes nil slices and maps so) loads as empty and
    is written back as null while it stays empty."""
    kind = kind or type(default)
    if kind not in _KINDS:
        raise TypeError(f"setting {key}: unsupported type {kind.__name__}")
    meta = {"key": key, "kind": kind, "item": item, "absent": absent,
            "nullable": default is None}
    if isinstance(default, (list, dict)):
        frozen = json.dumps(default)
        return dataclasses.field(default_factory=lambda: json.loads(frozen), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


class _Spec:
    __slots__ = ("absent", "empty_if_null", "item", "key", "kind", "name", "nullable")

    def __init__(self, name: str, meta: Mapping[str, Any]) -> None:
        self.name = name
        self.key: str = meta["key"]
        self.kind: type = meta["kind"]
        self.item: type | None = meta["item"]
        self.absent: bool = meta["absent"]
        self.nullable: bool = meta["nullable"]
        self.empty_if_null = not self.nullable and self.kind in (list, dict)

    def check(self, value: Any) -> None:
        if value is None and self.nullable:
            return
        if _is(value, self.kind) and (self.item is None or all(_is(v, self.item) for v in value)):
            return
        what = _KINDS[self.kind] + (f" of {_KINDS[self.item].split(' ', 1)[1]}s" if self.item else "")
        shown = json.dumps(value, ensure_ascii=False, default=repr)
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        raise SettingsError(f"config.json field Driver.{self.key} must be {what}, not {shown}")


def _is(value: Any, kind: type) -> bool:
    if isinstance(value, bool):
        return kind is bool
    if kind is float:
        return isinstance(value, (int, float))
    return isinstance(value, kind)


_SPECS: dict[type, tuple[dict[str, _Spec], dict[str, _Spec]]] = {}


def _specs(cls: type) -> tuple[dict[str, _Spec], dict[str, _Spec]]:
    """(by field name, by JSON key), in declaration order; computed once per class."""
    found = _SPECS.get(cls)
    if found is None:
        by_name = {f.name: _Spec(f.name, f.metadata) for f in dataclasses.fields(cls) if "key" in f.metadata}
        found = _SPECS[cls] = (by_name, {s.key: s for s in by_name.values()})
    return found


@dataclasses.dataclass
class Settings:
    """docker-machine's BaseDriver fields; each driver subclasses this with its own."""

    ip_address: str = setting("IPAddress", "")
    machine_name: str = setting("MachineName", "")
    ssh_user: str = setting("SSHUser", "")
    ssh_port: int = setting("SSHPort", 0)
    ssh_key_path: str = setting("SSHKeyPath", "")
    store_path: str = setting("StorePath", "")
    swarm_master: bool = setting("SwarmMaster", False)
    swarm_host: str = setting("SwarmHost", "")
    swarm_discovery: str = setting("SwarmDiscovery", "")

    def __setattr__(self, name: str, value: Any) -> None:
        order = self.__dict__.get("_order")
        if order is not None:  # after construction: check, and write the key from now on
            spec = _specs(type(self))[0].get(name)
            if spec is None:
                raise AttributeError(f"{type(self).__name__} has no setting {name!r}")
            spec.check(value)
            if spec.key not in order:
                order.append(spec.key)
            self.__dict__["_nulls"].discard(spec.key)
        object.__setattr__(self, name, value)

    @classmethod
    def fresh(cls: type[S], machine_name: str, store_path: str) -> S:
        """A new machine's settings: every field not declared ``absent``, in declared order."""
        obj = cls()
        by_name = _specs(cls)[0]
        object.__setattr__(obj, "_extra", {})
        object.__setattr__(obj, "_nulls", set())
        object.__setattr__(obj, "_order", [s.key for s in by_name.values() if not s.absent])
        obj.machine_name, obj.store_path = machine_name, store_path
        return obj

    @classmethod
    def from_json(cls: type[S], data: Mapping[str, Any]) -> S:
        """Settings from a stored ``Driver`` object; SettingsError names a wrongly typed field."""
        by_key = _specs(cls)[1]
        obj = cls()
        extra: dict[str, Any] = {}
        nulls: set[str] = set()
        for key, value in data.items():
            spec = by_key.get(key)
            if spec is None:
                extra[key] = value
                continue
            if value is None and spec.empty_if_null:
                nulls.add(key)
                value = spec.kind()
            spec.check(value)
            object.__setattr__(obj, spec.name, value)
        object.__setattr__(obj, "_extra", extra)
        object.__setattr__(obj, "_nulls", nulls)
        object.__setattr__(obj, "_order", list(data))
        return obj

    def to_json(self) -> DriverJSON:
        """The ``Driver`` object to store: known and unknown keys in their original order."""
        by_key = _specs(type(self))[1]
        extra: dict[str, Any] = self.__dict__["_extra"]
        nulls: set[str] = self.__dict__["_nulls"]
        out: dict[str, Any] = {}
        for key in self.__dict__["_order"]:
            if key not in by_key:
                out[key] = extra[key]
                continue
            value = getattr(self, by_key[key].name)
            out[key] = None if key in nulls and not value else value
        return DriverJSON(out)

    def update(self, **values: Any) -> None:
        """Set several fields by their Python names (each checked as an assignment is)."""
        for name, value in values.items():
            setattr(self, name, value)

    def unknown(self) -> dict[str, Any]:
        """Stored keys this version does not declare (kept and written back unchanged)."""
        return dict(self.__dict__["_extra"])
