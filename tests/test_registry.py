"""Driver lookup: built-in names, the unknown-name message, and a third-party driver installed as
a separate package through the ``pibridge.drivers`` entry point."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pibridge.drivers import registry
from pibridge.drivers.base import Driver
from pibridge.drivers.bh1750 import BH1750
from pibridge.drivers.bme280 import BME280

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_PKG = Path(__file__).resolve().parents[1] / "drivers" / "example_driver_pkg"


def test_builtin_names_and_classes() -> None:
    assert set(registry.builtin()) <= set(registry.names())
    assert registry.names() == sorted(registry.names())
    assert registry.get("bme280") is BME280
    assert registry.get("bh1750") is BH1750
    for name in ("bme280", "bh1750"):
        cls = registry.get(name)
        assert cls.name == name and issubclass(cls, Driver)


@pytest.mark.parametrize("name", sorted(registry.builtin()))
def test_a_checked_configuration_checks_again(name: str) -> None:
    """`pibridge run` builds each driver from the options its profile check filled in (defaults
    included): those must pass the driver's own check again, unchanged (an ADS1x15 default of ""
    outside its choices once failed every ADS sensor at set-up while `pibridge check` passed)."""
    cls = registry.get(name)
    config = cls.check_options(dict(cls.example_options))
    assert cls.check_options(config) == config


def test_readme_lists_every_builtin_driver_as_pibridge_drivers_does() -> None:
    """The README's driver table is `pibridge drivers` in short: every built-in driver in name
    order, its description and metric keys (a new chip that misses its row fails here, with the row
    to add)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Drivers\n", 1)[1].split("\n#", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    expected = []
    for name in sorted(registry.builtin()):
        cls = registry.get(name)
        metrics = ", ".join(f"`{m.key}`" for m in cls.metrics)
        expected.append(f"| `{name}` | {cls.description} | {metrics} |")
    assert rows == expected, "\n".join(expected)


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(registry.UnknownDriverError) as info:
        registry.get("bme680")
    message = str(info.value)
    assert "unknown driver 'bme680'" in message
    for name in registry.builtin():
        assert name in message
    assert not info.value.retryable


def test_target_that_is_not_a_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry.builtin(), "bogus", "pibridge.drivers.errors:SensorError")
    with pytest.raises(registry.UnknownDriverError, match=r"not a pibridge\.drivers\.Driver subclass"):
        registry.get("bogus")


def write_distribution(site: Path, name: str, drivers: dict[str, str]) -> None:
    """A minimal installed distribution in ``site`` (its ``.dist-info`` only) declaring ``drivers``
    (name -> "module:Class") in the ``pibridge.drivers`` entry-point group."""
    info = site / f"{name}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[pibridge.drivers]\n" + "".join(f"{k} = {v}\n" for k, v in drivers.items()))


def test_installed_drivers_are_scanned_once_and_built_in_names_win(tmp_path: Path) -> None:
    """The entry points are read once per process (a package installed later is found after
    reset()), and an installed driver named like a built-in one never replaces it."""
    registry.names()  # this process has scanned
    write_distribution(tmp_path, "pibridge_clash_test", {
        "bme280": "pibridge_no_such_module:Impostor",        # would fail to import if ever chosen
        "zz_installed": "pibridge.drivers.bh1750:BH1750"})
    sys.path.insert(0, str(tmp_path))
    try:
        assert "zz_installed" not in registry.names()        # no second scan per lookup
        registry.reset()
        assert "zz_installed" in registry.names()
        assert registry.get("zz_installed") is BH1750
        assert registry.get("bme280") is BME280
        assert ("bme280", "pibridge_no_such_module:Impostor") in registry.installed()
    finally:
        sys.path.remove(str(tmp_path))
        registry.reset()
    assert "zz_installed" not in registry.names()


def test_importing_drivers_imports_no_driver_module() -> None:
    code = ("import sys, pibridge.drivers, pibridge.drivers.registry; "
            "sys.exit(any(m in sys.modules for m in ('pibridge.drivers.bme280', 'pibridge.drivers.bh1750')))")
    assert subprocess.run([sys.executable, "-c", code], check=False, cwd=ROOT).returncode == 0


def pip_install(package: Path, site: Path, scratch: Path) -> None:
    """Really install ``package`` into ``site`` with pip, offline: no index, no build isolation
    (the test extras pin a setuptools that builds wheels by itself). The source is copied first
    so that the build leaves nothing in the checkout."""
    source = scratch / package.name
    shutil.copytree(package, source)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                    "--no-build-isolation", "--target", str(site), str(source)],
                   check=True, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def example_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The example package installed into a throwaway site dir; an environment whose
    PYTHONPATH puts it (and this checkout) on sys.path."""
    site = tmp_path_factory.mktemp("site")
    pip_install(EXAMPLE_PKG, site, tmp_path_factory.mktemp("src"))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(ROOT)])
    return env


def run_pibridge(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pibridge", *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=60, check=False)


def test_entry_point_driver_is_listed(example_env: dict[str, str]) -> None:
    result = run_pibridge(example_env, "drivers")
    assert result.returncode == 0, result.stderr
    assert "example_counter: Example third-party driver" in result.stdout
    assert "count: Pulse count [integer, pulses]" in result.stdout
    assert "bme280:" in result.stdout


def test_entry_point_driver_reads(example_env: dict[str, str]) -> None:
    result = run_pibridge(example_env, "read", "example_counter", "--simulate", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["values"] == {"count": 1}


def test_entry_point_driver_in_unknown_name_message(example_env: dict[str, str]) -> None:
    code = ("import pibridge.drivers.registry as r\n"
            "try:\n    r.get('unknown')\nexcept r.UnknownDriverError as e:\n    print(e)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=example_env, cwd=ROOT, timeout=60, check=True)
    assert "example_counter" in result.stdout and "bme280" in result.stdout


def test_entry_point_driver_real_read_error_is_one_line(example_env: dict[str, str], tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    result = run_pibridge(example_env, "read", "example_counter", "--option", f"path={missing}")
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and "does not exist" in result.stderr
    (tmp_path / "count").write_text("42\n")
    result = run_pibridge(example_env, "read", "example_counter", "--option", f"path={tmp_path / 'count'}")
    assert result.returncode == 0 and "count  42 pulses" in result.stdout


def test_a_lookup_imports_only_its_drivers_module() -> None:
    """A bridge keeps what it imports: looking up the greenhouse's drivers imports their modules
    only (``dht22`` is found in ``dht.py``), not every chip module nor importlib.metadata; and
    every built-in name resolves to the class the full scan finds."""
    code = ("import sys\nfrom pibridge.drivers import registry\n"
            "for name in ('bme280', 'dht22', 'ds18b20', 'mcp3008', 'bh1750', 'digital_input', "
            "'cpu_temperature'):\n    registry.get(name)\n"
            "print(sorted(m.rsplit('.', 1)[1] for m in sys.modules if m.startswith('pibridge.drivers.')))\n"
            "print('importlib.metadata' in sys.modules, 'email' in sys.modules)\n"
            "scan = registry.builtin()\n"
            "wrong = [n for n, t in scan.items() if registry.get(n) is not getattr("
            "sys.modules[t.split(':')[0]], t.split(':')[1])]\n"
            "print(wrong)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    modules, metadata, wrong = out.stdout.splitlines()
    assert "sht4x" not in modules and "scd30" not in modules and "dht" in modules, modules
    assert metadata == "False False"
    assert wrong == "[]"
