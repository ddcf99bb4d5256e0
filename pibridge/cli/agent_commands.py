"""`pibridge provision | deprovision | ping | inventory`: the agent client from the command line.

Settings come from ``--profile FILE`` (its ``[agent]`` table), overridden by the matching flags.
Every failure is one line naming the file or host:port and what to do (`CliError`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

from pibridge import protocol
from pibridge.agent import (
    AgentClient,
    AgentConnectionError,
    AgentError,
    AgentSettings,
    ConnectionErrorKind,
    CredentialFiles,
    ProvisioningMode,
)
from pibridge.agent.settings import CONFIGURABLE_MODES, check_seconds, expand_path
from pibridge.cli import CliError, OneLineParser
from pibridge.mqtt import Endpoint, TlsFiles, demands_client_certificate
from pibridge.profile import ProfileError, load_profile

DEFAULT_TIMEOUT_S = 10.0
MS_PER_S = 1000.0

#: AgentSettings fields that have a flag of the same name
_SETTING_FLAGS = ("host", "port", "provision_port", "ca_file", "cert_folder", "client_name", "provisioning")


def _seconds(text: str) -> float:
    """``--timeout``: a number of seconds, more than 0 and at most a day."""
    try:
        return check_seconds("the timeout", float(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc) if "seconds" in str(exc) else
                                         f"not a number of seconds: {text!r}") from None


def _user_path(text: str) -> Path:
    """A path flag: ``~`` and ``~user`` expanded (a user that does not exist is a usage error)."""
    try:
        return expand_path("path", text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_agent_flags(group: argparse._ArgumentGroup) -> None:
    """The flags that override a profile's ``[agent]`` table (`settings_from_args` reads them):
    every agent command and ``pibridge run`` take the same ones."""
    group.add_argument("--host", help="agent host (default localhost)")
    group.add_argument("--port", type=int, help="agent API port (default 18884)")
    group.add_argument("--provision-port", type=int, help="agent provisioning port (default 18883)")
    group.add_argument("--ca-file", type=_user_path, help="CA certificate of the agent")
    group.add_argument("--cert-folder", type=_user_path, help="where the client's key and certificate live")
    group.add_argument("--client-name", help="names the credential files (default pibridge)")
    group.add_argument("--provisioning", choices=[str(m) for m in CONFIGURABLE_MODES],
                       help="keep: reuse stored credentials; smart: re-provision if the agent rejects them")


def register(sub: argparse._SubParsersAction) -> None:
    """Add this group's subcommands to the top-level parser."""
    common = OneLineParser(add_help=False)
    group = common.add_argument_group("agent settings (override the profile's [agent] table)")
    group.add_argument("--profile", type=_user_path, metavar="FILE",
                       help="TOML profile with an [agent] table")
    add_agent_flags(group)
    group.add_argument("--timeout", type=_seconds, default=DEFAULT_TIMEOUT_S, metavar="S",
                       help=f"seconds to wait for the agent (default {DEFAULT_TIMEOUT_S:g})")

    parser = sub.add_parser("provision", parents=[common], help="get a client certificate from the agent")
    parser.add_argument("--override", action="store_true", help="always provision anew (new clientId)")
    parser.set_defaults(handler=cmd_provision)
    parser = sub.add_parser("deprovision", parents=[common],
                            help="delete this client and all its data at the agent, then its credentials")
    parser.set_defaults(handler=cmd_deprovision)
    parser = sub.add_parser("ping", parents=[common], help="check the connection to the agent")
    parser.set_defaults(handler=cmd_ping)
    parser = sub.add_parser("inventory", parents=[common], help="list sensors and their metrics")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--prune", action="store_true",
                        help="delete this client's sensors the profile no longer has (needs --profile)")
    parser.add_argument("--yes", action="store_true", help="with --prune: do not ask for confirmation")
    parser.set_defaults(handler=cmd_inventory)


def settings_from_args(args: argparse.Namespace) -> AgentSettings:
    """The profile's agent settings (defaults without a profile), overridden by the flags."""
    try:
        settings = load_profile(args.profile, sections="agent").agent if args.profile else AgentSettings()
    except ProfileError as exc:
        raise CliError(str(exc)) from None
    except ValueError as exc:  # a value AgentSettings refuses that the profile's own checks let by
        raise CliError(f"{args.profile}: [agent]: {exc}") from None
    changes = {field: getattr(args, field) for field in _SETTING_FLAGS
               if getattr(args, field, None) is not None}
    try:
        return dataclasses.replace(settings, **changes)
    except ValueError as exc:
        raise CliError(f"invalid setting: {exc}") from None


def _agent_failure(settings: AgentSettings, exc: Exception) -> CliError:
    """The one line for a failed agent command. An API request that goes unanswered on a port that
    asks for no client certificate was sent to another port (most likely the provisioning port:
    it accepts any TLS client and never answers API requests): said so."""
    message = str(exc)
    # RequestTimeout is a TimeoutError; a connection whose first ping goes unanswered fails connect()
    unanswered = isinstance(exc, AgentConnectionError) and exc.kind is ConnectionErrorKind.TIMEOUT
    if isinstance(exc, TimeoutError) or unanswered:
        endpoint = Endpoint(settings.host, settings.port, TlsFiles(settings.ca_file))
        if demands_client_certificate(endpoint, DEFAULT_TIMEOUT_S) is False:
            message += (f": {settings.api_address} asks for no client certificate, so it is not the agent's "
                        f"API port (default {protocol.DEFAULT_API_PORT}; is it the provisioning port?): "
                        "check --port")
    return CliError(message)


def _connected_client(settings: AgentSettings, timeout: float) -> AgentClient:
    client = AgentClient(settings, request_timeout=timeout)
    client.connect(timeout)
    return client


def cmd_provision(args: argparse.Namespace) -> int:
    from pibridge.agent.provisioning import provision  # here: `pibridge run` imports this module too
    settings = settings_from_args(args)
    mode = ProvisioningMode.OVERRIDE if args.override else settings.provisioning
    try:
        result = provision(settings, mode, check_timeout=args.timeout)
    except (AgentError, TimeoutError) as exc:
        raise CliError(str(exc)) from None
    print(f"{result.message} clientId {result.client_id} (certificate {result.cert_file})")
    if result.check_failure:
        print(f"note: the stored certificate could not be checked: {result.check_failure}", file=sys.stderr)
    return 0


def cmd_deprovision(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    try:
        client = _connected_client(settings, args.timeout)
        try:
            client_id = client.client_id
            client.deprovision()
        finally:
            client.close()
    except (AgentError, TimeoutError) as exc:
        raise _agent_failure(settings, exc) from None
    try:
        removed = CredentialFiles(settings.cert_folder, settings.client_name).remove()
    except (AgentError, OSError) as exc:
        raise CliError(f"client {client_id} deprovisioned, but its credentials in {settings.cert_folder} "
                       f"could not be removed: {exc}") from None
    print(f"client {client_id} deprovisioned: the agent deleted its sensors and revoked its certificate; "
          f"removed {len(removed)} credential files from {settings.cert_folder}")
    return 0


def cmd_ping(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    try:
        client = _connected_client(settings, args.timeout)
        try:
            started = time.perf_counter()
            client.ping()
            elapsed_ms = (time.perf_counter() - started) * MS_PER_S
        finally:
            client.close()
    except (AgentError, TimeoutError) as exc:
        raise _agent_failure(settings, exc) from None
    print(f"agent at {settings.api_address} answered in {elapsed_ms:.1f} ms (client {client.client_id})")
    return 0


def inventory(client: AgentClient) -> list[dict[str, Any]]:
    """``[{"sensorId","name","metrics":[<describe reply>…]}]``: list, then describe every metric
    (pipelined: one request per metric, all in flight at once)."""
    sensors = client.list_sensors().value
    pending = [[client.describe_metric_async(sensor["sensorId"], metric["metricId"])
                for metric in sensor.get("metrics", [])] for sensor in sensors]
    timeout = client.request_timeout + DEFAULT_TIMEOUT_S
    return [{"sensorId": sensor["sensorId"], "name": sensor.get("name", ""),
             "metrics": [future.result(timeout).value for future in futures]}
            for sensor, futures in zip(sensors, pending, strict=True)]


def _metric_kind(metric: dict[str, Any]) -> str:
    if "valueUnit" in metric:
        return str(metric["valueUnit"])
    annotation = metric.get("valueAnnotation")
    return f"{metric.get('valueType', '?')}" + (f" [{annotation}]" if annotation else "")


def format_inventory(sensors: list[dict[str, Any]]) -> str:
    """A plain-text table: one row per metric (a sensor without metrics gets one row)."""
    rows = [("SENSOR ID", "SENSOR", "METRIC ID", "METRIC", "UNIT / TYPE")]
    for sensor in sensors:
        for metric in sensor["metrics"] or [{}]:
            rows.append((sensor["sensorId"], sensor["name"], metric.get("metricId", "-"),
                         metric.get("name", "-"), _metric_kind(metric) if metric else "-"))
    if len(rows) == 1:
        return "no sensors"
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    lines = ("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
             for row in rows)
    return "\n".join(lines)


def cmd_inventory(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    if args.prune:
        from pibridge.cli.prune_command import cmd_prune

        return cmd_prune(args, settings)
    try:
        client = _connected_client(settings, args.timeout)
        try:
            sensors = inventory(client)
        finally:
            client.close()
    except (AgentError, TimeoutError) as exc:
        raise _agent_failure(settings, exc) from None
    print(json.dumps(sensors, indent=2) if args.json else format_inventory(sensors))
    return 0
