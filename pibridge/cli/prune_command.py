"""`pibridge inventory --prune --profile P`: delete this client's agent sensors that the profile no
longer has (their values go with them at the agent).

Asks for confirmation on a terminal; without one, ``--yes`` is required. Refuses while samples of
such a sensor still wait in the bridge's queue (they would be lost): the bridge delivers them
first, even for a sensor removed from the profile. Safe beside a running bridge: the queue is
read read-only; the mapping file loses the deleted sensors' entries.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys

from pibridge.agent import AgentClient, AgentError, AgentSettings
from pibridge.bridge.inventory import InventoryMapping, forget_sensors, prune_candidates
from pibridge.bridge.queue import read_queued_sensors
from pibridge.cli import CliError, counted
from pibridge.profile import ProfileError, load_profile


def cmd_prune(args: argparse.Namespace, settings: AgentSettings) -> int:
    if args.profile is None:
        raise CliError("--prune needs --profile: the profile says which sensors to keep")
    try:
        profile = load_profile(args.profile)
    except ProfileError as exc:
        raise CliError(str(exc)) from None
    names = [sensor.name for sensor in profile.sensors]
    state_dir = profile.bridge.state_dir
    try:
        client = AgentClient(settings, request_timeout=args.timeout)
        client.connect(args.timeout)
        try:
            mapping = InventoryMapping(state_dir, client.client_id)
            candidates = prune_candidates(client.list_sensors().value, mapping, names)
            if not candidates:
                print(f"nothing to prune: every sensor of client {client.client_id} is in {args.profile}")
                return 0
            try:
                queued = read_queued_sensors(state_dir)
            except sqlite3.Error as exc:
                raise CliError(f"cannot read the queue in {state_dir} ({exc}): not pruning while it is "
                               "unknown which samples still wait") from None
            for sensor_id, name in candidates:
                aliases = {name} | {n for n in mapping.sensor_names() if mapping.sensor_id(n) == sensor_id}
                waiting = sum(queued.get(alias, 0) for alias in aliases)
                if waiting:
                    raise CliError(f"refusing to prune: {counted(waiting, 'sample')} "
                                   f"of sensor {name!r} ({sensor_id}) "
                                   f"{'still waits' if waiting == 1 else 'still wait'} in the queue in "
                                   f"{state_dir}: deliver {'it' if waiting == 1 else 'them'} first")
            print(f"sensors of client {client.client_id} that {args.profile} no longer has:")
            for sensor_id, name in candidates:
                print(f"  {sensor_id}  {name}")
            if not args.yes:
                if not sys.stdin.isatty():
                    raise CliError("not deleting without confirmation: pass --yes (no terminal to ask on)")
                try:
                    answer = input(f"delete {'this' if len(candidates) == 1 else 'these'} "
                                   f"{counted(len(candidates), 'sensor')} and all their values? [y/N] ")
                except EOFError:  # Ctrl-D: no answer is no
                    answer = ""
                    print()
                if answer.strip().lower() not in ("y", "yes"):
                    print("nothing deleted")
                    return 1
            for sensor_id, name in candidates:
                client.delete_sensor(sensor_id)
                forget_sensors(mapping, [sensor_id])
                print(f"deleted sensor {name!r} ({sensor_id})")
        finally:
            client.close()
    except AgentError as exc:
        raise CliError(str(exc)) from None
    return 0
