#!/usr/bin/env python3
"""Derive the QBO emulator's data model from Intuit's published XSD.

Reads ``Finance.xsd`` (and the files it includes, ``IntuitBaseTypes.xsd`` and ``IntuitNamesTypes.xsd``)
from Intuit's Java SDK (https://github.com/intuit/QuickBooks-V3-Java-SDK,
``ipp-v3-java-data/src/main/xsd``, Apache-2.0) and writes the facts the emulator checks request bodies
against: for every complex type reachable from the entities the emulator serves, its elements and
attributes (inheritance through ``xs:extension`` flattened, ``xs:choice`` and ``xs:group`` members
inlined), each with its type, whether it repeats, whether the schema requires it, and what the
element's documentation says about it (``Max. length: N`` -> ``max_length``, ``InputType: ReadOnly``
-> ``read_only``); for every simple type its base (string, decimal, int, boolean, date, dateTime, ...)
and enumeration values.

Only facts derived from the schema are written (names, types, cardinality, enumerations, the numbers
quoted from the documentation); no schema text is copied.

Usage::

    python scripts/derive_qbo_model.py XSD_DIR [--commit SHA] [--out ionqbo/sandbox/qbo_model.json]

``XSD_DIR`` is a directory holding ``Finance.xsd`` (e.g. a checkout of the SDK's
``ipp-v3-java-data/src/main/xsd``). ``--commit`` records the SDK commit the files came from; when
XSD_DIR is inside a git work tree it is read with ``git rev-parse HEAD``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

XS = "{http://www.w3.org/2001/XMLSchema}"

# The entities the emulator serves (ionqbo/sandbox/qbo.py RESOURCES, Preferences, CompanyInfo) and the
# tax entities the non-US work reads (TaxCode, TaxRate, TaxAgency). Everything their elements refer to
# (Line and its details, TxnTaxDetail, TaxLineDetail, PhysicalAddress, ReferenceType, ...) follows.
ROOTS = ("PurchaseOrder", "Item", "Vendor", "Customer", "Employee", "Account", "Class", "CompanyCurrency",
         "Preferences", "CompanyInfo", "TaxCode", "TaxRate", "TaxAgency", "Term")

# XSD built-in types -> the kinds the emulator checks (W3C XML Schema Part 2 datatypes).
BUILTIN = {
    "string": "string", "normalizedString": "string", "token": "string", "anyURI": "string",
    "base64Binary": "string", "hexBinary": "string", "language": "string", "NMTOKEN": "string",
    "ID": "string", "IDREF": "string", "QName": "string", "anySimpleType": "string", "duration": "string",
    "decimal": "decimal", "double": "decimal", "float": "decimal",
    "integer": "int", "int": "int", "long": "int", "short": "int", "byte": "int",
    "nonNegativeInteger": "int", "positiveInteger": "int", "nonPositiveInteger": "int",
    "negativeInteger": "int", "unsignedInt": "int", "unsignedLong": "int", "unsignedShort": "int",
    "unsignedByte": "int",
    "boolean": "boolean", "date": "date", "dateTime": "dateTime", "time": "time",
    "gYear": "string", "gYearMonth": "string", "gMonth": "string", "gMonthDay": "string", "gDay": "string",
}

_MAX_LENGTH = re.compile(r"max(?:imum)?\.?\s*length\s*(?:is|:|of)?\s*(\d+)", re.IGNORECASE)
_READ_ONLY = re.compile(r"InputType\s*:\s*(?:(?:ALL|QBO)\s*:\s*)?ReadOnly|\(read[- ]only\)|\bread-only\b",
                        re.IGNORECASE)


def _local(name: str | None) -> str:
    return (name or "").split(":")[-1]


def _doc(node: ET.Element) -> str:
    texts = [d.text or "" for d in node.findall(f"{XS}annotation/{XS}documentation")]
    return " ".join(" ".join(texts).split())


class Schema:
    """The named types and groups of Finance.xsd and the files it includes."""

    def __init__(self, xsd_dir: Path) -> None:
        self.dir = xsd_dir
        self.files: list[str] = []
        self.complex: dict[str, ET.Element] = {}
        self.simple: dict[str, ET.Element] = {}
        self.groups: dict[str, ET.Element] = {}
        self._load("Finance.xsd")

    def _load(self, name: str) -> None:
        if name in self.files:
            return
        path = self.dir / name
        if not path.is_file():
            raise SystemExit(f"{path}: not found (XSD_DIR must hold Finance.xsd and the files it includes)")
        self.files.append(name)
        root = ET.parse(path).getroot()
        for include in root.findall(f"{XS}include"):
            self._load(include.get("schemaLocation", ""))
        for node in root:
            kind, key = node.tag, node.get("name")
            if key is None:
                continue
            if kind == f"{XS}complexType":
                self.complex[key] = node
            elif kind == f"{XS}simpleType":
                self.simple[key] = node
            elif kind == f"{XS}group":
                self.groups[key] = node


class Deriver:
    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self.types: dict[str, dict[str, Any]] = {}
        self.simple: dict[str, dict[str, Any]] = {}
        self._pending: list[str] = []

    # -- simple types --

    def simple_kind(self, name: str) -> str:
        """The name the model uses for a simple type: a built-in kind or a derived simple type."""
        local = _local(name)
        if name.startswith("xs:") or (local in BUILTIN and local not in self.schema.simple):
            return BUILTIN.get(local, "string")
        if local not in self.simple:
            self.simple[local] = {}  # placeholder against cycles
            self.simple[local] = self._simple(self.schema.simple[local])
        return local

    def _simple(self, node: ET.Element) -> dict[str, Any]:
        restriction = node.find(f"{XS}restriction")
        if restriction is None:  # xs:union / xs:list: not used by the served entities; accept text
            return {"base": "string"}
        base = self.simple_kind(restriction.get("base", "xs:string"))
        while base in self.simple:  # flatten to a built-in kind
            base = self.simple[base].get("base", "string")
        out: dict[str, Any] = {"base": base}
        values = [e.get("value") for e in restriction.findall(f"{XS}enumeration")]
        if values:
            out["enum"] = values
        for facet in ("maxLength", "minLength", "length", "pattern", "totalDigits", "fractionDigits",
                      "minInclusive", "maxInclusive"):
            found = restriction.find(f"{XS}{facet}")
            if found is not None:
                out[facet] = found.get("value")
        return out

    # -- complex types --

    def type_ref(self, name: str) -> str:
        local = _local(name)
        if local in self.schema.complex:
            if local not in self.types and local not in self._pending:
                self._pending.append(local)
            return local
        return self.simple_kind(name)

    def run(self, roots: tuple[str, ...]) -> None:
        for root in roots:
            self.type_ref(root)
        while self._pending:
            name = self._pending.pop(0)
            if name not in self.types:
                self.types[name] = self._complex(name)

    def _complex(self, name: str) -> dict[str, Any]:
        node = self.schema.complex[name]
        out: dict[str, Any] = {"fields": {}}
        if node.get("abstract") == "true":
            out["abstract"] = True
        self._content(node, out, name)
        return out

    def _content(self, node: ET.Element, out: dict[str, Any], owner: str) -> None:
        for child in node:
            tag = child.tag
            if tag in (f"{XS}sequence", f"{XS}choice", f"{XS}all"):
                self._particles(child, out, owner, optional=tag == f"{XS}choice")
            elif tag == f"{XS}attribute":
                self._attribute(child, out)
            elif tag in (f"{XS}complexContent", f"{XS}simpleContent"):
                for ext in child:
                    if ext.tag not in (f"{XS}extension", f"{XS}restriction"):
                        continue
                    base = _local(ext.get("base"))
                    if tag == f"{XS}complexContent":
                        out.setdefault("bases", []).append(base)
                        self.type_ref(base)
                        parent = self._flat(base)
                        out["fields"].update(json.loads(json.dumps(parent["fields"])))
                        if parent.get("value"):
                            out["value"] = parent["value"]
                        if parent.get("open"):
                            out["open"] = True
                    else:
                        out["value"] = self.simple_kind(ext.get("base", "xs:string"))
                    self._content(ext, out, owner)

    def _flat(self, name: str) -> dict[str, Any]:
        if name not in self.types:
            self.types[name] = self._complex(name)
        return self.types[name]

    def _particles(self, node: ET.Element, out: dict[str, Any], owner: str, *, optional: bool) -> None:
        optional = optional or node.get("minOccurs") == "0"
        repeated = node.get("maxOccurs") not in (None, "1")
        for child in node:
            tag = child.tag
            if tag == f"{XS}element":
                self._element(child, out, owner, optional=optional, repeated=repeated)
            elif tag in (f"{XS}sequence", f"{XS}choice"):
                self._particles(child, out, owner, optional=optional or tag == f"{XS}choice")
            elif tag == f"{XS}group":
                group = self.schema.groups[_local(child.get("ref"))]
                for part in group:
                    if part.tag in (f"{XS}sequence", f"{XS}choice"):
                        opt = optional or child.get("minOccurs") == "0" or part.tag == f"{XS}choice"
                        self._particles(part, out, owner, optional=opt)
            elif tag == f"{XS}any":
                out["open"] = True

    def _element(self, node: ET.Element, out: dict[str, Any], owner: str, *, optional: bool,
                 repeated: bool) -> None:
        name = node.get("name") or _local(node.get("ref"))
        field: dict[str, Any] = {}
        if node.get("type"):
            field["type"] = self.type_ref(node.get("type", ""))
        elif node.find(f"{XS}complexType") is not None:
            synthetic = f"{owner}.{name}"
            inline: dict[str, Any] = {"fields": {}}
            self._content(node.find(f"{XS}complexType"), inline, synthetic)  # type: ignore[arg-type]
            self.types[synthetic] = inline
            field["type"] = synthetic
        elif node.find(f"{XS}simpleType") is not None:
            synthetic = f"{owner}.{name}"
            self.simple[synthetic] = self._simple(node.find(f"{XS}simpleType"))  # type: ignore[arg-type]
            field["type"] = synthetic
        else:
            field["type"] = "string"
        if node.get("maxOccurs") not in (None, "1") or repeated:
            field["list"] = True
        if not optional and node.get("minOccurs") != "0":
            field["required"] = True
        doc = _doc(node)
        lengths = sorted({int(n) for n in _MAX_LENGTH.findall(doc)})
        if lengths:
            # One number: the documented maximum. Several (e.g. per entity or per region): the largest,
            # so the emulator never refuses a length the schema allows somewhere.
            field["max_length"] = lengths[-1]
            if len(lengths) > 1:
                field["max_length_varies"] = lengths
        if _READ_ONLY.search(doc):
            field["read_only"] = True
        out["fields"][name] = field

    def _attribute(self, node: ET.Element, out: dict[str, Any]) -> None:
        name = node.get("name") or _local(node.get("ref"))
        field: dict[str, Any] = {"type": self.simple_kind(node.get("type", "xs:string")), "attribute": True}
        if node.get("use") == "required":
            field["required"] = True
        out["fields"][name] = field


def _git_commit(path: Path) -> str | None:
    try:
        result = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True,
                                text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return result.stdout.strip() or None


def derive(xsd_dir: Path, commit: str | None) -> dict[str, Any]:
    schema = Schema(xsd_dir)
    deriver = Deriver(schema)
    deriver.run(ROOTS)
    digests = {name: hashlib.sha256((xsd_dir / name).read_bytes()).hexdigest() for name in schema.files}
    return {
        "source": {
            "repository": "https://github.com/intuit/QuickBooks-V3-Java-SDK",
            "path": "ipp-v3-java-data/src/main/xsd",
            "files": schema.files,
            "sha256": digests,
            "commit": commit or _git_commit(xsd_dir) or "unknown",
            "licence": "Apache-2.0 (the schema's licence; this file holds facts derived from it)",
            "derived_by": "scripts/derive_qbo_model.py",
        },
        "entities": list(ROOTS),
        "types": dict(sorted(deriver.types.items())),
        "simple": dict(sorted(deriver.simple.items())),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("xsd_dir", type=Path, help="directory holding Finance.xsd and its includes")
    parser.add_argument("--commit", help="the SDK commit the XSD files come from")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "ionqbo" / "sandbox"
                        / "qbo_model.json", help="where to write the model (default: the package's copy)")
    args = parser.parse_args(argv)
    model = derive(args.xsd_dir, args.commit)
    args.out.write_text(json.dumps(model, indent=1, sort_keys=False) + "\n", encoding="utf-8")
    print(f"{args.out}: {len(model['types'])} complex types, {len(model['simple'])} simple types "
          f"(commit {model['source']['commit']})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
