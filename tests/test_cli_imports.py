"""What a command imports: `pibridge.cli.main` builds only the parser of the command it runs
(``pibridge run`` keeps its imports in memory for months), and paho's ``urllib.request`` (with
``http.client`` and ``email``) loads only when used (`pibridge.lazy_urllib`)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import pytest

from pibridge.cli import COMMAND_GROUPS, COMMAND_MODULES, build_parser, command_in


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_the_command_table_is_what_the_modules_register() -> None:
    assert set(COMMAND_MODULES.values()) == set(COMMAND_GROUPS)
    full = _subparsers(build_parser())
    assert set(full) == set(COMMAND_MODULES)
    for command, group in COMMAND_MODULES.items():
        alone = _subparsers(build_parser(command))
        assert set(alone) == {c for c, g in COMMAND_MODULES.items() if g == group}, command
        assert alone[command].format_help() == full[command].format_help(), command


@pytest.mark.parametrize(("argv", "command"), [
    (["run", "--profile", "p.toml"], "run"), (["-v", "-v", "status", "--json"], "status"),
    (["--version"], None), ([], None), (["emulator", "serve"], "emulator"),
])
def test_command_in(argv: list[str], command: str | None) -> None:
    assert command_in(argv) == command


def test_run_imports_no_other_command_nor_http_and_email() -> None:
    code = ("import sys\nfrom pibridge.cli import main\n"
            "try:\n    main(['-v', 'run', '--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m.startswith('pibridge.cli.')))\n"
            "print([m for m in ('http.client', 'email', 'importlib.metadata') if m in sys.modules])\n"
            "import pibridge.mqtt, urllib.request\n"
            "print(callable(urllib.request.Request), type(urllib.request).__name__, "
            "sys.modules['urllib.request'] is urllib.request, 'http.client' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    lines = out.stdout.splitlines()
    assert lines[-3] == "['pibridge.cli.agent_commands', 'pibridge.cli.run_commands']"
    assert lines[-2] == "[]"
    assert lines[-1] == "True module True True"  # used: the real module, loaded on first use


PROXY_CODE = ("import sys, pibridge.mqtt, urllib.request\n"
              "print(urllib.request.getproxies(), urllib.request.proxy_bypass('localhost'), "
              "'http.client' in sys.modules)\n")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the placeholder answers on Linux only")
def test_paho_s_proxy_look_ups_load_no_urllib_request_without_a_proxy() -> None:
    """paho asks ``getproxies()`` and ``proxy_bypass(host)`` on every connection (PySocks
    installed): with no ``*_proxy`` variable set they are answered as urllib.request answers
    (nothing, no bypass) without loading it."""
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env["empty_proxy"] = ""   # an empty variable configures nothing (urllib.request skips it)
    out = subprocess.run([sys.executable, "-c", PROXY_CODE], capture_output=True, text=True, check=True,
                         env=env)
    assert out.stdout.splitlines()[-1] == "{} False False"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the placeholder answers on Linux only")
def test_a_configured_proxy_is_read_by_the_real_urllib_request() -> None:
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env.update(MQTT_PROXY="socks://proxy.example:1080", no_proxy="localhost")
    out = subprocess.run([sys.executable, "-c", PROXY_CODE], capture_output=True, text=True, check=True,
                         env=env)
    proxies = "{'mqtt': 'socks://proxy.example:1080', 'no': 'localhost'}"
    assert out.stdout.splitlines()[-1] == f"{proxies} True True"


#: What ``pibridge run`` on a Pi (the greenhouse profile: no UART sensor, credentials stored) never
#: needs in its process: the serial code, provisioning (a child process does it), shutil (with the
#: compression modules it loads) and tempfile: about 1 MB of resident memory for months.
NOT_IN_A_BRIDGE = ("pibridge.drivers.serialport", "pibridge.agent.provisioning", "shutil", "tempfile",
                   "bz2", "lzma")


def test_a_bridge_on_the_greenhouse_profile_loads_no_serial_provisioning_nor_shutil() -> None:
    code = ("import sys\nfrom pibridge.cli import build_parser\n"
            "args = build_parser('run').parse_args(['run', '--profile', 'profiles/greenhouse.toml'])\n"
            "from pibridge.profile import load_profile\nprofile = load_profile(args.profile)\n"
            "import pibridge.bridge.service, pibridge.cli.run_commands\n"
            f"print(len(profile.sensors), [m for m in {NOT_IN_A_BRIDGE!r} if m in sys.modules])\n"
            "from pibridge.agent import provision, ProvisionResult\n"
            "print(provision.__module__, ProvisionResult.__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    lines = out.stdout.splitlines()
    assert lines[-2].endswith(" []") and not lines[-2].startswith("0 ")
    assert lines[-1] == "pibridge.agent.provisioning ProvisionResult"   # still there, loaded on first use


def test_pibridge_agent_names_no_attribute_it_lacks() -> None:
    import pibridge.agent
    with pytest.raises(AttributeError, match="no attribute 'provisionn'"):
        _ = pibridge.agent.provisionn  # type: ignore[attr-defined]


@pytest.mark.parametrize(("columns", "width"), [("60", 58), ("0", 78), ("x", 78), ("", 78)])
def test_help_wraps_at_columns_as_argparse_would(columns: str, width: int) -> None:
    """``COLUMNS`` as shutil reads it (else the terminal's width, none here: 80), less argparse's 2."""
    env = {**os.environ, "COLUMNS": columns}
    code = "from pibridge.cli import help_width\nprint(help_width())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env,
                         stdin=subprocess.DEVNULL)
    assert out.stdout.strip() == str(width)
