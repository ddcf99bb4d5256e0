"""A new chip is three new files: the driver, its fake (with its simulator) and its test.

The SHT31 example in tests/data/new_chip/ is dropped into a copy of pibridge
(``drivers/sht31.py``, ``drivers/fakes/sht31.py``, and its test) with no other edit; then the
registry, ``pibridge drivers``, ``pibridge scan``'s table, ``pibridge read --simulate`` and
``scripts/bench/read_cost.py`` must all know it, and its own test must pass.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NEW_CHIP = Path(__file__).resolve().parent / "data" / "new_chip"


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of pibridge (drivers/ copied through the pibridge/drivers link) plus the 3 files."""
    root = tmp_path_factory.mktemp("checkout")
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(ROOT / "pibridge", root / "pibridge", symlinks=False, ignore=ignore)
    shutil.copytree(ROOT / "scripts" / "bench", root / "scripts" / "bench", ignore=ignore)
    drivers = root / "pibridge" / "drivers"
    assert not (drivers / "sht31.py").exists()
    shutil.copy(NEW_CHIP / "sht31.py", drivers / "sht31.py")
    shutil.copy(NEW_CHIP / "fake_sht31.py", drivers / "fakes" / "sht31.py")
    (root / "tests").mkdir()
    shutil.copy(NEW_CHIP / "sht31_tests.py", root / "tests" / "test_sht31.py")
    return root


def run(tree: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run([sys.executable, *args], cwd=tree, env=env, capture_output=True, text=True,
                          timeout=120, check=False)


def test_the_copy_is_the_one_imported(tree: Path) -> None:
    result = run(tree, "-c", "import pibridge.drivers as d; print(d.__file__)")
    assert result.stdout.strip() == str(tree / "pibridge" / "drivers" / "__init__.py"), result.stderr


def test_registry_scan_and_commands_know_the_new_chip(tree: Path) -> None:
    code = ("from pibridge.drivers import registry\n"
            "from pibridge.cli import driver_commands\n"
            "table = driver_commands.i2c_drivers_by_address()\n"
            "print(registry.get('sht31').__name__, 'sht31' in [c.name for c in table[0x44]],\n"
            "      'sht31' in [c.name for c in table[0x45]])")   # other chips share them (INA219)
    result = run(tree, "-c", code)
    assert result.stdout.split() == ["SHT31", "True", "True"], result.stderr
    listed = run(tree, "-m", "pibridge", "drivers")
    assert "sht31: Sensirion SHT31" in listed.stdout and "one of 0x44, 0x45" in listed.stdout
    read = run(tree, "-m", "pibridge", "read", "sht31", "--simulate", "--json")
    assert read.returncode == 0, read.stderr
    assert set(json.loads(read.stdout)["values"]) == {"temperature", "humidity"}


def test_benchmark_reports_the_new_chip(tree: Path) -> None:
    result = run(tree, "scripts/bench/read_cost.py", "--reads", "3", "--budget", "0.05")
    assert result.returncode == 0, result.stderr
    row = next(line for line in result.stdout.splitlines() if line.startswith("sht31 (simulated)"))
    assert row.split()[2:4] == ["3", "0"]  # 3 reads, 0 failed


def test_the_new_chips_own_test_passes(tree: Path) -> None:
    result = run(tree, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_sht31.py")
    assert result.returncode == 0, result.stdout + result.stderr
