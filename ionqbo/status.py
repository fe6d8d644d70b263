"""`ionqbo status`: where the job stands, read from the state file and the token store (no network)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from tabulate import tabulate

from ionqbo.config import Settings
from ionqbo.errors import IonqboError
from ionqbo.qbo.auth import TokenStore
from ionqbo.state import StateStore

# Warn this long before a QBO refresh token (rolling 100 days, hard 5 years) runs out.
WARN_AHEAD = timedelta(days=30)


def _parse(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, tz=UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def token_health(settings: Settings, now: datetime) -> dict[str, Any]:
    """Expiries from the token store (never the tokens themselves), with warnings.

    The store is read with :class:`ionqbo.qbo.auth.TokenStore`, so its format (version, field names)
    is the one the sync uses. No network: a refresh token QBO revoked still looks valid here.

    Args:
        settings: where the store is, and the QBO environment and company it should belong to.
        now: the current time (timezone-aware).

    Returns:
        ``connected``, ``store``, ``environment``, ``realm_id``, ``connected_at``,
        ``access_token_expires_at``, ``refresh_token_expires_at``, ``refresh_token_hard_expires_at``
        (ISO UTC or None) and ``warnings`` (sentences, each with what to do).
    """
    path = settings.token_store_path
    try:
        record = TokenStore(path).load()
    except IonqboError as exc:
        return {"connected": False, "store": str(path), "warnings": [f"token store unreadable: {exc.message}"
                                                                     + (f" ({exc.hint})" if exc.hint else "")]}
    if record is None:
        seeded = bool(settings.qbo_refresh_token)
        return {"connected": False, "store": str(path), "warnings": [
            "not connected yet: run `ionqbo connect`" if not seeded else
            "QBO_REFRESH_TOKEN is set: the first sync seeds the token store"]}
    health: dict[str, Any] = {
        "connected": bool(record.refresh_token),
        "store": str(path),
        "environment": record.environment,
        "realm_id": record.realm_id,
        "connected_at": _iso(record.connected_at),
        "access_token_expires_at": _iso(record.access_expires_at),
        "refresh_token_expires_at": _iso(record.refresh_expires_at),
        "refresh_token_hard_expires_at": _iso(record.refresh_hard_expires_at),
        "warnings": [],
    }
    if settings.qbo_realm_id and settings.qbo_realm_id != record.realm_id:
        health["warnings"].append(
            f"the token store is connected to QBO company {record.realm_id} but QBO_REALM_ID is "
            f"{settings.qbo_realm_id}: a sync will refuse to run; fix QBO_REALM_ID or run `ionqbo connect`")
    if settings.qbo_environment != record.environment:
        health["warnings"].append(
            f"the token store was connected in the QBO {record.environment} environment but QBO_ENVIRONMENT is "
            f"{settings.qbo_environment}: a sync will refuse to run; fix QBO_ENVIRONMENT or run `ionqbo connect`")
    for key, label in (("refresh_token_expires_at", "the QBO refresh token"),
                       ("refresh_token_hard_expires_at", "the QBO refresh token's 5-year limit")):
        when = _parse(health.get(key))
        if when is None:
            continue
        if when <= now:
            health["warnings"].append(f"{label} expired on {when:%Y-%m-%d}: run `ionqbo connect`")
        elif when - now <= WARN_AHEAD:
            health["warnings"].append(
                f"{label} expires on {when:%Y-%m-%d} ({(when - now).days} days): run `ionqbo connect` before then")
    return health


def collect_status(settings: Settings, now: datetime | None = None) -> dict[str, Any]:
    """Everything `ionqbo status` shows, as data (the --json output)."""
    now = now or datetime.now(UTC)
    state = StateStore(settings.state_path).load()
    queue = []
    for entry in sorted(state.queue.values(), key=lambda e: (e.kind, e.ion_id)):
        due = entry.next_retry_at is None or entry.next_retry_at <= now
        queue.append({
            "kind": entry.kind, "ion_id": entry.ion_id, "code": entry.code, "message": entry.message,
            "hint": entry.hint, "attempts": entry.attempts, "parked": entry.parked,
            "state": "parked" if entry.parked else ("due" if due else "waiting"),
            "first_failed_at": entry.first_failed_at.isoformat(), "last_failed_at": entry.last_failed_at.isoformat(),
            "next_retry_at": entry.next_retry_at.isoformat(),
        })
    return {
        "now": now.isoformat(),
        "state_file": str(settings.state_path),
        "qbo_environment": settings.qbo_environment,
        "qbo_realm_id": settings.qbo_realm_id or None,
        "ion_api_url": settings.ion_api_url,
        "cursors": {k: v.isoformat() for k, v in state.cursors.items()},
        "last_run": state.last_run,
        "queue": queue,
        "queued": {"parked": sum(1 for q in queue if q["parked"]),
                   "due": sum(1 for q in queue if q["state"] == "due"),
                   "waiting": sum(1 for q in queue if q["state"] == "waiting")},
        "tokens": token_health(settings, now),
    }


def render_status(data: dict[str, Any]) -> str:
    """The status as a person reads it."""
    out = []
    tokens = data["tokens"]
    company = tokens.get("realm_id") or data.get("qbo_realm_id") or "-"
    out.append(f"QBO company {company} ({tokens.get('environment') or data['qbo_environment']}); "
               f"ION {data['ion_api_url']}")
    out.append(f"state: {data['state_file']}")
    out.append("")
    cursors = data["cursors"] or {}
    rows = [[stream, cursors.get(stream, "never synced")] for stream in ("parts", "purchase_orders")]
    out.append(tabulate(rows, headers=["stream", "synced up to (ION updatedAt)"], tablefmt="simple"))
    out.append("")
    last = data.get("last_run")
    if last:
        pos, parts = last.get("purchase_orders", {}), last.get("parts", {})
        out.append(
            f"last run: {last.get('started_at')} ({last.get('duration_seconds')}s), exit {last.get('exit_code')}; "
            f"POs created {pos.get('created', 0)}, updated {pos.get('updated', 0)}, closed {pos.get('closed', 0)}, "
            f"failed {pos.get('failed', 0)}; items created {parts.get('created', 0)}, updated {parts.get('updated', 0)}"
            + (f"; adopted from QBO: {pos.get('adopted', 0)} PO(s), {parts.get('adopted', 0)} item(s)"
               if pos.get("adopted") or parts.get("adopted") else "")
            + (f"; error: {last['error']}" if last.get("error") else "")
        )
    else:
        out.append("last run: none yet")
    out.append("")
    queue = data["queue"]
    if queue:
        q = data["queued"]
        out.append(f"queued records: {len(queue)} ({q['parked']} parked until fixed, {q['due']} due, "
                   f"{q['waiting']} waiting to retry)")
        rows = [[("PO" if e["kind"] == "purchase_order" else e["kind"]), e["ion_id"], e["state"], e["attempts"],
                 e["code"], e["message"], e["hint"] or ""] for e in queue]
        out.append(tabulate(rows, headers=["record", "ION id", "state", "tries", "error", "reason", "fix"],
                            tablefmt="simple", maxcolwidths=[None, None, None, None, None, 50, 50]))
    else:
        out.append("queued records: none")
    out.append("")
    if tokens.get("connected"):
        access = tokens.get("access_token_expires_at")
        access_at, now = _parse(access), _parse(data.get("now"))
        if access_at is not None and now is not None and access_at <= now:
            access = f"{access} (expired; the next run refreshes it)"
        out.append(
            f"QBO tokens: access token until {access or '-'}; refresh token until "
            f"{tokens.get('refresh_token_expires_at') or '-'}; hard limit {tokens.get('refresh_token_hard_expires_at') or 'unknown'}"
        )
    for warning in tokens.get("warnings", []):
        out.append(f"warning: {warning}")
    return "\n".join(out)
