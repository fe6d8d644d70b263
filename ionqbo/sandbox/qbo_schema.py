"""Request bodies checked against Intuit's schema, at every depth.

The model (``qbo_model.json`` beside this file) is derived from Intuit's XSD by
``scripts/derive_qbo_model.py``; the file names its source, commit and licence. QBO's JSON API
deserializes a request body into the schema's classes before any business rule runs, and answers
2010 "Request has invalid or unsupported property" when that fails (docs/reference/qbo.md section 15):

- an element the schema does not define for that type, at any depth (``Property Name:Unrecognized
  field "BillableStatus" ...`` for a field put on a PO line instead of its detail);
- a value of the wrong shape: an object where a value is expected, a value where an object or a list
  is expected (``Can not deserialize instance of ...LineDetailTypeEnum out of START_OBJECT token``);
- a value that is not of the element's type: a number that is not one (``Can not construct instance
  of java.math.BigDecimal`` for ``QtyOnHand: "Sku"``), an enumeration value the schema does not list, a
  date or dateTime that is not a valid calendar value in the XSD lexical form (``2026-13-45``), a
  boolean that is not ``true``/``false``.

Scalars are coerced the way QBO's JSON reader accepts them (docs/reference/qbo.md section 15): numbers
and booleans are accepted for text elements (``Sku: 10``), numeric text for numbers (python-quickbooks
sends ``QtyOnHand`` as ``"100"``), ``"true"``/``"false"`` for booleans; ``null`` is accepted for every
element (an absent value). Cardinality and ``required`` from the XSD are not enforced here: the JSON
reader does not, and QBO's own required-field rules (2020) are business rules in ``qbo.py``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import date, time
from decimal import Decimal
from functools import lru_cache
from importlib import resources
from typing import Any

_DECIMAL = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_INTEGER = re.compile(r"[+-]?\d+")
_TZ = r"(Z|[+-](0\d|1[0-4]):[0-5]\d)?"
_DATE = re.compile(r"(-?\d{4,})-(\d{2})-(\d{2})" + _TZ)
_DATETIME = re.compile(r"(-?\d{4,})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.\d+)?" + _TZ)
_TIME = re.compile(r"(\d{2}):(\d{2}):(\d{2})(\.\d+)?" + _TZ)
_BOOLEAN_TEXT = {"true": True, "false": False}


class SchemaViolation(ValueError):
    """A request body the schema refuses: ``element`` is the dotted path, ``detail`` QBO's wording."""

    def __init__(self, element: str, detail: str) -> None:
        super().__init__(f"{element}: {detail}")
        self.element = element
        self.detail = detail


class QboModel:
    """The derived model: complex types with their fields, simple types with base and enumeration."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self.source: Mapping[str, Any] = data["source"]
        self.entities: tuple[str, ...] = tuple(data["entities"])
        self.types: Mapping[str, Mapping[str, Any]] = data["types"]
        self.simple: Mapping[str, Mapping[str, Any]] = data["simple"]

    @classmethod
    def from_package(cls) -> QboModel:
        """The model shipped with the package (``ionqbo/sandbox/qbo_model.json``)."""
        return _packaged()

    def fields(self, type_name: str) -> Mapping[str, Mapping[str, Any]]:
        """Field name -> ``{type, list?, attribute?, required?, max_length?, read_only?}``."""
        return self.types[type_name]["fields"]  # type: ignore[no-any-return]

    def kind(self, type_name: str) -> str:
        """``complex``, ``any`` (IntuitAnyType: any content), or the built-in kind of a simple type."""
        if type_name in self.types:
            return "any" if self.types[type_name].get("open") and not self.types[type_name]["fields"] \
                else "complex"
        if type_name in self.simple:
            return str(self.simple[type_name].get("base", "string"))
        return type_name

    def enum(self, type_name: str) -> list[str] | None:
        values = (self.simple.get(type_name) or {}).get("enum")
        return list(values) if values else None

    # ---- validation ----

    def check(self, entity: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """``body`` as QBO reads it into the schema's types, or :class:`SchemaViolation` for the first
        element the schema refuses. Scalars come back typed: numbers as :class:`~decimal.Decimal` or
        ``int``, booleans as ``bool``, text as ``str``; an empty string for a non-text element is
        ``None`` (the JSON reader's empty-as-null)."""
        result = self._object(entity, body, "")
        assert isinstance(result, dict)
        return result

    def _object(self, type_name: str, value: Any, path: str) -> Any:
        spec = self.types[type_name]
        if spec.get("open") and not spec["fields"]:
            return value  # IntuitAnyType: extension content, anything goes
        if not isinstance(value, Mapping):
            raise SchemaViolation(path, _wrong_token(type_name, value))
        fields = spec["fields"]
        simple_value = spec.get("value")  # simpleContent (ReferenceType): the text is "value" in JSON
        out: dict[str, Any] = {}
        for key, child in value.items():
            where = f"{path}.{key}" if path else str(key)
            if key == "value" and simple_value is not None:
                out[key] = self._value(str(simple_value), False, child, where)
                continue
            field = fields.get(key)
            if field is None:
                if spec.get("open"):
                    out[key] = child
                    continue
                raise SchemaViolation(where, f"Property Name:Unrecognized field \"{key}\" specified is "
                                             "unsupported or invalid")
            out[key] = self._value(field["type"], bool(field.get("list")), child, where)
        return out

    def _value(self, type_name: str, repeated: bool, value: Any, path: str) -> Any:
        if value is None:
            return None
        if repeated:
            if not isinstance(value, list):
                raise SchemaViolation(path, "Property Name:Can not deserialize instance of java.util.ArrayList "
                                            f"out of {_token(value)} token specified is unsupported or invalid")
            return [self._value(type_name, False, item, f"{path}[{index}]") for index, item in enumerate(value)]
        kind = self.kind(type_name)
        if kind == "any":
            return value
        if kind == "complex":
            return self._object(type_name, value, path)
        enum = self.enum(type_name)
        java = type_name if enum else _java(kind)
        if isinstance(value, (Mapping, list)):
            raise SchemaViolation(path, f"Property Name:Can not deserialize instance of {java} out of "
                                        f"{_token(value)} token specified is unsupported or invalid")
        problem = _scalar_problem(kind, value, enum)
        if problem:
            raise SchemaViolation(path, f"Property Name:Can not construct instance of {java} from {problem} "
                                        "specified is unsupported or invalid")
        return _typed(kind, value, enum)


def _typed(kind: str, value: Any, enum: list[str] | None) -> Any:
    """A scalar that passed :func:`_scalar_problem`, as the type QBO stores it as."""
    if enum is not None or kind == "string":
        if isinstance(value, bool):
            return "true" if value else "false"
        return value if isinstance(value, str) else str(value)
    if isinstance(value, str) and value.strip() == "":
        return None
    if kind == "decimal":
        return value if isinstance(value, (int, Decimal)) else Decimal(str(value).strip())
    if kind == "int":
        return int(Decimal(str(value).strip()))
    if kind == "boolean":
        return _BOOLEAN_TEXT[value.lower()] if isinstance(value, str) else bool(value)
    return value


def _scalar_problem(kind: str, value: Any, enum: list[str] | None) -> str | None:
    """Why a JSON scalar is not a value of ``kind`` (None when it is one)."""
    text = value if isinstance(value, str) else None
    if enum is not None:
        if text is None or text not in enum:
            return f"value {json.dumps(value, default=str)}: value not one of declared Enum instance names {enum}"
        return None
    if kind == "string":
        return None  # numbers and booleans are read as their text
    if kind in ("decimal", "int"):
        if isinstance(value, bool):
            return f"boolean value {json.dumps(value)}"
        if isinstance(value, (int, float, Decimal)):
            return None
        pattern = _DECIMAL if kind == "decimal" else _INTEGER
        if text is not None and (text.strip() == "" or pattern.fullmatch(text.strip())):
            return None
        return f"String value {json.dumps(value)}: not a valid representation"
    if kind == "boolean":
        if isinstance(value, (bool, int)) and not isinstance(value, float):
            return None
        if text is not None and (text == "" or text.lower() in _BOOLEAN_TEXT):
            return None
        return f"value {json.dumps(value, default=str)}: only \"true\" or \"false\" recognized"
    if kind in ("date", "dateTime", "time"):
        if text is None:
            return f"value {json.dumps(value, default=str)}: a {kind} is written as text"
        if text == "" or _valid_temporal(kind, text):
            return None
        return f"String value {json.dumps(value)}: not a valid lexical representation of xs:{kind}"
    return None


def _valid_temporal(kind: str, text: str) -> bool:
    pattern = {"date": _DATE, "dateTime": _DATETIME, "time": _TIME}[kind]
    match = pattern.fullmatch(text)
    if match is None:
        return False
    try:
        if kind == "time":
            hour, minute, second = (int(g) for g in match.groups()[:3])
            time(hour, minute, second)
            return True
        year, month, day = (int(g) for g in match.groups()[:3])
        date(max(1, min(abs(year), 9999)), month, day)
        if kind == "dateTime":
            hour, minute, second = (int(g) for g in match.groups()[3:6])
            if not (hour == 24 and minute == 0 and second == 0):
                time(hour, minute, second)
    except ValueError:
        return False
    return True


def _token(value: Any) -> str:
    if isinstance(value, Mapping):
        return "START_OBJECT"
    if isinstance(value, list):
        return "START_ARRAY"
    if isinstance(value, str):
        return "VALUE_STRING"
    if isinstance(value, bool):
        return "VALUE_TRUE" if value else "VALUE_FALSE"
    return "VALUE_NUMBER"


def _wrong_token(type_name: str, value: Any) -> str:
    return (f"Property Name:Can not deserialize instance of com.intuit.schema.finance.v3.{type_name} out of "
            f"{_token(value)} token specified is unsupported or invalid")


def _java(kind: str) -> str:
    return {"decimal": "java.math.BigDecimal", "int": "java.math.BigInteger", "boolean": "java.lang.Boolean",
            "date": "javax.xml.datatype.XMLGregorianCalendar",
            "dateTime": "javax.xml.datatype.XMLGregorianCalendar",
            "time": "javax.xml.datatype.XMLGregorianCalendar"}.get(kind, "java.lang.String")


@lru_cache(maxsize=1)
def _packaged() -> QboModel:
    text = resources.files("ionqbo.sandbox").joinpath("qbo_model.json").read_text(encoding="utf-8")
    return QboModel(json.loads(text))
