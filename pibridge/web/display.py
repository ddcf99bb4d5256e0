"""Every value the pages show goes through `shown` (and its text through `shown_text`): the pages'
one door to `pibridge.units`, the project's single display mapping (the live view, `pibridge
status`, `pibridge read` and `pibridge drivers` use it too). The wire and the stored values keep
the agent's units; only the display changes (pressure in hPa, a door "open" / "closed").
"""

from __future__ import annotations

from typing import Any

from pibridge.units import display, display_unit


def shown(value: Any, unit: str | None, annotation: str | None = None) -> tuple[Any, str]:
    """(number or value as shown, symbol): ``unit`` is an agent valueUnit ("SI.Pressure.PASCAL"),
    ``annotation`` a custom metric's; ``(101325.0, "SI.Pressure.PASCAL")`` → ``(1013.25, "hPa")``.
    Flags, text and None pass unchanged (their words come from `shown_text`)."""
    symbol, factor = display_unit(unit, annotation)
    if isinstance(value, int | float) and not isinstance(value, bool) and factor != 1.0:
        return value * factor, symbol
    return value, symbol


def shown_text(value: Any, unit: str | None, annotation: str | None = None) -> str:
    """``"1013 hPa"``, ``"19.1 °C"``, ``"open"``, ``"–"``: the value with its unit after it."""
    return display(value, unit, annotation)
