"""Units as a person reads them: one mapping for every screen (the live view, ``pibridge status``,
``pibridge read``, ``pibridge drivers``, and later a web page), and the units a profile's
``unit = "…"`` may name.

On the wire and in ``--json`` a metric keeps the agent's unit name (``SI.Pressure.PASCAL``) or
its custom type's annotation; only what is *shown* goes through this module::

    +---------------------------+--------------+--------+----------------------------------+
    | agent unit / annotation   | shown as     | factor | e.g.                             |
    +---------------------------+--------------+--------+----------------------------------+
    | SI.Temperature.CELSIUS    | °C           | 1      | 21.4 °C                          |
    | SI.Pressure.PASCAL        | hPa          | 0.01   | 101325 Pa -> 1013 hPa            |
    | NoSI.Dimensionless.PERCENT| %            | 1      | 48.2 %                           |
    | annotation "lux", "lx"    | lx           | 1      | 312 lx                           |
    | annotation "ug/m3"        | µg/m³        | 1      | 12 µg/m³                         |
    | bool, annotation "open"   | open/closed  |        | true -> open, false -> closed    |
    +---------------------------+--------------+--------+----------------------------------+

API: `display_unit` (unit, annotation) -> (symbol, factor); `display` (value, unit, annotation)
-> text; `state_words` for a bool's two states; `profile_unit` for a profile's ``unit = "…"``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

NO_VALUE = "–"                 #: shown for a metric the last sample left out
SIGNIFICANT_DIGITS = 4         #: a float shows this many significant digits…
PLAIN_ABOVE = 1e4              #: …below this magnitude; above it, as a whole number
HECTO = 0.01                   #: Pa -> hPa: what barometers, weather services and people use

#: The agent's valueUnits (`pibridge.protocol.VALUE_UNITS`) as a person reads them, with the
#: factor applied before showing: (symbol, factor).
AGENT_UNITS: Mapping[str, tuple[str, float]] = {
    "SI.ElectricCurrent.AMPERE": ("A", 1.0), "SI.DataAmount.BIT": ("bit", 1.0),
    "SI.Temperature.CELSIUS": ("°C", 1.0), "SI.ElectricCapacitance.FARAD": ("F", 1.0),
    "SI.Mass.GRAM": ("g", 1.0), "SI.Mass.KILOGRAM": ("kg", 1.0), "SI.Energy.JOULE": ("J", 1.0),
    "SI.Frequency.HERTZ": ("Hz", 1.0), "SI.Length.METER": ("m", 1.0),
    "SI.Velocity.METERS_PER_SECOND": ("m/s", 1.0), "SI.AmountOfSubstance.MOLE": ("mol", 1.0),
    "SI.Force.NEWTON": ("N", 1.0), "SI.ElectricResistance.OHM": ("Ω", 1.0),
    "SI.Pressure.PASCAL": ("hPa", HECTO), "SI.Angle.RADIAN": ("rad", 1.0),
    "SI.Duration.SECOND": ("s", 1.0), "SI.Area.SQUARE_METRE": ("m²", 1.0),
    "SI.ElectricPotential.VOLT": ("V", 1.0), "SI.Power.WATT": ("W", 1.0),
    "SI.LuminousIntensity.CANDELA": ("cd", 1.0), "SI.Acceleration.METERS_PER_SQUARE_SECOND": ("m/s²", 1.0),
    "NoSI.Dimensionless.PERCENT": ("%", 1.0), "NoSI.Dimensionless.DECIBEL": ("dB", 1.0),
    "NoSI.Location.LATITUDE": ("°", 1.0), "NoSI.Location.LONGITUDE": ("°", 1.0),
}

#: The symbol of each agent unit as a profile writes it (``unit = "Pa"`` is the agent's pascal).
AGENT_SYMBOLS: Mapping[str, str] = {
    "A": "SI.ElectricCurrent.AMPERE", "bit": "SI.DataAmount.BIT", "°C": "SI.Temperature.CELSIUS",
    "F": "SI.ElectricCapacitance.FARAD", "g": "SI.Mass.GRAM", "kg": "SI.Mass.KILOGRAM",
    "J": "SI.Energy.JOULE", "Hz": "SI.Frequency.HERTZ", "m": "SI.Length.METER",
    "m/s": "SI.Velocity.METERS_PER_SECOND", "mol": "SI.AmountOfSubstance.MOLE", "N": "SI.Force.NEWTON",
    "Ω": "SI.ElectricResistance.OHM", "Pa": "SI.Pressure.PASCAL", "rad": "SI.Angle.RADIAN",
    "s": "SI.Duration.SECOND", "m²": "SI.Area.SQUARE_METRE", "V": "SI.ElectricPotential.VOLT",
    "W": "SI.Power.WATT", "cd": "SI.LuminousIntensity.CANDELA",
    "m/s²": "SI.Acceleration.METERS_PER_SQUARE_SECOND", "%": "NoSI.Dimensionless.PERCENT",
    "dB": "NoSI.Dimensionless.DECIBEL",
}

#: Units the agent has no name for: a profile's ``unit = "hPa"`` becomes a custom metric (type
#: double, this annotation), and an annotation shows as itself.
CUSTOM_UNITS = ("hPa", "kPa", "mbar", "bar", "lx", "ppm", "ppb", "µg/m³", "mg/m³", "mV", "mA", "kW",
                "Wh", "kWh", "kΩ", "K", "°F", "km/h", "mm", "cm", "km", "l", "l/min", "m³", "m³/h",
                "rpm", "pH", "µS/cm", "mS/cm", "µmol/m²/s", "W/m²", "dBA", "count")

#: How people type a unit on a keyboard -> its symbol (annotations and ``unit = "…"`` alike).
SPELLINGS: Mapping[str, str] = {
    "degc": "°C", "deg c": "°C", "celsius": "°C", "ºc": "°C", "℃": "°C",
    "degf": "°F", "fahrenheit": "°F", "percent": "%", "pct": "%", "%rh": "%", "rh": "%",
    "pascal": "Pa", "hectopascal": "hPa", "millibar": "mbar", "lux": "lx", "ohm": "Ω", "ohms": "Ω",
    "kohm": "kΩ", "ug/m3": "µg/m³", "µg/m3": "µg/m³", "ug/m³": "µg/m³", "mg/m3": "mg/m³",
    "m/s2": "m/s²", "m2": "m²", "m3": "m³", "m3/h": "m³/h", "us/cm": "µS/cm", "volt": "V", "volts": "V",
    "amp": "A", "amps": "A", "watt": "W", "watts": "W", "kmh": "km/h", "kph": "km/h",
}

#: Units of one quantity that differ by a factor: value in the first × factor = value in the
#: second (a profile that changes Pa to hPa without a scale sends numbers 100 × off).
_FAMILIES: tuple[Mapping[str, float], ...] = (
    {"Pa": 1.0, "hPa": 100.0, "mbar": 100.0, "kPa": 1000.0, "bar": 100_000.0},
    {"V": 1.0, "mV": 0.001}, {"A": 1.0, "mA": 0.001}, {"W": 1.0, "kW": 1000.0},
    {"m": 1.0, "cm": 0.01, "mm": 0.001, "km": 1000.0}, {"Ω": 1.0, "kΩ": 1000.0},
)

#: A bool's two states: what the annotation (what true means) is the opposite of.
OPPOSITES: Mapping[str, str] = {
    "open": "closed", "closed": "open", "on": "off", "off": "on", "active": "inactive",
    "inactive": "active", "high": "low", "low": "high", "wet": "dry", "dry": "wet",
    "present": "absent", "absent": "present", "detected": "clear", "motion": "still",
    "pressed": "released", "released": "pressed", "locked": "unlocked", "unlocked": "locked",
    "occupied": "free", "alarm": "normal", "running": "stopped", "full": "not full", "empty": "not empty",
    "yes": "no", "no": "yes", "true": "false", "leak": "dry", "raining": "dry",
}
UNIT_FORMS = (' (a unit such as "°C", "%", "hPa", "ppm", "lx", an agent unit name, or type = "double" '
              'with annotation = "…" for any other)')
STATE_SEPARATOR = "/"          #: an annotation "closed/open" names both states (false/true)


def symbol(text: str) -> str:
    """The symbol for a unit as someone typed it (``"degC"`` -> ``"°C"``, ``"lux"`` -> ``"lx"``);
    anything unknown unchanged."""
    stripped = text.strip()
    return SPELLINGS.get(stripped.casefold(), stripped)


def display_unit(unit: str | None, annotation: str | None = None) -> tuple[str, float]:
    """(symbol, factor) to show a metric with: value × factor, then the symbol. ``unit`` is an
    agent valueUnit (or, from an older status file, already a symbol); without one the custom
    metric's ``annotation`` is the unit. ("", 1.0) when there is neither."""
    if unit:
        known = AGENT_UNITS.get(unit)
        if known is not None:
            return known
        if unit in AGENT_SYMBOLS:      # a symbol already (an older status file wrote symbols)
            return AGENT_UNITS[AGENT_SYMBOLS[unit]] if unit == "Pa" else (unit, 1.0)
        return (symbol(unit.rsplit(".", 1)[-1].lower()) if unit.count(".") >= 2 else symbol(unit)), 1.0
    return (symbol(annotation) if annotation else ""), 1.0


def state_words(annotation: str | None) -> tuple[str, str]:
    """(false, true) as a person reads a bool metric: its annotation says what true means
    ("open" -> closed/open); "closed/open" names both; without one, off/on."""
    if not annotation or not annotation.strip():
        return "off", "on"
    text = annotation.strip()
    if text.count(STATE_SEPARATOR) == 1:
        false, true = (part.strip() for part in text.split(STATE_SEPARATOR))
        if false and true:
            return false, true
    opposite = OPPOSITES.get(text.casefold())
    return (opposite if opposite is not None else f"not {text}"), text


def format_number(value: float) -> str:
    """4 significant digits below 10 000, a whole number above ("1013", "21.4", "0.0042")."""
    if not math.isfinite(value):
        return str(value)
    return f"{value:.{SIGNIFICANT_DIGITS}g}" if abs(value) < PLAIN_ABOVE else f"{value:.0f}"


def display(value: Any, unit: str | None = None, annotation: str | None = None) -> str:
    """One value as a person reads it: "21.4 °C", "1013 hPa" (from pascals), "open" / "closed"
    (a bool annotated "open"), "–" for none."""
    if value is None:
        return NO_VALUE
    if isinstance(value, bool):
        false, true = state_words(annotation or unit)
        return true if value else false
    shown_unit, factor = display_unit(unit, annotation)
    if isinstance(value, int | float):
        scaled = value * factor if factor != 1.0 else value
        shown = format_number(float(scaled)) if isinstance(scaled, float) else str(scaled)
    else:
        shown = str(value)
    return f"{shown} {shown_unit}" if shown_unit else shown


# --- a profile's ``unit = "…"`` ------------------------------------------------------------------
@dataclass(frozen=True)
class ProfileUnit:
    """What a profile's ``unit = "…"`` means at the agent: ``agent_unit`` (a valueUnit), or a
    custom metric of type double annotated ``annotation``."""

    agent_unit: str | None = None
    annotation: str | None = None

    @property
    def symbol(self) -> str:
        """The unit's symbol as values are sent (pascals are "Pa" here, not the display's hPa)."""
        return symbol_of(self.agent_unit, self.annotation)


def _agent_symbol(agent_unit: str) -> str:
    return next((s for s, name in AGENT_SYMBOLS.items() if name == agent_unit), agent_unit)


def profile_unit(text: str, agent_units: frozenset[str] | set[str]) -> ProfileUnit:
    """``unit = text`` resolved: an agent valueUnit as is, an agent unit's symbol ("%", "°C",
    "Pa") to its name, a unit the agent has no name for ("hPa", "ppm", "lx") to a custom metric.
    `ValueError` with a "did you mean" otherwise."""
    if text in agent_units:
        return ProfileUnit(agent_unit=text)
    written = symbol(text)
    if written in AGENT_SYMBOLS:
        return ProfileUnit(agent_unit=AGENT_SYMBOLS[written])
    if written in CUSTOM_UNITS:
        return ProfileUnit(annotation=written)
    known = [*AGENT_SYMBOLS, *CUSTOM_UNITS]
    close = next((k for k in known if k.casefold() == written.casefold()), None)
    if close is None and len(text) <= 64:
        import difflib  # here: a bridge that runs keeps its imports in memory, and needs it only for typos

        matches = difflib.get_close_matches(text, [*known, *sorted(agent_units)], n=1, cutoff=0.6)
        close = matches[0] if matches else None
    raise ValueError(f"{text!r} is not one of the agent's units nor a unit pibridge knows"
                     + (f"; did you mean {close}?" if close else "")
                     + UNIT_FORMS)


def conversion_factor(source: str, target: str) -> float | None:
    """How a value in symbol ``source`` becomes one in ``target`` (× factor) when both measure one
    quantity in different sizes (Pa -> hPa: 0.01); None when they are not such a pair."""
    for family in _FAMILIES:
        if source in family and target in family and source != target:
            return family[source] / family[target]
    return None


def symbol_of(unit: str | None, annotation: str | None) -> str:
    """The symbol a metric's values are *in* (no display factor: pascals are "Pa" here)."""
    if unit:
        return _agent_symbol(unit) if unit in AGENT_UNITS else symbol(unit)
    return symbol(annotation) if annotation else ""
