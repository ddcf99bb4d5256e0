"""Demo: an emulated TeamViewer IoT Agent and a simulated greenhouse, end to end.

    bash scripts/demo.sh                 # sets the machine up, then runs this
    .venv/bin/python scripts/demo.py --rounds 5 --profile profiles/greenhouse.toml

What it does, with pibridge's real parts only (no hardware needed):
1. starts ``pibridge emulator serve`` (mosquitto, real TLS, a real CA) on free ports, state in ``.demo/``;
2. provisions a client (key + CSR → certificate over the provision port);
3. builds every ``[[sensor]]`` of the profile with its driver's simulated hardware (the driver does
   its own bus I/O against a wire-level fake fed by a day/night greenhouse model);
4. registers the sensors and their metrics, then for a few rounds reads each sensor and pushes all
   its metrics in one timestamped message;
5. prints what the emulated agent now holds, and stops the emulator.

The full bridge (`pibridge run`: a sampling scheduler and a store-and-forward buffer) is the
subject of a later issue; this demo shows the parts that exist now working together.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import tomllib
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from pibridge.agent import AgentClient, AgentSettings, MetricDefinition, Reply, provision
from pibridge.drivers import Driver, Metric, SensorError, SimulatedWorld, read_with_retries
from pibridge.emulator.process import EmulatorError, EmulatorProcess

ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT_S = 30.0


def start_emulator(state_dir: Path) -> EmulatorProcess:
    """``pibridge emulator serve`` as a child on free ports (`EmulatorProcess`, the launcher tests
    use too); exits with the emulator's log tail when it does not become ready in time."""
    emulator = EmulatorProcess(state_dir)
    try:
        emulator.start(timeout=READY_TIMEOUT_S)
    except EmulatorError as exc:
        raise SystemExit(f"the emulator did not become ready: {exc}") from None
    print(f"  emulator: {emulator.ready_line}")
    return emulator


def load_sensors(profile: Path) -> list[dict[str, Any]]:
    with profile.open("rb") as f:
        return list(tomllib.load(f).get("sensor", []))


def metric_definition(metric: Metric) -> MetricDefinition:
    """A driver's metric as the client's create-metrics definition (matched by its key)."""
    if metric.unit is not None:
        return MetricDefinition(name=metric.name, value_unit=metric.unit, matching_id=metric.key)
    return MetricDefinition(name=metric.name, value_type=str(metric.value_type),
                            value_annotation=metric.annotation, matching_id=metric.key)


def register(agent: AgentClient, name: str, metrics: tuple[Metric, ...]) -> tuple[str, dict[str, str]]:
    """The sensor's id and ``{metric key: metricId}``: reused when a previous run registered them
    (matched by name), created otherwise."""
    known = {s["name"]: s for s in agent.list_sensors().value}
    if name in known:
        sensor_id = known[name]["sensorId"]
        by_name = {agent.describe_metric(sensor_id, m["metricId"]).value["name"]: m["metricId"]
                   for m in known[name]["metrics"]}
    else:
        sensor_id, by_name = agent.create_sensor(name).created_sensor_id, {}
    missing = [m for m in metrics if m.name not in by_name]
    if missing:
        created = agent.create_metrics(sensor_id, [metric_definition(m) for m in missing]).metric_ids
        by_name.update({m.name: created[m.key] for m in missing})
    return sensor_id, {m.key: by_name[m.name] for m in metrics}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", type=Path, default=ROOT / "profiles" / "greenhouse.toml")
    parser.add_argument("--state-dir", type=Path, default=ROOT / ".demo")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--spacing", type=float, default=2.5, help="seconds between rounds (DHT needs > 2)")
    args = parser.parse_args()

    print(f"1. starting the emulated agent (state in {args.state_dir})")
    emulator = start_emulator(args.state_dir / "emulator")
    wired: list[tuple[str, Driver, str, dict[str, str]]] = []  # (name, driver, sensorId, {key: metricId})
    world = SimulatedWorld()  # one simulated greenhouse for every sensor of the run
    try:
        settings = AgentSettings(host="localhost", port=emulator.port, provision_port=emulator.provision_port,
                                 ca_file=emulator.ca_file,
                                 cert_folder=args.state_dir / "certs", client_name="greenhouse-demo")
        print("2. provisioning:", provision(settings).message)

        sensors = load_sensors(args.profile)
        print(f"3. {len(sensors)} sensors from {args.profile.name}, simulated")
        with AgentClient(settings) as agent:
            print(f"   connected as client {agent.client_id}")
            for spec in sensors:
                driver = world.build(spec["driver"], spec.get("options", {}))
                metrics = driver.active_metrics()
                sensor_id, metric_ids = register(agent, spec["name"], metrics)
                wired.append((spec["name"], driver, sensor_id, metric_ids))
                print(f"   {spec['name']:<26} {spec['driver']:<16} "
                      + ", ".join(f"{m.key} [{m.unit_label}]" for m in metrics))

            print(f"4. {args.rounds} rounds: one timestamped message per sensor")
            for round_number in range(1, args.rounds + 1):
                pushes: list[Future[Reply]] = []
                for name, driver, sensor_id, metric_ids in wired:
                    try:
                        sample = read_with_retries(driver)
                    except SensorError as exc:
                        print(f"   round {round_number} {name}: {type(exc).__name__}: {exc}")
                        continue
                    values = {metric_ids[key]: value for key, value in sample.items()}
                    pushes.append(agent.push_async(sensor_id, values, timestamp_ms=int(time.time() * 1000)))
                    shown = ", ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}"
                                      for k, v in sample.items())
                    print(f"   round {round_number} {name}: {shown}")
                for push in pushes:
                    push.result(timeout=10)
                if round_number < args.rounds:
                    time.sleep(args.spacing)
    finally:
        world.close()  # closes every driver it built
        emulator.stop()

    dump_command = [sys.executable, "-m", "pibridge", "emulator", "dump",
                    "--state-dir", str(args.state_dir / "emulator")]
    dump = json.loads(subprocess.run(dump_command, check=True, capture_output=True, text=True).stdout)
    print("5. what the emulated agent holds now (pibridge emulator dump):")
    for client in dump["clients"]:
        for sensor in client["sensors"]:
            counts = ", ".join(f"{m['name']}: {len(m['values'])} values" for m in sensor["metrics"])
            print(f"   {sensor['name']:<26} {counts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
