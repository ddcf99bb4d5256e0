"""Pure unit tests of the agent client's parts (no network): errors, FIFO matching, routing,
reply parsing, push encoding, credential files."""

from __future__ import annotations

import json
import math
import stat
import threading
import time
from concurrent.futures import Future
from pathlib import Path

import pytest

from pibridge import protocol
from pibridge.agent import (
    REPLY_ERRORS,
    AgentReplyError,
    CredentialFiles,
    ErrorCode,
    MetricDefinition,
    ProtocolError,
    RequestTimeout,
    encode_push,
    reply_error,
)
from pibridge.agent import errors as agent_errors
from pibridge.agent.client import _Route, _Router, parse_reply
from pibridge.agent.pending import (
    COMPACT_MIN_SETTLED,
    DeadlineWatcher,
    PendingRequest,
    PendingTable,
    RequestState,
)
from pibridge.agent.settings import check_client_name
from pibridge.protocol import OPERATIONS, Op

CID = "0123456789abcdef0123456789abcdef"


# --- errors ---------------------------------------------------------------------------------------
def test_one_error_class_per_code_named_like_the_code() -> None:
    assert len(REPLY_ERRORS) == len(ErrorCode) == 20
    for code in ErrorCode:
        cls = getattr(agent_errors, code.name)
        assert cls is REPLY_ERRORS[code] and issubclass(cls, AgentReplyError)
        error = reply_error(int(code), "text", raw=b"{}", topic="t")
        assert type(error) is cls and error.code is code and error.code_name == code.name
        assert error.agent_message == "text" and error.raw == b"{}"


def test_unknown_error_code_is_still_an_agent_reply_error() -> None:
    error = reply_error(42, "new in a later agent")
    assert type(error) is AgentReplyError and error.code == 42 and error.code_name == "Unknown(42)"


def test_catching_by_class() -> None:
    with pytest.raises(agent_errors.UnknownSensorId):
        raise reply_error(15, "Unknown sensor 'x'.")


# --- FIFO matching (the rules R1–R6 of pibridge.agent.pending) ---------------------------------
def _barrier(number: int) -> PendingRequest:
    return PendingRequest((Op.PING, "", ""), Future(), 60.0, f"barrier {number}", token=f"b{number}",
                          barrier=number)


def _table() -> PendingTable:
    return PendingTable(_barrier)


def _request(table: PendingTable, key: tuple[Op, str, str], timeout_s: float = 60.0,
             token: str = "") -> tuple[PendingRequest, list[PendingRequest]]:
    request = PendingRequest(key, Future(), timeout_s, str(key), token=token)
    return request, table.add(request)


S1, S2 = (Op.PUSH, "s1", ""), (Op.PUSH, "s2", "")


def _answer(table: PendingTable, key: tuple[Op, str, str], outcome: object = "ok"
            ) -> tuple[PendingRequest | None, list[PendingRequest]]:
    """An answer on ``key``; the caller's part of R7 (storing the outcome) done as the client does."""
    decision = table.answered(key)
    if decision.request is not None:
        decision.request.outcome = outcome
    return decision.request, decision.publish


def _echo(table: PendingTable, token: str | None, **kwargs: bool) -> tuple[PendingRequest | None,
                                                                          list[PendingRequest]]:
    decision = table.ping_answered(token, **kwargs)
    return decision.request, decision.publish


def test_one_request_per_key_on_the_wire_and_other_keys_pipeline() -> None:
    table = _table()
    first, sent = _request(table, S1)
    assert sent == [first] and first.state is RequestState.WAITING
    other, sent = _request(table, S2)
    assert sent == [other]  # another key: on the wire at once
    second, sent = _request(table, S1)
    assert sent == [] and second.state is RequestState.QUEUED  # R1: waits for first's answer
    owner, ready = _answer(table, S1)
    assert owner is first and [r.barrier for r in ready] == [1]  # R2: a barrier before `second`
    assert _answer(table, S1) == (None, [])  # a duplicate: nothing of s1 on the wire (R6)
    owner, ready = _echo(table, "b1")  # the barrier's echo releases s1
    assert owner is not None and owner.barrier == 1 and ready == [second]
    assert _answer(table, S1)[0] is second and _answer(table, S2)[0] is other
    assert table.ignored == 1


def test_a_barrier_sent_before_an_answer_does_not_release_its_key() -> None:
    table = _table()
    _request(table, S1)
    _request(table, S2)
    _request(table, S1)
    _request(table, S2)
    _, ready = _answer(table, S1)  # s1 fenced, barrier 1 out
    assert [r.barrier for r in ready] == [1]
    _, ready = _answer(table, S2)  # s2 answered while barrier 1 is on the wire: needs barrier 2
    assert ready == []
    _, ready = _echo(table, "b1")
    assert [r.key for r in ready if not r.barrier] == [S1] and [r.barrier for r in ready if r.barrier] == [2]
    _, ready = _echo(table, "b2")
    assert [r.key for r in ready] == [S2]


def test_an_answer_settles_only_with_the_echo_of_a_barrier_sent_after_it() -> None:
    """R7: answered requests wait for a later barrier; one barrier confirms a whole round."""
    table = _table()
    first, _ = _request(table, S1)
    other, _ = _request(table, S2)
    decision = table.answered(S1)
    assert decision.request is first and [r.barrier for r in decision.publish] == [1]
    first.outcome = "stored"
    assert table.outstanding() == 3  # `other`, `first` (answered, not yet its own) and barrier 1
    decision = table.answered(S2)  # barrier 1 is on the wire: it was sent before this answer
    assert decision.request is other and decision.publish == []
    other.outcome = "stored too"
    decision = table.ping_answered("b1")
    assert decision.confirmed == [first] and [r.barrier for r in decision.publish] == [2]
    decision = table.ping_answered("b2")
    assert decision.confirmed == [other] and decision.publish == [] and table.outstanding() == 0


def test_an_echo_that_comes_again_is_a_replay_and_nothing_since_is_confirmed() -> None:
    """The review's case (pending.py: RE-SENT answer): the agent re-sends answer A1 and echo E
    after its own reconnect, when E has already released the key and R2 is on the wire. The copy
    of A1 is taken by R2, provisionally; the copy of E is a replay (R8) before any barrier can
    confirm it, and take_all gives R2 back for a resend."""
    table = _table()
    first, _ = _request(table, S1)
    second, _ = _request(table, S1)
    _answer(table, S1, "A1")
    assert table.ping_answered("b1").confirmed == [first]  # E: R1 confirmed, R2 released
    assert second.state is RequestState.WAITING
    owner, ready = _answer(table, S1, "A1 again")  # the copy of A1: R2 takes it, provisionally
    assert owner is second and [r.barrier for r in ready] == [2]
    decision = table.ping_answered("b1")  # the copy of E
    assert decision.replayed and decision.confirmed == [] and table.replays == 1
    assert not second.future.done()
    assert table.take_all() == [second, ready[0]]  # the client drops the connection: resent


def test_a_ping_error_fails_the_oldest_ping_and_a_failed_barrier_is_sent_again() -> None:
    table = _table()
    _request(table, S1)
    _request(table, S1)
    _, ready = _answer(table, S1)
    [barrier] = ready
    owner, ready = _echo(table, None)  # an error answer: the oldest ping, the barrier
    assert owner is barrier and [r.barrier for r in ready] == [2]
    user, sent = _request(table, (Op.PING, "", ""), token="mine")
    assert sent == [user]
    assert _echo(table, "somebody else's") == (None, [])  # matched by token only (R3)
    assert _echo(table, "mine")[0] is user


def test_error_18_releases_a_barrier_confirms_errors_and_gives_back_successes() -> None:
    table = _table()
    answered, _ = _request(table, S1)
    queued, _ = _request(table, S1)
    failing, _ = _request(table, S2)
    deprovision, _ = _request(table, (Op.DEPROVISION, "", ""))
    _answer(table, S1, "stored")
    _answer(table, S2, AgentReplyError(3, "internal"))
    _answer(table, (Op.DEPROVISION, "", ""), "deprovisioned")  # its refusals follow
    _echo(table, None)  # error 3: not released, counted, barrier 2 sent
    assert table.barrier_errors == 1 and queued.state is RequestState.QUEUED
    decision = table.ping_answered(None, refused=True)  # error 18: every answer will be an error
    assert decision.publish == [queued] and table.barrier_errors == 0
    assert decision.confirmed == [failing, deprovision] and decision.unproven == [answered]


def test_expired_requests_are_reported_and_take_all_fails_everything_outstanding() -> None:
    table = _table()
    watched: list[list[PendingRequest]] = []
    done = threading.Event()
    watcher = DeadlineWatcher(table, lambda r: RequestTimeout(r.description),
                              lambda expired: (watched.append(expired), done.set()))
    watcher.start()
    try:
        late, _ = _request(table, S1, timeout_s=0.05)
        queued, _ = _request(table, S1)
        with pytest.raises(RequestTimeout):
            late.future.result(timeout=5)
        assert done.wait(5) and watched == [[late]]  # the client drops the connection (R4)
        assert table.take_all() == [queued] and queued.state is RequestState.FAILED
        assert table.outstanding() == 0 and _answer(table, S1) == (None, [])
    finally:
        watcher.stop()


def test_watcher_wakes_for_an_earlier_deadline() -> None:
    table = _table()
    fired = threading.Event()

    def expire(request: object) -> RequestTimeout:
        fired.set()
        return RequestTimeout("t")

    watcher = DeadlineWatcher(table, expire)
    watcher.start()
    try:
        _request(table, (Op.LIST_SENSORS, "", ""), timeout_s=3600)
        quick, _ = _request(table, (Op.PING, "", ""), timeout_s=0.01)
        assert fired.wait(5)
        assert isinstance(quick.future.exception(timeout=5), RequestTimeout)
    finally:
        watcher.stop()


def test_answered_requests_do_not_pile_up_until_their_deadline() -> None:
    """Thousands of answered pushes with a long timeout: the deadline heap stays within a small
    multiple of what really waits, and a request still waiting keeps its deadline."""
    table = _table()
    still_waiting, _ = _request(table, (Op.LIST_SENSORS, "", ""), timeout_s=0.0)
    for index in range(20 * COMPACT_MIN_SETTLED):
        key = (Op.PUSH, f"s{index}", "")  # a fresh key: on the wire at once
        _request(table, key)
        assert _answer(table, key)[0] is not None
        assert len(table._deadlines) <= 2 * COMPACT_MIN_SETTLED + 2
    with table.lock:
        expired = table.expire(time.monotonic())
    assert expired == [still_waiting] and still_waiting.state is RequestState.TIMED_OUT


# --- routing and parsing -----------------------------------------------------------------------
def test_every_reply_topic_routes_back_to_its_operation_and_ids() -> None:
    router = _Router(CID)
    for operation in OPERATIONS.values():
        for template, is_error in ((operation.success, False), (operation.error, True)):
            sid = "sensor_1" if "{sid}" in template else ""
            mid = "metric-2" if "{mid}" in template else ""
            route = router.route(protocol.topic(template, CID, sid, mid))
            assert route == _Route(operation.op, sid, mid, is_error), template
    assert router.route(protocol.topic(protocol.LIVEDATA, CID, "s")) == _Route(None, "s", "", False)
    assert router.route(f"/v1.0/{'f' * 32}/ping/info/inbox") is None  # another client's topic


def test_describe_error_alias_is_not_counted() -> None:
    alias = OPERATIONS[Op.DESCRIBE_METRIC].error_aliases[0]
    route = _Router(CID).route(protocol.topic(alias, CID, "s1"))
    assert route is None or route.op is not Op.DESCRIBE_METRIC


def test_parse_reply_json_text_and_errors() -> None:
    route = _Route(Op.CREATE_SENSOR, "", "", False)
    reply = parse_reply(Op.CREATE_SENSOR, route, "t", b'{"name":"n","sensorId":"abc"}')
    assert reply.value == {"name": "n", "sensorId": "abc"} and reply.created_sensor_id == "abc"
    with pytest.raises(ProtocolError):
        parse_reply(Op.CREATE_SENSOR, route, "t", b"not json")
    with pytest.raises(ProtocolError):
        parse_reply(Op.CREATE_SENSOR, route, "t", b'["wrong shape"]')
    text = parse_reply(Op.PUSH, _Route(Op.PUSH, "s", "", False), "t", b"Sensor was updated.")
    assert text.value == "Sensor was updated." and text.raw == b"Sensor was updated."
    with pytest.raises(agent_errors.UnknownMetricId) as caught:
        parse_reply(Op.PUSH, _Route(Op.PUSH, "s", "", True), "t",
                    json.dumps(protocol.error_payload(ErrorCode.UnknownMetricId, "no such metric")).encode())
    assert caught.value.code is ErrorCode.UnknownMetricId and caught.value.agent_message == "no such metric"
    with pytest.raises(ProtocolError):
        parse_reply(Op.PUSH, _Route(Op.PUSH, "s", "", True), "t", b'{"errorMessage":"no code"}')


# --- push encoding ---------------------------------------------------------------------------------
def test_push_body_is_compact_and_ordered() -> None:
    body = encode_push({"m1": 21.5, "m2": True}, 1_700_000_000_000)
    assert body == b'{"metrics":[{"metricId":"m1","value":21.5},{"metricId":"m2","value":true}],' \
                   b'"timestamp":1700000000000}'
    per_metric = json.loads(encode_push([("m1", 1, 1_700_000_000_001), ("m2", "x")], None))
    assert per_metric == {"metrics": [{"metricId": "m1", "value": 1, "timestamp": 1_700_000_000_001},
                                      {"metricId": "m2", "value": "x"}]}


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_push_refuses_non_finite_values(bad: float) -> None:
    with pytest.raises(ValueError, match="m2"):
        encode_push({"m1": 1.0, "m2": bad}, None)


@pytest.mark.parametrize("timestamp", [1.5, "1700000000000", True])
def test_push_refuses_non_integer_timestamps(timestamp: object) -> None:
    with pytest.raises(ValueError, match="milliseconds"):
        encode_push({"m1": 1.0}, timestamp)  # type: ignore[arg-type]


# --- credential files ------------------------------------------------------------------------------
def test_credential_file_names_follow_the_sdk(tmp_path: Path) -> None:
    files = CredentialFiles(tmp_path, "My Client")
    assert files.key.name == "MyClient-key.pem" and files.cert.name == "MyClient-cert.pem"
    assert files.csr.name == "MyClient-csr.pem"


def test_store_writes_key_0600_in_folder_0700_and_caches_the_client_id(tmp_path: Path) -> None:
    from pibridge.agent.x509 import make_key_and_csr

    key_pem, csr_pem = make_key_and_csr("pibridge")
    cert_pem = _self_signed(key_pem, CID)
    files = CredentialFiles(tmp_path / "certs", "pibridge")
    files.store(key_pem, csr_pem, cert_pem, CID)
    assert stat.S_IMODE(files.folder.stat().st_mode) == 0o700
    assert stat.S_IMODE(files.key.stat().st_mode) == 0o600
    assert files.client_id() == CID
    assert (files.generations / "current" / "client-id").read_text().split()[0] == CID
    # a certificate replaced behind our back (e.g. by the SDK) is noticed through the cached hash
    other = "f" * 32
    files.cert.write_bytes(_self_signed(key_pem, other))
    assert files.client_id() == other


def _self_signed(key_pem: bytes, common_name: str) -> bytes:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = serialization.load_pem_private_key(key_pem, password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


# --- the create-metrics wire format, written once ---------------------------------------------------
@pytest.mark.parametrize(("definition", "wire"), [
    (MetricDefinition("Temperature", value_unit="SI.Temperature.CELSIUS"),
     {"matchingId": "7", "name": "Temperature", "valueUnit": "SI.Temperature.CELSIUS"}),
    (MetricDefinition("Light", value_type="double", value_annotation="lx", matching_id="light"),
     {"matchingId": "light", "name": "Light", "valueType": "double", "valueAnnotation": "lx"}),
    (MetricDefinition("Door", value_type=protocol.ValueType("bool")),
     {"matchingId": "7", "name": "Door", "valueType": "bool", "valueAnnotation": ""}),
])
def test_metric_definition_is_the_one_create_metrics_element(definition: MetricDefinition,
                                                             wire: dict[str, str]) -> None:
    assert definition.to_wire("7") == wire
    assert json.dumps(definition.to_wire("7"))  # plain strings only


def test_help_says_what_pibridge_is(capsys: pytest.CaptureFixture[str]) -> None:
    from pibridge.cli import DESCRIPTION, main

    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert " ".join(DESCRIPTION.split()) in out and "argparse" not in out


@pytest.mark.parametrize("name", ["x" * 65, "../../tmp/evil", "a/b", "", "   ", "bell\a"])
def test_every_csr_follows_the_one_client_name_rule(name: str) -> None:
    """make_key_and_csr refuses what check_client_name refuses (cryptography < 42 would sign a
    CN over 64 characters), so no path builds a CSR the rule does not allow."""
    from pibridge.agent.x509 import make_key_and_csr

    with pytest.raises(ValueError) as refused:
        make_key_and_csr(name)
    with pytest.raises(ValueError) as rule:
        check_client_name(name)
    assert str(refused.value) == str(rule.value)
