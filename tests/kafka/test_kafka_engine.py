"""The Kafka connection engine, sans-IO: framing, ApiVersions, errors in
Kafka's codes, and responses in request order when handlers answer late."""

from __future__ import annotations

import datetime
import struct
import uuid
from typing import Any

from kio.schema.errors import ErrorCode
from structlog.testing import capture_logs

from amqlite.kafka.apis import Api, Pending
from amqlite.kafka.engine import IDLE_TIMEOUT, LOGGED_REFUSALS
from amqlite.kafka.protocol import Request, build
from amqlite.kafka.registry import APIS
from amqlite.kafka.session import Session

from kafka_support import decode_response, engine, raw_frame, request, request_frame, split_responses

API_VERSIONS, METADATA, DELETE_RECORDS = 18, 3, 21


def versions_request(version: int) -> Any:
    if version >= 3:
        return request(API_VERSIONS, version, client_software_name="t", client_software_version="1")
    return request(API_VERSIONS, version)


def test_api_versions_every_version_lists_what_the_registry_serves() -> None:
    conn = engine()
    for version in range(4):
        conn.receive_data(request_frame(versions_request(version), correlation_id=10 + version), 0.0)
    frames = split_responses(conn.data_to_send(0.0))
    assert len(frames) == 4
    for version, frame in enumerate(frames):
        correlation_id, body = decode_response(frame, API_VERSIONS, version)
        assert correlation_id == 10 + version and body.error_code == ErrorCode.none
        served = {key.api_key: (key.min_version, key.max_version) for key in body.api_keys}
        assert served == {api.key: (api.min_version, api.max_version) for api in APIS.values()}
        assert served[API_VERSIONS] == (0, 3) and METADATA in served


def test_api_versions_newer_than_served_is_answered_in_v0_with_the_list() -> None:
    # KIP-511: the broker answers v0's body with UNSUPPORTED_VERSION and its versions.
    conn = engine()
    conn.receive_data(request_frame(versions_request(3), correlation_id=7, api_version=9), 0.0)
    (frame,) = split_responses(conn.data_to_send(0.0))
    correlation_id, body = decode_response(frame, API_VERSIONS, 0)
    assert correlation_id == 7 and body.error_code == ErrorCode.unsupported_version
    assert {key.api_key for key in body.api_keys} == set(APIS)
    assert not conn.closed


def test_an_api_not_served_gets_unsupported_version_in_its_own_response() -> None:
    conn = engine()
    body = request(DELETE_RECORDS, 1, topics=(), timeout=datetime.timedelta(seconds=1))
    conn.receive_data(request_frame(body, correlation_id=5), 0.0)
    (frame,) = split_responses(conn.data_to_send(0.0))
    correlation_id, response = decode_response(frame, DELETE_RECORDS, 1)
    assert correlation_id == 5 and response.topics == ()
    assert not conn.closed
    # A version Kafka has no schema for: there is nothing to answer in, so the connection ends.
    conn.receive_data(raw_frame(METADATA, 99, 6), 0.0)
    assert conn.closed


def test_a_served_api_at_an_unserved_version_keeps_the_connection() -> None:
    conn = engine(apis={key: api for key, api in APIS.items() if key != METADATA} | {
        METADATA: Api(METADATA, 0, 1, APIS[METADATA].handler)})
    conn.receive_data(request_frame(request(METADATA, 4, topics=None, allow_auto_topic_creation=False), 3), 0.0)
    (frame,) = split_responses(conn.data_to_send(0.0))
    correlation_id, response = decode_response(frame, METADATA, 4)
    assert correlation_id == 3 and response.topics == () and response.brokers == ()
    assert not conn.closed


def test_an_unknown_api_key_closes_that_connection() -> None:
    conn = engine()
    conn.receive_data(raw_frame(999, 0, 1), 0.0)
    assert conn.closed and "999" in (conn.close_reason or "")


def test_frames_split_anywhere_are_put_together() -> None:
    conn = engine()
    data = b"".join(request_frame(versions_request(3), correlation_id=n) for n in range(3))
    for i in range(len(data)):
        conn.receive_data(data[i:i + 1], 0.0)
    assert [decode_response(f, API_VERSIONS, 3)[0] for f in split_responses(conn.data_to_send(0.0))] == [0, 1, 2]


def test_a_huge_size_claim_closes_the_connection_at_once() -> None:
    conn = engine()
    conn.receive_data(struct.pack(">i", 2**31 - 1) + b"\0" * 10, 0.0)
    assert conn.closed and "request size" in (conn.close_reason or "")


def test_before_authentication_a_request_is_held_to_kafkas_sasl_limit() -> None:
    conn = engine(anonymous_user="")
    conn.receive_data(struct.pack(">i", 600 * 1024), 0.0)
    assert conn.closed


def test_a_size_under_a_header_closes_the_connection() -> None:
    conn = engine()
    conn.receive_data(struct.pack(">i", 3) + b"abc", 0.0)
    assert conn.closed


def test_an_unreadable_body_is_invalid_request_and_the_connection_carries_on() -> None:
    conn = engine()
    conn.receive_data(raw_frame(METADATA, 1, 4, b"\xff\xff" + b"\x00\x00\x00\x05\x00"), 0.0)
    (frame,) = split_responses(conn.data_to_send(0.0))
    assert decode_response(frame, METADATA, 1)[0] == 4
    conn.receive_data(request_frame(versions_request(3), correlation_id=5), 0.0)
    (frame,) = split_responses(conn.data_to_send(0.0))
    assert decode_response(frame, API_VERSIONS, 3)[1].error_code == ErrorCode.none


def _apis(handler: Any) -> dict[int, Api]:
    """The registry plus a test API under DeleteRecords' key (v0-v1)."""
    return {**APIS, DELETE_RECORDS: Api(DELETE_RECORDS, 0, 1, handler)}


def _delete_records(correlation_id: int) -> bytes:
    return request_frame(request(DELETE_RECORDS, 1, topics=(), timeout=datetime.timedelta(seconds=1)), correlation_id=correlation_id)


def _empty(request: Request) -> Any:
    return build(request.response_type(), throttle_time=datetime.timedelta(0), topics=())


def test_a_late_response_holds_back_the_ones_behind_it() -> None:
    pendings: list[Pending] = []

    def handler(session: Session, request: Request, now: float) -> Any:
        if request.correlation_id == 1:
            pendings.append(Pending())
            return pendings[-1]
        return _empty(request)

    conn = engine(apis=_apis(handler))
    woken: list[int] = []
    conn.on_output = lambda: woken.append(1)
    conn.receive_data(_delete_records(1) + _delete_records(2) + request_frame(versions_request(3), 3), 0.0)
    assert not conn.wants_write() and not woken  # 2 and 3 are ready, behind 1
    late = pendings[0]
    late.complete(_empty(Request(DELETE_RECORDS, 1, 1, None)))
    ids = [decode_response(f, DELETE_RECORDS if i < 2 else API_VERSIONS, 1 if i < 2 else 3)[0]
           for i, f in enumerate(split_responses(conn.data_to_send(0.0)))]
    assert ids == [1, 2, 3] and woken


def test_a_pending_response_at_its_deadline_takes_what_on_deadline_gives() -> None:
    def handler(session: Session, request: Request, now: float) -> Any:
        return Pending(deadline=now + 0.5, on_deadline=lambda when: _empty(request))

    conn = engine(apis=_apis(handler))
    conn.receive_data(_delete_records(8), 10.0)
    assert conn.next_deadline() == 10.5 and not conn.wants_write()
    conn.tick(10.4)
    assert not conn.wants_write()
    conn.tick(10.5)
    (frame,) = split_responses(conn.data_to_send(10.5))
    assert decode_response(frame, DELETE_RECORDS, 1)[0] == 8
    assert conn.next_deadline() == 10.5 + IDLE_TIMEOUT  # nothing outstanding: only the idle limit


def test_a_lost_connection_cancels_what_is_pending() -> None:
    cancelled: list[bool] = []

    def handler(session: Session, request: Request, now: float) -> Any:
        return Pending(on_cancel=lambda: cancelled.append(True))

    conn = engine(apis=_apis(handler))
    conn.receive_data(_delete_records(1), 0.0)
    conn.connection_lost()
    assert cancelled == [True] and conn.closed


def test_storage_moving_polls_the_pending() -> None:
    polled: list[float] = []

    def handler(session: Session, request: Request, now: float) -> Any:
        pending = Pending()
        pending.poll = lambda when: (polled.append(when), pending.complete(_empty(request)))
        return pending

    conn = engine(apis=_apis(handler))
    conn.receive_data(_delete_records(1), 0.0)
    conn.storage_moved(3.0)
    conn.storage_moved(4.0)  # completed: not polled again
    assert polled == [3.0] and len(split_responses(conn.data_to_send(4.0))) == 1


def test_no_response_for_a_handler_that_returns_none() -> None:
    conn = engine(apis=_apis(lambda session, request, now: None))
    conn.receive_data(_delete_records(1) + request_frame(versions_request(3), 2), 0.0)
    (frame,) = split_responses(conn.data_to_send(0.0))
    assert decode_response(frame, API_VERSIONS, 3)[0] == 2


def test_a_handler_that_fails_answers_unknown_server_error_and_the_connection_carries_on() -> None:
    def handler(session: Session, request: Request, now: float) -> Any:
        raise RuntimeError("bug")

    conn = engine(apis={**APIS, METADATA: Api(METADATA, 0, 12, handler)})
    conn.receive_data(request_frame(request(METADATA, 1, topics=None), 1), 0.0)
    (frame,) = split_responses(conn.data_to_send(0.0))
    assert decode_response(frame, METADATA, 1)[0] == 1 and not conn.closed


def test_reading_pauses_while_too_many_responses_are_outstanding() -> None:
    conn = engine(apis=_apis(lambda session, request, now: Pending()))
    conn.receive_data(b"".join(_delete_records(n) for n in range(64)), 0.0)
    assert not conn.wants_read()


def test_without_an_anonymous_user_a_client_must_authenticate() -> None:
    conn = engine(anonymous_user="")
    conn.receive_data(request_frame(versions_request(3), 1), 0.0)  # allowed before authentication
    conn.receive_data(request_frame(request(METADATA, 1, topics=None), 2), 0.0)
    assert conn.data_to_send(0.0) == b"" and conn.next_deadline() == 0.1  # a failed login's delay
    conn.tick(0.1)
    frames = split_responses(conn.data_to_send(0.1))
    assert len(frames) == 2 and conn.closed
    assert conn.session.user is None


def test_anonymous_clients_act_as_the_default_user_and_leave_the_handshake_pool() -> None:
    conn = engine()
    authenticated: list[bool] = []
    conn.on_authenticated = lambda: authenticated.append(True)
    conn.receive_data(request_frame(versions_request(3), 1), 0.0)
    assert not authenticated and conn.next_deadline() == 10.0
    conn.receive_data(request_frame(request(METADATA, 1, topics=None), 2), 0.0)
    assert authenticated == [True] and conn.session.user is not None and conn.session.user.name == "guest"
    assert conn.next_deadline() == IDLE_TIMEOUT  # the handshake deadline is gone


def test_a_client_that_never_authenticates_is_closed_at_the_handshake_timeout() -> None:
    conn = engine(anonymous_user="")
    conn.tick(9.9)
    assert not conn.closed
    conn.tick(10.0)
    assert conn.closed and "handshake_timeout" in (conn.close_reason or "")


def test_a_null_where_the_schema_has_none_is_invalid_request_not_a_handler_failure() -> None:
    # ListGroups v4's states filter is a non-nullable array sent as null (compact length 0): kio reads
    # None, on which the handler tripped (found by the fuzz target).
    conn = engine()
    header = struct.pack(">hhih", 16, 4, 3, -1) + b"\0"
    body = b"\0\0"  # states_filter: null; no tagged fields
    conn.receive_data(struct.pack(">i", len(header) + len(body)) + header + body, 0.0)
    (frame,) = split_responses(conn.data_to_send(0.0))
    assert decode_response(frame, 16, 4)[1].error_code == ErrorCode.invalid_request and not conn.closed


def test_metadata_v10_by_an_unknown_topic_id_answers_unknown_topic_id() -> None:
    from kio.schema.metadata.v10.request import MetadataRequest, MetadataRequestTopic

    conn = engine()
    body = MetadataRequest(topics=(MetadataRequestTopic(topic_id=uuid.uuid4(), name=None),),
                           allow_auto_topic_creation=False, include_cluster_authorized_operations=False,
                           include_topic_authorized_operations=False)
    conn.receive_data(request_frame(body, 4), 0.0)
    (frame,) = split_responses(conn.data_to_send(0.0))
    (answer,) = decode_response(frame, METADATA, 10)[1].topics
    assert answer.error_code == ErrorCode.unknown_topic_id and answer.name == ""


def test_an_idle_connection_closes_after_kafkas_idle_limit_but_not_while_a_response_is_due() -> None:
    conn = engine(apis=_apis(lambda session, request, now: Pending()))
    conn.receive_data(request_frame(request(METADATA, 1, topics=None), 1), 0.0)  # logs in (anonymous)
    conn.data_to_send(5.0)
    assert conn.next_deadline() == 5.0 + IDLE_TIMEOUT
    conn.tick(5.0 + IDLE_TIMEOUT - 1)
    assert not conn.closed
    conn.receive_data(_delete_records(2), 100.0)  # a long poll outstanding: not idle
    assert conn.next_deadline() is None
    conn.tick(100.0 + 2 * IDLE_TIMEOUT)
    assert not conn.closed
    idle = engine(anonymous_user="")
    idle.session.user = conn.session.user  # logged in, so the handshake timeout is not what closes it
    idle.tick(IDLE_TIMEOUT)
    assert idle.closed and "idle" in (idle.close_reason or "")


def test_the_memory_alarm_stops_reading_producers_not_consumers() -> None:
    producer, consumer = engine(), engine()
    produce = request(0, 9, transactional_id=None, acks=-1, timeout=datetime.timedelta(seconds=1), topic_data=())
    producer.receive_data(request_frame(produce, 1), 0.0)
    consumer.receive_data(request_frame(request(METADATA, 1, topics=None), 1), 0.0)
    woken: list[bool] = []
    producer.on_readable = lambda: woken.append(True)
    for conn in (producer, consumer):
        conn.data_to_send(0.0)
        conn.set_memory_alarm(True)
    assert not producer.wants_read() and consumer.wants_read()
    producer.set_memory_alarm(False)
    assert producer.wants_read() and woken == [True]


def test_a_flood_of_bad_requests_logs_a_few_lines_and_counts_the_rest() -> None:
    conn = engine()
    with capture_logs() as logs:
        for n in range(50):
            conn.receive_data(raw_frame(METADATA, 1, n, b"\xff\xff" + b"\x00\x00\x00\x05\x00"), 0.0)
    assert len([entry for entry in logs if entry["event"] == "kafka.request_refused"]) == LOGGED_REFUSALS
    assert conn.refused == 50 and len(split_responses(conn.data_to_send(0.0))) == 50


def test_a_finished_pending_is_freed_without_the_cycle_collector() -> None:
    """A Pending's callbacks close over it and the engine's slot (and so
    the request: a Produce's records); they are let go when it completes
    or is cancelled, so reference counting frees it all (amqlite serve
    collects cycles rarely: 1.3 GB stayed after 10M records produced)."""
    import gc
    import weakref

    made: list[weakref.ref[Pending]] = []

    def handler(session: Session, request: Request, now: float) -> Any:
        pending = Pending(deadline=now + 5, on_deadline=lambda when: _empty(request))
        pending.poll = lambda when: pending.complete(_empty(request))
        pending.on_cancel = lambda: pending
        made.append(weakref.ref(pending))
        return pending

    gc.disable()
    try:
        conn = engine(apis=_apis(handler))
        conn.receive_data(_delete_records(1), 0.0)
        conn.storage_moved(1.0)
        assert len(split_responses(conn.data_to_send(1.0))) == 1
        conn.receive_data(_delete_records(2), 1.0)
        conn.connection_lost()
        assert [ref() for ref in made] == [None, None]
    finally:
        gc.enable()
