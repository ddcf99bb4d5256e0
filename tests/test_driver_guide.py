"""drivers/README.md stays true: what it calls stable exists, its example chip is the tested one,
and it points to no notes outside the repository."""

from __future__ import annotations

import re
from pathlib import Path

import pibridge.drivers as api
import pibridge.drivers.fakes as fakes
from pibridge.drivers import SimulatedWorld
from pibridge.drivers.i2c import I2CDriver

GUIDE = Path(__file__).resolve().parent.parent / "drivers" / "README.md"


def section(title: str) -> str:
    text = GUIDE.read_text()
    start = text.index(f"## {title}")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else None]


def test_stable_names_exist() -> None:
    stable = section("What is stable")
    exported = re.search(r"exported by `pibridge\.drivers`\n?\((.*?)\) and their", stable, re.S)
    assert exported is not None
    for name in re.findall(r"`(\w+)`", exported.group(1)):
        assert hasattr(api, name), name
    faked = re.search(r"exported by `pibridge\.drivers\.fakes` \((.*?)\) and", stable, re.S)
    assert faked is not None
    for name in re.findall(r"`(\w+)`", faked.group(1)):
        assert hasattr(fakes, name), name
    for method in ("start", "collect", "read", "group_key", "start_group", "validate", "check_config",
                   "timing_for", "metrics_for", "resources", "active_metrics", "close", "_release"):
        assert hasattr(api.Driver, method), method
    for helper in ("write_byte", "write_bytes", "write_register", "read_register", "read_registers",
                   "read_bytes", "_transfer_failed"):
        assert hasattr(I2CDriver, helper), helper


def test_world_methods_in_the_guide_exist() -> None:
    for name in re.findall(r"`world\.(\w+)\(", GUIDE.read_text()):
        assert hasattr(SimulatedWorld, name), name


def test_no_references_outside_the_repository() -> None:
    text = GUIDE.read_text()
    assert "hardware.md" not in text and "/work/" not in text and "shared/" not in text
