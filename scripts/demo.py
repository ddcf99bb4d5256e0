"""Demo: the bridge on a simulated greenhouse, delivering to an emulated TeamViewer IoT Agent.

    bash scripts/demo.sh                     # sets the machine up, then runs this
    .venv/bin/python scripts/demo.py --seconds 60

A thin caller of pibridge's real parts (no hardware needed):
1. starts the agent emulator (``EmulatorProcess``: mosquitto, real TLS, a real CA) on the ports
   and with the state directory the profile's ``[agent]`` table names (``profiles/demo.toml``:
   28884/28883, state in ``.demo/emulator``);
   with its dashboard on ``DASHBOARD_ADDRESS`` (http://127.0.0.1:8081/);
2. runs ``pibridge run --profile PROFILE --simulate --trust-clock`` for ``--seconds`` (or until
   Ctrl-C): it provisions, registers every sensor and pushes one timestamped message per sample,
   showing the live view on a terminal (plain log lines otherwise) and serving its live page at the
   profile's ``[bridge] http`` (http://127.0.0.1:8080/); both addresses are printed at the start;
3. prints what the agent holds (each sensor, its metrics, how many values, the last one) and stops
   the emulator.

This machine has no NTP flag the bridge could trust, so the demo passes ``--trust-clock``
(`pibridge.bridge.clock`'s rule). Everything it writes stays in ``.demo/``; a second run reuses it
(the same CA, client and sensor ids: nothing is created twice).
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from pibridge.emulator.process import EmulatorError, EmulatorProcess
from pibridge.profile import ProfileError, load_profile
from pibridge.units import display

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PROFILE = ROOT / "profiles" / "demo.toml"
DEFAULT_SECONDS = 30.0
READY_TIMEOUT_S = 30.0
#: `pibridge run` stops within 5 s of SIGTERM; more is a hang worth killing
BRIDGE_STOP_S = 15.0
LOCAL_HOSTS = {"localhost": "127.0.0.1"}
#: the emulator's dashboard (the bridge's own page is the profile's [bridge] http)
DASHBOARD_ADDRESS = "127.0.0.1:8081"


def start_emulator(profile_path: Path, dashboard: str | None = DASHBOARD_ADDRESS) -> EmulatorProcess:
    """The emulator the profile's ``[agent]`` points at: its ports, its CA's folder as state."""
    profile = load_profile(profile_path)
    agent = profile.agent
    emulator = EmulatorProcess(Path(agent.ca_file).parent, host=LOCAL_HOSTS.get(agent.host, agent.host),
                               port=agent.port, provision_port=agent.provision_port, http=dashboard)
    try:
        emulator.start(timeout=READY_TIMEOUT_S)
    except EmulatorError as exc:
        raise SystemExit(f"the emulator did not start on ports {agent.port}/{agent.provision_port} "
                         f"(another demo still running?): {exc}") from None
    return emulator


def run_bridge(profile: Path, seconds: float) -> int:
    """``pibridge run`` on this terminal for ``seconds`` (Ctrl-C ends it early); its exit status."""
    bridge = subprocess.Popen([sys.executable, "-m", "pibridge", "run", "--profile", str(profile),
                               "--simulate", "--trust-clock"], stdin=subprocess.DEVNULL)
    try:
        bridge.wait(seconds)
    except subprocess.TimeoutExpired:
        pass
    except KeyboardInterrupt:          # the bridge got the same SIGINT and is stopping by itself
        pass
    if bridge.poll() is None:
        bridge.send_signal(signal.SIGTERM)
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C: the bridge is stopping
    try:
        return bridge.wait(BRIDGE_STOP_S)
    except subprocess.TimeoutExpired:
        bridge.kill()
        return bridge.wait()
    finally:
        signal.signal(signal.SIGINT, previous)


def summary(dump: dict[str, Any]) -> list[str]:
    """What the agent holds, one line per metric: sensor, metric, count of values, the last one."""
    lines = []
    for client in dump["clients"]:
        lines.append(f"client {client['clientId']}:")
        for sensor in client["sensors"]:
            lines.append(f"  {sensor['name']}")
            for metric in sensor["metrics"]:
                values = metric["values"]
                # as every screen shows it: 24.4 °C, 1011 hPa, closed (`pibridge.units`)
                shown = (display(values[-1]["value"], metric.get("valueUnit"), metric.get("valueAnnotation"))
                         if values else "")
                last = f"last {shown}" if values else "no value yet"
                count = f"{len(values)} value" + ("" if len(values) == 1 else "s")
                lines.append(f"    {metric['name']:<28} {count:>11}, {last}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", type=Path, default=DEFAULT_PROFILE,
                        help="a profile whose [agent] is the emulator to start (default profiles/demo.toml)")
    parser.add_argument("--seconds", type=float, default=DEFAULT_SECONDS,
                        help=f"how long the bridge runs (default {DEFAULT_SECONDS:g}; Ctrl-C ends it early)")
    parser.add_argument("--dashboard", default=DASHBOARD_ADDRESS, metavar="HOST:PORT",
                        help=f"the emulator's dashboard (default {DASHBOARD_ADDRESS})")
    args = parser.parse_args(argv)
    if not args.seconds > 0:
        parser.error("--seconds must be more than 0")
    try:
        emulator = start_emulator(args.profile, args.dashboard)
    except ProfileError as exc:
        raise SystemExit(str(exc)) from None
    print(f"1. the emulated agent: {emulator.ready_line} (state in {emulator.state_dir})", flush=True)
    bridge_page = load_profile(args.profile).bridge.http
    print(f"   the agent's dashboard:  {emulator.dashboard_url}", flush=True)
    if bridge_page:
        print(f"   the bridge's live page: http://{bridge_page}/ (open both while the demo runs)", flush=True)
    try:
        print(f"2. pibridge run --profile {args.profile} --simulate --trust-clock, for {args.seconds:g} s "
              "(Ctrl-C ends it early)", flush=True)
        status = run_bridge(args.profile, args.seconds)
        print(f"   the bridge stopped (exit status {status})")
    finally:
        emulator.stop()
    print("3. what the agent holds (pibridge emulator dump):")
    print("\n".join(summary(emulator.dump())))
    return 0 if status == 0 else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # Ctrl-C while the emulator starts or the summary prints
        sys.exit(130)
