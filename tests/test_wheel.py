"""The wheel as a pip user gets it: built from this checkout, installed (not editable) into a fresh
virtualenv, then the first commands a user runs.

Offline and fast: the wheel is built without build isolation (the test venv's setuptools), and the
fresh venv borrows the test venv's already-installed dependencies through a ``.pth`` file, so
nothing is downloaded. The ``.pth`` appends those folders after the venv's own site-packages, and
a ``.pth`` line adds a folder without running the ``.pth`` files inside it: the test venv's editable
pibridge stays invisible and every ``pibridge`` import below comes from the installed wheel.
"""

from __future__ import annotations

import hashlib
import json
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import tomllib
from pathlib import Path
from typing import IO

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: What a checkout holds besides the source: never copied into the build folder.
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv*", "build", "dist", "*.egg-info", "__pycache__",
                                    ".demo", ".*_cache")
PIP_TIMEOUT_S = 120
COMMAND_TIMEOUT_S = 60
EMULATOR_READY_TIMEOUT_S = 60  # first start makes two RSA keys
#: What `pip install pibridge` may pull on a PC; lgpio is the `pi` extra, the DHT library and Blinka `dht`.
CORE_REQUIREMENTS = {"paho-mqtt", "cryptography", "gpiozero", "smbus2", "pyserial"}
PI_ONLY = {"adafruit-circuitpython-dht", "adafruit-blinka", "lgpio", "rpi-gpio", "sysv-ipc", "pyftdi"}


def _run(*command: str | Path, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(part) for part in command], capture_output=True, text=True,
                          timeout=kwargs.pop("timeout", COMMAND_TIMEOUT_S), **kwargs)  # type: ignore[call-overload]


def _ok(*command: str | Path, **kwargs: object) -> str:
    done = _run(*command, **kwargs)
    assert done.returncode == 0, f"{command} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with the wheel built from this checkout installed in it."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"  # a copy: the build writes build/ and *.egg-info beside the sources
    shutil.copytree(ROOT, source, symlinks=True, ignore=NOT_SOURCE)
    _ok(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
        "-w", work / "dist", source, timeout=PIP_TIMEOUT_S)
    (wheel,) = (work / "dist").glob("pibridge-*.whl")

    env_dir = work / "venv"
    _ok(sys.executable, "-m", "venv", "--without-pip", env_dir)
    python = env_dir / "bin" / "python"
    site_packages = Path(_ok(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))").strip())
    # every site folder of this test run: the venv's, and the system's when the venv includes them
    # (the 32-bit Pi route: cryptography from apt)
    test_sites = [entry for entry in sys.path if Path(entry).name in ("site-packages", "dist-packages")]
    (site_packages / "zz_test_venv_dependencies.pth").write_text("".join(f"{e}\n" for e in test_sites))
    _ok(sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", "--no-index",
        wheel, timeout=PIP_TIMEOUT_S)
    return env_dir


def _python(venv: Path, code: str) -> str:
    return _ok(venv / "bin" / "python", "-c", code, cwd=venv)  # cwd: no checkout on sys.path


def _pibridge(venv: Path, *args: str) -> str:
    return _ok(venv / "bin" / "pibridge", *args, cwd=venv)


def test_installed_from_the_wheel_not_from_the_checkout(venv: Path) -> None:
    found = json.loads(_python(venv, (
        "import json, importlib.metadata as m, pibridge, pibridge.drivers\n"
        "dist = m.distribution('pibridge')\n"
        "print(json.dumps({'pibridge': pibridge.__file__, 'drivers': pibridge.drivers.__path__[0],\n"
        "                  'version': pibridge.__version__, 'dist_version': dist.version,\n"
        "                  'direct_url': dist.read_text('direct_url.json'),\n"
        "                  'license': dist.metadata['License-Expression'],\n"
        "                  'files': sorted(str(f) for f in dist.files)}))")))
    assert Path(found["pibridge"]).is_relative_to(venv)
    drivers = Path(found["drivers"])
    assert drivers.is_relative_to(venv) and not drivers.is_symlink()
    assert "editable" not in json.loads(found["direct_url"]).get("dir_info", {})
    assert found["version"] == found["dist_version"]
    assert found["license"] == "MIT"
    files = set(found["files"])
    for module in [*(ROOT / "drivers").glob("*.py"), *(ROOT / "drivers" / "fakes").glob("*.py")]:
        assert f"pibridge/drivers/{module.relative_to(ROOT / 'drivers').as_posix()}" in files
    assert "pibridge/py.typed" in files
    assert any(f.endswith(".dist-info/licenses/LICENSE") for f in files)


def test_version_is_written_once() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "pibridge.__version__"}


def test_a_pc_install_pulls_no_pi_only_library(venv: Path) -> None:
    requirements = json.loads(_python(venv, (
        "import json, importlib.metadata as m\n"
        "from packaging.requirements import Requirement\n"
        "reqs = [Requirement(r) for r in m.requires('pibridge')]\n"
        "print(json.dumps([[r.name.lower(), str(r.marker or '')] for r in reqs]))")))
    core = {name for name, marker in requirements if "extra" not in marker}
    assert core == CORE_REQUIREMENTS
    assert not core & PI_ONLY
    assert {name for name, marker in requirements if 'extra == "pi"' in marker} == {"lgpio"}
    assert {name for name, marker in requirements if 'extra == "dht"' in marker} == {
        "adafruit-circuitpython-dht", "gpiod"}


def test_drivers_and_a_simulated_reading(venv: Path) -> None:
    listing = _pibridge(venv, "drivers")
    for name in ("bme280", "bh1750", "dht22", "ds18b20", "mcp3008"):
        assert f"{name}: " in listing
    reading = json.loads(_pibridge(venv, "read", "bme280", "--simulate", "--json"))
    assert reading["driver"] == "bme280" and reading["simulated"] is True
    assert set(reading["values"]) == {"temperature", "humidity", "pressure"}


def test_example_profiles_ship_in_the_wheel(venv: Path) -> None:
    listed = [line.split()[0] for line in _pibridge(venv, "profile", "list").splitlines()]
    assert "greenhouse" in listed and "demo" in listed
    assert _pibridge(venv, "profile", "example") == (ROOT / "profiles" / "greenhouse.toml").read_text()
    written = venv / "mine.toml"
    _pibridge(venv, "profile", "example", "greenhouse", "--output", str(written))
    # the example, under a header naming the file written and what to run first
    assert written.read_text().endswith("#\n" + (ROOT / "profiles" / "greenhouse.toml").read_text())
    assert written.read_text().startswith(f"# {written}: written by `pibridge profile example greenhouse")


def test_the_web_pages_files_ship_in_the_wheel(venv: Path) -> None:
    """Every front-end file is package data, read through importlib.resources (no CDN, no checkout)."""
    shipped = json.loads(_python(venv, (
        "import hashlib, json\nfrom importlib import resources\n"
        "static = resources.files('pibridge.web') / 'static'\n"
        "print(json.dumps({e.name: hashlib.sha256(e.read_bytes()).hexdigest() for e in static.iterdir()}))")))
    source = ROOT / "pibridge" / "web" / "static"
    expected = {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in source.iterdir()}
    assert shipped == expected
    assert {"bridge.html", "dashboard.html", "uPlot.iife.min.js", "uPlot.min.css", "uPlot.LICENSE",
            "favicon.svg"} <= set(shipped)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _lines_of(stream: IO[str], into: queue.SimpleQueue[str]) -> None:
    for line in stream:
        into.put(line)
    into.put("")  # end of output


def test_the_driver_guide_and_its_example_package_ship_in_the_wheel(venv: Path) -> None:
    """A driver author who installed with pip reads the guide and copies the worked example
    package from the installation: both are package data, read through importlib.resources."""
    found = json.loads(_python(venv, (
        "import json\nfrom importlib import resources\n"
        "root = resources.files('pibridge.drivers')\n"
        "example = root / 'example_driver_pkg'\n"
        "print(json.dumps({'guide': (root / 'README.md').read_text(encoding='utf-8'),\n"
        "                  'example': {e.name: e.read_text(encoding='utf-8') for e in example.iterdir()\n"
        "                              if e.name.endswith(('.py', '.toml'))}}))")))
    assert found["guide"] == (ROOT / "drivers" / "README.md").read_text(encoding="utf-8")
    shipped = ROOT / "drivers" / "example_driver_pkg"
    assert found["example"] == {f.name: f.read_text(encoding="utf-8") for f in shipped.iterdir()
                                if f.suffix in (".py", ".toml")}
    printed = _pibridge(venv, "drivers", "--guide")
    assert printed.startswith(found["guide"].rstrip()) and str(venv) in printed


def test_the_emulator_starts_and_stops(venv: Path, tmp_path: Path) -> None:
    state_dir = tmp_path / "agent"
    command = [str(venv / "bin" / "pibridge"), "emulator", "serve", "--state-dir", str(state_dir),
               "--port", str(_free_port()), "--provision-port", str(_free_port())]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=venv)
    assert proc.stdout is not None and proc.stderr is not None
    lines: queue.SimpleQueue[str] = queue.SimpleQueue()
    threading.Thread(target=_lines_of, args=(proc.stdout, lines), daemon=True).start()
    try:
        first = lines.get(timeout=EMULATOR_READY_TIMEOUT_S)
    except queue.Empty:
        first = f"(nothing within {EMULATOR_READY_TIMEOUT_S} s)"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        status = proc.wait(timeout=COMMAND_TIMEOUT_S)
    errors = proc.stderr.read()
    assert first.startswith("ready "), f"{first!r}\n{errors}"
    fields = dict(part.split("=", 1) for part in first.split()[1:])
    assert Path(fields["ca_file"]).is_file() and Path(fields["state_dir"]) == state_dir
    assert status == 0, errors
