"""End-to-end tests of the ION client against the ION emulator over real HTTP on 127.0.0.1."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ionqbo.config import Settings
from ionqbo.http import RetryPolicy
from ionqbo.ion.client import IonClient
from ionqbo.ion.models import InvalidRecord, Part, PurchaseOrder
from ionqbo.ion.schema import IonSchemaError, SchemaCache
from ionqbo.sandbox import ion as ion_module
from ionqbo.sandbox.httpd import Server
from ionqbo.sandbox.ion import IonEmulator

SECRET = "e2e-Secret-Value-9876"
TOKEN_PATH = "/realms/api-keys/protocol/openid-connect/token"
LOADED = datetime(2025, 5, 1, tzinfo=UTC)  # every loaded record changed in May 2025...
NOW = datetime(2025, 6, 1, tzinfo=UTC)  # ...and the emulator's clock starts in June


@dataclass
class Clock:
    now: float = field(default_factory=NOW.timestamp)

    def __call__(self) -> float:
        return self.now


def stamp(minutes: float) -> str:
    return (LOADED + timedelta(minutes=minutes)).isoformat(timespec="microseconds")


def sample(n_orders: int = 12, *, tie_from: int | None = None) -> dict[str, Any]:
    """POs 1..n changed a minute apart (from `tie_from` on, all at the same time); 8 parts."""
    parts = [{"id": 100 + i, "partNumber": f"PN-{i}", "revision": "A", "cost": 1.5, "isLatestRevision": True,
              "updatedAt": stamp(i)}
             for i in range(1, 9)]
    orders = []
    for i in range(1, n_orders + 1):
        minute = tie_from if tie_from is not None and i >= tie_from else i
        orders.append({
            "id": i, "status": "ORDERED", "supplierId": 1, "currencyId": 1, "updatedAt": stamp(minute),
            "purchaseOrderLines": [{"id": 1000 + i, "partId": 100 + (i % 8) + 1, "quantity": 2,
                                    "unitCost": 3.25, "totalCost": 6.5}],
            "fees": [{"id": 2000 + i, "name": "Shipping", "value": 10}],
        })
    return {"suppliers": [{"id": 1, "name": "Acme Corp"}, {"id": 2, "name": None}],
            "currencies": [{"id": 1, "code": "USD", "name": "US Dollar"}],
            "users": [{"id": 42, "name": "Ada", "email": "ada@acme.test"}],
            "parts": parts, "purchaseOrders": orders}


@dataclass
class Ion:
    emulator: IonEmulator
    server: Server
    clock: Clock
    sleeps: list[float]

    def client(self, page_size: int = 3, tries: int = 5) -> IonClient:
        url = self.server.url
        settings = Settings(ion_api_url=f"{url}/graphql", ion_token_url=f"{url}{TOKEN_PATH}",
                            ion_client_id="cid", ion_client_secret=SECRET, page_size=page_size,
                            po_statuses=("ORDERED", "CANCELED"), http_timeout=5.0)
        policy = RetryPolicy(tries=tries, base=0.01, cap=0.05, sleep=self.sleeps.append)
        client = IonClient(settings, policy=policy)
        client.plan()  # introspection first, so that hooks count the record requests from 1
        self.emulator.reset_counters()
        return client

    def tick(self) -> None:
        self.clock.now += 1.0


def _start(emulator: IonEmulator, clock: Clock) -> Iterator[Ion]:
    server = Server(emulator).start()
    try:
        yield Ion(emulator, server, clock, [])
    finally:
        server.stop()


@pytest.fixture(scope="module")
def shared_ion() -> Iterator[Ion]:
    """One server for the module (stopping a server takes half a second)."""
    clock = Clock()
    emulator = IonEmulator(client_id="cid", client_secret=SECRET, clock=clock, seed=3)
    yield from _start(emulator, clock)


@pytest.fixture
def ion(shared_ion: Ion) -> Iterator[Ion]:
    emulator = shared_ion.emulator
    shared_ion.clock.now = NOW.timestamp()
    shared_ion.sleeps.clear()
    emulator.hook = None
    emulator.token_lifetime = 300.0
    emulator.faults.clear()
    emulator.faults.injected.clear()
    emulator.expire_tokens()
    emulator.reset_counters()
    emulator.load(sample())
    yield shared_ion
    emulator.hook = None


def po_ids(records: list[Any]) -> list[str]:
    return [r.id if isinstance(r, PurchaseOrder | Part) else r.ion_id for r in records]


# ---- records changing between page fetches ---------------------------------------------------------


def move_first_to_end(ion: Ion, n: int) -> None:
    if n == 2:
        ion.tick()
        ion.emulator.update_purchase_order(1, {"notes": "edited while the pages were read"})


def update_several(ion: Ion, n: int) -> None:
    if n in (2, 3, 4):
        for po_id in (1, 2, n + 4, 12):
            ion.tick()
            ion.emulator.update_purchase_order(po_id, {"notes": f"edit {n}"})
        ion.tick()
        ion.emulator.update_line(n, 1000 + n, {"quantity": 5})


def insert_new(ion: Ion, n: int) -> None:
    if n in (2, 3):
        ion.tick()
        ion.emulator.add_purchase_order({"id": 500 + n, "status": "ORDERED", "supplierId": 1})
        ion.tick()
        ion.emulator.update_purchase_order(1, {"notes": f"edit {n}"})


def chaos(ion: Ion, n: int) -> None:
    rng = random.Random(n)
    for _ in range(rng.randint(0, 3)):
        ion.tick()
        ion.emulator.update_purchase_order(rng.randint(1, 12), {"notes": f"chaos {n}"})
    if n % 3 == 0:
        ion.tick()
        ion.emulator.add_purchase_order({"id": 600 + n, "status": "ORDERED"})


SCENARIOS = [
    pytest.param(move_first_to_end, 12, None, id="early-record-moves-to-the-end"),
    pytest.param(update_several, 12, None, id="several-updated-lines-too"),
    pytest.param(insert_new, 12, None, id="new-records-inserted"),
    pytest.param(chaos, 12, None, id="updates-and-inserts-every-page"),
    pytest.param(move_first_to_end, 12, 4, id="ties-early-record-moves"),
    pytest.param(update_several, 12, 3, id="ties-larger-than-a-page-updated"),
]


@pytest.mark.parametrize(("scenario", "n_orders", "tie_from"), SCENARIOS)
def test_records_updated_between_pages_are_never_skipped(ion: Ion, scenario: Callable[[Ion, int], None],
                                                         n_orders: int, tie_from: int | None) -> None:
    ion.emulator.load(sample(n_orders, tie_from=tie_from))
    at_start = {str(p["id"]) for p in ion.emulator.dump()["purchaseOrders"]}
    ion.emulator.hook = lambda n: scenario(ion, n)
    got = list(ion.client(page_size=3).changed_purchase_orders(LOADED, ["ORDERED"]))
    ion.emulator.hook = None
    assert all(isinstance(r, PurchaseOrder) for r in got)
    yielded = po_ids(got)
    assert at_start - set(yielded) == set()  # nothing present at the start was skipped
    at_end = {str(p["id"]) for p in ion.emulator.dump()["purchaseOrders"]}
    assert set(yielded) <= at_end


def test_naive_offset_paging_skips_under_the_same_scenario(ion: Ion) -> None:
    """The e2e scenario is a real trap: plain `after` paging over the emulator loses a record."""
    ion.emulator.hook = lambda n: move_first_to_end(ion, n)
    client = ion.client(page_size=3)
    pages = client._pages("PurchaseOrders", {"sort": ["UPDATED_AT_ASC"]})
    naive = [str(item.node["id"]) for page in pages for item in page]
    assert {str(i) for i in range(1, 13)} - set(naive) == {"4"}


def test_changed_parts_never_skip(ion: Ion) -> None:
    def hook(n: int) -> None:
        if n in (2, 3):
            ion.tick()
            ion.emulator.update_part(100 + n - 1, {"description": "edited"})
    ion.emulator.hook = hook
    got = list(ion.client(page_size=2).changed_parts(None))
    assert all(isinstance(p, Part) for p in got)
    assert {str(100 + i) for i in range(1, 9)} <= set(po_ids(got))


def test_records_carry_every_field(ion: Ion) -> None:
    (order,) = list(ion.client().purchase_orders_by_id(["3"]))
    assert isinstance(order, PurchaseOrder)
    assert order.supplier is not None
    assert order.supplier.name == "Acme Corp"
    assert order.currency is not None
    assert order.currency.code == "USD"
    line = order.lines[0]
    assert (str(line.quantity), str(line.unit_cost), str(line.total_cost)) == ("2", "3.25", "6.5")
    assert line.part is not None
    assert line.part.part_number == "PN-4"
    assert [(f.name, str(f.value)) for f in order.fees] == [("Shipping", "10")]
    assert order.updated_at == LOADED + timedelta(minutes=3)


def test_since_excludes_older_records(ion: Ion) -> None:
    got = list(ion.client().changed_purchase_orders(LOADED + timedelta(minutes=10), ["ORDERED"]))
    assert po_ids(got) == ["10", "11", "12"]


# ---- auth -------------------------------------------------------------------------------------------------


def test_token_revoked_mid_read_recovers(ion: Ion) -> None:
    ion.emulator.hook = lambda n: ion.emulator.expire_tokens() if n == 3 else None
    client = ion.client(page_size=3)
    got = list(client.changed_purchase_orders(None, ["ORDERED"]))
    assert {str(i) for i in range(1, 13)} <= set(po_ids(got))
    assert ion.emulator.counters["token"] == 1  # counted from the first record read (after the schema's)
    assert client.token_count == 2


def test_token_expired_by_the_server_clock_recovers(ion: Ion) -> None:
    ion.emulator.token_lifetime = 100

    def hook(n: int) -> None:
        if n == 2:
            ion.clock.now += 150  # the server's clock passes the token's expiry mid-read
    ion.emulator.hook = hook
    got = list(ion.client(page_size=4).changed_purchase_orders(None, ["ORDERED"]))
    assert len(set(po_ids(got))) == 12
    assert ion.emulator.counters["token"] == 1  # counted from the first record read (after the schema's)


def test_a_wrong_secret_is_an_auth_error(ion: Ion) -> None:
    url = ion.server.url
    settings = Settings(ion_api_url=f"{url}/graphql", ion_token_url=f"{url}{TOKEN_PATH}",
                        ion_client_id="cid", ion_client_secret="not-the-secret")
    with pytest.raises(Exception, match="ION refused the API key") as info:
        IonClient(settings).me()
    assert info.value.exit_code == 4  # type: ignore[attr-defined]
    assert "not-the-secret" not in str(info.value)


# ---- faults over real HTTP ------------------------------------------------------------------------------


def test_injected_faults_are_retried(ion: Ion) -> None:
    ion.emulator.faults.configure(fail_next=[502, 0, 429, 503])
    client = ion.client(page_size=6)
    got = list(client.changed_purchase_orders(None, ["ORDERED"]))
    assert len(got) == 12
    assert ion.emulator.faults.injected == {"status": 3, "drop": 1}
    assert len(ion.sleeps) == 4
    assert 1.0 in ion.sleeps  # the emulator's Retry-After: 1 on 429 and 503


# ---- malformed records ------------------------------------------------------------------------------------


def test_a_record_ion_cannot_serve_becomes_an_invalid_record(ion: Ion) -> None:
    ion.emulator.update_purchase_order(5, {"supplierId": 2, "updatedAt": stamp(5)})  # supplier without name
    got = list(ion.client(page_size=4).changed_purchase_orders(None, ["ORDERED"]))
    assert po_ids(got) == [str(i) for i in range(1, 13)]
    bad = [r for r in got if isinstance(r, InvalidRecord)]
    assert [(r.ion_id, r.error.field) for r in bad] == [("5", "supplier.name")]


# ---- schema -------------------------------------------------------------------------------------------


def test_queries_fit_the_emulator_schema(ion: Ion) -> None:
    plan = ion.client().prepare()
    assert plan.missing == [] and plan.problems == []
    assert plan.po is not None and plan.po.strategy == "keyset"


def test_a_schema_lacking_a_field_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    sdl = ion_module.SCHEMA_PATH.read_text(encoding="utf-8")
    cut = sdl.replace("  expenseCode: String ", "  # expenseCode removed ", 1)
    cut = cut.replace("input DateTimeFilter { eq: DateTime, gt: DateTime, gte: DateTime,",
                      "input DateTimeFilter { eq: DateTime, gte: DateTime,", 1)
    assert cut.count("expenseCode") == 1
    monkeypatch.setattr(ion_module, "_schema_text", lambda: cut)
    clock = Clock()
    emulator = IonEmulator(client_id="cid", client_secret=SECRET, clock=clock)
    emulator.load(sample())
    for ion in _start(emulator, clock):
        client = ion.client()
        plan = client.plan()
        assert [m.need.key for m in plan.blocking] == ["line.expenseCode"]
        assert plan.po is not None and plan.po.strategy == "scan"  # no `gt`: no keyset paging
        with pytest.raises(IonSchemaError, match="expense code") as info:
            client.prepare()
        assert '[ion_fields] "line.expenseCode"' in str(info.value)
        assert "PurchaseOrderLine" in str(info.value)
        assert emulator.counters["graphql"] == 0  # nothing was sent after the schema was read


def test_the_schema_is_cached_and_read_again_when_ion_rejects_a_query(tmp_path: Path) -> None:
    clock = Clock()
    emulator = IonEmulator(client_id="cid", client_secret=SECRET, clock=clock)
    emulator.load(sample())
    for ion in _start(emulator, clock):
        url = ion.server.url
        settings = Settings(ion_api_url=f"{url}/graphql", ion_token_url=f"{url}{TOKEN_PATH}", ion_client_id="cid",
                            ion_client_secret=SECRET, page_size=50, po_statuses=("ORDERED",), http_timeout=5.0)
        cache = SchemaCache(tmp_path)
        IonClient(settings, schema_cache=cache).plan()
        assert emulator.counters["by_operation"] == {"__schema": 1}
        assert (tmp_path / "ion-schema.json").exists()
        emulator.reset_counters()
        expected = list(IonClient(settings, schema_cache=cache).changed_purchase_orders(None, ["ORDERED"]))
        assert "__schema" not in emulator.counters["by_operation"]  # the next run uses the cached copy
        # ION drops a field the cached copy has: the query built from the cache is rejected, the schema is
        # read again, and the read goes on without the (optional) field.
        del emulator.schema.type_map["PurchaseOrder"].fields["notes"]
        emulator.reset_counters()
        client = IonClient(settings, schema_cache=cache)
        got = list(client.changed_purchase_orders(None, ["ORDERED"]))
        assert [po.id for po in got] == [po.id for po in expected]
        assert emulator.counters["by_operation"]["__schema"] == 1
        assert [m.need.key for m in client.plan().optional_missing] == ["po.notes"]


def test_the_schema_cache_is_read_again_after_a_day(tmp_path: Path) -> None:
    cache = SchemaCache(tmp_path)
    now = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    data = {"__schema": {"queryType": {"name": "Query"}, "types": []}}
    digest = cache.store("https://ion/graphql", data, now)
    assert cache.load("https://ion/graphql", now + timedelta(hours=23)) == data
    assert cache.load("https://ion/graphql", now + timedelta(hours=25)) is None
    assert cache.load("https://other-ion/graphql", now) is None  # another ION environment
    (tmp_path / f"ion-schema-{digest}.json").write_text('{"changed": true}')
    assert cache.load("https://ion/graphql", now) is None  # not what the hash says
    SchemaCache(tmp_path, writable=False).store("https://ion/graphql", {"x": 1}, now)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ion-schema-" + digest + ".json", "ion-schema.json"]
