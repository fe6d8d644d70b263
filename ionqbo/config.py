"""Settings: read once from the environment and an env file, validated, frozen (README, "Setting up for real")."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from dotenv import dotenv_values

from ionqbo.errors import ConfigError

# ION presets: ion-api.md section 1.4 (current manual table: token path without the legacy /auth
# prefix). Every URL can be overridden with ION_API_URL / ION_TOKEN_URL.
_ION_TOKEN_PATH = "/realms/api-keys/protocol/openid-connect/token"
ION_PRESETS: dict[str, tuple[str, str]] = {
    "production": ("https://api.buildwithion.com/graphql", "https://auth.buildwithion.com" + _ION_TOKEN_PATH),
    "sandbox": (
        "https://staging-api.buildwithion.com/graphql",
        "https://staging-auth.buildwithion.com" + _ION_TOKEN_PATH,
    ),
    "gov": (
        "https://api-production-gov.buildwithion.com/graphql",
        "https://auth-production-gov.buildwithion.com" + _ION_TOKEN_PATH,
    ),
    "gov-sandbox": (
        "https://api-staging-gov.buildwithion.com/graphql",
        "https://auth-staging-gov.buildwithion.com" + _ION_TOKEN_PATH,
    ),
    "aus": (
        "https://api-production-aus.buildwithion.com/graphql",
        "https://auth-production-aus.buildwithion.com" + _ION_TOKEN_PATH,
    ),
    "aus-sandbox": (
        "https://api-staging-aus.buildwithion.com/graphql",
        "https://auth-staging-aus.buildwithion.com" + _ION_TOKEN_PATH,
    ),
}

# QBO hosts: docs/reference/qbo.md sections 1 and 2. The OAuth endpoints are the same for both environments.
QBO_PRESETS: dict[str, str] = {
    "production": "https://quickbooks.api.intuit.com",
    "sandbox": "https://sandbox-quickbooks.api.intuit.com",
}
QBO_AUTH_URL = "https://appcenter.intuit.com/connect/oauth2"
QBO_TOKEN_URL = "https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer"

DEFAULT_ITEM_NAME_TEMPLATE = "{partNumber} Rev {revision}"
TEMPLATE_FIELDS = frozenset({"partNumber", "revision", "description", "id"})


def default_state_dir() -> Path:
    """The user's state directory (XDG_STATE_HOME, else ~/.local/state) + /ionqbo."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "ionqbo"


# Which settings each command needs. A setting missing for the command at hand is reported with
# every other missing one in a single ConfigError.
ION_KEYS = ("ION_CLIENT_ID", "ION_CLIENT_SECRET")
QBO_KEYS = ("QBO_CLIENT_ID", "QBO_CLIENT_SECRET")
SYNC_KEYS = (
    *ION_KEYS,
    *QBO_KEYS,
    "QBO_AP_ACCOUNT_ID",
)
PART_KEYS = ("QBO_INVENTORY_ASSET_ACCOUNT_ID", "QBO_INCOME_ACCOUNT_ID", "QBO_COGS_ACCOUNT_ID")
CONNECT_KEYS = (*QBO_KEYS, "QBO_REDIRECT_URI")


@dataclass(frozen=True)
class SettingSpec:
    """One setting: its name, its default and what it means (the text of .env.example)."""

    name: str
    doc: str
    default: str | None = None
    secret: bool = False


SPECS: tuple[SettingSpec, ...] = (
    SettingSpec("ION_ENVIRONMENT", "ION environment preset: production, sandbox, gov, gov-sandbox, aus, aus-sandbox",
                "production"),
    SettingSpec("ION_API_URL", "ION GraphQL endpoint; overrides the preset"),
    SettingSpec("ION_TOKEN_URL", "ION OAuth token endpoint (Keycloak api-keys realm); overrides the preset"),
    SettingSpec("ION_CLIENT_ID", "ION API key: client id (ION Settings > API Keys)"),
    SettingSpec("ION_CLIENT_SECRET", "ION API key: client secret (shown once when the key is made)", secret=True),
    SettingSpec("QBO_ENVIRONMENT", "QuickBooks environment: sandbox or production", "production"),
    SettingSpec("QBO_BASE_URL", "QBO API host; overrides the environment's"),
    SettingSpec("QBO_TOKEN_URL", "Intuit OAuth token endpoint; overrides the default"),
    SettingSpec("QBO_AUTH_URL", "Intuit OAuth consent URL; overrides the default"),
    SettingSpec("QBO_CLIENT_ID", "Intuit app client id (developer.intuit.com > your app > Keys)"),
    SettingSpec("QBO_CLIENT_SECRET", "Intuit app client secret", secret=True),
    SettingSpec("QBO_REDIRECT_URI", "redirect URI registered on the Intuit app; `ionqbo connect` listens on it",
                "http://127.0.0.1:8765/callback"),
    SettingSpec("QBO_REALM_ID", "QBO company id (realm); `ionqbo connect` stores it, set it to pin the company"),
    SettingSpec("QBO_REFRESH_TOKEN", "optional: seeds an empty token store (headless set-up)", secret=True),
    SettingSpec("QBO_AP_ACCOUNT_ID", "Accounts Payable account id (the number in the chart-of-accounts URL)"),
    SettingSpec("QBO_INVENTORY_ASSET_ACCOUNT_ID", "Inventory Asset account id for new inventory items"),
    SettingSpec("QBO_INCOME_ACCOUNT_ID", "Sales of Product Income account id for new inventory items"),
    SettingSpec("QBO_COGS_ACCOUNT_ID", "Cost of Goods Sold account id for new inventory items"),
    SettingSpec("QBO_FEE_ACCOUNT_ID", "default expense account id for PO fee lines"),
    SettingSpec("QBO_PURCHASE_TAX_CODE", "non-US companies: the tax code (QBO name or id) put on every PO line that "
                "[tax_codes] in IONQBO_MAPPINGS does not map; ignored for US companies"),
    SettingSpec("IONQBO_TAX_AMOUNTS", "non-US companies: ION's PO amounts are tax exclusive (net) or "
                "inclusive (gross)", "exclusive"),
    SettingSpec("IONQBO_TAX_MODEL", "auto (from CompanyInfo.Country: US = US sales tax, any other = global tax "
                "codes on every line), us or global", "auto"),
    SettingSpec("IONQBO_STATE_DIR", "where the cursor, queue, token store and lock live (default ~/.local/state/ionqbo)"),
    SettingSpec("IONQBO_MAPPINGS",
                "optional TOML file of explicit mappings (suppliers, expense_codes, classes, fees, items, tax_codes)"),
    SettingSpec("IONQBO_PO_STATUSES", "comma-separated ION PO statuses that are sent to QBO", "ORDERED"),
    SettingSpec("IONQBO_ITEM_NAME_TEMPLATE", "QBO item name for an ION part", DEFAULT_ITEM_NAME_TEMPLATE),
    SettingSpec("IONQBO_ITEM_MATCH", "how a part finds a QBO item that already exists: sku (its SKU is the part "
                "number, then its name) or name (its name only)", "sku"),
    SettingSpec("IONQBO_ADOPT_POS", "a QBO PO with an ION PO's number that ionqbo did not write: now (updated "
                "to ION's at once) or on_change (linked, updated at its next change in ION)", "now"),
    SettingSpec("IONQBO_CURSOR_OVERLAP_SECONDS", "how far back each run re-reads, for clock skew and late commits",
                "300"),
    SettingSpec("IONQBO_HTTP_TIMEOUT", "seconds to wait for an answer from ION or QBO (connecting: at most 10)", "60"),
    SettingSpec("IONQBO_RUN_DEADLINE", "seconds one sync may run (0: no limit); past it the run saves, exits 5 and "
                "the next resumes. Keep it under the timer's interval; raise it for a long backfill", "240"),
    SettingSpec("IONQBO_THROTTLE_WAIT", "seconds to wait after a QBO throttle (429); Intuit advises 60", "60"),
    SettingSpec("IONQBO_MAX_RETRIES", "tries for a request that fails for a passing reason", "5"),
    SettingSpec("IONQBO_PAGE_SIZE", "records per ION page (ION's maximum is not published; 100 is safe)", "100"),
    SettingSpec("IONQBO_LOG_FORMAT", "text or json (one JSON object a line)", "text"),
    SettingSpec("IONQBO_LOG_FILE", "optional: also write logs to this file"),
    SettingSpec("IONQBO_NOTIFY_WEBHOOK", "optional: Slack-compatible webhook URL for sync problems", secret=True),
    SettingSpec("IONQBO_NOTIFY_ION_USER", "optional: e-mail of the ION user who gets a notification per problem"),
    SettingSpec("IONQBO_HEALTHCHECK_URL", "optional: pinged after every sync (with /fail on failure)", secret=True),
)
SPEC_BY_NAME = {s.name: s for s in SPECS}


@dataclass(frozen=True)
class Settings:
    """Every setting ionqbo reads, validated. Build with :meth:`Settings.load`."""

    ion_environment: str = "production"
    ion_api_url: str = ION_PRESETS["production"][0]
    ion_token_url: str = ION_PRESETS["production"][1]
    ion_client_id: str = ""
    ion_client_secret: str = ""
    qbo_environment: str = "production"
    qbo_base_url: str = QBO_PRESETS["production"]
    qbo_token_url: str = QBO_TOKEN_URL
    qbo_auth_url: str = QBO_AUTH_URL
    qbo_client_id: str = ""
    qbo_client_secret: str = ""
    qbo_redirect_uri: str = "http://127.0.0.1:8765/callback"
    qbo_realm_id: str = ""
    qbo_refresh_token: str = ""
    qbo_ap_account_id: str = ""
    qbo_inventory_asset_account_id: str = ""
    qbo_income_account_id: str = ""
    qbo_cogs_account_id: str = ""
    qbo_fee_account_id: str = ""
    qbo_purchase_tax_code: str = ""
    tax_amounts: str = "exclusive"
    tax_model: str = "auto"
    state_dir: Path = field(default_factory=default_state_dir)
    mappings_file: Path | None = None
    po_statuses: tuple[str, ...] = ("ORDERED",)
    item_name_template: str = DEFAULT_ITEM_NAME_TEMPLATE
    item_match: str = "sku"
    adopt_pos: str = "now"
    cursor_overlap_seconds: int = 300
    http_timeout: float = 60.0
    run_deadline: float = 240.0
    throttle_wait: float = 60.0
    max_retries: int = 5
    page_size: int = 100
    log_format: str = "text"
    log_file: Path | None = None
    notify_webhook: str = ""
    notify_ion_user: str = ""
    healthcheck_url: str = ""

    # --- building -------------------------------------------------------------------

    @classmethod
    def load(
        cls,
        env_file: str | os.PathLike[str] | None = ".env",
        environ: Mapping[str, str] | None = None,
        *,
        require: Iterable[str] = (),
    ) -> Settings:
        """Read the env file, overlay the real environment (which wins), validate, freeze.

        Args:
            env_file: path of a dotenv file; a missing default ``.env`` is fine, a named one must exist.
            environ: the process environment (injectable for tests); ``os.environ`` by default.
            require: names that must be set for the command at hand.

        Raises:
            ConfigError: every missing or invalid setting, in one message.
        """
        env = dict(os.environ if environ is None else environ)
        problems: list[str] = []
        file_values: dict[str, str] = {}
        if env_file is not None:
            path = Path(env_file)
            if path.is_file():
                file_values = {k: v for k, v in dotenv_values(path).items() if v is not None}
            elif str(env_file) != ".env":
                problems.append(f"env file {path} does not exist")
        values = {**file_values, **{k: v for k, v in env.items() if k in SPEC_BY_NAME}}
        values = {k: v.strip() for k, v in values.items() if v is not None and v.strip() != ""}
        return cls.from_values(values, require=require, problems=problems)

    @classmethod
    def from_values(
        cls, values: Mapping[str, str], *, require: Iterable[str] = (), problems: list[str] | None = None
    ) -> Settings:
        """Validate a plain mapping of setting names to strings (see :meth:`load`)."""
        problems = list(problems or [])
        get = values.get
        kw: dict[str, Any] = {}

        ion_env = get("ION_ENVIRONMENT", "production").lower()
        if ion_env not in ION_PRESETS:
            problems.append(f"ION_ENVIRONMENT={ion_env!r} is not one of {', '.join(ION_PRESETS)}")
            ion_env = "production"
        kw["ion_environment"] = ion_env
        kw["ion_api_url"] = get("ION_API_URL") or ION_PRESETS[ion_env][0]
        kw["ion_token_url"] = get("ION_TOKEN_URL") or ION_PRESETS[ion_env][1]

        qbo_env = get("QBO_ENVIRONMENT", "production").lower()
        if qbo_env not in QBO_PRESETS:
            problems.append(f"QBO_ENVIRONMENT={qbo_env!r} is not one of {', '.join(QBO_PRESETS)}")
            qbo_env = "production"
        kw["qbo_environment"] = qbo_env
        kw["qbo_base_url"] = (get("QBO_BASE_URL") or QBO_PRESETS[qbo_env]).rstrip("/")
        kw["qbo_token_url"] = get("QBO_TOKEN_URL") or QBO_TOKEN_URL
        kw["qbo_auth_url"] = get("QBO_AUTH_URL") or QBO_AUTH_URL
        for key in ("ION_API_URL", "ION_TOKEN_URL", "QBO_BASE_URL", "QBO_TOKEN_URL", "QBO_AUTH_URL",
                    "QBO_REDIRECT_URI", "IONQBO_NOTIFY_WEBHOOK", "IONQBO_HEALTHCHECK_URL"):
            if get(key) and not _is_http_url(get(key, "")):
                problems.append(f"{key} must be an http(s) URL")

        for key in ("ION_CLIENT_ID", "ION_CLIENT_SECRET", "QBO_CLIENT_ID", "QBO_CLIENT_SECRET", "QBO_REALM_ID",
                    "QBO_REFRESH_TOKEN", "QBO_AP_ACCOUNT_ID", "QBO_INVENTORY_ASSET_ACCOUNT_ID",
                    "QBO_INCOME_ACCOUNT_ID", "QBO_COGS_ACCOUNT_ID", "QBO_FEE_ACCOUNT_ID",
                    "IONQBO_NOTIFY_WEBHOOK", "IONQBO_NOTIFY_ION_USER", "IONQBO_HEALTHCHECK_URL"):
            kw[key.lower().removeprefix("ionqbo_")] = get(key, "")
        kw["qbo_purchase_tax_code"] = get("QBO_PURCHASE_TAX_CODE", "")
        for key, allowed in (("IONQBO_TAX_AMOUNTS", ("exclusive", "inclusive")),
                             ("IONQBO_TAX_MODEL", ("auto", "us", "global"))):
            value = get(key, SPEC_BY_NAME[key].default or "").lower()
            if value not in allowed:
                problems.append(f"{key}={value!r} must be {' or '.join(allowed)}")
                value = SPEC_BY_NAME[key].default or ""
            kw[key.lower().removeprefix("ionqbo_")] = value
        kw["qbo_redirect_uri"] = get("QBO_REDIRECT_URI", SPEC_BY_NAME["QBO_REDIRECT_URI"].default or "")
        for key in ("QBO_AP_ACCOUNT_ID", "QBO_INVENTORY_ASSET_ACCOUNT_ID", "QBO_INCOME_ACCOUNT_ID",
                    "QBO_COGS_ACCOUNT_ID", "QBO_FEE_ACCOUNT_ID", "QBO_REALM_ID"):
            if get(key) and not get(key, "").isdigit():
                problems.append(f"{key}={get(key)!r} must be a number (a QBO id)")

        kw["state_dir"] = Path(get("IONQBO_STATE_DIR", "")).expanduser() if get("IONQBO_STATE_DIR") \
            else default_state_dir()
        if get("IONQBO_MAPPINGS"):
            mpath = Path(get("IONQBO_MAPPINGS", "")).expanduser()
            if not mpath.is_file():
                problems.append(f"IONQBO_MAPPINGS={mpath} does not exist")
            kw["mappings_file"] = mpath
        if get("IONQBO_LOG_FILE"):
            kw["log_file"] = Path(get("IONQBO_LOG_FILE", "")).expanduser()

        statuses = tuple(s.strip().upper() for s in get("IONQBO_PO_STATUSES", "ORDERED").split(",") if s.strip())
        # The values themselves are ION's: checked against its live schema (check-mappings, and at the
        # start of a sync), not against a list here. ion-examples shows DRAFT REQUESTED APPROVED ORDERED
        # CANCELED RECEIVED (bulk_update_purchase_orders).
        bad = [s for s in statuses if not re.fullmatch(r"[A-Z][A-Z0-9_]*", s)]
        if bad or not statuses:
            problems.append(f"IONQBO_PO_STATUSES has statuses that are not ION enum names: {bad} "
                            "(e.g. ORDERED,RECEIVED)")
        kw["po_statuses"] = statuses or ("ORDERED",)

        template = get("IONQBO_ITEM_NAME_TEMPLATE", DEFAULT_ITEM_NAME_TEMPLATE)
        names = set(re.findall(r"{(\w*)}", template))
        if not names or not names <= TEMPLATE_FIELDS or "partNumber" not in names:
            problems.append(
                f"IONQBO_ITEM_NAME_TEMPLATE={template!r} must use {{partNumber}} and only "
                f"{', '.join('{' + n + '}' for n in sorted(TEMPLATE_FIELDS))}"
            )
            template = DEFAULT_ITEM_NAME_TEMPLATE
        kw["item_name_template"] = template
        for name, attr, choices in (("IONQBO_ITEM_MATCH", "item_match", ("sku", "name")),
                                    ("IONQBO_ADOPT_POS", "adopt_pos", ("now", "on_change"))):
            choice = get(name, choices[0]).strip().lower()
            if choice not in choices:
                problems.append(f"{name}={choice!r} must be {' or '.join(choices)}")
                choice = choices[0]
            kw[attr] = choice

        kw["cursor_overlap_seconds"] = _number(values, "IONQBO_CURSOR_OVERLAP_SECONDS", int, problems, minimum=0)
        kw["http_timeout"] = _number(values, "IONQBO_HTTP_TIMEOUT", float, problems, minimum=0.1)
        kw["run_deadline"] = _number(values, "IONQBO_RUN_DEADLINE", float, problems, minimum=0)
        kw["throttle_wait"] = _number(values, "IONQBO_THROTTLE_WAIT", float, problems, minimum=0)
        kw["max_retries"] = _number(values, "IONQBO_MAX_RETRIES", int, problems, minimum=1)
        kw["page_size"] = _number(values, "IONQBO_PAGE_SIZE", int, problems, minimum=1, maximum=1000)
        fmt = get("IONQBO_LOG_FORMAT", "text").lower()
        if fmt not in ("text", "json"):
            problems.append(f"IONQBO_LOG_FORMAT={fmt!r} must be text or json")
            fmt = "text"
        kw["log_format"] = fmt

        missing = [name for name in dict.fromkeys(require) if not get(name) and not SPEC_BY_NAME[name].default]
        problems.extend(f"{name} is not set ({SPEC_BY_NAME[name].doc})" for name in missing)
        if problems:
            raise ConfigError(problems, hint="set them in the environment or the env file (see .env.example)")
        return cls(**kw)

    def require(self, names: Iterable[str]) -> None:
        """Raise one ConfigError naming every setting in ``names`` that is empty."""
        attrs = {f.name for f in fields(self)}
        missing = []
        for name in names:
            attr = name.lower().removeprefix("ionqbo_")
            if attr in attrs and not getattr(self, attr):
                missing.append(f"{name} is not set ({SPEC_BY_NAME[name].doc})")
        if missing:
            raise ConfigError(missing, hint="set them in the environment or the env file (see .env.example)")

    def secrets(self) -> list[str]:
        """Values that must never appear in output: used to seed the redactor."""
        return [v for v in (self.ion_client_secret, self.qbo_client_secret, self.qbo_refresh_token,
                            self.notify_webhook, self.healthcheck_url) if v]

    @property
    def token_store_path(self) -> Path:
        return self.state_dir / "qbo-tokens.json"

    @property
    def state_path(self) -> Path:
        return self.state_dir / "state.json"

    @property
    def lock_path(self) -> Path:
        return self.state_dir / "sync.lock"


def _is_http_url(value: str) -> bool:
    parsed = urlparse(value)
    return parsed.scheme in ("http", "https") and bool(parsed.netloc)


def _number(
    values: Mapping[str, str],
    key: str,
    kind: Callable[[str], Any],
    problems: list[str],
    *,
    minimum: float | None = None,
    maximum: float | None = None,
) -> Any:
    raw = values.get(key) or SPEC_BY_NAME[key].default or "0"
    try:
        number = kind(raw)
    except ValueError:
        problems.append(f"{key}={raw!r} is not a number")
        return kind(SPEC_BY_NAME[key].default or "0")
    if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
        problems.append(f"{key}={raw!r} is out of range")
        return kind(SPEC_BY_NAME[key].default or "0")
    return number


def env_example() -> str:
    """The text of `.env.example`: every setting with its meaning (a test keeps the file in step)."""
    lines = [
        "# ionqbo settings. Copy to .env and fill in; real environment variables win over this file.",
        "# `ionqbo sandbox --print-env` prints a complete set that points at the built-in sandbox.",
        "",
    ]
    for spec in SPECS:
        lines.append(f"# {spec.doc}")
        lines.append(f"{spec.name}={spec.default or ''}")
        lines.append("")
    return "\n".join(lines)
