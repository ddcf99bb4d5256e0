"""Importing this module makes ``urllib.request`` load on first use instead of now.

paho-mqtt's client imports ``urllib.request`` at its top for one thing: reading proxy settings,
and only when PySocks is installed (``Client._get_proxy``); paho has no narrower module to import.
``urllib.request`` brings ``http.client`` and the whole ``email`` package along: about 2.8 MB of
a bridge's resident memory (x86_64, Python 3.11) in a process that runs for months and never
uses them. `pibridge.mqtt` imports this module just before paho, so paho's ``import
urllib.request`` binds a `DeferredModule`: the real module is imported on the first attribute
access (from then on it is what ``sys.modules`` and ``urllib.request`` hold), so code that uses
``urllib.request`` sees no difference. When ``urllib.request`` is already loaded, nothing
changes.

paho reads the proxy settings on every connection when PySocks is installed (``getproxies()``,
``proxy_bypass(host)``): while no ``*_proxy`` environment variable is set, the placeholder
answers those two itself, as ``urllib.request`` answers on Linux (no proxies, no bypass), without
loading it; with one set, or off Linux, it loads the real module and asks it.

(`importlib.util.LazyLoader` cannot do this on Python 3.11: an ``import`` statement reads the
module's ``__spec__``, which makes it load at once.)
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import threading
import types
from typing import Any

DEFERRED = "urllib.request"
_lock = threading.Lock()


class DeferredModule(types.ModuleType):
    """Stands in ``sys.modules`` for a module not imported yet; the first attribute it does not
    have imports the real one, puts it in its place and hands its attributes over."""

    def __getattr__(self, attribute: str) -> Any:
        return getattr(_load(self), attribute)


def _proxy_configured() -> bool:
    """Whether any ``*_proxy`` environment variable (any case) has a value: only then can
    ``urllib.request``'s environment look-ups (``getproxies_environment``,
    ``proxy_bypass_environment``) find a proxy."""
    return any(value and name[-6:].lower() == "_proxy" for name, value in os.environ.items())


class DeferredRequest(DeferredModule):
    """The placeholder of ``urllib.request``: its two proxy look-ups answer without loading it
    while no proxy is configured (on Linux, where ``urllib.request`` reads only the environment)."""

    def getproxies(self) -> dict[str, str]:
        if sys.platform.startswith("linux") and not _proxy_configured():
            return {}
        return dict(_load(self).getproxies())

    def proxy_bypass(self, host: str) -> bool:
        if sys.platform.startswith("linux") and not _proxy_configured():
            return False   # proxy_bypass_environment: no "no_proxy" entry, no bypass
        return bool(_load(self).proxy_bypass(host))


def _load(placeholder: DeferredModule) -> types.ModuleType:
    name = placeholder.__name__
    with _lock:
        if sys.modules.get(name) is placeholder:
            del sys.modules[name]
            module = importlib.import_module(name)
            placeholder.__dict__.update(module.__dict__)  # for whoever bound the placeholder itself
        return sys.modules[name]


def defer(name: str) -> None:
    """Put a `DeferredModule` for ``name`` into ``sys.modules`` (and on its parent package, as an
    import would), unless ``name`` is loaded already or cannot be found."""
    if name in sys.modules:
        return
    spec = importlib.util.find_spec(name)
    if spec is None:
        return
    placeholder = DeferredRequest(name) if name == "urllib.request" else DeferredModule(name)
    placeholder.__spec__ = spec  # read by the import statement (is it initialising?): not loading
    sys.modules[name] = placeholder
    parent, _, child = name.rpartition(".")
    if parent:
        setattr(sys.modules[parent], child, placeholder)


defer(DEFERRED)
