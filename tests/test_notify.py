"""Tests for ionqbo.notify: alert de-duplication, delivery (webhook, ION), failures, health checks."""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from ionqbo.errors import IonGraphQLError, MappingError
from ionqbo.http import make_session
from ionqbo.notify import (
    DeliveryError,
    IonNotifier,
    Problem,
    WebhookNotifier,
    deliver,
    healthcheck_outcome,
    ping_healthcheck,
    plan_alerts,
    resolved_keys,
)
from ionqbo.sandbox.httpd import Request, Response, Server, text_response

T0 = datetime(2026, 11, 25, 18, 0, tzinfo=UTC)
MAPPING = Problem.make("purchase_order", "1042", "mapping", 'supplier "Acme" has no QBO vendor',
                       "add a vendor named Acme in QBO")
REJECTED = Problem.make("part", "77", "qbo_rejected", "QBO refused the item: Duplicate Name Exists (6240)")


class Recorder:
    """A tiny App that records every request and answers with a configurable status."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.requests: list[Request] = []

    def __call__(self, request: Request) -> Response:
        self.requests.append(request)
        return text_response(self.status, "ok")


class FakeIon:
    """An object with the two IonClient methods IonNotifier uses."""

    def __init__(self, users: dict[str, str] | None = None, fail: Exception | None = None) -> None:
        self.users = users if users is not None else {"ops@acme.com": "3660"}
        self.fail = fail
        self.sent: list[tuple[str, str, str, str]] = []
        self.lookups = 0

    def user_id_by_email(self, email: str) -> str | None:
        self.lookups += 1
        return self.users.get(email)

    def dispatch_notification(self, user_id, title, description, notification_type="WARNING"):
        if self.fail is not None:
            raise self.fail
        self.sent.append((user_id, title, description, notification_type))
        return "msg-1"


@pytest.fixture
def receiver():
    app = Recorder()
    with Server(app) as server:
        yield app, server.url


@pytest.fixture
def refused_url() -> Iterator[str]:
    """A loopback port that is bound but not listening: connecting is refused, and no other process
    can take the port while the test runs (a port freed and reused later could be)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


# ---- planning -----------------------------------------------------------------------------------


def test_problem_keys_are_stable():
    error = MappingError("no vendor", kind="purchase_order", ion_id="1042", hint="add it")
    assert Problem.from_error(error).key == "purchase_order:1042:mapping"
    failure = {"kind": "purchase_order", "ion_id": 1042, "code": "mapping", "message": "no vendor"}
    assert Problem.from_failure(failure).key == MAPPING.key


def test_alert_lifecycle_new_same_reminder_resolved():
    # run 1: a new problem -> exactly one alert
    to_send, reminders, state = plan_alerts([MAPPING], {}, T0)
    assert (to_send, reminders) == ([MAPPING], [])
    assert state == {MAPPING.key: {"first_seen": T0.isoformat(), "last_alerted": T0.isoformat()}}
    # run 2, five minutes later, same problem (twice in the list) -> nothing
    to_send, reminders, state2 = plan_alerts([MAPPING, MAPPING], state, T0 + timedelta(minutes=5))
    assert (to_send, reminders) == ([], [])
    assert state2 == state
    # 25 h later -> one reminder, first_seen kept
    later = T0 + timedelta(hours=25)
    to_send, reminders, state3 = plan_alerts([MAPPING], state2, later)
    assert (to_send, reminders) == ([], [MAPPING])
    assert state3[MAPPING.key] == {"first_seen": T0.isoformat(), "last_alerted": later.isoformat()}
    # the problem disappears -> dropped from the state, reported as resolved
    assert resolved_keys([REJECTED], state3) == [MAPPING.key]
    to_send, reminders, state4 = plan_alerts([REJECTED], state3, later + timedelta(minutes=5))
    assert to_send == [REJECTED]
    assert set(state4) == {REJECTED.key}


@pytest.mark.parametrize(("entry", "expect_new"), [
    pytest.param({"first_seen": "garbage", "last_alerted": None}, True, id="never-alerted"),
    pytest.param("not a dict", True, id="corrupt-entry"),
    pytest.param({"first_seen": T0.isoformat(), "last_alerted": (T0 - timedelta(hours=23)).isoformat()},
                 False, id="alerted-23h-ago"),
])
def test_plan_reads_odd_entries(entry, expect_new):
    to_send, reminders, _ = plan_alerts([MAPPING], {MAPPING.key: entry}, T0)
    assert (to_send == [MAPPING]) is expect_new
    assert reminders == []


def test_plan_rejects_naive_time():
    with pytest.raises(ValueError, match="timezone"):
        plan_alerts([MAPPING], {}, datetime(2026, 1, 1))


# ---- delivery ----------------------------------------------------------------------------------


def test_webhook_delivery_to_local_receiver(receiver):
    app, url = receiver
    notifier = WebhookNotifier(url + "/hooks/T000/B000/XXXX", make_session(), label="acme")
    state = deliver([MAPPING, REJECTED], [notifier], {}, T0)
    assert len(app.requests) == 1
    request = app.requests[0]
    assert request.method == "POST"
    assert request.path == "/hooks/T000/B000/XXXX"
    body = request.json()
    assert body["text"].startswith("ionqbo (acme): 2 new sync problems")
    assert "purchase order 1042 [mapping]" in body["text"]
    assert "add a vendor named Acme in QBO" in body["text"]
    assert "part 77 [qbo_rejected]" in body["text"]
    assert [b["type"] for b in body["blocks"]] == ["section"] * 3
    assert state[MAPPING.key]["channels"] == {"webhook": T0.isoformat()}
    assert state[MAPPING.key]["last_alerted"] == T0.isoformat()

    # next run: same problems -> no POST at all
    state = deliver([MAPPING, REJECTED], [notifier], state, T0 + timedelta(minutes=5))
    assert len(app.requests) == 1
    # a day later, one fixed -> one message: a reminder plus the resolved one
    state = deliver([MAPPING], [notifier], state, T0 + timedelta(hours=25))
    assert len(app.requests) == 2
    text = app.requests[1].json()["text"]
    assert text.startswith("ionqbo (acme): 1 still open, 1 resolved")
    assert "RESOLVED part 77 [qbo_rejected]" in text
    assert set(state) == {MAPPING.key}


def test_webhook_message_lists_at_most_ten(receiver):
    app, url = receiver
    many = [Problem.make("purchase_order", str(n), "mapping", f"gap {n}") for n in range(25)]
    deliver(many, [WebhookNotifier(url, make_session())], {}, T0)
    text = app.requests[0].json()["text"]
    assert "25 new sync problems" in text
    assert "gap 9" in text
    assert "gap 10" not in text
    assert "and 15 more" in text


def test_ion_notifier_sends_one_warning():
    ion = FakeIon()
    notifier = IonNotifier(ion, "ops@acme.com")
    state = deliver([MAPPING, REJECTED], [notifier], {}, T0)
    assert len(ion.sent) == 1
    user_id, title, description, kind = ion.sent[0]
    assert (user_id, kind) == ("3660", "WARNING")
    assert title == "ionqbo: 2 new sync problems"
    assert "NEW purchase order 1042 [mapping]" in description
    assert state[REJECTED.key]["channels"] == {"ion": T0.isoformat()}
    deliver([MAPPING, REJECTED], [notifier], state, T0 + timedelta(hours=1))
    assert len(ion.sent) == 1


@pytest.mark.parametrize("status", [500, 404])
def test_receiver_error_is_logged_not_raised_and_retried(status, caplog):
    app = Recorder(status=status)
    with Server(app) as server:
        secret_url = server.url + "/hooks/secret-path-123"
        notifier = WebhookNotifier(secret_url, make_session())
        with caplog.at_level(logging.WARNING, logger="ionqbo.notify"):
            state = deliver([MAPPING], [notifier], {}, T0)
        assert len(app.requests) == 1
        assert state[MAPPING.key]["channels"] == {}
        assert state[MAPPING.key]["last_alerted"] is None
        assert state[MAPPING.key]["first_seen"] == T0.isoformat()
        assert f"HTTP {status}" in caplog.text
        assert "secret-path-123" not in caplog.text
        # next run, the receiver is back: the alert goes out then
        app.status = 200
        state = deliver([MAPPING], [notifier], state, T0 + timedelta(minutes=5))
        assert len(app.requests) == 2
        assert app.requests[1].json()["text"].startswith("ionqbo: 1 new sync problem")
        assert state[MAPPING.key]["first_seen"] == T0.isoformat()
        assert state[MAPPING.key]["last_alerted"] == (T0 + timedelta(minutes=5)).isoformat()


def test_connection_refused_is_logged_not_raised(caplog, refused_url):
    notifier = WebhookNotifier(refused_url + "/hooks/T0/B0/secret-hook-path", make_session())
    with caplog.at_level(logging.WARNING, logger="ionqbo.notify"):
        state = deliver([MAPPING], [notifier], {}, T0)
    assert state[MAPPING.key]["last_alerted"] is None
    assert "ConnectionError" in caplog.text
    assert "secret-hook-path" not in caplog.text


def test_one_channel_failing_does_not_resend_the_other(receiver):
    app, url = receiver
    ion = FakeIon(fail=IonGraphQLError("User does not have permission"))
    notifiers = [WebhookNotifier(url, make_session()), IonNotifier(ion, "ops@acme.com")]
    state = deliver([MAPPING], notifiers, {}, T0)
    assert state[MAPPING.key]["channels"] == {"webhook": T0.isoformat()}
    ion.fail = None
    state = deliver([MAPPING], notifiers, state, T0 + timedelta(minutes=5))
    assert len(app.requests) == 1  # the webhook is not told twice
    assert len(ion.sent) == 1
    assert set(state[MAPPING.key]["channels"]) == {"webhook", "ion"}


def test_unknown_ion_user_is_a_delivery_failure(caplog):
    ion = FakeIon(users={})
    with caplog.at_level(logging.WARNING, logger="ionqbo.notify"):
        state = deliver([MAPPING], [IonNotifier(ion, "nobody@acme.com")], {}, T0)
    assert state[MAPPING.key]["last_alerted"] is None
    assert "no ION user" in caplog.text
    with pytest.raises(DeliveryError):
        IonNotifier(ion, "nobody@acme.com").send([MAPPING], [], [])


def test_no_notifiers_still_tracks_problems():
    state = deliver([MAPPING], [], {}, T0)
    assert state == {MAPPING.key: {"first_seen": T0.isoformat(), "channels": {}, "last_alerted": None}}
    # a channel configured later still gets the (never delivered) alert
    ion = FakeIon()
    deliver([MAPPING], [IonNotifier(ion, "ops@acme.com")], state, T0 + timedelta(days=3))
    assert len(ion.sent) == 1


def test_state_without_channels_counts_for_every_channel():
    state = {MAPPING.key: {"first_seen": T0.isoformat(), "last_alerted": T0.isoformat()}}
    ion = FakeIon()
    new_state = deliver([MAPPING], [IonNotifier(ion, "ops@acme.com")], state, T0 + timedelta(hours=1))
    assert ion.sent == []
    assert new_state[MAPPING.key]["channels"] == {"ion": T0.isoformat()}


def test_state_is_json_serialisable(receiver):
    _, url = receiver
    state = deliver([MAPPING], [WebhookNotifier(url, make_session())], {}, T0)
    assert json.loads(json.dumps(state)) == state


# ---- health checks -------------------------------------------------------------------------------


@pytest.mark.parametrize(("ok", "suffix", "body", "method"), [
    pytest.param(True, "", "", "GET", id="success"),
    pytest.param(False, "/fail", "", "GET", id="failure"),
    pytest.param(False, "/fail", "exit 5: QBO unavailable", "POST", id="failure-with-body"),
])
def test_healthcheck_ping(receiver, ok, suffix, body, method):
    app, url = receiver
    assert ping_healthcheck(url + "/ping/abc-uuid/", ok, make_session(), body) is True
    (request,) = app.requests
    assert (request.method, request.path) == (method, "/ping/abc-uuid" + suffix)
    assert request.body.decode() == body


def test_healthcheck_down_is_logged_not_raised(caplog, refused_url):
    url = refused_url + "/ping/secret-uuid"
    with caplog.at_level(logging.WARNING, logger="ionqbo.notify"):
        assert ping_healthcheck(url, True, make_session()) is False
    assert "health-check ping to 127.0.0.1 failed" in caplog.text
    assert "secret-uuid" not in caplog.text


def test_healthcheck_error_status_is_logged(caplog):
    app = Recorder(status=503)
    with Server(app) as server, caplog.at_level(logging.WARNING, logger="ionqbo.notify"):
        assert ping_healthcheck(server.url + "/p", False, make_session()) is False
    assert "HTTP 503" in caplog.text


def test_alerts_and_pings_use_a_ten_second_timeout():
    calls = []

    class Answer:
        status_code = 204

    class Session:
        def get(self, url, **kwargs):
            calls.append(("GET", url, kwargs["timeout"]))
            return Answer()

        def post(self, url, **kwargs):
            calls.append(("POST", url, kwargs["timeout"]))
            return Answer()

    assert ping_healthcheck("https://hc-ping.com/x", True, Session()) is True
    WebhookNotifier("https://hooks.example.com/h", Session()).send([MAPPING], [], [])
    assert calls == [("GET", "https://hc-ping.com/x", 10.0), ("POST", "https://hooks.example.com/h", 10.0)]


@pytest.mark.parametrize(("code", "outcome"), [(0, True), (3, True), (1, False), (2, False), (4, False),
                                               (5, False), (75, None)])
def test_healthcheck_outcome(code, outcome):
    assert healthcheck_outcome(code) is outcome


# ---- after_sync: the call the CLI makes after every sync ------------------------------------------


class Routes:
    """Records requests by path: the webhook and the health check share one local server."""

    def __init__(self) -> None:
        self.requests: list[Request] = []

    def __call__(self, request: Request) -> Response:
        self.requests.append(request)
        return text_response(200, "ok")

    def paths(self) -> list[tuple[str, str]]:
        return [(r.method, r.path) for r in self.requests]


@pytest.fixture
def company(tmp_path):
    from ionqbo.config import Settings
    from ionqbo.errors import TransientRecordError
    from ionqbo.state import State, StateStore

    app = Routes()
    with Server(app) as server:
        state_dir = tmp_path / "acme"
        settings = Settings.from_values({
            "IONQBO_STATE_DIR": str(state_dir),
            "IONQBO_NOTIFY_WEBHOOK": server.url + "/hook",
            "IONQBO_HEALTHCHECK_URL": server.url + "/ping",
        })
        state = State()
        state.record_failure("purchase_order", "1042",
                             MappingError('supplier "Acme" has no QBO vendor', hint="add it"), T0)
        state.record_failure("part", "77", TransientRecordError("timeout"), T0)  # 1 try: not a problem yet
        StateStore(settings.state_path).save(state)
        yield settings, app, StateStore(settings.state_path)


def _report(exit_code: int, *, dry_run: bool = False, error: str | None = None):
    from ionqbo.report import SyncReport

    return SyncReport(dry_run=dry_run, exit_code=exit_code, error=error)


def test_after_sync_alerts_from_the_queue_and_pings(company):
    from ionqbo.notify import after_sync

    settings, app, store = company
    after_sync(settings, _report(3), now=T0)
    assert app.paths() == [("POST", "/hook"), ("POST", "/ping")]
    text = app.requests[0].json()["text"]
    assert text.startswith("ionqbo (acme): 1 new sync problem")
    assert "purchase order 1042 [mapping]" in text
    assert "part 77" not in text
    assert app.requests[1].body.decode().startswith("exit 3: purchase orders 0 created")
    alerts = store.load().alerts
    assert set(alerts) == {"purchase_order:1042:mapping"}
    assert alerts["purchase_order:1042:mapping"]["channels"] == {"webhook": T0.isoformat()}
    # the next run: same queue -> no alert, one more ping
    after_sync(settings, _report(3), now=T0 + timedelta(minutes=5))
    assert app.paths()[2:] == [("POST", "/ping")]


def test_after_sync_dry_run_does_nothing(company):
    from ionqbo.notify import after_sync

    settings, app, store = company
    after_sync(settings, _report(3, dry_run=True), now=T0)
    assert app.requests == []
    assert store.load().alerts == {}


def test_after_sync_auth_failure_alerts_and_pings_fail(company):
    from ionqbo.notify import after_sync

    settings, app, _ = company
    after_sync(settings, _report(4, error="QBO consent is needed again"), now=T0)
    assert app.paths() == [("POST", "/hook"), ("POST", "/ping/fail")]
    text = app.requests[0].json()["text"]
    assert "2 new sync problems" in text
    assert "sync run [auth]: QBO consent is needed again" in text


def test_after_sync_locked_skips_alerts_but_not_the_ping(company):
    from ionqbo.notify import after_sync
    from ionqbo.state import SyncLock

    settings, app, store = company
    with SyncLock(settings.lock_path):
        after_sync(settings, _report(0), now=T0)
    assert app.paths() == [("POST", "/ping")]
    assert store.load().alerts == {}


def test_after_sync_locked_exit_does_not_ping(company):
    from ionqbo.notify import after_sync

    settings, app, _ = company
    after_sync(settings, _report(75), now=T0)
    assert app.paths() == [("POST", "/hook")]  # alerts still go out; a skipped run does not ping
