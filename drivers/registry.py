"""Driver lookup by name: the built-in drivers plus third-party ones from the entry-point group
``pibridge.drivers`` (``name = "package.module:DriverClass"``), so a separate package can add a
chip without touching pibridge.

Built-in drivers are *found*, not listed: every module of this package that defines a `Driver`
subclass with a ``name`` is one (so a new chip is a new module, with no edit here). The modules
are imported on the first lookup (``names()``, ``get()``), never at ``import pibridge.drivers``;
none of them touches hardware or imports a hardware library when imported.

Both tables are read once per process: the entry-point scan reads every installed distribution's
metadata (about 1 ms each time, most of a ``pibridge check``), so it is not repeated per lookup.
A package installed into a running process is found after `reset`. A built-in name wins over an
installed driver of the same name; such a shadowed driver is not dropped silently: `shadowed`
lists it and it is logged once per process. Names are matched case-insensitively (``BME280`` is
``bme280``); a profile and ``pibridge drivers`` use the registry's name, which for an installed
driver is its entry-point name.

`get` imports only what it needs (a long-running bridge keeps every module it imports in
memory): a built-in driver is first looked for in the module named like it (``bme280`` in
``bme280.py``, ``dht22`` in ``dht.py``: the name without its trailing digits, ``ads1115`` in
``ads1x15.py``: an ``x`` for a digit), and only when that fails are all chip modules imported,
then the installed packages' metadata scanned (``importlib.metadata``, which brings ``email``
and ``csv`` along). `canonical` of a built-in name is that name, found the same way.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import logging
import pkgutil
from types import ModuleType

from .base import Driver
from .errors import ConfigurationError

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "pibridge.drivers"
PACKAGE = "pibridge.drivers"
#: modules of the package that are infrastructure, not chips (skipped without importing them)
NOT_DRIVER_MODULES = frozenset({"base", "crc", "errors", "files", "gpio", "i2c", "intmath", "registry",
                                "simulation", "spi"})


class UnknownDriverError(ConfigurationError):
    """No driver of that name; the message lists the known ones."""


@functools.cache
def builtin() -> dict[str, str]:
    """name -> ``"module:Class"`` of every driver shipped with pibridge, found by importing the
    package's chip modules once."""
    package = importlib.import_module(PACKAGE)
    found: dict[str, str] = {}
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        if info.ispkg or info.name in NOT_DRIVER_MODULES or info.name.startswith("_"):
            continue
        for name, target in _drivers_in(importlib.import_module(f"{PACKAGE}.{info.name}")):
            found[name] = target
    return found


def _drivers_in(module: ModuleType) -> list[tuple[str, str]]:
    """(name, ``"module:Class"``) of every driver class ``module`` defines."""
    return [(value.name, f"{module.__name__}:{attr}") for attr, value in vars(module).items()
            if inspect.isclass(value) and issubclass(value, Driver) and value.__module__ == module.__name__
            and value.name and not attr.startswith("_")]


@functools.cache
def _chip_modules() -> tuple[str, ...]:
    """The names of the package's chip modules (listed, not imported)."""
    package = importlib.import_module(PACKAGE)
    return tuple(sorted(info.name for info in pkgutil.iter_modules(package.__path__)
                        if not info.ispkg and info.name not in NOT_DRIVER_MODULES
                        and not info.name.startswith("_")))


def _family_of(module_name: str, name: str) -> bool:
    """Whether ``module_name`` names a chip family ``name`` belongs to: an ``x`` stands for one
    digit (``ads1x15`` holds ``ads1115`` and ``ads1015``)."""
    return "x" in module_name and len(module_name) == len(name) and all(
        m == n or (m == "x" and n.isdigit()) for m, n in zip(module_name, name, strict=True))


def _namesakes(name: str) -> list[str]:
    """The chip modules that may define driver ``name``, most likely first: its namesake, the
    name without its trailing digits (``dht22`` in ``dht``), its family (``ads1115`` in
    ``ads1x15``)."""
    modules = _chip_modules()
    candidates = [name, name.rstrip("0123456789"), *(m for m in modules if _family_of(m, name))]
    return [m for m in dict.fromkeys(candidates) if m in modules]


def _builtin_target(name: str) -> str | None:
    """The built-in ``name``'s target, looked for in its namesake modules first (`_namesakes`),
    else in every chip module (`builtin`)."""
    for module_name in _namesakes(name):
        for found, target in _drivers_in(importlib.import_module(f"{PACKAGE}.{module_name}")):
            if found == name:
                return target
    return builtin().get(name)


@functools.cache
def installed() -> tuple[tuple[str, str], ...]:
    """(name, ``"module:Class"``) of every driver installed through the entry-point group
    ``pibridge.drivers``, in the order the scan finds them; scanned once per process."""
    from importlib.metadata import entry_points

    return tuple((ep.name, ep.value) for ep in entry_points(group=ENTRY_POINT_GROUP))


def reset() -> None:
    """Forget both tables: the next lookup finds the built-in modules and scans the installed
    packages again (for a process that installs a driver package while it runs, e.g. a test)."""
    builtin.cache_clear()
    _chip_modules.cache_clear()
    installed.cache_clear()
    _logged_shadowed.clear()


#: shadowed installed drivers already logged (each is logged once per process)
_logged_shadowed: set[tuple[str, str]] = set()


def _table() -> tuple[dict[str, str], tuple[tuple[str, str, str], ...]]:
    """(name -> target, the shadowed installed drivers as (name, target, what won)). Built-in
    drivers first, then the installed ones whose name is not taken (case-insensitively); each
    shadowed one is logged once."""
    targets = dict(builtin())
    taken = {name.casefold(): name for name in targets}
    shadowed: list[tuple[str, str, str]] = []
    for name, target in installed():
        winner = taken.get(name.casefold())
        if winner is not None:
            what = "a built-in driver" if winner in builtin() else f"the installed {targets[winner]}"
            shadowed.append((name, target, what))
            if (name, target) not in _logged_shadowed:
                _logged_shadowed.add((name, target))
                log.warning("installed driver %r (%s) is not used: %s has that name", name, target, what)
            continue
        targets[name] = target
        taken[name.casefold()] = name
    return targets, tuple(shadowed)


def _targets() -> dict[str, str]:
    return _table()[0]


def shadowed() -> list[str]:
    """One line per installed driver that is not used because its name is taken (by a built-in
    driver or an earlier installed one), for ``pibridge drivers``."""
    return [f"installed driver {name!r} ({target}) is not used: {what} has that name; "
            "rename its entry point" for name, target, what in _table()[1]]


def canonical(name: str) -> str | None:
    """The registry's spelling of ``name`` (``"BME280"`` -> ``"bme280"``), None if unknown."""
    if _builtin_target(name) is not None:  # a built-in name wins: no scan of every module and package
        return name
    targets = _targets()
    if name in targets:
        return name
    folded = name.casefold()
    return next((known for known in targets if known.casefold() == folded), None)


def names() -> list[str]:
    """Every known driver name, built-in and installed, sorted."""
    return sorted(_targets())


def get(name: str) -> type[Driver]:
    """The driver class registered as ``name``; `UnknownDriverError` lists the known names."""
    target = _builtin_target(name)   # the common case: imports only that driver's module
    if target is None:               # another spelling (BME280) or an installed driver
        found = canonical(name)
        target = _targets().get(found) if found is not None else None
    if target is None:
        target = next((found for installed_name, found in installed() if installed_name == name), None)
    if target is None:
        raise UnknownDriverError(f"unknown driver {name!r}; known drivers: {', '.join(names())}")
    module_name, _, attr = target.partition(":")
    cls = getattr(importlib.import_module(module_name), attr)
    if not (isinstance(cls, type) and issubclass(cls, Driver)):
        raise UnknownDriverError(f"driver {name!r} ({target}) is not a pibridge.drivers.Driver subclass")
    return cls
