"""Check that pibridge installs on Raspberry Pi OS bookworm (Python 3.11) without a compiler.

For each Pi userland, resolve pibridge's dependencies as pip would there, asking PyPI for wheels
only, and hold the result to the rule of its install route (scripts/setup.sh, README.md):

* aarch64 (64-bit Pi OS): every package of the core and the `pi`, `dht` and `crosscheck` extras has
  a wheel.
* armv7l, armv6l (32-bit Pi OS): every package has a wheel, except the ones the apt route provides
  (ROUTE_APT_PACKAGES: Debian's python3-cryptography and python3-cffi, Pi OS's python3-lgpio), and
  their apt versions meet pibridge's requirements. The `dht` extra (Adafruit Blinka's tree) is held
  to its documented exceptions (DHT_SOURCE_ONLY_32BIT): a new one fails, a fixed one is reported.

pip alone cannot answer this: it evaluates environment markers (``platform_machine == "armv7l"``)
for the machine it runs on, not the ``--platform`` it is given. So this script walks the tree
itself: ``pip install --dry-run --no-deps --only-binary=:all: --platform … --report`` picks each
package's wheel from PyPI (metadata only, nothing installed) and returns its Requires-Dist, whose
markers are evaluated here for the target. Configuration files and PIP_* variables of this machine
are ignored (PIP_CONFIG_FILE=/dev/null, --index-url PyPI), so local mirrors cannot hide a gap.

Exit status: 0 the rule holds; 1 the rule is broken (each broken package named); 2 PyPI could not
be reached (says so: a network failure is not a rule failure).
Usage: python scripts/check_pi_wheels.py [-v]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PI32_CONSTRAINTS = ROOT / "scripts" / "pi32-constraints.txt"
INDEX_URL = "https://pypi.org/simple"
PYTHON_VERSION = "3.11"        # Raspberry Pi OS bookworm's python3 (3.11.2)
PYTHON_FULL_VERSION = "3.11.2"
GLIBC_MINOR = 36               # bookworm's glibc 2.36: manylinux_2_17 … manylinux_2_36 run there
OLDEST_MANYLINUX_MINOR = 17
PIP_TIMEOUT_S = 300
#: What a 32-bit Pi takes from apt (scripts/setup.sh) and the version bookworm / Pi OS ship.
ROUTE_APT_PACKAGES = {
    "cryptography": ("python3-cryptography", "38.0.4"),
    "cffi": ("python3-cffi", "1.15.1"),
    "lgpio": ("python3-lgpio", "0.2.2"),
}
#: The DHT library's tree on 32-bit Pi OS: no PyPI wheel, no apt package recent enough (bookworm's
#: python3-sysv-ipc is 1.0.0; Blinka asks for >= 1.1.0). piwheels, Pi OS's default extra index,
#: has wheels; otherwise pip compiles it (gcc, python3-dev). README.md says so.
DHT_SOURCE_ONLY_32BIT = frozenset({"sysv-ipc"})
#: Words in pip's output that mean the index was not reached (not that a wheel is missing).
NETWORK_SIGNS = ("NewConnectionError", "Max retries exceeded", "Temporary failure in name resolution",
                 "ConnectTimeout", "ReadTimeout", "ProxyError", "SSLError", "Could not fetch URL",
                 "connection broken", "Network is unreachable")


class NetworkFailure(Exception):
    """PyPI could not be reached: the check cannot say anything about the rule."""


@dataclass(frozen=True)
class Target:
    """A Pi userland: what `uname -m` says and the wheel platform tags pip accepts there."""

    machine: str
    platforms: tuple[str, ...]
    apt_route: bool  # 32-bit: ROUTE_APT_PACKAGES come from apt, not PyPI

    def environment(self) -> dict[str, str]:
        """Marker environment of this target (PEP 508)."""
        env: dict[str, str] = {key: str(value) for key, value in default_environment().items()}
        env.update(platform_machine=self.machine, sys_platform="linux", platform_system="Linux",
                   os_name="posix", python_version=PYTHON_VERSION, python_full_version=PYTHON_FULL_VERSION,
                   implementation_name="cpython", platform_python_implementation="CPython")
        return env


def _manylinux(arch: str) -> tuple[str, ...]:
    tags = [f"manylinux_2_{minor}_{arch}" for minor in range(GLIBC_MINOR, OLDEST_MANYLINUX_MINOR - 1, -1)]
    return (*tags, f"manylinux2014_{arch}")


TARGETS = (
    Target("aarch64", _manylinux("aarch64"), apt_route=False),
    # PyPI accepts plain linux_armv6l / linux_armv7l wheels (piwheels' tags) besides manylinux.
    Target("armv7l", (*_manylinux("armv7l"), "linux_armv7l"), apt_route=True),
    Target("armv6l", ("linux_armv6l",), apt_route=True),
)


@dataclass
class Picked:
    version: str
    wheel: str
    requires: list[str]


@dataclass
class Resolution:
    """What pip would install on one target: a wheel per package, or why there is none."""

    picked: dict[str, Picked] = field(default_factory=dict)
    no_wheel: dict[str, str] = field(default_factory=dict)    # name -> "spec (latest on PyPI …)"
    from_apt: dict[str, str] = field(default_factory=dict)    # name -> "python3-x 1.2 for spec"
    apt_too_old: dict[str, str] = field(default_factory=dict)


def _applies(requirement: Requirement, target: Target, extras: set[str]) -> bool:
    if requirement.marker is None:
        return True
    env = target.environment()
    return any(requirement.marker.evaluate({**env, "extra": extra}) for extra in (extras or {""}))


def _pip_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull  # no pip.conf: PyPI only, no local mirrors or constraints
    for kept in ("PIP_CERT", "PIP_DEFAULT_TIMEOUT"):  # this network's CA bundle and patience
        if kept in os.environ:
            env[kept] = os.environ[kept]
    return env


def _pip(args: list[str]) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--retries", "2", *args,
               "--index-url", INDEX_URL]
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=_pip_env(), timeout=PIP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise NetworkFailure(f"pip did not finish within {PIP_TIMEOUT_S} s") from None
    if done.returncode != 0 and any(sign in done.stdout + done.stderr for sign in NETWORK_SIGNS):
        raise NetworkFailure(_last_error(done))
    return done


def _last_error(done: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
    return lines[-1] if lines else f"pip exited with {done.returncode}"


def _wheels(target: Target, requirements: list[str]) -> list[Picked] | None:
    """The wheels pip picks for ``requirements`` on ``target``, or None if one has no wheel."""
    platforms = [arg for tag in target.platforms for arg in ("--platform", tag)]
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "report.json"
        done = _pip(["install", "--dry-run", "--ignore-installed", "--no-deps", "--only-binary=:all:",
                     "--quiet", *platforms, "--python-version", PYTHON_VERSION, "--implementation", "cp",
                     "--abi", "cp311", "--abi", "abi3", "--abi", "none", "--report", str(report),
                     *requirements])
        if done.returncode != 0:
            return None
        items = json.loads(report.read_text())["install"]
    return [Picked(item["metadata"]["version"], item["download_info"]["url"].rsplit("/", 1)[-1],
                   list(item["metadata"].get("requires_dist") or [])) for item in items]


def _versions_anywhere(name: str) -> str:
    """Which versions PyPI has at all (any platform): tells "no wheel here" from "no index"."""
    done = _pip(["index", "versions", name])
    if done.returncode != 0:
        return "not on PyPI"
    for line in done.stdout.splitlines():
        if line.startswith("Available versions:"):
            return line.split(":", 1)[1].strip().split(",")[0].strip() or "none"
    return "none"


def route_constraints(target: Target) -> dict[str, SpecifierSet]:
    """The pip constraints scripts/setup.sh applies on ``target`` (PI32_CONSTRAINTS on 32-bit)."""
    if not target.apt_route:
        return {}
    found: dict[str, SpecifierSet] = {}
    for line in PI32_CONSTRAINTS.read_text().splitlines():
        text = line.split("#", 1)[0].strip()
        if text:
            requirement = Requirement(text)
            found[canonicalize_name(requirement.name)] = requirement.specifier
    return found


def resolve(roots: list[str], target: Target) -> Resolution:
    """Walk the dependency tree of ``roots`` on ``target``, level by level."""
    result = Resolution()
    constraints = route_constraints(target)
    specs: dict[str, SpecifierSet] = {}
    extras: dict[str, set[str]] = {}
    display: dict[str, str] = {}
    pending = [r for r in map(Requirement, roots) if _applies(r, target, set())]
    done_key: dict[str, tuple[str, frozenset[str]]] = {}
    while pending:
        for requirement in pending:
            name: str = canonicalize_name(requirement.name)
            specs[name] = specs.get(name, constraints.get(name, SpecifierSet())) & requirement.specifier
            extras.setdefault(name, set()).update(requirement.extras)
            display.setdefault(name, requirement.name)
        todo = [name for name in specs
                if done_key.get(name) != (str(specs[name]), frozenset(extras[name]))]
        pending = []
        from_pip = []
        for name in todo:
            done_key[name] = (str(specs[name]), frozenset(extras[name]))
            if target.apt_route and name in ROUTE_APT_PACKAGES:
                package, version = ROUTE_APT_PACKAGES[name]
                text = f"{package} {version} for {name}{specs[name] or ''}"
                ok = specs[name].contains(Version(version), prereleases=True)
                (result.from_apt if ok else result.apt_too_old)[name] = text
                result.no_wheel.pop(name, None)
                continue  # apt brings its own dependencies
            from_pip.append(name)
        if not from_pip:
            break
        picked = _wheels(target, [f"{name}{specs[name]}" for name in from_pip])
        if picked is None:  # one of them has no wheel: find which, one by one
            picked = []
            for name in from_pip:
                one = _wheels(target, [f"{name}{specs[name]}"])
                if one is None:
                    result.no_wheel[name] = (f"{display[name]}{specs[name]} (latest on PyPI, any "
                                             f"platform: {_versions_anywhere(name)})")
                    result.picked.pop(name, None)
                else:
                    picked += one
        for item, name in ((item, canonicalize_name(item.wheel.split("-")[0])) for item in picked):
            result.picked[name] = item
            result.no_wheel.pop(name, None)
            for text in item.requires:
                requirement = Requirement(text)
                if _applies(requirement, target, extras.get(name, set())):
                    pending.append(requirement)
    return result


def _project_requirements() -> tuple[list[str], dict[str, list[str]]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return list(project["dependencies"]), dict(project["optional-dependencies"])


def check(verbose: bool) -> list[str]:
    """Every broken rule, as one line each (empty: all good)."""
    if _versions_anywhere("pip") == "not on PyPI":  # pip itself is always there: else no network
        raise NetworkFailure("`pip index versions pip` found nothing")
    core, optional = _project_requirements()
    # [test]: scripts/setup.sh installs it on a Pi too (test.sh and demo.sh run there)
    groups = {"pibridge[pi]": core + optional["pi"], "pibridge[dht]": optional["dht"],
              "pibridge[test]": optional["test"]}
    problems: list[str] = []
    # [crosscheck]: setup.sh installs it on the 64-bit pip route only (tests/test_crosscheck.py)
    wheel_only = {"pibridge[crosscheck]": optional["crosscheck"]}
    for target in TARGETS:
        for group, roots in (groups if target.apt_route else groups | wheel_only).items():
            found = resolve(roots, target)
            wheels = len(found.picked)
            print(f"{target.machine:8} {group:20} {wheels} wheels"
                  + (f"; from apt: {', '.join(found.from_apt.values())}" if found.from_apt else "")
                  + (f"; NO WHEEL: {', '.join(found.no_wheel)}" if found.no_wheel else ""))
            if verbose:
                for name, item in sorted(found.picked.items()):
                    print(f"    {name} {item.version}: {item.wheel}")
            for why in found.apt_too_old.values():
                problems.append(f"{target.machine} {group}: apt's {why} is too old for the requirement")
            allowed = DHT_SOURCE_ONLY_32BIT if group == "pibridge[dht]" and target.apt_route else set()
            for name, why in found.no_wheel.items():
                if name not in allowed:
                    problems.append(f"{target.machine} {group}: no wheel on PyPI for {why}; pip would "
                                    "compile it")
            for name in sorted(allowed - set(found.no_wheel)):
                print(f"note: {target.machine} {group}: {name} now installs from a wheel (or is no "
                      "longer needed): drop it from DHT_SOURCE_ONLY_32BIT and README.md")
    return problems


def main(argv: list[str]) -> int:
    try:
        problems = check(verbose="-v" in argv)
    except NetworkFailure as exc:
        print(f"check_pi_wheels: NETWORK FAILURE, rule not checked: cannot reach {INDEX_URL}: {exc}",
              file=sys.stderr)
        return 2
    for problem in problems:
        print(f"check_pi_wheels: RULE BROKEN: {problem}", file=sys.stderr)
    if problems:
        print("check_pi_wheels: a Pi install would need a compiler (README.md, Running on a Pi): "
              "choose a dependency with wheels, or add it to the apt route of scripts/setup.sh",
              file=sys.stderr)
        return 1
    print("check_pi_wheels: ok: no Pi install compiles anything beyond the documented exceptions")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
