"""scripts/derive_qbo_model.py on a small XSD written here: inheritance, choices, groups, lists,
attributes, simple content, enumerations and the facts quoted from the documentation."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]

FINANCE = """<?xml version="1.0" encoding="UTF-8"?>
<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" xmlns="http://schema.intuit.com/finance/v3"
           targetNamespace="http://schema.intuit.com/finance/v3" elementFormDefault="qualified">
  <xs:include schemaLocation="IntuitBaseTypes.xsd"/>
  <xs:simpleType name="StatusEnum">
    <xs:restriction base="xs:string">
      <xs:enumeration value="Open"/><xs:enumeration value="Closed"/>
    </xs:restriction>
  </xs:simpleType>
  <xs:group name="RefGroup">
    <xs:sequence><xs:element name="TxnId" type="id"/></xs:sequence>
  </xs:group>
  <xs:complexType name="Detail">
    <xs:sequence>
      <xs:element name="Qty" type="xs:decimal" minOccurs="0"/>
      <xs:element name="Due" type="xs:date"/>
    </xs:sequence>
  </xs:complexType>
  <xs:complexType name="Line">
    <xs:sequence>
      <xs:element name="Amount" type="xs:decimal" minOccurs="0"/>
      <xs:element name="Description" type="xs:string" minOccurs="0">
        <xs:annotation><xs:documentation>Free text.[br /]Max. length: 4000 characters.</xs:documentation></xs:annotation>
      </xs:element>
      <xs:choice minOccurs="0">
        <xs:element name="DetailA" type="Detail"/>
        <xs:element name="DetailB" type="Detail"/>
      </xs:choice>
      <xs:group ref="RefGroup" minOccurs="0"/>
    </xs:sequence>
  </xs:complexType>
  <xs:complexType name="Order">
    <xs:complexContent>
      <xs:extension base="IntuitEntity">
        <xs:sequence>
          <xs:element name="VendorRef" type="ReferenceType"/>
          <xs:element name="Line" type="Line" minOccurs="0" maxOccurs="unbounded"/>
          <xs:element name="Status" type="StatusEnum" minOccurs="0"/>
          <xs:element name="Total" type="xs:decimal" minOccurs="0">
            <xs:annotation><xs:documentation>InputType: ReadOnly</xs:documentation></xs:annotation>
          </xs:element>
          <xs:element name="Extra" type="IntuitAnyType" minOccurs="0"/>
        </xs:sequence>
      </xs:extension>
    </xs:complexContent>
  </xs:complexType>
  <xs:complexType name="Unused"><xs:sequence><xs:element name="X" type="xs:string"/></xs:sequence></xs:complexType>
</xs:schema>
"""
BASE = """<?xml version="1.0" encoding="UTF-8"?>
<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" xmlns="http://schema.intuit.com/finance/v3"
           targetNamespace="http://schema.intuit.com/finance/v3" elementFormDefault="qualified">
  <xs:simpleType name="id"><xs:restriction base="xs:string"/></xs:simpleType>
  <xs:complexType name="IntuitEntity" abstract="true">
    <xs:sequence>
      <xs:element name="Id" type="id" minOccurs="0"/>
      <xs:element name="SyncToken" type="xs:string" minOccurs="0"/>
    </xs:sequence>
    <xs:attribute name="sparse" type="xs:boolean" use="optional"/>
  </xs:complexType>
  <xs:complexType name="ReferenceType">
    <xs:simpleContent>
      <xs:extension base="id"><xs:attribute name="name" type="xs:string" use="optional"/></xs:extension>
    </xs:simpleContent>
  </xs:complexType>
  <xs:complexType name="IntuitAnyType">
    <xs:sequence><xs:any namespace="##any" processContents="lax" minOccurs="0" maxOccurs="unbounded"/></xs:sequence>
  </xs:complexType>
</xs:schema>
"""


@pytest.fixture(scope="module")
def script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("derive_qbo_model", ROOT / "scripts" / "derive_qbo_model.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["derive_qbo_model"] = module
    spec.loader.exec_module(module)
    return module


def test_derives_a_flattened_model_from_the_directory_it_is_given(script: ModuleType, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "Finance.xsd").write_text(FINANCE)
    (tmp_path / "IntuitBaseTypes.xsd").write_text(BASE)
    monkeypatch.setattr(script, "ROOTS", ("Order",))
    out = tmp_path / "model.json"
    assert script.main([str(tmp_path), "--commit", "a" * 40, "--out", str(out)]) == 0
    model = json.loads(out.read_text())
    assert model["source"]["commit"] == "a" * 40
    assert model["source"]["files"] == ["Finance.xsd", "IntuitBaseTypes.xsd"]
    assert set(model["source"]["sha256"]) == {"Finance.xsd", "IntuitBaseTypes.xsd"}
    order = model["types"]["Order"]
    assert order["bases"] == ["IntuitEntity"]
    assert list(order["fields"]) == ["Id", "SyncToken", "sparse", "VendorRef", "Line", "Status", "Total", "Extra"]
    assert order["fields"]["sparse"] == {"type": "boolean", "attribute": True}
    assert order["fields"]["VendorRef"] == {"type": "ReferenceType", "required": True}
    assert order["fields"]["Line"] == {"type": "Line", "list": True}
    assert order["fields"]["Total"] == {"type": "decimal", "read_only": True}
    assert model["types"]["ReferenceType"] == {"fields": {"name": {"type": "string", "attribute": True}}, "value": "id"}
    assert model["types"]["IntuitAnyType"].get("open") is True
    line = model["types"]["Line"]["fields"]
    assert line["Description"] == {"type": "string", "max_length": 4000}
    assert line["DetailA"] == {"type": "Detail"} and line["DetailB"] == {"type": "Detail"}  # choice: optional
    assert line["TxnId"] == {"type": "id"}  # group member, optional through the group's minOccurs
    assert model["types"]["Detail"]["fields"] == {"Qty": {"type": "decimal"}, "Due": {"type": "date", "required": True}}
    assert model["simple"]["StatusEnum"] == {"base": "string", "enum": ["Open", "Closed"]}
    assert "Unused" not in model["types"]  # only what the roots reach


def test_a_directory_without_the_schema_is_a_clear_error(script: ModuleType, tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match=r"Finance\.xsd"):
        script.main([str(tmp_path), "--out", str(tmp_path / "m.json")])


def test_the_shipped_model_was_derived_for_the_script_s_roots(script: ModuleType) -> None:
    model = json.loads((ROOT / "ionqbo" / "sandbox" / "qbo_model.json").read_text())
    assert tuple(model["entities"]) == script.ROOTS
    assert model["source"]["derived_by"] == "scripts/derive_qbo_model.py"
