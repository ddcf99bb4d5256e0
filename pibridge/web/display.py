"""Every value the pages show goes through `shown` (and its text through `shown_text`): the ONE
place where an agent unit (or a custom metric's annotation) becomes what a person reads. The wire
and the stored values keep the agent's units; only the display changes (pressure in hPa).

Today it uses `pibridge.bridge.status.unit_symbol` / `format_value` plus the conversions in
`CONVERSIONS`; the project's shared display mapping replaces its body when it lands.
"""

from __future__ import annotations

from typing import Any

from pibridge.bridge.status import format_value, unit_symbol

#: symbol the agent's unit gives → (factor, what is shown): pascals are read as hectopascals
CONVERSIONS: dict[str, tuple[float, str]] = {"Pa": (0.01, "hPa")}


def shown(value: Any, unit: str | None, annotation: str | None = None) -> tuple[Any, str]:
    """(number or value as shown, symbol): ``unit`` is an agent valueUnit ("SI.Pressure.PASCAL"),
    ``annotation`` a custom metric's; ``(101325.0, "SI.Pressure.PASCAL")`` → ``(1013.25, "hPa")``.
    Flags, text and None pass unchanged."""
    symbol = unit_symbol(unit, annotation)
    conversion = CONVERSIONS.get(symbol)
    if conversion is None:
        return value, symbol
    factor, target = conversion
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value * factor, target
    return value, target


def shown_text(value: Any, unit: str | None, annotation: str | None = None) -> str:
    """``"1013 hPa"``, ``"19.1 °C"``, ``"on open"``, ``"–"``: the value with its unit after it."""
    number, symbol = shown(value, unit, annotation)
    return format_value(number, symbol)
