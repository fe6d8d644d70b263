"""The run report: counts cover every record; the listed detail is bounded in a real run."""

from __future__ import annotations

from ionqbo.diff import FieldChange
from ionqbo.report import MAX_CHANGES_KEPT, MAX_RECORDS_KEPT, Outcome, SyncReport


def test_a_real_run_lists_the_first_records_and_counts_the_rest() -> None:
    report = SyncReport()
    for n in range(MAX_RECORDS_KEPT + 250):
        report.count(Outcome("purchase_order", str(n), "created", str(n), str(n)))
    report.count(Outcome("part", "P-1", "unchanged"))
    report.count(Outcome("part", "P-2", "failed"))  # failures are always listed
    data = report.to_dict()
    assert data["purchase_orders"]["created"] == MAX_RECORDS_KEPT + 250
    assert data["parts"]["unchanged"] == 1 and data["parts"]["failed"] == 1
    assert len(data["records"]) == MAX_RECORDS_KEPT + 1
    assert data["records"][-1]["ion_id"] == "P-2"
    assert data["records_omitted"] == 250


def test_a_dry_run_lists_every_record_with_its_changes() -> None:
    report = SyncReport(dry_run=True)
    changes = [FieldChange(f"Line[{i}].Amount", "1", "2") for i in range(MAX_CHANGES_KEPT + 5)]
    for n in range(MAX_RECORDS_KEPT + 3):
        report.count(Outcome("purchase_order", str(n), "updated", str(n), str(n), list(changes)))
    data = report.to_dict()
    assert len(data["records"]) == MAX_RECORDS_KEPT + 3 and data["records_omitted"] == 0
    assert len(data["records"][0]["changes"]) == MAX_CHANGES_KEPT + 5


def test_a_real_run_keeps_a_bounded_number_of_changes_per_record() -> None:
    report = SyncReport()
    changes = [FieldChange(f"Line[{i}].Amount", "1", "2") for i in range(MAX_CHANGES_KEPT + 5)]
    report.count(Outcome("purchase_order", "1", "updated", "9", "1", changes))
    report.count(Outcome("purchase_order", "2", "created", "10", "2", changes))
    records = report.to_dict()["records"]
    assert len(records[0]["changes"]) == MAX_CHANGES_KEPT
    assert records[1]["changes"] == []
