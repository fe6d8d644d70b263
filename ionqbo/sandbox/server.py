"""Run both emulators on loopback and describe them as ionqbo settings (`ionqbo sandbox`, the demo)."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ionqbo.sandbox import data, qbo_tax
from ionqbo.sandbox.httpd import App, Server
from ionqbo.sandbox.ion import IonEmulator, schema_file_text
from ionqbo.sandbox.qbo import QboEmulator


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (for the OAuth redirect listener of `connect`)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Sandbox:
    """The ION and QBO emulators, served on 127.0.0.1.

    Args:
        sample: load the sample shop and company (``ionqbo.sandbox.data``).
        multicurrency: QBO multicurrency on (the sample has a EUR purchase order).
        ion_port, qbo_port: 0 picks free ports.
        rate_limits: the QBO emulator enforces QBO's published limits.
        latency: seconds added to every QBO API answer.
        ion_schema: an SDL file the ION emulator serves instead of its reference schema (the variants
            in ``ionqbo/sandbox/ion-schemas/`` show how its fields map onto the emulator's records).
        country: the QBO company's country: US (default), AU, GB (or UK), CA. Outside the US the
            company has its country's tax codes and home currency, and the sample data is in that
            currency; ``env()`` then sets QBO_PURCHASE_TAX_CODE to the code most purchases take.
        ion_lag: seconds the ION emulator's clock runs behind the machine's: every updatedAt it
            stamps is that old when ionqbo reads it (the suites that move the cursor use this with
            the cursor overlap at 0, so a cursor that moves too early loses records visibly).
        allow_duplicate_docnumbers: the QBO emulator accepts a second PO with a DocNumber already in
            use (the lenient reading of QBO's rule; default: refused with 6140).
    """

    sample: bool = True
    multicurrency: bool = True
    ion_port: int = 0
    qbo_port: int = 0
    rate_limits: bool = False
    latency: float = 0.0
    ion_schema: Path | None = None
    country: str = "US"
    allow_duplicate_docnumbers: bool = False
    ion_lag: float = 0.0
    ion: IonEmulator = field(init=False)
    qbo: QboEmulator = field(init=False)
    _servers: list[Server] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        self.country = qbo_tax.country_code(self.country)
        sdl = schema_file_text(Path(self.ion_schema)) if self.ion_schema is not None else None
        lag = self.ion_lag
        self.ion = IonEmulator(schema_sdl=sdl, clock=(lambda: time.time() - lag) if lag else time.time)
        self.qbo = QboEmulator(rate_limits=self.rate_limits, country=self.country,
                               allow_duplicate_docnumbers=self.allow_duplicate_docnumbers)
        if self.latency:
            self.qbo.faults.configure(latency=self.latency)
        if self.sample:
            self.ion.load(data.ion_sample(now=self.ion.clock(), country=self.country))
            self.qbo.load(data.qbo_sample(multicurrency=self.multicurrency, country=self.country))
        elif not self.multicurrency:
            self.qbo.load({"Preferences": {"CurrencyPrefs": {"MultiCurrencyEnabled": False}}})

    def start(self, tap: Callable[[str, App], App] | None = None) -> Sandbox:
        """Serve both emulators; ``tap(name, app)`` ("ion", "qbo") may put an App in front of each.

        The tap sees every request and answer (the crash and hostile-response suites kill the client
        or mangle answers there); the emulators behave as without it.
        """
        def app(name: str, emulator: App) -> App:
            return tap(name, emulator) if tap is not None else emulator

        self._servers = [Server(app("ion", self.ion), port=self.ion_port).start(),
                         Server(app("qbo", self.qbo), port=self.qbo_port).start()]
        return self

    def stop(self) -> None:
        for server in self._servers:
            server.stop()
        self._servers = []

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def ion_url(self) -> str:
        return self._servers[0].url

    @property
    def qbo_url(self) -> str:
        return self._servers[1].url

    def env(self, *, redirect_port: int | None = None) -> dict[str, str]:
        """Settings that point ionqbo at this sandbox (a fresh, valid QBO refresh token included)."""
        port = redirect_port or free_port()
        values: dict[str, Any] = {
            "ION_ENVIRONMENT": "sandbox",
            "ION_API_URL": f"{self.ion_url}/graphql",
            "ION_TOKEN_URL": f"{self.ion_url}/realms/api-keys/protocol/openid-connect/token",
            "ION_CLIENT_ID": self.ion.client_id,
            "ION_CLIENT_SECRET": self.ion.client_secret,
            "QBO_ENVIRONMENT": "sandbox",
            "QBO_BASE_URL": self.qbo_url,
            "QBO_TOKEN_URL": f"{self.qbo_url}/oauth2/v1/tokens/bearer",
            "QBO_AUTH_URL": f"{self.qbo_url}/connect/oauth2",
            "QBO_CLIENT_ID": self.qbo.client_id,
            "QBO_CLIENT_SECRET": self.qbo.client_secret,
            "QBO_REDIRECT_URI": f"http://127.0.0.1:{port}/callback",
            "QBO_REALM_ID": self.qbo.realm_id,
            "QBO_REFRESH_TOKEN": self.qbo.issue_refresh_token(),
            "QBO_AP_ACCOUNT_ID": data.AP_ACCOUNT_ID,
            "QBO_INVENTORY_ASSET_ACCOUNT_ID": data.INVENTORY_ASSET_ACCOUNT_ID,
            "QBO_INCOME_ACCOUNT_ID": data.INCOME_ACCOUNT_ID,
            "QBO_COGS_ACCOUNT_ID": data.COGS_ACCOUNT_ID,
            "QBO_FEE_ACCOUNT_ID": data.FEE_ACCOUNT_ID,
        }
        if self.country in qbo_tax.DEFAULT_PURCHASE_CODE:
            values["QBO_PURCHASE_TAX_CODE"] = qbo_tax.DEFAULT_PURCHASE_CODE[self.country]
        return {k: str(v) for k, v in values.items()}
