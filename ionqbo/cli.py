"""Command-line interface: the only module that imports click (R1).

Each command parses its options, builds the settings, calls the library, renders the result and
turns errors into the exit codes listed in the README. Data goes to stdout; logs and diagnostics
go to stderr.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import threading
import traceback
import webbrowser
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from ionqbo import __version__
from ionqbo.config import ION_KEYS, PART_KEYS, QBO_KEYS, SYNC_KEYS, Settings
from ionqbo.errors import ExitCode, IonqboError, UsageError
from ionqbo.http import redact
from ionqbo.logs import setup_logging

log = logging.getLogger("ionqbo.cli")

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class Globals:
    env_file: str = ".env"
    debug: bool = False
    verbose: int = 0
    quiet: bool = False
    log_format: str | None = None
    log_file: str | None = None


def _set(name: str) -> Callable[[click.Context, click.Parameter, Any], Any]:
    """Store a common option on the root context; a value given after the command name wins."""

    def callback(ctx: click.Context, _param: click.Parameter, value: Any) -> Any:
        root = ctx.find_root()
        if not isinstance(root.obj, Globals):
            root.obj = Globals()
        if value not in (None, False, 0):
            setattr(root.obj, name, value)
        return value

    return callback


def common_options(func: F) -> F:
    """Options every command accepts, before or after the command name."""
    options = [
        click.option("--env-file", type=click.Path(dir_okay=False), default=None, expose_value=False,
                     callback=_set("env_file"), help="Settings file (default ./.env); the environment wins."),
        click.option("--debug", is_flag=True, default=False, expose_value=False, callback=_set("debug"),
                     help="Show tracebacks for unexpected errors."),
        click.option("-v", "--verbose", count=True, expose_value=False, callback=_set("verbose"),
                     help="More log detail on stderr (-v: debug)."),
        click.option("-q", "--quiet", is_flag=True, default=False, expose_value=False, callback=_set("quiet"),
                     help="Only warnings and errors on stderr."),
        click.option("--log-format", type=click.Choice(["text", "json"]), default=None, expose_value=False,
                     callback=_set("log_format"), help="Log lines as text or JSON (IONQBO_LOG_FORMAT)."),
        click.option("--log-file", type=click.Path(dir_okay=False), default=None, expose_value=False,
                     callback=_set("log_file"), help="Also append logs to this file (IONQBO_LOG_FILE)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _globals() -> Globals:
    ctx = click.get_current_context()
    root = ctx.find_root()
    if not isinstance(root.obj, Globals):
        root.obj = Globals()
    return root.obj


def _settings(require: tuple[str, ...] = ()) -> Settings:
    g = _globals()
    env_file = g.env_file or ".env"
    settings = Settings.load(env_file, require=require)
    redact.add(*settings.secrets())
    fmt = g.log_format or settings.log_format
    log_file = Path(g.log_file) if g.log_file else settings.log_file
    level = logging.WARNING if g.quiet else (logging.DEBUG if g.verbose else logging.INFO)
    setup_logging(level=level, fmt="json" if fmt == "json" else "text", log_file=log_file)
    return settings


def _fail(exc: BaseException) -> NoReturn:
    """Print an error in one line (a traceback with --debug) and exit with its code."""
    g = _globals()
    if isinstance(exc, OSError) and exc.filename and not isinstance(exc, IonqboError):
        from ionqbo.state import local_fault

        exc = local_fault(exc, str(exc.filename), setting="the setting that names it")
    if isinstance(exc, IonqboError):
        code = int(exc.exit_code)
        click.echo(f"error: {redact(str(exc))}", err=True)
    else:
        code = int(ExitCode.BUG)
        if g.debug:
            click.echo(redact("".join(traceback.format_exception(exc))), err=True)
        click.echo(f"error: unexpected {type(exc).__name__}: {redact(str(exc))} (run with --debug for a traceback; "
                   "this is a bug, please report it)", err=True)
    sys.exit(code)


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    try:
        yield
    except (SystemExit, click.exceptions.Exit, click.ClickException, click.Abort):
        raise
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - the one place every error becomes an exit code
        _fail(exc)
    except BaseException as exc:
        from ionqbo.shutdown import Terminated

        if not isinstance(exc, Terminated):
            raise
        log.warning("stopped by SIGTERM before the run had anything to save")
        _die_by_sigterm()


# ---- the group ---------------------------------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@common_options
@click.version_option(__version__, prog_name="ionqbo")
def cli() -> None:
    """Keep QuickBooks Online in step with ION purchase orders and parts.

    \b
    Start with the demo (no accounts needed):
        ionqbo demo
    Then: ionqbo connect; ionqbo check-mappings; ionqbo sync --since 2026-01-01
    Exit codes: 0 ok, 2 settings, 3 some records queued, 4 reconnect needed,
    5 ION or QBO unavailable, 75 another sync is running.
    """


# ---- connect -----------------------------------------------------------------------------------


@cli.command()
@common_options
@click.option("--no-browser", is_flag=True, help="Headless: print the consent URL and paste the redirect URL back.")
@click.option("--timeout", type=float, default=300.0, show_default=True, help="Seconds to wait for the consent.")
def connect(no_browser: bool, timeout: float) -> None:
    """Connect ionqbo to a QuickBooks Online company (OAuth 2.0 consent).

    Opens the consent page (or prints it), receives the redirect on a one-shot listener at
    QBO_REDIRECT_URI (127.0.0.1 only), checks `state`, and stores the tokens (0600) in the state
    directory.

    \b
    Example:
        ionqbo connect
        ionqbo connect --no-browser      # on a server: paste the redirect URL back
    """
    with _errors():
        from ionqbo.qbo.auth import TokenStore
        from ionqbo.qbo.auth import connect as do_connect

        settings = _settings(require=("QBO_CLIENT_ID", "QBO_CLIENT_SECRET", "QBO_REDIRECT_URI"))
        store = TokenStore(settings.token_store_path)

        def prompt(text: str) -> str:
            return str(click.prompt(text, err=True))

        summary = do_connect(
            settings, store, no_browser=no_browser, open_browser=_open_browser, prompt=prompt,
            echo=lambda text: click.echo(text, err=True), timeout=timeout,
        )
        click.echo(f"connected to QBO company {summary.get('realm_id')} ({summary.get('environment')}); "
                   f"tokens stored in {settings.token_store_path}")


def _open_browser(url: str) -> bool:
    if os.environ.get("IONQBO_NO_BROWSER") or not (os.environ.get("DISPLAY") or sys.platform == "darwin"):
        return False
    try:
        return webbrowser.open(url)
    except webbrowser.Error:
        return False


# ---- sync --------------------------------------------------------------------------------------


def _parse_since(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        if len(value) == 10:
            return datetime.combine(date.fromisoformat(value), datetime.min.time(), tzinfo=UTC)
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date (2026-01-31) or an ISO time "
                                 "(2026-01-31T08:00:00+00:00)") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _clients(settings: Settings, *, schema_cache: bool = True, read_only: bool = False) -> tuple[Any, Any, Any]:
    """The ION client, the QBO auth and the QBO client for these settings.

    ``schema_cache``: reuse ION's schema cached in the state directory (check-mappings reads it live);
    ``read_only``: a dry run leaves the cache as it is.
    """
    from ionqbo.ion.client import IonClient
    from ionqbo.ion.schema import SchemaCache
    from ionqbo.qbo.auth import QboAuth, TokenStore
    from ionqbo.qbo.client import QboClient

    cache = SchemaCache(settings.state_dir, writable=not read_only) if schema_cache else None
    ion = IonClient(settings, schema_cache=cache)
    auth = QboAuth(settings, TokenStore(settings.token_store_path))
    qbo = QboClient(settings, auth)
    return ion, auth, qbo


@cli.command()
@common_options
@click.option("--since", metavar="WHEN", help="Backfill from a date or ISO time (the stored cursor never moves back).")
@click.option("--dry-run", is_flag=True, help="Write nothing; show what would be created, updated or adopted, field by field.")
@click.option("--po", "po_ids", multiple=True, metavar="ID", help="Sync only this ION purchase order (repeatable).")
@click.option("--parts/--no-parts", default=True, show_default=True, help="Sync changed ION parts to QBO items.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
@click.option("--deadline", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
              help="Stop (saved, exit 5) after this many seconds; 0: no limit. Default IONQBO_RUN_DEADLINE (240).")
def sync(since: str | None, dry_run: bool, po_ids: tuple[str, ...], parts: bool, as_json: bool,
         deadline: float | None) -> None:
    """Sync ordered ION purchase orders and changed parts to QuickBooks Online.

    A run ends by its deadline (IONQBO_RUN_DEADLINE, 240 s: under a five-minute timer, so runs never
    overlap): it saves what it did and exits 5, and the next run resumes. A service that stays down
    ends the run at once (exit 5, within 90 s). A long backfill saves after every chunk: raise the
    deadline for it (--deadline 3600), or run the same command again until it exits 0.

    \b
    Example:
        ionqbo sync                       # what changed since the last run
        ionqbo sync --since 2026-01-01 --deadline 3600   # backfill
        ionqbo sync --dry-run             # show what would change
        ionqbo sync --po 1042 --po 1043   # just these POs
    """
    with _errors():
        from ionqbo.http import start_run_deadline
        from ionqbo.shutdown import handle_sigterm
        from ionqbo.state import StateStore, SyncLock
        from ionqbo.sync import Syncer, SyncOptions

        since_at = _parse_since(since)
        require = SYNC_KEYS + (PART_KEYS if parts else ())
        settings = _settings(require=require)
        start_run_deadline(settings.run_deadline if deadline is None else deadline)
        # The lock comes first: a sync that finds another one running (exit 75) has touched nothing in
        # the state directory, not even the token store (reading the realm may seed it). A dry run
        # takes no lock and writes no sync state.
        lock = SyncLock(settings.lock_path) if not dry_run else None
        with lock if lock is not None else contextlib.nullcontext():
            ion, auth, qbo = _clients(settings, read_only=dry_run)
            progress = _progress_for(sys.stderr)
            syncer = Syncer(settings, ion=ion, qbo=qbo, store=StateStore(settings.state_path, read_only=dry_run),
                            realm_id=auth.realm_id, progress=progress)
            try:
                with handle_sigterm():  # SIGTERM: the run saves what it did and stops within seconds
                    report = syncer.run(SyncOptions(since=since_at, dry_run=dry_run, po_ids=po_ids, parts=parts),
                                        lock=lock)
            finally:
                if progress is not None:
                    progress.close()
            terminated = syncer.terminated
            del syncer  # its state (a ledger entry per record synced) is freed before the alerts load it again
        if terminated:
            log.warning("stopped by SIGTERM after %.1f s; progress saved (the ledger holds every write QBO "
                        "confirmed); the next run resumes", report.duration_seconds)
        else:
            # The alerts take the lock again themselves (they must not run while another sync writes).
            _after_sync(settings, ion, report)
        from ionqbo.report import render_sync, to_json

        click.echo(to_json(report.to_dict()) if as_json else render_sync(report))
        if report.error and not terminated:
            click.echo(f"error: {redact(report.error)}", err=True)
        if terminated:
            _die_by_sigterm()
        sys.exit(report.exit_code)


def _die_by_sigterm() -> NoReturn:
    """End as SIGTERM's default action would (status 143 to a shell; systemd counts it a clean stop)."""
    sys.stdout.flush()
    sys.stderr.flush()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)
    sys.exit(128 + signal.SIGTERM)  # not reached where the signal is delivered at once


def _progress_for(stream: Any) -> Any:
    """A progress bar per stream on a terminal; None on a pipe or a log file (nothing is drawn)."""
    from ionqbo.progress import StreamProgress, progress_enabled

    return StreamProgress(stream) if progress_enabled(stream) else None


def _after_sync(settings: Settings, ion: Any, report: Any) -> None:
    """Alerts and health-check pings; neither can fail the sync."""
    from ionqbo import notify

    with contextlib.suppress(Exception):  # delivery problems are logged inside notify
        notify.after_sync(settings, report, ion=ion)


# ---- status and retry --------------------------------------------------------------------------


@cli.command()
@common_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def status(as_json: bool) -> None:
    """Show the cursors, the last run, queued records and token health.

    \b
    Example:
        ionqbo status
        ionqbo status --json
    """
    with _errors():
        from ionqbo.status import collect_status, render_status

        settings = _settings()
        data = collect_status(settings)
        click.echo(json.dumps(data, indent=2, default=str) if as_json else render_status(data))


@cli.command()
@common_options
@click.argument("ids", nargs=-1)
def retry(ids: tuple[str, ...]) -> None:
    """Put parked records back in the queue so the next sync tries them.

    IDS are ION ids (or kind:id, e.g. part:12); none means every parked record.

    \b
    Example:
        ionqbo retry            # all
        ionqbo retry 1045       # purchase order 1045
    """
    with _errors():
        from ionqbo.state import StateStore, SyncLock

        settings = _settings()
        with SyncLock(settings.lock_path):  # before anything in the state directory is read or written
            store = StateStore(settings.state_path)
            state = store.load()
            unknown = state.unknown_ids(list(ids)) if ids else []
            count = state.release(list(ids) or None)
            store.save(state)
        for ion_id in unknown:
            click.echo(f"warning: {ion_id} is not in the queue (`ionqbo status` lists what is)", err=True)
        click.echo(f"{count} record(s) will be tried on the next sync")


# ---- check-mappings ------------------------------------------------------------------------------


@cli.command("check-mappings")
@common_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--save-ion-schema", "save_schema", metavar="FILE", type=click.Path(dir_okay=False),
              help="Also write ION's live schema (types and fields, no data) to FILE as SDL, for a bug report.")
def check_mappings(as_json: bool, save_schema: str | None) -> None:
    """Audit everything a sync depends on, read-only on both sides.

    Suppliers, expense codes, classes, currencies and fee names in use on the ION purchase orders in
    scope; item names QBO would refuse; the QBO settings the sync needs; the ION queries against the
    live ION schema; connectivity on both sides. Blocking problems come first, each with its fix.

    \b
    Example:
        ionqbo check-mappings
        ionqbo check-mappings --json
        ionqbo check-mappings --save-ion-schema ion-schema.graphql
    """
    with _errors():
        from ionqbo.checks import render_checks, run_checks

        settings = _settings(require=ION_KEYS + QBO_KEYS + ("QBO_AP_ACCOUNT_ID",))
        ion, _auth, qbo = _clients(settings, schema_cache=False)
        result = run_checks(settings, ion=ion, qbo=qbo)
        if save_schema:
            try:
                size = ion.save_schema(save_schema)
            except (OSError, IonqboError) as exc:
                click.echo(f"error: could not save ION's schema to {save_schema}: {exc}", err=True)
            else:
                click.echo(f"ION's schema ({size} characters, no data) saved to {save_schema}", err=True)
        click.echo(json.dumps(result.to_dict(), indent=2, default=str) if as_json else render_checks(result))
        sys.exit(result.exit_code)


# ---- sandbox and demo ------------------------------------------------------------------------------


@cli.command()
@common_options
@click.option("--print-env", is_flag=True, help="First print KEY=VALUE settings that point ionqbo at the sandbox.")
@click.option("--ion-port", type=int, default=0, help="ION emulator port (default: a free one).")
@click.option("--qbo-port", type=int, default=0, help="QBO emulator port (default: a free one).")
@click.option("--empty", is_flag=True, help="Start with no sample data.")
@click.option("--no-multicurrency", is_flag=True, help="QBO multicurrency off.")
@click.option("--rate-limits", is_flag=True, help="The QBO emulator enforces QBO's published request limits.")
@click.option("--latency", type=float, default=0.0, help="Seconds added to every QBO answer.")
@click.option("--ion-schema", "ion_schema", metavar="FILE", type=click.Path(exists=True, dir_okay=False),
              help="Serve this ION schema (SDL) instead of the reference one, e.g. a schema saved by "
                   "`check-mappings --save-ion-schema` or a variant from ionqbo/sandbox/ion-schemas/.")
@click.option("--country", type=click.Choice(["US", "AU", "UK", "GB", "CA"], case_sensitive=False), default="US",
              show_default=True,
              help="The QBO company's country: outside the US it has that country's tax codes and home currency, "
                   "and every PO line needs a tax code.")
@click.option("--allow-duplicate-docnumbers", is_flag=True,
              help="The QBO emulator accepts a second purchase order with a DocNumber already in use "
                   "(default: refused with 6140).")
def sandbox(print_env: bool, ion_port: int, qbo_port: int, empty: bool, no_multicurrency: bool,
            rate_limits: bool, latency: float, ion_schema: str | None, country: str,
            allow_duplicate_docnumbers: bool) -> None:
    """Serve the built-in ION and QBO emulators on 127.0.0.1 until stopped.

    \b
    Example:
        ionqbo sandbox --print-env > .env     # then, in another shell:
        ionqbo sync
        ionqbo sandbox --ion-schema saved-ion-schema.graphql
        ionqbo sandbox --country AU --print-env > .env   # an Australian company (GST)
    """
    with _errors():
        from ionqbo.sandbox.server import Sandbox

        box = Sandbox(sample=not empty, multicurrency=not no_multicurrency, ion_port=ion_port, qbo_port=qbo_port,
                      rate_limits=rate_limits, latency=latency, country=country,
                      ion_schema=Path(ion_schema) if ion_schema else None,
                      allow_duplicate_docnumbers=allow_duplicate_docnumbers).start()
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        try:
            if print_env:
                values = box.env()
                # Keep the sandbox's cursor, queue and tokens apart from a real company's state.
                values["IONQBO_STATE_DIR"] = str(Path.cwd() / "ionqbo-sandbox-state")
                for key, value in values.items():
                    click.echo(f"{key}={value}")
                sys.stdout.flush()
            click.echo(f"ION emulator on {box.ion_url}, QBO emulator on {box.qbo_url}; Ctrl-C stops", err=True)
            while not stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
        finally:
            box.stop()


@cli.command()
@common_options
@click.option("--keep-state", type=click.Path(file_okay=False), default=None,
              help="Keep the demo's state directory here (default: a temporary one, removed after).")
def demo(keep_state: str | None) -> None:
    """Run the whole mission against the built-in sandbox: connect, sync, show, sync again.

    \b
    Example:
        ionqbo demo
    """
    with _errors():
        from ionqbo.demo import run_demo

        g = _globals()
        level = logging.WARNING if not g.verbose else logging.DEBUG
        setup_logging(level=level, fmt="json" if g.log_format == "json" else "text",
                      log_file=Path(g.log_file) if g.log_file else None)
        code = run_demo(echo=click.echo, state_dir=Path(keep_state) if keep_state else None)
        sys.exit(code)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="ionqbo")


__all__ = ["UsageError", "cli", "main", "replace"]
