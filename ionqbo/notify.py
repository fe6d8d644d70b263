"""Alerts for sync problems (webhook, ION notification) and cron-monitor health-check pings.

A problem (a record that failed, a missing mapping) is alerted once when it first appears, then
reminded once a day while it stays; a problem that disappears is dropped from the alert state. The
alert state is a plain JSON-ready dict that the caller keeps in the state file under ``alerts``::

    {"purchase_order:1042:mapping": {"first_seen": "2026-11-25T18:41:58+00:00",
                                     "last_alerted": "2026-11-25T18:41:58+00:00",
                                     "channels": {"webhook": "2026-11-25T18:41:58+00:00"}}}

Delivery never fails the sync: an alert that cannot be delivered is logged, and because it is not
marked as alerted it is sent again on the next run.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from ionqbo.errors import ExitCode, IonqboError, LockedError, RecordError
from ionqbo.http import make_session, redact
from ionqbo.state import StateStore, SyncLock

if TYPE_CHECKING:  # only the types: HTTP goes through the session ionqbo.http.make_session() builds
    import requests

    from ionqbo.config import Settings
    from ionqbo.report import SyncReport
    from ionqbo.state import QueueEntry

log = logging.getLogger("ionqbo.notify")

# Alerting rules.
# A record that failed for a passing reason (timeout, 5xx) is retried on a schedule and usually goes
# through; it becomes a problem for people only after this many failed tries. Parked records (a
# mapping gap, a QBO validation error) need a person at once.
ALERT_AFTER_ATTEMPTS = 3
REMIND_AFTER = timedelta(hours=24)  # a daily reminder while a problem stays
TIMEOUT = 10.0  # seconds: an alert or a ping must never hold the sync up for long
MAX_LISTED = 10  # problems spelled out in one message; the rest are counted
# Slack rejects section text over 3000 characters; stay well under it. ION's limit for a
# notification description is not published (docs/reference/ion-api.md 7.1: NOT FOUND), so the same cap is used.
MAX_TEXT = 2800
# healthchecks.io keeps at most 100 kB of a ping body; a short run summary is all that is useful.
MAX_PING_BODY = 10_000

AlertState = dict[str, dict[str, Any]]


class DeliveryError(IonqboError):
    """An alert or a ping could not be delivered; it is logged and retried on the next run."""


@dataclass(frozen=True)
class Problem:
    """One thing a person must look at: a record that failed or a mapping that is missing.

    ``key`` identifies the problem across runs (``purchase_order:1042:mapping``): the same key on
    the next run is the same problem, so it is not alerted again.
    """

    key: str
    kind: str
    ion_id: str
    code: str
    message: str
    hint: str | None = None

    @classmethod
    def make(cls, kind: str, ion_id: str, code: str, message: str, hint: str | None = None) -> Problem:
        """Build a problem whose key is ``kind:ion_id:code``."""
        return cls(problem_key(kind, ion_id, code), kind, str(ion_id), code, message, hint)

    @classmethod
    def from_error(cls, error: RecordError) -> Problem:
        """The problem a :class:`~ionqbo.errors.RecordError` describes."""
        return cls.make(error.kind or "record", error.ion_id, error.code, error.message, error.hint)

    @classmethod
    def from_failure(cls, failure: Mapping[str, Any]) -> Problem:
        """The problem for one entry of the sync report's ``failures`` list (kind, ion_id, code, message)."""
        return cls.make(
            str(failure.get("kind") or "record"),
            str(failure.get("ion_id") or ""),
            str(failure.get("code") or "error"),
            str(failure.get("message") or ""),
            failure.get("hint") or None,
        )

    def describe(self) -> str:
        """``purchase_order 1042 [mapping]: message (fix: hint)``, redacted."""
        text = f"{self.kind.replace('_', ' ')} {self.ion_id} [{self.code}]: {self.message}"
        if self.hint:
            text += f" (fix: {self.hint})"
        return redact(" ".join(text.split()))


def problem_key(kind: str, ion_id: str, code: str) -> str:
    """The stable key of a problem: ``kind:ion_id:code``."""
    return f"{kind}:{ion_id}:{code}"


# ---- planning (pure) ----------------------------------------------------------------------------


def _aware(now: datetime) -> datetime:
    if now.tzinfo is None:
        msg = "now must be timezone-aware"
        raise ValueError(msg)
    return now.astimezone(UTC)


def _parse(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _dedupe(problems: Iterable[Problem]) -> dict[str, Problem]:
    unique: dict[str, Problem] = {}
    for problem in problems:
        unique.setdefault(problem.key, problem)
    return unique


def plan_alerts(
    problems: Iterable[Problem],
    alert_state: Mapping[str, Any],
    now: datetime,
    *,
    remind_after: timedelta = REMIND_AFTER,
) -> tuple[list[Problem], list[Problem], AlertState]:
    """Decide which problems to alert now.

    A problem never alerted before is new; one alerted ``remind_after`` or longer ago gets a
    reminder; one alerted more recently gets nothing. Keys no longer among ``problems`` are
    resolved and left out of the new state. Entries that cannot be read count as never alerted.

    Args:
        problems: every problem that exists after this run (duplicates by key are merged).
        alert_state: the state from the previous run (not modified).
        now: the current time, timezone-aware.
        remind_after: how long before a standing problem is alerted again.

    Returns:
        ``(to_send, reminders, new_state)``; ``new_state`` marks the alerts as sent at ``now``,
        so keep it only once they were delivered (:func:`deliver` does that).

    Raises:
        ValueError: when ``now`` is naive.
    """
    now = _aware(now)
    stamp = now.isoformat()
    to_send: list[Problem] = []
    reminders: list[Problem] = []
    new_state: AlertState = {}
    for key, problem in _dedupe(problems).items():
        entry = alert_state.get(key)
        entry = dict(entry) if isinstance(entry, Mapping) else {}
        first_seen = _parse(entry.get("first_seen"))
        last_alerted = _parse(entry.get("last_alerted"))
        entry["first_seen"] = first_seen.isoformat() if first_seen else stamp
        if last_alerted is None:
            to_send.append(problem)
            entry["last_alerted"] = stamp
        elif now - last_alerted >= remind_after:
            reminders.append(problem)
            entry["last_alerted"] = stamp
        new_state[key] = entry
    return to_send, reminders, new_state


def resolved_keys(problems: Iterable[Problem], alert_state: Mapping[str, Any]) -> list[str]:
    """Keys in ``alert_state`` whose problem is gone (they are dropped by :func:`plan_alerts`)."""
    current = {p.key for p in problems}
    return sorted(key for key in alert_state if key not in current)


# ---- messages -------------------------------------------------------------------------------------


def _describe_key(key: str) -> str:
    kind, _, rest = key.partition(":")
    ion_id, _, code = rest.rpartition(":")
    if not ion_id:
        return key
    return f"{kind.replace('_', ' ')} {ion_id} [{code}]"


def summary_title(new: Sequence[Problem], reminders: Sequence[Problem], resolved: Sequence[str],
                  label: str = "") -> str:
    """``ionqbo (acme): 2 new sync problems, 1 still open, 1 resolved``."""
    parts = []
    if new:
        parts.append(f"{len(new)} new sync problem{'s' if len(new) != 1 else ''}")
    if reminders:
        parts.append(f"{len(reminders)} still open")
    if resolved:
        parts.append(f"{len(resolved)} resolved")
    head = f"ionqbo ({label})" if label else "ionqbo"
    return redact(f"{head}: {', '.join(parts) or 'no problems'}")


def summary_lines(new: Sequence[Problem], reminders: Sequence[Problem], resolved: Sequence[str],
                  limit: int = MAX_LISTED) -> list[str]:
    """One line per problem (new first, then reminders, then resolved), at most ``limit``, then a count."""
    lines = [f"NEW {p.describe()}" for p in new]
    lines += [f"STILL OPEN {p.describe()}" for p in reminders]
    lines += [f"RESOLVED {_describe_key(key)}" for key in resolved]
    if len(lines) > limit:
        hidden = len(lines) - limit
        lines = [*lines[:limit], f"... and {hidden} more: run `ionqbo status` to see them all"]
    return lines


def _reason(exc: BaseException, url: str = "") -> str:
    """``Type: message`` for a log line, without the URL or its path (the secret parts of a hook)."""
    text = f"{type(exc).__name__}: {exc}"
    if url:
        parts = urlsplit(url)
        secret_parts = [url, url.rstrip("/"), parts.path, parts.path.rstrip("/"), parts.query]
        for part in sorted((p for p in secret_parts if len(p) > 1), key=len, reverse=True):
            text = text.replace(part, "/***" if part.startswith("/") else "***")
    return redact(text)[:500]


def _clip(text: str, limit: int = MAX_TEXT) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": _clip(redact(text))}}


# ---- notifiers --------------------------------------------------------------------------------------


class IonNotificationApi(Protocol):
    """What :class:`IonNotifier` needs from ``ionqbo.ion.client.IonClient``."""

    def user_id_by_email(self, email: str) -> str | None:
        ...

    def dispatch_notification(
        self, user_id: str, title: str, description: str, notification_type: str = "WARNING"
    ) -> str | None: ...


class Notifier(Protocol):
    """A channel alerts go to. ``send`` raises on failure; ``name`` keys the per-channel state."""

    name: str

    def send(self, new: Sequence[Problem], reminders: Sequence[Problem], resolved: Sequence[str]) -> None:
        """Deliver one message about these problems, or raise."""


class WebhookNotifier:
    """POSTs a Slack-compatible message (``text`` plus ``blocks``) to an incoming-webhook URL.

    The URL itself is a secret (whoever has it can post); it is never logged unredacted.
    """

    name = "webhook"

    def __init__(
        self, url: str, session: requests.Session, *, label: str = "", timeout: float = TIMEOUT
    ) -> None:
        self.url = url
        self.session = session
        self.label = label
        self.timeout = timeout
        redact.add(url)

    def payload(
        self, new: Sequence[Problem], reminders: Sequence[Problem], resolved: Sequence[str]
    ) -> dict[str, Any]:
        """The JSON body: ``text`` for every client, ``blocks`` for Slack's richer layout."""
        title = summary_title(new, reminders, resolved, self.label)
        lines = summary_lines(new, reminders, resolved)
        text = _clip(redact(title + "\n" + "\n".join(f"• {line}" for line in lines)))
        blocks = [_section(f"*{title}*"), *(_section(line) for line in lines)]
        return {"text": text, "blocks": blocks}

    def send(self, new: Sequence[Problem], reminders: Sequence[Problem], resolved: Sequence[str]) -> None:
        """POST the message.

        Raises:
            DeliveryError: the receiver answered with a non-2xx status.
            requests.RequestException: the request failed (connection refused, timeout, ...).
        """
        body = self.payload(new, reminders, resolved)
        response = self.session.post(self.url, json=body, timeout=self.timeout)
        if not 200 <= response.status_code < 300:
            msg = f"webhook answered HTTP {response.status_code}"
            raise DeliveryError(msg)


class IonNotifier:
    """Sends one ION notification (type WARNING) a run to the ION user with ``email`` (docs/reference/ion-api.md 7.1).

    One summary notification per run rather than one per problem: a run with fifty mapping gaps
    should not raise fifty toasts, and one message is delivered (or not) as a whole.
    """

    name = "ion"

    def __init__(self, ion_client: IonNotificationApi, email: str, *, label: str = "") -> None:
        self.ion = ion_client
        self.email = email
        self.label = label
        self._user_id: str | None = None

    def send(self, new: Sequence[Problem], reminders: Sequence[Problem], resolved: Sequence[str]) -> None:
        """Look the user up (once) and dispatch the notification.

        Raises:
            DeliveryError: no ION user has that e-mail.
            IonqboError: the ION client failed (auth, GraphQL error, unavailable).
        """
        if self._user_id is None:
            user_id = self.ion.user_id_by_email(self.email)
            if not user_id:
                msg = f"no ION user with the e-mail {self.email!r} (IONQBO_NOTIFY_ION_USER)"
                raise DeliveryError(msg)
            self._user_id = str(user_id)
        title = summary_title(new, reminders, resolved, self.label)
        description = _clip(redact("\n".join(summary_lines(new, reminders, resolved))))
        self.ion.dispatch_notification(self._user_id, title, description, "WARNING")


# ---- delivery ------------------------------------------------------------------------------------------


def _channel_view(alert_state: Mapping[str, Any], channel: str) -> AlertState:
    view: AlertState = {}
    for key, entry in alert_state.items():
        if isinstance(entry, Mapping):
            channels = entry.get("channels")
            when = channels.get(channel) if isinstance(channels, Mapping) else entry.get("last_alerted")
            view[key] = {"first_seen": entry.get("first_seen"), "last_alerted": when}
    return view


def deliver(
    problems: Iterable[Problem],
    notifiers: Sequence[Notifier],
    alert_state: Mapping[str, Any],
    now: datetime,
    *,
    remind_after: timedelta = REMIND_AFTER,
) -> AlertState:
    """Send the alerts that are due on every notifier and return the new alert state.

    Each notifier keeps its own "last alerted" time (``channels``), so an alert that reached the
    webhook but not ION is re-sent to ION only. A notifier that fails (HTTP error, connection
    refused, ION error, even a bug) is logged, never raised, and its alerts stay due.

    Args:
        problems: every problem that exists after this run.
        notifiers: the configured channels (may be empty: problems are still tracked).
        alert_state: the ``alerts`` part of the state file from the previous run.
        now: the current time, timezone-aware.
        remind_after: how long before a standing problem is alerted again.

    Returns:
        The alert state to store: current problems only, with the deliveries that succeeded.
    """
    now = _aware(now)
    current = _dedupe(problems)
    stamp = now.isoformat()
    new_state: AlertState = {}
    for key in current:
        old = alert_state.get(key)
        old = old if isinstance(old, Mapping) else {}
        first_seen = _parse(old.get("first_seen"))
        channels = old.get("channels")
        kept: dict[str, str] = {}
        if isinstance(channels, Mapping):
            kept = {str(name): value for name, value in channels.items() if _parse(value)}
        elif _parse(old.get("last_alerted")):
            # a state written without per-channel times: that time counts for every channel
            kept = {n.name: old["last_alerted"] for n in notifiers}
        new_state[key] = {"first_seen": first_seen.isoformat() if first_seen else stamp, "channels": kept}

    resolved = resolved_keys(current.values(), alert_state)
    for key in resolved:
        log.info("problem resolved: %s", _describe_key(key))

    for notifier in notifiers:
        view = _channel_view(alert_state, notifier.name)
        to_send, reminders, _ = plan_alerts(current.values(), view, now, remind_after=remind_after)
        told = [key for key in resolved if view.get(key, {}).get("last_alerted")]
        if not (to_send or reminders or told):
            continue
        try:
            notifier.send(to_send, reminders, told)
        except Exception as exc:  # noqa: BLE001 - an alert must never fail the sync; it is retried next run
            log.warning(
                "could not deliver %d alert(s) by %s: %s; they stay due for the next run",
                len(to_send) + len(reminders), notifier.name, _reason(exc, getattr(notifier, "url", "")),
                extra={"kind": "alert", "error_code": "delivery"},
            )
            continue
        log.info("alerted %d new and %d standing problem(s) by %s",
                 len(to_send), len(reminders), notifier.name)
        for problem in (*to_send, *reminders):
            new_state[problem.key]["channels"][notifier.name] = stamp

    for entry in new_state.values():
        times = [t for t in (_parse(v) for v in entry["channels"].values()) if t is not None]
        entry["last_alerted"] = max(times).isoformat() if times else None
    return new_state


# ---- health checks ----------------------------------------------------------------------------------------


def healthcheck_outcome(exit_code: int) -> bool | None:
    """Whether a run with ``exit_code`` pings success (True), failure (False), or not at all (None).

    0 and 3 (records queued; those are alerted separately) mean the job works: success. 75 (another
    sync holds the lock) does not ping, so a sync stuck holding the lock shows up as a missed ping
    instead of being hidden by the skipped runs. Everything else (1, 2, 4, 5) is a failure.
    """
    if exit_code == ExitCode.LOCKED:
        return None
    return exit_code in (ExitCode.OK, ExitCode.PARTIAL)


def ping_healthcheck(
    url: str, ok: bool, session: requests.Session, body: str = "", *, timeout: float = TIMEOUT
) -> bool:
    """Ping a cron monitor: ``url`` on success, ``url + "/fail"`` on failure (healthchecks.io style).

    A GET when ``body`` is empty, else a POST carrying ``body`` (redacted, clipped). Errors are
    logged, never raised: a monitor being down must not fail the sync.

    Args:
        url: the check's ping URL (a secret: whoever has it can ping); a trailing slash is ignored.
        ok: whether the run succeeded.
        session: an HTTP session (``ionqbo.http.make_session()``).
        body: an optional short run summary the monitor shows next to the ping.
        timeout: seconds before the ping is abandoned.

    Returns:
        True when the monitor answered 2xx.
    """
    redact.add(url)
    target = url.rstrip("/") + ("" if ok else "/fail")
    where = urlsplit(url).hostname or "the health-check URL"  # the path is the secret part; the host is not
    try:
        if body:
            data = redact(body)[:MAX_PING_BODY].encode("utf-8")
            response = session.post(target, data=data, timeout=timeout,
                                    headers={"Content-Type": "text/plain; charset=utf-8"})
        else:
            response = session.get(target, timeout=timeout)
    except Exception as exc:  # noqa: BLE001 - a monitor being down must never fail the sync
        log.warning("health-check ping to %s failed: %s", where, _reason(exc, target))
        return False
    if not 200 <= response.status_code < 300:
        log.warning("health-check ping to %s answered HTTP %d", where, response.status_code)
        return False
    log.debug("health-check ping sent (%s)", "ok" if ok else "fail")
    return True


# ---- after a sync ----------------------------------------------------------------------------------------


def problems_from_queue(
    entries: Iterable[QueueEntry], *, after_attempts: int = ALERT_AFTER_ATTEMPTS
) -> list[Problem]:
    """The problems in the state's record queue: parked records, and retried ones failing repeatedly.

    The queue, not the run's report, is the complete list: a ``--po`` run or a run stopped by an
    outage reports only part of it, and alerts must not call the rest resolved.
    """
    return [
        Problem.make(e.kind, e.ion_id, e.code, e.message, e.hint)
        for e in entries
        if e.parked or e.attempts >= after_attempts
    ]


def run_summary(report: SyncReport) -> str:
    """One line about a run for a health-check ping body (counts and the run-level error, no secrets)."""
    pos, parts = report.purchase_orders, report.parts
    text = (
        f"exit {report.exit_code}: purchase orders {pos.created} created, {pos.updated} updated, "
        f"{pos.closed} closed, {pos.failed} failed; parts {parts.created} created, {parts.updated} updated, "
        f"{parts.failed} failed; {len(report.failures)} queued"
    )
    if report.error:
        text += f"; {report.error}"
    return redact(" ".join(text.split()))


def _label(settings: Settings) -> str:
    # The company's name in alert titles: the state directory's name when it is one of several
    # (/var/lib/ionqbo/acme -> "acme"); nothing for the single default directory.
    name = settings.state_dir.name
    return "" if name in ("", "ionqbo") else name


def build_notifiers(settings: Settings, session: requests.Session,
                    ion: IonNotificationApi | None = None) -> list[Notifier]:
    """The notifiers the settings ask for: ``IONQBO_NOTIFY_WEBHOOK``, ``IONQBO_NOTIFY_ION_USER``."""
    label = _label(settings)
    notifiers: list[Notifier] = []
    if settings.notify_webhook:
        notifiers.append(WebhookNotifier(settings.notify_webhook, session, label=label))
    if settings.notify_ion_user and ion is not None:
        notifiers.append(IonNotifier(ion, settings.notify_ion_user, label=label))
    return notifiers


def after_sync(
    settings: Settings,
    report: SyncReport,
    *,
    ion: IonNotificationApi | None = None,
    session: requests.Session | None = None,
    now: datetime | None = None,
) -> None:
    """Alerts and the health-check ping after one ``ionqbo sync``; never raises.

    A dry run does neither. Alerts: under the sync lock, the problems are read from the state's
    record queue (plus one for a run that needs authorization, exit 4), delivered by
    :func:`deliver`, and the alert state is saved in the state file under ``alerts``. If another
    sync holds the lock, alerts wait for the next run. The ping follows :func:`healthcheck_outcome`.

    Args:
        settings: the run's settings.
        report: the run's report.
        ion: the ION client, for ``IONQBO_NOTIFY_ION_USER`` notifications.
        session: an HTTP session (a new one with a 10 s timeout by default).
        now: the current time (injectable for tests).
    """
    if report.dry_run:
        return
    session = session if session is not None else make_session(timeout=TIMEOUT, name="notify")
    try:
        _alert(settings, report, build_notifiers(settings, session, ion), now or datetime.now(UTC))
    except Exception as exc:  # noqa: BLE001 - alerting must never fail the sync
        log.warning("could not update the alerts: %s", _reason(exc))
    if settings.healthcheck_url:
        ok = healthcheck_outcome(report.exit_code)
        if ok is not None:
            ping_healthcheck(settings.healthcheck_url, ok, session, run_summary(report))


def _alert(settings: Settings, report: SyncReport, notifiers: Sequence[Notifier], now: datetime) -> None:
    try:
        with SyncLock(settings.lock_path):
            store = StateStore(settings.state_path)
            state = store.load()
            problems = problems_from_queue(state.queue.values())
            if report.exit_code == ExitCode.AUTH:
                problems.append(Problem.make(
                    "sync", "run", "auth", report.error or "authorization needed",
                    "run `ionqbo connect` if QBO consent is needed, or check the ION API key",
                ))
            new_alerts = deliver(problems, notifiers, state.alerts, now)
            if new_alerts != state.alerts:
                state.alerts = new_alerts
                store.save(state)
    except LockedError:
        log.info("another sync started; alerts are sent after the next run")
