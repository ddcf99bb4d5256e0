"""``pibridge`` with every simulated driver's bus calls answered from a recorded transfer log: the
bridge's own CPU without the cost of simulating the chips.

Usage: .venv/bin/python scripts/bench/replay_bus.py RECORD_S SUMMARY_JSON -- pibridge-args...

Runs ``pibridge`` in this process (``pibridge run --simulate …``) with one change, made here and
not in pibridge: each simulated driver gets its hardware handle (the ``bus``, ``spi``, ``files``,
``read_text`` or ``sensor`` argument of its public constructor, as its simulator builds it) wrapped
in a `RecordingHandle`. For the first ``RECORD_S`` seconds every call goes through to the fake
chip and its answer is logged under the call (method, arguments: register, length, frame bytes,
path); after that a call is answered from the log (per call, the recorded answers in turn,
round and round; recorded errors are raised again) and the fake is no longer consulted. Calls the
log has never seen still go to the fake and are counted as misses. The driver still packs its
frames, checks CRCs and parses the kernel's text: only the chip behind the handle is replaced.

At exit, writes ``{"recorded": calls logged, "replayed": calls answered from the log,
"misses": ...}`` to SUMMARY_JSON.
"""

from __future__ import annotations

import atexit
import ctypes
import json
import sys
import threading
import time
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

#: constructor arguments that are hardware handles (drivers/fakes/*.py ``simulate``)
HANDLE_ARGUMENTS = ("bus", "spi", "files", "read_text", "sensor")
#: smbus2's read flag on an ``i2c_msg``
I2C_M_RD = 0x0001


class TransferLog:
    """Recorded answers per call key; switches from recording to replaying at ``replay_at``."""

    def __init__(self, record_s: float) -> None:
        self.replay_at = time.monotonic() + record_s
        self.answers: dict[Hashable, list[tuple[bool, Any]]] = {}
        self.turn: dict[Hashable, int] = {}
        self.counts = {"recorded": 0, "replayed": 0, "misses": 0}
        self.lock = threading.Lock()

    def replaying(self) -> bool:
        return time.monotonic() >= self.replay_at

    def call(self, key: Hashable, real: Callable[[], Any]) -> Any:
        """The answer to the call ``key``: ``real()``'s while recording, the log's after."""
        if self.replaying():
            with self.lock:
                answers = self.answers.get(key)
                if answers:
                    index = self.turn.get(key, 0)
                    self.turn[key] = (index + 1) % len(answers)
                    self.counts["replayed"] += 1
                    ok, value = answers[index]
                else:
                    self.counts["misses"] += 1
            if answers:
                if ok:
                    return value
                raise type(value)(*value.args)
        try:
            result = real()
        except Exception as exc:
            self._log(key, False, exc)
            raise
        self._log(key, True, result)
        return result

    def _log(self, key: Hashable, ok: bool, value: Any) -> None:
        if self.replaying():
            return
        with self.lock:
            self.answers.setdefault(key, []).append((ok, value))
            self.counts["recorded"] += 1


def _frozen(value: Any) -> Hashable:
    if isinstance(value, (list, tuple, bytes, bytearray)):
        return tuple(_frozen(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _frozen(v)) for k, v in value.items()))
    return value if isinstance(value, Hashable) else repr(value)


class RecordingHandle:
    """A hardware handle whose calls go through ``transfer_log`` (see the module docstring)."""

    def __init__(self, target: Any, transfer_log: TransferLog, name: str) -> None:
        self._target = target
        self._log = transfer_log
        self._name = name

    def __call__(self, *args: Any) -> Any:  # a handle that is a function (``read_text``)
        return self._log.call((self._name, "()", _frozen(args)), lambda: self._target(*args))

    def i2c_rdwr(self, *messages: Any) -> None:
        """smbus2's combined transfer: read messages are filled in place from the log."""
        key = (self._name, "i2c_rdwr", tuple(
            (m.addr, m.flags, m.len, None if m.flags & I2C_M_RD else bytes(list(m)[: m.len]))
            for m in messages))

        def real() -> tuple[bytes, ...]:
            self._target.i2c_rdwr(*messages)
            return tuple(bytes(list(m)[: m.len]) for m in messages if m.flags & I2C_M_RD)

        reads = iter(self._log.call(key, real))
        for message in messages:
            if message.flags & I2C_M_RD:
                data = next(reads)
                ctypes.memmove(message.buf, data, message.len)

    def __getattr__(self, attribute: str) -> Any:
        target = getattr(self._target, attribute)
        if not callable(target) or attribute in ("close", "__enter__", "__exit__"):
            return target

        def call(*args: Any, **kwargs: Any) -> Any:
            key = (self._name, attribute, _frozen(args), _frozen(kwargs))
            return self._log.call(key, lambda: target(*args, **kwargs))
        return call


class RecordingDriverClass:
    """Stands in for a driver class in its simulator: the same class (options, metrics), but the
    handles it is constructed with are wrapped in `RecordingHandle`."""

    def __init__(self, cls: Any, transfer_log: TransferLog) -> None:
        self._cls = cls
        self._log = transfer_log

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self._cls, attribute)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        for name in HANDLE_ARGUMENTS:
            if kwargs.get(name) is not None:
                label = f"{self._cls.name}:{name}:{id(kwargs[name])}"
                kwargs[name] = RecordingHandle(kwargs[name], self._log, label)
        return self._cls(*args, **kwargs)


def install(record_s: float) -> TransferLog:
    """Route every simulator's driver construction through `RecordingDriverClass`."""
    from pibridge.drivers import simulation

    transfer_log = TransferLog(record_s)
    original = simulation.simulator_for

    def simulator_for(cls: Any) -> Any:
        simulate = original(cls)
        def recording(world: Any, cls: Any, options: dict[str, Any]) -> Any:
            return simulate(world, RecordingDriverClass(cls, transfer_log), options)  # type: ignore[arg-type]
        return recording

    setattr(simulation, "simulator_for", simulator_for)  # noqa: B010 (the bench's one change)
    return transfer_log


def main() -> int:
    if len(sys.argv) < 4 or sys.argv[3] != "--":
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    transfer_log = install(float(sys.argv[1]))
    summary = Path(sys.argv[2])
    atexit.register(lambda: summary.write_text(json.dumps(transfer_log.counts)))
    from pibridge.cli import main as pibridge_main

    return int(pibridge_main(sys.argv[4:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
