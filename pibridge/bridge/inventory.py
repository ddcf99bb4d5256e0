"""The bridge's inventory at the agent: which agent sensor and metric ids its sensors push to.

`InventoryMapping` is the mapping kept in the state directory, one file per clientId
(``inventory-<clientId>.json``), written right after every create's answer::

    {"clientId": "…", "sensors": {"<sensor name>": {"sensorId": "…",
                                                    "metrics": {"<key>": {"unit:SI…": "<metricId>"}}}}}

`reconcile` lists the agent's sensors, describes the metrics it considers, and returns a
`ResolvedInventory`: only ids seen in that listing with the expected name and definition. Its
own sensors and metrics are found through the mapping, by name (and definition) only where the
mapping has none; what is missing is created. An id whose definition does not match is never
adopted. A create that got no answer aborts the reconciliation (`ReconcileAborted`): the next one
lists again before creating again, and adopts what the lost create made.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pibridge.agent import (
    AgentClient,
    AgentConnectionError,
    AgentReplyError,
    ErrorCode,
    MetricDefinition,
    ProtocolError,
    Reply,
    RequestTimeout,
)
from pibridge.bridge.model import MetricSpec, SensorSpec
from pibridge.durable import fsync_directory

log = logging.getLogger(__name__)

MAPPING_PREFIX = "inventory-"
#: File mode of a mapping (it holds ids only, nothing secret).
MAPPING_MODE = 0o644
#: Seconds a reconciliation waits for one answer beyond its bound.
ANSWER_GRACE_S = 5.0
#: Request timeouts a reconciliation waits for one answer: a request may wait for a barrier
#: before it is published (`pibridge.agent.pending` R2), then for its answer and the barrier that
#: confirms it (R7), each bounded by the timeout.
ANSWER_TIMEOUTS = 3

Identity = tuple[str, str]  # (metric key, "unit:…" | "type:…")
#: Agent error codes that abort a reconciliation for a later retry: transient (0–3) and an id
#: that vanished between the listing and the request (15, 16).
RETRY_CODES = frozenset({0, 1, 2, 3, 15, 16})


class ReconcileAborted(Exception):
    """The reconciliation could not finish (connection lost, no answer): retry later. Nothing it
    saw may be used."""


def mapping_path(state_dir: Path, client_id: str) -> Path:
    return Path(state_dir) / f"{MAPPING_PREFIX}{client_id}.json"


class InventoryMapping:
    """sensor name → sensorId, (sensor name, metric identity) → metricId, for one clientId."""

    def __init__(self, state_dir: Path, client_id: str) -> None:
        self.client_id = client_id
        self.path = mapping_path(state_dir, client_id)
        self._sensors: dict[str, dict[str, Any]] = {}
        self._deferred = 0        # inside `deferred_saves`: changes are saved when it ends
        self._dirty = False       # changed since the last save
        try:
            document = json.loads(self.path.read_text(encoding="utf-8"))
            sensors = document["sensors"]
            if not isinstance(sensors, dict):
                raise TypeError("sensors is not an object")
            self._sensors = {str(name): {"sensorId": str(entry["sensorId"]),
                                         "metrics": {str(k): {str(i): str(m) for i, m in ids.items()}
                                                     for k, ids in entry.get("metrics", {}).items()}}
                             for name, entry in sensors.items()}
        except FileNotFoundError:
            pass
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
            # a broken file must not stop the bridge: found by name again (nothing is duplicated)
            log.warning("inventory mapping %s unreadable (%s): sensors are found by name again",
                        self.path, exc)

    def sensor_names(self) -> list[str]:
        return list(self._sensors)

    def sensor_id(self, name: str) -> str | None:
        entry = self._sensors.get(name)
        return entry["sensorId"] if entry else None

    def metric_id(self, name: str, identity: Identity) -> str | None:
        entry = self._sensors.get(name)
        return entry["metrics"].get(identity[0], {}).get(identity[1]) if entry else None

    def metric_identities(self, name: str) -> list[Identity]:
        entry = self._sensors.get(name)
        return [(key, ident) for key, ids in entry["metrics"].items() for ident in ids] if entry else []

    def set_sensor(self, name: str, sensor_id: str) -> None:
        entry = self._sensors.get(name)
        if entry is None or entry["sensorId"] != sensor_id:
            self._sensors[name] = {"sensorId": sensor_id, "metrics": {}}
            self._changed()

    def set_metrics(self, name: str, ids: Mapping[Identity, str]) -> None:
        metrics = self._sensors[name]["metrics"]
        changed = False
        for (key, ident), metric_id in ids.items():
            if metrics.get(key, {}).get(ident) != metric_id:
                metrics.setdefault(key, {})[ident] = metric_id
                changed = True
        if changed:
            self._changed()

    def drop_sensor(self, name: str) -> None:
        if self._sensors.pop(name, None) is not None:
            self._changed()

    def drop_metric(self, name: str, identity: Identity) -> None:
        entry = self._sensors.get(name)
        if entry and entry["metrics"].get(identity[0], {}).pop(identity[1], None) is not None:
            if not entry["metrics"][identity[0]]:
                del entry["metrics"][identity[0]]
            self._changed()

    def _changed(self) -> None:
        """A change: saved now, or when the `deferred_saves` block around it ends."""
        self._dirty = True
        if not self._deferred:
            self.save()

    @contextlib.contextmanager
    def deferred_saves(self) -> Iterator[None]:
        """Changes made inside are saved once, when the block ends (also when it raises): one
        reconciliation writes the file once instead of once per sensor and metric. A process
        killed inside loses only ids the next reconciliation finds again by name (adoption)."""
        self._deferred += 1
        try:
            yield
        except BaseException:
            self._deferred -= 1
            if not self._deferred and self._dirty:
                try:
                    self.save()
                except OSError as exc:   # the block's own failure is the one to report
                    log.warning("inventory mapping %s not saved: %s", self.path, exc)
            raise
        self._deferred -= 1
        if not self._deferred and self._dirty:
            self.save()

    def save(self) -> None:
        """Atomic replace: a temporary file of this process and thread (the bridge and ``pibridge
        inventory --prune`` may write at once; O_EXCL never reuses a stale one), fsync, rename,
        fsync of the directory (the rename itself survives a power cut). A crash leaves the old
        or the new file; concurrent writers: the last rename wins, whole."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(f"{self.path.name}.{os.getpid()}.{threading.get_ident()}.new")
        data = json.dumps({"clientId": self.client_id, "sensors": self._sensors}, indent=1, sort_keys=True)
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()  # left by a crash of an earlier process with this pid
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, MAPPING_MODE)
            with open(fd, "w", encoding="utf-8") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                temporary.unlink()
            raise
        fsync_directory(self.path.parent)
        self._dirty = False


@dataclass(frozen=True)
class ResolvedInventory:
    """Ids verified by one reconciliation: ``sensors`` name → sensorId, ``metrics``
    (name, key, identity) → metricId; ``generation`` the connection it was made on."""

    client_id: str
    generation: int
    sensors: dict[str, str] = field(default_factory=dict)
    metrics: dict[tuple[str, str, str], str] = field(default_factory=dict)


def _identity_of(described: Mapping[str, Any]) -> str | None:
    if isinstance(described.get("valueUnit"), str):
        return f"unit:{described['valueUnit']}"
    if isinstance(described.get("valueType"), str):
        return f"type:{described['valueType']}"
    return None


def _definition(spec: MetricSpec) -> MetricDefinition:
    if spec.unit is not None:
        return MetricDefinition(spec.name, value_unit=spec.unit, matching_id=spec.key)
    return MetricDefinition(spec.name, value_type=spec.value_type, value_annotation=spec.annotation,
                            matching_id=spec.key)


def _change(spec: MetricSpec, described: Mapping[str, Any]) -> dict[str, str]:
    """The update that makes the agent's metric match ``spec`` (name, annotation); {} if none."""
    change: dict[str, str] = {}
    if described.get("name") != spec.name:
        change["name"] = spec.name
    if spec.unit is None and (described.get("valueAnnotation") or "") != spec.annotation:
        change["valueAnnotation"] = spec.annotation
    return change


class Reconciler:
    """One reconciliation at a time, on the delivery thread, with blocking calls that are
    bounded by the client's request timeout."""

    def __init__(self, client: AgentClient, mapping: InventoryMapping) -> None:
        self.client = client
        self.mapping = mapping
        self.created_sensors = 0
        self.created_metrics = 0
        self.updates = 0

    def _result(self, future: Future[Reply]) -> Reply:
        """The reply; `ReconcileAborted` for what a later attempt may not meet again (no answer,
        connection lost, a garbled or transient answer, an id gone meanwhile); other agent
        errors raised as they are."""
        try:
            return self.client.result(future, ANSWER_TIMEOUTS * self.client.request_timeout + ANSWER_GRACE_S)
        except (AgentConnectionError, RequestTimeout, ProtocolError, TimeoutError) as exc:
            raise ReconcileAborted(str(exc)) from exc
        except AgentReplyError as exc:
            if int(exc.code) in RETRY_CODES or not isinstance(exc.code, ErrorCode):
                raise ReconcileAborted(str(exc)) from exc
            raise

    def reconcile(self, specs: Mapping[str, SensorSpec], queued: Mapping[str, Iterable[Identity]],
                  generation: int) -> ResolvedInventory:
        """Make the agent hold every sensor and metric of ``specs``; verify the ids of
        ``queued`` (identities of waiting samples: sensors removed from the profile, metrics
        whose unit changed) without creating them. `ReconcileAborted` on a transient failure;
        `AgentReplyError` 18 (forbidden: re-provisioning matter) is raised as it is. What it
        learns is saved once, at the end (`InventoryMapping.deferred_saves`)."""
        with self.mapping.deferred_saves():
            return self._reconcile(specs, queued, generation)

    def _reconcile(self, specs: Mapping[str, SensorSpec], queued: Mapping[str, Iterable[Identity]],
                   generation: int) -> ResolvedInventory:
        listing = self._result(self.client.list_sensors_async()).value
        listed = {str(s["sensorId"]): s for s in listing if isinstance(s, dict)}
        names = list(dict.fromkeys([*specs, *queued]))
        # which listed sensors are ours: mapped ids first, then same-name ones for unmapped names
        ours: dict[str, str] = {}
        for name in names:
            sid = self.mapping.sensor_id(name)
            if sid is not None and sid not in listed:
                log.warning("sensor %r (%s) is no longer at the agent: registering it again", name, sid)
                self.mapping.drop_sensor(name)
                sid = None
            if sid is not None:
                ours[name] = sid
        claimed = set(ours.values())
        candidates: dict[str, list[str]] = {}
        for name in names:
            if name not in ours and name in specs:
                candidates[name] = [sid for sid, s in listed.items()
                                    if s.get("name") == name and sid not in claimed]
        to_describe = set(ours.values()) | {sid for sids in candidates.values() for sid in sids}
        described = self._describe({sid: listed[sid] for sid in to_describe})

        resolved = ResolvedInventory(self.mapping.client_id, generation)
        for name in names:
            spec = specs.get(name)
            sid = ours.get(name)
            if sid is None and spec is not None:
                sid = self._adopt(spec, candidates.get(name, []), described, claimed)
            if sid is None and spec is not None:
                sid = self._result(self.client.create_sensor_async(name)).created_sensor_id
                self.created_sensors += 1
                self.mapping.set_sensor(name, sid)
                log.info("created sensor %r at the agent: %s", name, sid)
                described[sid] = {}
            if sid is None:
                continue  # a removed sensor we have no id for: its samples cannot be delivered
            claimed.add(sid)
            if spec is not None and listed.get(sid, {}).get("name", name) != name:
                self._result(self.client.update_sensor_async(sid, name))
                self.updates += 1
                log.info("sensor %s renamed to %r at the agent", sid, name)
            resolved.sensors[name] = sid
            self._metrics(name, sid, spec, set(queued.get(name, ())), described.get(sid, {}), resolved)
        return resolved

    def _describe(self, sensors: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
        """{sensorId: {metricId: describe reply}}, pipelined; a metric that vanished meanwhile is left out."""
        futures = {sid: {str(m["metricId"]): self.client.describe_metric_async(sid, str(m["metricId"]))
                         for m in s.get("metrics", []) if isinstance(m, dict) and "metricId" in m}
                   for sid, s in sensors.items()}
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for sid, metrics in futures.items():
            out[sid] = {}
            for mid, future in metrics.items():
                try:
                    reply = self.client.result(future, ANSWER_TIMEOUTS * self.client.request_timeout
                                               + ANSWER_GRACE_S)
                except AgentReplyError as exc:
                    if exc.code in (ErrorCode.UnknownMetricId, ErrorCode.UnknownSensorId):
                        continue  # deleted since the listing: as if not listed
                    if int(exc.code) in RETRY_CODES or not isinstance(exc.code, ErrorCode):
                        raise ReconcileAborted(str(exc)) from exc
                    raise
                except (AgentConnectionError, RequestTimeout, ProtocolError, TimeoutError) as exc:
                    raise ReconcileAborted(str(exc)) from exc
                if isinstance(reply.value, dict):
                    out[sid][mid] = reply.value
        return out

    def _adopt(self, spec: SensorSpec, candidates: list[str], described: Mapping[str, Mapping[str, Any]],
               claimed: set[str]) -> str | None:
        """The unclaimed same-name sensor whose metrics match most of ``spec``'s definitions."""
        best, best_score = None, -1
        for sid in candidates:
            if sid in claimed:
                continue
            metrics = described.get(sid, {})
            score = sum(1 for m in spec.metrics for d in metrics.values()
                        if d.get("name") == m.name and _identity_of(d) == m.identity[1])
            if score > best_score:
                best, best_score = sid, score
        if best is not None:
            self.mapping.set_sensor(spec.name, best)
            log.info("adopted the agent's sensor %s named %r", best, spec.name)
        return best

    def _metrics(self, name: str, sid: str, spec: SensorSpec | None, queued: set[Identity],
                 described: Mapping[str, Mapping[str, Any]], resolved: ResolvedInventory) -> None:
        claimed: set[str] = set()
        wanted = {m.identity: m for m in spec.metrics} if spec is not None else {}
        found: dict[Identity, str] = {}
        for identity in list(dict.fromkeys([*wanted, *queued, *self.mapping.metric_identities(name)])):
            mid = self.mapping.metric_id(name, identity)
            if mid is None:
                continue
            definition = described.get(mid)
            if definition is None or _identity_of(definition) != identity[1]:
                if definition is not None:
                    log.warning("metric %s of sensor %r is %s at the agent, not %s: not used", mid, name,
                                _identity_of(definition), identity[1])
                self.mapping.drop_metric(name, identity)
                continue
            found[identity] = mid
            claimed.add(mid)
        # wanted but unmapped: adopt a same-name metric of the same unit/type, else create
        missing = [m for i, m in wanted.items() if i not in found]
        for metric in list(missing):
            for mid, definition in described.items():
                if mid not in claimed and definition.get("name") == metric.name \
                        and _identity_of(definition) == metric.identity[1]:
                    found[metric.identity] = mid
                    claimed.add(mid)
                    missing.remove(metric)
                    self.mapping.set_metrics(name, {metric.identity: mid})
                    log.info("adopted metric %s (%r) of sensor %r", mid, metric.name, name)
                    break
        for metric in missing:
            old = [i for i in found if i[0] == metric.key and i != metric.identity]
            if old:
                log.warning("metric %r of sensor %r changed from %s to %s: created anew (the old one "
                            "stays; its queued samples still go to it)", metric.key, name, old[0][1],
                            metric.identity[1])
        if missing:
            try:
                definitions = [_definition(m) for m in missing]
                created = self._result(self.client.create_metrics_async(sid, definitions))
            except AgentReplyError as exc:
                if exc.code is ErrorCode.ForbiddendAccess:
                    raise
                log.error("the agent refused the metrics %s of sensor %r: %s", [m.key for m in missing],
                          name, exc)
            else:
                ids = created.metric_ids
                new = {m.identity: ids[m.key] for m in missing if m.key in ids}
                self.mapping.set_metrics(name, new)
                found.update(new)
                self.created_metrics += len(new)
                log.info("created %d metrics of sensor %r at the agent", len(new), name)
        changes = []
        for identity, metric in wanted.items():
            mid = found.get(identity)
            if mid is not None and mid in described:
                change = _change(metric, described[mid])
                if change:
                    changes.append({"metricId": mid, **change})
        if changes:
            try:
                self._result(self.client.update_metrics_async(sid, changes))
                self.updates += len(changes)
                log.info("updated %d metrics of sensor %r (name/annotation)", len(changes), name)
            except AgentReplyError as exc:
                if exc.code is ErrorCode.ForbiddendAccess:
                    raise
                log.error("the agent refused updating metrics of sensor %r: %s", name, exc)
        for identity, mid in found.items():
            resolved.metrics[(name, identity[0], identity[1])] = mid


def prune_candidates(listing: Iterable[Mapping[str, Any]], mapping: InventoryMapping,
                     profile_names: Iterable[str]) -> list[tuple[str, str]]:
    """(sensorId, name) of this client's agent sensors the profile no longer has: not named like a
    profile sensor and not mapped to one."""
    names = set(profile_names)
    kept = {mapping.sensor_id(name) for name in names} - {None}
    return [(str(s["sensorId"]), str(s.get("name", ""))) for s in listing
            if s.get("name") not in names and str(s["sensorId"]) not in kept]


def forget_sensors(mapping: InventoryMapping, sensor_ids: Iterable[str]) -> None:
    """Remove deleted sensors from the mapping."""
    gone = set(sensor_ids)
    for name in mapping.sensor_names():
        if mapping.sensor_id(name) in gone:
            with contextlib.suppress(KeyError):
                mapping.drop_sensor(name)
