"""Installing pibridge: the example-profile commands, the floors, the Pi install routes (offline
parts; scripts/check_pi_wheels.py asks PyPI itself, in .ci/run), a missing Pi library's message."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from pibridge.cli import main

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


floor_constraints = _script("floor_constraints")
check_pi_wheels = _script("check_pi_wheels")


# -- pibridge profile list | example ------------------------------------------------------------------

def test_profile_list_names_every_shipped_example(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profile", "list"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert listed == sorted(path.stem for path in (ROOT / "profiles").glob("*.toml"))


@pytest.mark.parametrize("argv", [["profile", "example"], ["profile", "example", "greenhouse"],
                                  ["profile", "example", "greenhouse.toml"]])
def test_profile_example_prints_the_file(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 0
    assert capsys.readouterr().out == (ROOT / "profiles" / "greenhouse.toml").read_text()


def test_profile_example_writes_a_new_file_and_never_overwrites(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "mine.toml"
    assert main(["profile", "example", "--output", str(target)]) == 0
    assert target.read_text() == (ROOT / "profiles" / "greenhouse.toml").read_text()
    target.write_text("# my edits\n")
    assert main(["profile", "example", "-o", str(target)]) == 1
    assert target.read_text() == "# my edits\n"
    assert capsys.readouterr().err.strip().endswith("exists: choose another file or delete it first")


@pytest.mark.parametrize(("argv", "message"), [
    (["profile", "example", "orchard"],
     "no example profile 'orchard'; the examples are: demo, greenhouse, weather"),
    (["profile", "example", ""], "no example profile ''"),
    (["profile", "example", "../pyproject"], "no example profile '../pyproject'"),
    (["profile", "example", "-o", "/nonexistent-dir/x.toml"], "cannot write /nonexistent-dir/x.toml"),
])
def test_profile_bad_input_is_one_line(argv: list[str], message: str,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and message in captured.err


def test_profile_without_a_subcommand_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["profile"])
    assert stopped.value.code == 2 and "SUBCOMMAND" in capsys.readouterr().err


# -- floors ----------------------------------------------------------------------------------------

def test_every_shipped_dependency_is_pinned_to_its_floor() -> None:
    pins = floor_constraints.floors(PYPROJECT)
    project = PYPROJECT["project"]
    shipped = project["dependencies"] + project["optional-dependencies"]["pi"] + \
        project["optional-dependencies"]["dht"]
    for text in shipped:
        requirement = Requirement(text)
        floor = pins[requirement.name]
        assert requirement.specifier.contains(floor), f"{text}: its floor {floor} is not allowed"
    assert pins["cryptography"] == "38.0.4"  # Debian bookworm's python3-cryptography
    assert pins["paho-mqtt"] == "2.1"


@pytest.mark.parametrize("requirement", ["smbus2", "smbus2<1", "smbus2>=0.4,>=0.5", "smbus2!=0.4"])
def test_a_dependency_without_exactly_one_floor_is_refused(requirement: str) -> None:
    pyproject = {"project": {"dependencies": [requirement], "optional-dependencies": {"pi": [], "dht": []}}}
    with pytest.raises(floor_constraints.NoFloor, match="needs exactly one floor"):
        floor_constraints.floors(pyproject)


def test_floor_constraints_script_prints_pip_constraints() -> None:
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "floor_constraints.py")],
                         capture_output=True, text=True, check=True).stdout
    assert "cryptography==38.0.4\n" in out and "cffi==1.15.1\n" in out
    for line in out.splitlines():
        assert len(Requirement(line).specifier) == 1 and "==" in line


# -- the Pi install routes ---------------------------------------------------------------------------

def test_apt_route_versions_meet_the_floors() -> None:
    """The 32-bit route uses apt's packages as they are: pibridge's requirements must accept them."""
    project = PYPROJECT["project"]
    declared = {Requirement(t).name: Requirement(t) for t in
                project["dependencies"] + project["optional-dependencies"]["pi"]}
    for name, (_package, version) in check_pi_wheels.ROUTE_APT_PACKAGES.items():
        if name in declared:
            assert declared[name].specifier.contains(Version(version)), (name, version)


def test_setup_sh_installs_what_the_wheel_check_assumes_from_apt() -> None:
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    for package, _version in check_pi_wheels.ROUTE_APT_PACKAGES.values():
        assert package in setup
    assert "--system-site-packages" in setup and "--only-binary=:all:" in setup
    assert "scripts/pi32-constraints.txt" in setup


def test_the_pi_instructions_install_what_the_flagship_profile_needs() -> None:
    """greenhouse.toml has a DHT22: the README's 64-bit command installs the dht extra, its 32-bit
    route says how to add it, and setup.sh's 32-bit route says in one line that it did not."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Running on a Pi"):readme.index("## Using the client")]
    assert 'driver = "dht22"' in (ROOT / "profiles" / "greenhouse.toml").read_text()
    pip_lines = [line for line in section.splitlines() if line.startswith("~/pibridge/bin/pip install")]
    assert "'.[pi,dht]'" in pip_lines[0] and "'.[pi]'" in pip_lines[1] and "'.[pi,dht]'" in pip_lines[2]
    assert "python3-libgpiod" in section
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    dht_notice = [line for line in setup.splitlines() if "DHT support not installed" in line]
    assert len(dht_notice) == 1 and "apt32" in setup[setup.index("import adafruit_dht") - 80:]


@pytest.mark.parametrize(("requirement", "machine", "applies"), [
    ('sysv_ipc>=1.1.0; sys_platform == "linux" and platform_machine != "mips"', "armv6l", True),
    ('RPi.GPIO; platform_machine == "armv7l" or platform_machine == "armv6l"', "armv6l", True),
    ('RPi.GPIO; platform_machine == "armv7l" or platform_machine == "armv6l"', "aarch64", False),
    ('toml>=0.10.2; python_version < "3.11"', "armv7l", False),
    ('pywin32; sys_platform == "win32"', "aarch64", False),
    ('extra-only; extra == "cli"', "aarch64", False),
])
def test_markers_are_evaluated_for_the_target_not_this_machine(requirement: str, machine: str,
                                                                applies: bool) -> None:
    (target,) = (t for t in check_pi_wheels.TARGETS if t.machine == machine)
    assert check_pi_wheels._applies(Requirement(requirement), target, set()) is applies


def test_a_requested_extra_turns_its_requirements_on() -> None:
    target = check_pi_wheels.TARGETS[0]
    assert check_pi_wheels._applies(Requirement('extra-only; extra == "cli"'), target, {"cli"})


def test_platform_tags_of_each_target() -> None:
    tags = {t.machine: t.platforms for t in check_pi_wheels.TARGETS}
    assert "manylinux_2_34_aarch64" in tags["aarch64"] and "manylinux_2_36_aarch64" in tags["aarch64"]
    assert "manylinux_2_37_aarch64" not in tags["aarch64"]  # newer than bookworm's glibc 2.36
    assert "linux_armv7l" in tags["armv7l"] and tags["armv6l"] == ("linux_armv6l",)
    assert not any(t.apt_route for t in check_pi_wheels.TARGETS if t.machine == "aarch64")


def test_route_constraints_apply_on_32_bit_only() -> None:
    by_machine = {t.machine: check_pi_wheels.route_constraints(t) for t in check_pi_wheels.TARGETS}
    assert by_machine["aarch64"] == {}
    assert not by_machine["armv6l"]["mypy"].contains("1.19.0")
    assert by_machine["armv6l"] == by_machine["armv7l"]


# -- a missing hardware library ---------------------------------------------------------------------

def test_a_missing_dht_library_is_one_line_naming_the_extra() -> None:
    code = ("import sys; sys.modules['board'] = None\n"  # import board: ModuleNotFoundError
            "from pibridge.cli import main; sys.exit(main(['read', 'dht22', '--option', 'pin=4']))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "pip install 'pibridge[dht]'" in done.stderr


def test_a_requirement_newer_than_apt_gives_breaks_the_32_bit_route() -> None:
    """Raising a floor past bookworm's package is caught offline: apt packages never reach pip."""
    armv6l = next(t for t in check_pi_wheels.TARGETS if t.machine == "armv6l")
    found = check_pi_wheels.resolve(["cryptography>=42"], armv6l)
    assert list(found.apt_too_old) == ["cryptography"] and not found.from_apt and not found.picked
    found = check_pi_wheels.resolve(["cryptography>=38.0.4", "lgpio>=0.2"], armv6l)
    assert set(found.from_apt) == {"cryptography", "lgpio"} and not found.apt_too_old


def test_markers_of_the_roots_count_too() -> None:
    armv7l = next(t for t in check_pi_wheels.TARGETS if t.machine == "armv7l")
    found = check_pi_wheels.resolve(["lgpio>=0.2", "gpiod>=2.2.2; platform_machine == 'aarch64'"], armv7l)
    assert set(found.from_apt) == {"lgpio"} and not found.picked and not found.no_wheel
