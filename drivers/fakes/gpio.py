"""Simulated GPIO inputs: a gpiozero ``MockFactory`` pin driven by the environment's timeline.

The driver is built as in production, with the world's ``MockFactory`` as its pin factory; the
world drives the mock pin at the environment's scheduled door edges (from a timer, between
reads), so ``DigitalInput.on_change`` callbacks fire without anybody reading.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..digital_input import DigitalInput
    from ..simulation import SimulatedWorld

def simulate_digital_input(world: SimulatedWorld, cls: type[DigitalInput],
                           options: dict[str, Any]) -> DigitalInput:
    """The input, configured by the user's options only (as on a Pi: same pin, pull, level and
    annotation), on the world's mock pins; the pin is driven to the level that means "active"
    while ``environment.door_open_at(t)`` (the environment's door timeline)."""
    factory = world.pin_factory()
    driver = cls(pin_factory=factory, clock=world.environment.clock, **options)
    world.add_door(factory.pin(driver.config["pin"]), active_high=not driver.active_low)
    return driver
