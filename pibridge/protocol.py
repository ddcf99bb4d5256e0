"""The TeamViewer IoT Agent's local MQTT API as data: topics, error codes, units, reply texts.

Both sides of the API read this module: the client (`pibridge.agent`) to publish requests and
match replies, the emulator (`pibridge.emulator`) to route requests and answer them. Nothing
else in pibridge spells a topic. Reference: `shared/agent-api.md` §3–§8.

Topic templates use ``{cid}`` (client id), ``{sid}`` (sensor id) and ``{mid}`` (metric id).
Every reply topic ends in ``/inbox`` and no request topic does, which is what lets a client
subscribe with ``+`` wildcards without hearing its own requests echoed back.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

API_PREFIX = "/v1.0"
BASE = API_PREFIX + "/{cid}"

DEFAULT_HOST = "localhost"
DEFAULT_API_PORT = 18884
DEFAULT_PROVISION_PORT = 18883
DEFAULT_CA_FILE = "/var/lib/teamviewer-iot-agent/certs/TeamViewerAuthority.crt"

# --- provisioning (port 18883, server-authenticated TLS only) -------------------------------
PROVISION_TOPIC = API_PREFIX + "/createClient"
PROVISION_TOPIC_LEGACY = "/createConnector"
PROVISION_TOPICS = (PROVISION_TOPIC, PROVISION_TOPIC_LEGACY)
CERT_BACK_TOPIC = "/certBack/{hash}"
CERT_BACK_ERROR_TOPIC = "/certBack/{hash}/error"
CERT_BACK_FILTER = "/certBack/#"
#: Seconds to wait for a certificate on the current topic before trying the legacy one (§3.7).
PROVISION_FALLBACK_S = 10.0

#: A clientId is the CN of the issued certificate: ``uuid4().hex``.
CLIENT_ID_RE = re.compile(r"^[0-9a-f]{32}$")
#: Ids a user may choose for implicitly created sensors and metrics (§4).
USER_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
RESERVED_IDS = frozenset({"create", "list", "inventory"})

#: Characters an id may not contain: ids become topic levels (``/`` separates levels, ``+`` and
#: ``#`` are wildcards, NUL is not allowed in MQTT strings).
TOPIC_LEVEL_FORBIDDEN = re.compile(r"[/+#\x00]")


def is_topic_level(value: object) -> bool:
    """Whether ``value`` can stand in a topic as one level: a non-empty string without / + # NUL."""
    return isinstance(value, str) and bool(value) and not TOPIC_LEVEL_FORBIDDEN.search(value)


NAME_MIN_LEN = 2
NAME_MAX_LEN = 64


class Op(enum.StrEnum):
    """Operations of §4, one name each; the value is used in logs and error messages."""

    PING = "ping"
    LIST_SENSORS = "list_sensors"
    CREATE_SENSOR = "create_sensor"
    UPDATE_SENSOR = "update_sensor"
    DELETE_SENSOR = "delete_sensor"
    CREATE_METRICS = "create_metrics"
    DESCRIBE_METRIC = "describe_metric"
    UPDATE_METRICS = "update_metrics"
    DELETE_METRICS = "delete_metrics"
    PUSH = "push"
    DEPROVISION = "deprovision"


class ReplyKind(enum.Enum):
    """How a success reply is encoded (§2): JSON for create/list/describe/ping, else a sentence."""

    JSON = "json"
    TEXT = "text"


@dataclass(frozen=True)
class Operation:
    """One API operation: where its request goes and where its answers come back.

    ``request`` is the topic the pibridge client publishes on; ``aliases`` are older topics the
    emulator also accepts (§8). ``error_aliases`` are extra error topics the agent also
    publishes on, which a client must not count (the describe-metric case of §4).
    """

    op: Op
    request: str
    success: str
    error: str
    reply: ReplyKind
    success_text: str | None = None
    aliases: tuple[str, ...] = ()
    error_aliases: tuple[str, ...] = ()

    @property
    def request_topics(self) -> tuple[str, ...]:
        return (self.request, *self.aliases)


OPERATIONS: dict[Op, Operation] = {
    op.op: op
    for op in (
        Operation(Op.PING, BASE + "/ping", BASE + "/ping/info/inbox", BASE + "/ping/error/inbox",
                  ReplyKind.JSON),
        Operation(Op.LIST_SENSORS, BASE + "/sensor/list", BASE + "/inventory/inbox",
                  BASE + "/inventory/error/inbox", ReplyKind.JSON, aliases=(BASE + "/inventory",)),
        Operation(Op.CREATE_SENSOR, BASE + "/sensor/create", BASE + "/sensor/inbox",
                  BASE + "/sensor/error/inbox", ReplyKind.JSON),
        Operation(Op.UPDATE_SENSOR, BASE + "/sensor/{sid}/update",
                  BASE + "/sensor/{sid}/update/info/inbox", BASE + "/sensor/{sid}/update/error/inbox",
                  ReplyKind.TEXT, "Sensor was changed."),
        Operation(Op.DELETE_SENSOR, BASE + "/sensor/{sid}/delete",
                  BASE + "/sensor/{sid}/delete/info/inbox", BASE + "/sensor/{sid}/delete/error/inbox",
                  ReplyKind.TEXT, "Sensor was deleted."),
        Operation(Op.CREATE_METRICS, BASE + "/sensor/{sid}/metric/create",
                  BASE + "/sensor/{sid}/metric/inbox", BASE + "/sensor/{sid}/metric/error/inbox",
                  ReplyKind.JSON, aliases=(BASE + "/sensor/{sid}/metric",)),
        Operation(Op.DESCRIBE_METRIC, BASE + "/sensor/{sid}/metric/{mid}/inventory",
                  BASE + "/sensor/{sid}/metric/{mid}/inventory/inbox",
                  BASE + "/sensor/{sid}/metric/{mid}/inventory/error/inbox", ReplyKind.JSON,
                  error_aliases=(BASE + "/sensor/{sid}/inventory/error/inbox",)),
        Operation(Op.UPDATE_METRICS, BASE + "/sensor/{sid}/metric/update",
                  BASE + "/sensor/{sid}/metric/update/info/inbox",
                  BASE + "/sensor/{sid}/metric/update/error/inbox",
                  ReplyKind.TEXT, "All metrics were successfully modified."),
        Operation(Op.DELETE_METRICS, BASE + "/sensor/{sid}/metric/delete",
                  BASE + "/sensor/{sid}/metric/delete/info/inbox",
                  BASE + "/sensor/{sid}/metric/delete/error/inbox",
                  ReplyKind.TEXT, "All metrics were successfully deleted."),
        Operation(Op.PUSH, BASE + "/sensor/{sid}/metric/pushValues", BASE + "/sensor/{sid}/info/inbox",
                  BASE + "/sensor/{sid}/error/inbox", ReplyKind.TEXT, "Sensor was updated.",
                  aliases=(BASE + "/sensor/{sid}",)),
        Operation(Op.DEPROVISION, BASE + "/delete", BASE + "/delete/info/inbox",
                  BASE + "/delete/error/inbox", ReplyKind.TEXT, "Client was deleted."),
    )
}

#: Published by the agent after every accepted push: {"metrics":[{"metricId","value"}],"timestamp"}.
LIVEDATA = BASE + "/sensor/{sid}/livedata"

#: Error reports from the client (§4): stored by the agent, never answered.
CLIENT_ERROR_REPORT = BASE + "/error"
SENSOR_ERROR_REPORT = BASE + "/sensor/{sid}/error"
METRIC_ERROR_REPORT = BASE + "/sensor/{sid}/metric/{mid}/error"
ERROR_REPORTS = (CLIENT_ERROR_REPORT, SENSOR_ERROR_REPORT, METRIC_ERROR_REPORT)


_PLACEHOLDER = re.compile(r"\{(cid|sid|mid)\}")


def template_regex(template: str, **fixed: str) -> re.Pattern[str]:
    """A regex matching the topics of ``template``: a placeholder given in ``fixed`` must be that
    value; every other one is a named group of one topic level (``(?P<sid>[^/]+)``)."""
    parts = _PLACEHOLDER.split(template)  # literal, name, literal, name, …, literal
    pattern = "".join(
        (re.escape(fixed[part]) if part in fixed else f"(?P<{part}>[^/]+)") if i % 2 else re.escape(part)
        for i, part in enumerate(parts))
    return re.compile(pattern + r"\Z")


def template_filter(template: str) -> str:
    """``template`` as a subscription filter: every placeholder becomes ``+``."""
    return _PLACEHOLDER.sub("+", template)


def placeholder_count(template: str) -> int:
    return len(_PLACEHOLDER.findall(template))


def topic(template: str, cid: str, sid: str = "", mid: str = "") -> str:
    """Fill a template of this module."""
    return template.format(cid=cid, sid=sid, mid=mid)


def client_subscriptions(cid: str, *, livedata: bool = True) -> list[str]:
    """The filters a client subscribes to: every success and counted error topic, plus (with
    ``livedata``) `livedata_filter`.

    Derived from `OPERATIONS` with ``+`` in place of sensor and metric ids; never ``B/#``,
    which would echo each request back (§1).
    """
    filters: list[str] = []
    for operation in OPERATIONS.values():
        for template in (operation.success, operation.error):
            f = template.format(cid=cid, sid="+", mid="+")
            if f not in filters:
                filters.append(f)
    if livedata:
        filters.append(livedata_filter(cid))
    return filters


def livedata_filter(cid: str) -> str:
    """The livedata of every sensor of ``cid``."""
    return LIVEDATA.format(cid=cid, sid="+")


# --- error codes (§5) -----------------------------------------------------------------------
class ErrorCode(enum.IntEnum):
    """The agent's error codes; names exactly as the agent spells them (typos included)."""

    UnknownError = 0
    NoBackendConnection = 1
    NoLicence = 2
    InternalError = 3
    InvalidJson = 4
    JsonIsNotAObject = 5
    MissingParameter = 6
    ParameterIsNotAString = 7
    ParameterIsNotANumber = 8
    ParameterisNotABool = 9
    ParameterIsNotAnArray = 10
    ParameterIsNotAnInteger = 11
    UnknownValueUnit = 12
    UnknownMetricType = 13
    ValueUnitOrValueTypeHasToBeProvided = 14
    UnknownSensorId = 15
    UnknownMetricId = 16
    NoMetricsUpdated = 17
    ForbiddendAccess = 18
    OutOfRange = 19


def error_payload(code: ErrorCode, message: str) -> dict[str, object]:
    """The agent's error body (§2); note the lower-case ``errorcode``."""
    return {"errorMessage": message, "errorcode": int(code)}


# --- units and types (§6) -------------------------------------------------------------------
VALUE_UNITS = frozenset({
    "SI.ElectricCurrent.AMPERE", "SI.DataAmount.BIT", "SI.Temperature.CELSIUS",
    "SI.ElectricCapacitance.FARAD", "SI.Mass.GRAM", "SI.Mass.KILOGRAM", "SI.Energy.JOULE",
    "SI.Frequency.HERTZ", "SI.Length.METER", "SI.Velocity.METERS_PER_SECOND",
    "SI.AmountOfSubstance.MOLE", "SI.Force.NEWTON", "SI.ElectricResistance.OHM",
    "SI.Pressure.PASCAL", "SI.Angle.RADIAN", "SI.Duration.SECOND", "SI.Area.SQUARE_METRE",
    "SI.ElectricPotential.VOLT", "SI.Power.WATT", "SI.LuminousIntensity.CANDELA",
    "SI.Acceleration.METERS_PER_SQUARE_SECOND", "NoSI.Dimensionless.PERCENT",
    "NoSI.Dimensionless.DECIBEL", "NoSI.Location.LATITUDE", "NoSI.Location.LONGITUDE",
})


class ValueType(enum.StrEnum):
    """Custom metric types; the agent rejects ``boolean``."""

    BOOL = "bool"
    STRING = "string"
    DOUBLE = "double"
    INTEGER = "integer"


#: Pushed timestamps must lie in [2000-01-01, now + 1 day] (§4, error 19); milliseconds.
TIMESTAMP_MIN_MS = 946_684_800_000
TIMESTAMP_MAX_AHEAD_MS = 86_400_000
