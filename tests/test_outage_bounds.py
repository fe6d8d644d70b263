"""With the default settings, a service that is down is given up within the issue's bounds.

The outage suite (tests/test_outages.py) runs the real CLI with scaled-down settings; here the
clients run with the *defaults* (5 tries, a 60 s read timeout, 60 s throttle waits) against a fake
transport on a fake clock, so a minute of outage costs no time. Each fault is held for every
request: the first request that gives up must do so within 75 s of its first try (90 s for the
whole run, which sends a few quick requests before it), 130 s when QBO throttles every request (150 s
for the run); after it, no request at all goes to that service (the breaker).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from ionqbo.config import Settings
from ionqbo.errors import ApiError, DeadlineReachedError, UnavailableError
from ionqbo.http import GIVE_UP_AFTER, THROTTLE_GIVE_UP_AFTER, Deadline, RetryPolicy, redact, start_run_deadline
from ionqbo.ion.client import IonClient
from ionqbo.qbo.auth import QboAuth, TokenRecord, TokenStore
from ionqbo.qbo.client import QboClient
from ionqbo.qbo.limiter import RateLimiter

NOW = 1_750_000_000.0
REALM = "9130350000000001"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def _response(request: requests.PreparedRequest, status: int, body: str, ctype: str) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response._content = body.encode()
    response.headers["Content-Type"] = ctype
    response.headers["intuit_tid"] = "1-tid"
    response.url = request.url or ""
    response.request = request
    response.reason = "Reason"
    return response


Behaviour = Callable[[requests.PreparedRequest, Clock], requests.Response]


def status(code: int, body: str = '{"Fault": {"Error": [{"Message": "down", "code": "10000"}], '
                                    '"type": "SystemFault"}}', ctype: str = "application/json",
           seconds: float = 0.2) -> Behaviour:
    def behave(request: requests.PreparedRequest, clock: Clock) -> requests.Response:
        clock.sleep(seconds)
        return _response(request, code, body, ctype)
    return behave


def raises(exc: type[Exception], seconds: float) -> Behaviour:
    def behave(_request: requests.PreparedRequest, clock: Clock) -> requests.Response:
        clock.sleep(seconds)
        raise exc("simulated")
    return behave


THROTTLE = ('<IntuitResponse xmlns="http://schema.intuit.com/finance/v3"><Fault type="SERVICE"><Error code="3001">'
            "<Message>message=ThrottleExceeded; errorCode=003001; statusCode=429</Message></Error></Fault>"
            "</IntuitResponse>")

FAULTS: dict[str, tuple[Behaviour, float]] = {
    "503": (status(503), GIVE_UP_AFTER),
    "500": (status(500), GIVE_UP_AFTER),
    "502-gateway-page": (status(502, "<html><title>502 Bad Gateway</title></html>", "text/html"), GIVE_UP_AFTER),
    "502-after-30s": (status(502, "<html>Bad Gateway</html>", "text/html", seconds=30), GIVE_UP_AFTER),
    "drops-connections": (raises(requests.ConnectionError, 0.01), GIVE_UP_AFTER),
    "never-answers": (raises(requests.ReadTimeout, 60.0), GIVE_UP_AFTER),  # the default read timeout
    "connect-timeout": (raises(requests.ConnectTimeout, 10.0), GIVE_UP_AFTER),
    "throttles": (status(429, THROTTLE, "application/xml"), THROTTLE_GIVE_UP_AFTER),
}


class FakeSession(requests.Session):
    """Every request gets ``behaviour`` (token requests answer at once when ``token_ok``)."""

    def __init__(self, clock: Clock, behaviour: Behaviour, *, token_ok: bool = True) -> None:
        super().__init__()
        self.clock = clock
        self.behaviour = behaviour
        self.token_ok = token_ok
        self.sent = 0

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        prepared = requests.Request(str(method), str(url)).prepare()
        if self.token_ok and "token" in str(url):
            return _response(prepared, 200, json.dumps({"access_token": "at-1", "expires_in": 3600,
                                                        "refresh_token": "rt-1"}), "application/json")
        self.sent += 1
        return self.behaviour(prepared, self.clock)


def _settings(tmp_path: Path) -> Settings:
    settings = Settings.from_values({
        "QBO_CLIENT_ID": "cid", "QBO_CLIENT_SECRET": "csecret-xyz", "QBO_ENVIRONMENT": "sandbox",
        "QBO_BASE_URL": "https://qbo.test", "IONQBO_STATE_DIR": str(tmp_path),
        "ION_API_URL": "https://ion.test/graphql", "ION_TOKEN_URL": "https://ion.test/realms/x/token",
        "ION_CLIENT_ID": "ion", "ION_CLIENT_SECRET": "ion-secret-xyz",
    })
    assert (settings.max_retries, settings.http_timeout, settings.throttle_wait) == (5, 60.0, 60.0)  # the defaults
    return settings


def _qbo(tmp_path: Path, session: FakeSession, clock: Clock, *, access_ok: bool = True) -> QboClient:
    settings = _settings(tmp_path)
    store = TokenStore(settings.token_store_path)
    store.save(TokenRecord(environment="sandbox", realm_id=REALM, refresh_token="rt-0", access_token="at-0",
                           access_expires_at=NOW + (3600 if access_ok else -10)))
    policy = RetryPolicy(tries=settings.max_retries, throttle_wait=settings.throttle_wait, sleep=clock.sleep,
                         clock=clock)
    auth = QboAuth(settings, store, session=session, clock=lambda: NOW, policy=policy)
    return QboClient(settings, auth, session=session, sleep=clock.sleep, clock=clock, policy=policy,
                     limiter=RateLimiter(clock=clock, sleep=clock.sleep))


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_qbo_gives_up_within_the_bound_then_sends_nothing_more(tmp_path: Path, fault: str) -> None:
    behaviour, bound = FAULTS[fault]
    clock = Clock()
    session = FakeSession(clock, behaviour)
    qbo = _qbo(tmp_path, session, clock)
    started = clock.now
    with pytest.raises(ApiError):
        qbo.preferences()
    assert clock.now - started <= bound
    assert qbo.breaker.error is not None
    line = str(qbo.breaker.error).splitlines()[0]
    assert line.startswith("QBO is unavailable") or line.startswith("QBO is unreachable"), line
    assert "fix:" in str(qbo.breaker.error)
    sent = session.sent
    with pytest.raises(UnavailableError):
        list(qbo.query_all("Vendor"))
    with pytest.raises(UnavailableError):
        qbo.cdc(["Vendor"], datetime.now(UTC))
    assert session.sent == sent  # the breaker: nothing more went to QBO


def test_a_503_waits_a_short_jittered_backoff_not_the_throttle_wait(tmp_path: Path) -> None:
    clock = Clock()
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        clock.sleep(seconds)

    session = FakeSession(clock, status(503, "", "text/plain", seconds=0.0))
    qbo = _qbo(tmp_path, session, clock)
    qbo.sleep = sleep
    with pytest.raises(ApiError):
        qbo.preferences()
    assert len(waits) == 4
    assert all(w < 10 for w in waits), waits
    assert waits[-1] > waits[0]


def test_the_qbo_token_endpoint_down_with_an_expired_access_token(tmp_path: Path) -> None:
    clock = Clock()
    session = FakeSession(clock, status(503, "", "text/plain"), token_ok=False)
    qbo = _qbo(tmp_path, session, clock, access_ok=False)
    with pytest.raises(UnavailableError) as info:
        qbo.preferences()
    assert clock.now - 1000.0 <= GIVE_UP_AFTER
    assert "token endpoint" in str(info.value)
    assert "***" not in str(info.value)
    sent = session.sent
    with pytest.raises(UnavailableError):
        qbo.preferences()
    assert session.sent == sent


def _ion(tmp_path: Path, session: FakeSession, clock: Clock) -> IonClient:
    settings = _settings(tmp_path)
    policy = RetryPolicy(tries=settings.max_retries, throttle_wait=settings.throttle_wait, sleep=clock.sleep,
                         clock=clock)
    return IonClient(settings, session=session, policy=policy, clock=clock)


@pytest.mark.parametrize("fault", ["503", "502-after-30s", "drops-connections", "never-answers", "connect-timeout"])
@pytest.mark.parametrize("token_ok", [True, False], ids=["graphql", "token-endpoint"])
def test_ion_gives_up_within_the_bound_then_sends_nothing_more(tmp_path: Path, fault: str, token_ok: bool) -> None:
    behaviour, bound = FAULTS[fault]
    clock = Clock()
    session = FakeSession(clock, behaviour, token_ok=token_ok)
    ion = _ion(tmp_path, session, clock)
    with pytest.raises(UnavailableError) as info:
        ion.me()
    assert clock.now - 1000.0 <= bound
    assert str(info.value).startswith(("ION is unavailable", "ION is unreachable"))
    sent = session.sent
    with pytest.raises(UnavailableError):
        list(ion.changed_parts(None))
    assert session.sent == sent


def test_no_wait_starts_that_would_end_past_the_deadline() -> None:
    clock = Clock()
    start_run_deadline(20, clock=clock)
    try:
        policy = RetryPolicy(tries=5, sleep=clock.sleep, clock=clock)
        tries = policy.budget()
        tries.begin()
        clock.sleep(15)
        assert tries.allows(4.0)
        assert not tries.allows(6.0)
        clock.sleep(6)
        error = Deadline(20).error("with work left")
        assert isinstance(error, DeadlineReachedError)
        assert "fix: " in str(error)
    finally:
        start_run_deadline(None)


@pytest.mark.parametrize(("text", "kept"), [
    ("the Intuit token endpoint is unavailable", True),
    ("token expired at noon", True),
    ("Bearer eyJhbGciOiJIUzI1NiJ9.abcdefgh", False),
    ("basic Y2xpZW50OnNlY3JldA==", False),
])
def test_redaction_keeps_ordinary_words(text: str, kept: bool) -> None:
    assert (redact(text) == text) is kept


def test_a_gateway_page_is_cut_to_a_short_excerpt() -> None:
    from ionqbo.http import describe

    page = ("<!DOCTYPE html><html><head><title>502 Bad Gateway</title><style>body{color:red}</style></head>"
            "<body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center>" + "x" * 5000 + "</body></html>")
    response = _response(requests.Request("GET", "https://qbo.test/v3/x").prepare(), 502, page, "text/html")
    text = describe(response)
    assert "HTML page: 502 Bad Gateway" in text
    assert "<" not in text.split(":", 1)[1]
    assert len(text) < 200


def test_the_run_deadline_cuts_a_request_timeout(tmp_path: Path) -> None:
    from ionqbo.errors import DeadlineReachedError
    from ionqbo.http import make_session

    clock = Clock()
    start_run_deadline(30, clock=clock)
    try:
        session = make_session(timeout=60, name="qbo", bounded=True)
        seen: dict[str, Any] = {}

        def send(self: Any, request: Any, **kwargs: Any) -> Any:
            seen.update(kwargs)
            raise requests.ConnectionError("stop here")

        original = requests.Session.send
        requests.Session.send = send  # type: ignore[method-assign]
        try:
            clock.sleep(25)
            with pytest.raises(requests.ConnectionError):
                session.get("https://qbo.test/x")
            assert seen["timeout"] == (5.0, 5.0)  # connect and read held to the 5 s left
            clock.sleep(10)
            with pytest.raises(DeadlineReachedError, match="deadline"):
                session.get("https://qbo.test/x")
        finally:
            requests.Session.send = original  # type: ignore[method-assign]
    finally:
        start_run_deadline(None)
