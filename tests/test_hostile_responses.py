"""Hostile responses: ION and QBO answer with garbage, and ionqbo neither crashes nor loses anything.

A small proxy App sits in front of each emulator and replaces chosen answers: malformed JSON, HTML
error pages with status 200, truncated bodies, the wrong content type, a GraphQL ``data`` of the
wrong shape, QBO objects missing fields, huge bodies. Each case expects a clear one-line error and
exit 5 (the service misbehaved; the next run resumes) or a per-record failure (exit 3), or a normal
run where the answer is still readable. Never exit 1, never a traceback. Then the proxy steps aside
and a normal run (after `ionqbo retry`, which makes records queued for a passing reason due at once
rather than after their backoff) must leave QBO exactly right: nothing lost, nothing doubled.

QBO is the lenient one (it accepts a second PO with a DocNumber in use), so nothing doubled is
ionqbo's doing, and the duplicate refusals QBO sent (6140, 6240) must be 0. The figures (crashes,
duplicates_found, records_lost) are counted per case from the run and from what QBO holds after it.
"""

from __future__ import annotations

import collections
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ionqbo.sandbox.httpd import App, Request, Response

from conftest import ION_LAG, Env, duplicates_found, make_env, refusals

ORDERED = {"1042", "1043", "1044"}
HUGE = 24 * 1024 * 1024  # bytes
FIGURES = Path("/tmp/ionqbo-reliability")
RESULTS: dict[str, dict[str, Any]] = {}  # case -> what happened, written to FIGURES by `figures`
Mangle = Callable[[Request, Response], Response]


def _label(service: str, request: Request) -> str:
    if "token" in request.path:
        return f"{service}:token"
    if service == "ion":
        try:
            return f"ion:{request.json().get('operationName') or 'graphql'}"
        except (ValueError, AttributeError):
            return "ion:graphql"
    rest = request.path.split("/")[4:] if request.path.startswith("/v3/company/") else [request.path]
    head = rest[0] if rest else "?"
    if head == "query":
        text = request.body.decode("utf-8", "replace") or (request.arg("query") or "")
        words = text.split()
        entity = next((words[i + 1] for i, w in enumerate(words[:-1]) if w.lower() == "from"), "?")
        return f"qbo:query:{entity.lower()}"
    return f"qbo:{head}"


@dataclass
class Proxy:
    """Replaces the answers to requests with a given label (``times`` answers, or all with None)."""

    rules: dict[str, tuple[Mangle, int | None]] = field(default_factory=dict)
    hits: collections.Counter[str] = field(default_factory=collections.Counter)

    def wrap(self, service: str, app: App) -> App:
        def handle(request: Request) -> Response:
            response = app(request)
            if request.path.startswith("/_admin/"):
                return response
            label = _label(service, request)
            rule = self.rules.get(label)
            if rule is None:
                return response
            mangle, times = rule
            if times is not None and self.hits[label] >= times:
                return response
            self.hits[label] += 1
            return mangle(request, response)

        return handle


def html_200(_req: Request, _resp: Response) -> Response:
    return Response(200, b"<html><body><h1>Sign in</h1><form>...</form></body></html>", {"Content-Type": "text/html"})


def malformed_json(_req: Request, _resp: Response) -> Response:
    return Response(200, b'{"data": {"x": [1, 2,, }', {"Content-Type": "application/json"})


def truncated(_req: Request, resp: Response) -> Response:
    return Response(resp.status, resp.body[: max(1, len(resp.body) // 2)], dict(resp.headers))


def wrong_content_type(_req: Request, resp: Response) -> Response:
    return Response(resp.status, resp.body, {**resp.headers, "Content-Type": "text/plain; charset=iso-8859-1"})


def huge(_req: Request, _resp: Response) -> Response:
    return Response(200, b"[" + b"1," * (HUGE // 2) + b"1", {"Content-Type": "application/json"})


def empty_200(_req: Request, _resp: Response) -> Response:
    return Response(200, b"", {"Content-Type": "application/json"})


def json_body(obj: Any) -> Mangle:
    def mangle(_req: Request, _resp: Response) -> Response:
        return Response(200, json.dumps(obj).encode(), {"Content-Type": "application/json"})

    return mangle


def strip_fields(*names: str) -> Mangle:
    """The real answer with some fields removed from every object in it."""

    def drop(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: drop(v) for k, v in value.items() if k not in names}
        if isinstance(value, list):
            return [drop(v) for v in value]
        return value

    def mangle(_req: Request, resp: Response) -> Response:
        return Response(resp.status, json.dumps(drop(json.loads(resp.body))).encode(), dict(resp.headers))

    return mangle


# (id, label, mangle, times or None for every answer, exit codes accepted)
CASES = [
    ("ion-html-200", "ion:PurchaseOrders", html_200, None, {5}),
    ("ion-malformed-json", "ion:PurchaseOrders", malformed_json, None, {5}),
    ("ion-truncated", "ion:PurchaseOrders", truncated, None, {5}),
    ("ion-truncated-once", "ion:PurchaseOrders", truncated, 1, {3, 5}),
    ("ion-wrong-content-type", "ion:PurchaseOrders", wrong_content_type, None, {3}),
    ("ion-empty-body", "ion:Parts", empty_200, None, {5}),
    ("ion-data-wrong-shape", "ion:PurchaseOrders", json_body({"data": {"purchaseOrders": []}}), None, {5}),
    ("ion-data-null", "ion:PurchaseOrders", json_body({"data": None}), None, {5}),
    ("ion-data-not-object", "ion:Parts", json_body({"data": "ok"}), None, {5}),
    ("ion-edges-not-nodes", "ion:PurchaseOrders",
     json_body({"data": {"purchaseOrders": {"edges": [{"node": "x"}, 7], "pageInfo": {"hasNextPage": False}}}}),
     None, {5}),
    ("ion-node-missing-fields", "ion:PurchaseOrders", strip_fields("supplier", "quantity", "_etag"), None, {3}),
    ("ion-huge-body", "ion:PurchaseOrders", huge, None, {5}),
    ("ion-token-html", "ion:token", html_200, None, {5}),
    ("ion-token-no-access-token", "ion:token", json_body({"token_type": "Bearer"}), None, {5}),
    ("qbo-query-html-200", "qbo:query:purchaseorder", html_200, None, {5}),
    ("qbo-query-truncated-once", "qbo:query:purchaseorder", truncated, 1, {3}),
    ("qbo-query-huge", "qbo:query:vendor", huge, None, {5}),
    ("qbo-query-wrong-shape", "qbo:query:vendor", json_body({"QueryResponse": {"Vendor": {"Id": "41"}}}), None, {5}),
    ("qbo-po-lookup-missing-fields", "qbo:query:purchaseorder", strip_fields("DocNumber", "Id", "SyncToken"),
     None, {3, 5}),
    ("qbo-vendors-missing-fields", "qbo:query:vendor", strip_fields("DisplayName", "CurrencyRef"), None, {3}),
    ("qbo-preferences-wrong-shape", "qbo:preferences", json_body({"Preferences": "on"}), None, {5}),
    ("qbo-batch-truncated", "qbo:batch", truncated, None, {3, 5}),
    ("qbo-batch-truncated-once", "qbo:batch", truncated, 1, {3}),
    ("qbo-batch-html-200", "qbo:batch", html_200, None, {3, 5}),
    ("qbo-batch-no-items", "qbo:batch", json_body({"time": "now"}), None, {5}),
    ("qbo-batch-items-without-ids", "qbo:batch", strip_fields("bId"), None, {3}),
    ("qbo-batch-items-without-objects", "qbo:batch", strip_fields("PurchaseOrder", "Item"), None, {3}),
    ("qbo-token-malformed", "qbo:token", malformed_json, None, {4, 5}),
    ("qbo-token-html", "qbo:token", html_200, None, {4, 5}),
]


@pytest.fixture(scope="module", autouse=True)
def figures() -> Iterator[None]:
    yield
    FIGURES.mkdir(parents=True, exist_ok=True)
    codes = collections.Counter(str(r["exit_code"]) for r in RESULTS.values())
    measured = [r for r in RESULTS.values() if r["records_lost"] is not None]  # reached the clean run
    summary = {"hostile_answers_tried": len(RESULTS), "exit_codes": dict(codes),
               "crashes": sum(r["crashed"] for r in RESULTS.values()),
               "duplicates_found": sum(r["duplicates_found"] for r in measured),
               "records_lost": sum(r["records_lost"] for r in measured),
               "duplicate_refusals": sum(r["duplicate_refusals"] for r in measured),
               "cases_not_measured": sorted(set(RESULTS) - {c for c, r in RESULTS.items() if r in measured}),
               "cases": RESULTS}
    (FIGURES / "hostile.json").write_text(json.dumps(summary, indent=2))
    print("hostile figures:", json.dumps({k: v for k, v in summary.items() if k != "cases"}))


@dataclass
class Rig:
    env: Env
    box: Any
    proxy: Proxy


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    from ionqbo.sandbox.server import Sandbox

    box = Sandbox(sample=True, multicurrency=True, ion_lag=ION_LAG, allow_duplicate_docnumbers=True)
    proxy = Proxy()
    box.start(tap=proxy.wrap)
    try:
        env = make_env(box, tmp_path, IONQBO_THROTTLE_WAIT="0.1", IONQBO_MAX_RETRIES="2", IONQBO_HTTP_TIMEOUT="5")
        yield Rig(env, box, proxy)
    finally:
        box.stop()


@pytest.mark.parametrize(("label", "mangle", "times", "codes"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_hostile_answer_is_a_clear_error_and_nothing_is_lost(rig: Rig, label: str, mangle: Mangle,
                                                             times: int | None, codes: set[int],
                                                             request: pytest.FixtureRequest) -> None:
    env, box, proxy = rig.env, rig.box, rig.proxy
    if label == "qbo:token":
        box.qbo.expire_access_tokens()
    proxy.rules[label] = (mangle, times)
    run = env.run("sync", "--json", timeout=120)
    case = request.node.callspec.id
    # exit 1 is the CLI's code for a bug; a traceback or its "unexpected" wording is a crash too
    crashed = run.code == 1 or "Traceback" in run.stderr or "unexpected" in run.stderr
    RESULTS[case] = {"label": label, "exit_code": run.code, "crashed": crashed,
                     "error": run.stderr.strip().splitlines()[-1][:200] if run.code != 3 and run.stderr.strip() else "",
                     "duplicates_found": None, "records_lost": None, "duplicate_refusals": None}
    assert proxy.hits[label] >= 1, "the case never happened"
    assert not crashed, (run.code, run.stderr[-2000:])
    assert run.code in codes, (run.code, run.stderr[-2000:])
    if run.code in (4, 5):
        last = run.stderr.strip().splitlines()[-2:]
        assert any(line.startswith("error:") for line in last), run.stderr[-1000:]
        assert all(len(line) < 1200 for line in run.stderr.splitlines())  # no body dumped whole
        # a hint carries no secret, so redaction must not have eaten words of it
        assert all("***" not in line for line in run.stderr.splitlines() if line.lstrip().startswith("fix:"))
    report = run.json()
    assert report["exit_code"] == run.code

    proxy.rules.clear()
    # Records that failed for a passing reason wait for their backoff (minutes); `retry` makes them due.
    assert env.run("retry").code == 0
    again = env.run("sync", "--json", timeout=120)
    dump = box.qbo.dump()
    docs = collections.Counter(str(p["DocNumber"]) for p in dump["PurchaseOrder"])
    names = {i["Name"] for i in dump["Item"]}
    parts = {f"{p['partNumber']} Rev {p['revision']}" for p in box.ion.dump()["parts"]}
    RESULTS[case].update(duplicates_found=duplicates_found(box), duplicate_refusals=refusals(box),
                         records_lost=len(ORDERED - set(docs)) + len({n.replace(":", "-") for n in parts} - names))
    assert again.code == 3, again.stderr  # the sample's PO 1045 stays queued; everything else is in
    assert [f["ion_id"] for f in again.json()["failures"]] == ["1045"]
    assert docs == collections.Counter(ORDERED)
    assert len(names) == 5
    assert (RESULTS[case]["duplicates_found"], RESULTS[case]["records_lost"], RESULTS[case]["duplicate_refusals"]) \
        == (0, 0, 0), RESULTS[case]
