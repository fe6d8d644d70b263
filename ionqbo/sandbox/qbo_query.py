"""The QBO query language subset (docs/reference/qbo.md section 6): a tokenizer, a parser and an evaluator.

Grammar: ``SELECT * | count(*) FROM Entity [WHERE cond AND cond ...] [ORDERBY field [ASC|DESC], ...]
[STARTPOSITION n] [MAXRESULTS n]``, where ``cond`` is ``field op value``, ``field IN (v, ...)`` or
``field LIKE 'pattern%'``. Keywords, entity and field names and values are case-insensitive. Strings
are single-quoted with backslash escapes (``\\'`` and ``\\\\``); ``true``/``false`` and numbers may be
unquoted. ``OR``, projections, joins and ``NOT`` are not part of the language: they are parse errors.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, timezone, tzinfo
from decimal import Decimal, InvalidOperation
from typing import Any

DEFAULT_MAX_RESULTS = 100  # docs/reference/qbo.md section 6: MAXRESULTS default 100 ...
LIMIT_MAX_RESULTS = 1000  # ... and max 1000 (larger values are capped here; the live error is not documented)

OPERATORS = ("=", "<", ">", "<=", ">=", "IN", "LIKE")

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<str>'(?:[^'\\]|\\.)*')
      | (?P<num>-?\d+(?:\.\d+)?(?![A-Za-z_]))
      | (?P<op><=|>=|!=|<>|=|<|>)
      | (?P<punct>[(),*])
      | (?P<word>[A-Za-z_][A-Za-z0-9_.]*)
    )""",
    re.VERBOSE,
)
_ESCAPE = re.compile(r"\\(.)", re.DOTALL)
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}(?:$|T)")


class QueryError(ValueError):
    """A statement the QBO query parser rejects (rendered as Fault code 4000, QueryParserError)."""


@dataclass(frozen=True)
class Condition:
    """One ``field op value(s)`` term of a WHERE clause."""

    field: str  # dotted path, as written
    op: str  # one of OPERATORS
    values: tuple[Any, ...]  # str, Decimal or bool literals


@dataclass
class Query:
    """A parsed statement."""

    entity: str  # canonical entity name, as in the schema
    count: bool = False
    where: list[Condition] = field(default_factory=list)
    order_by: list[tuple[str, bool]] = field(default_factory=list)  # (field, descending)
    start_position: int = 1
    max_results: int = DEFAULT_MAX_RESULTS

    def mentions(self, name: str) -> bool:
        """Whether the WHERE clause filters on the top-level field ``name`` (case-insensitive)."""
        return any(c.field.split(".")[0].lower() == name.lower() for c in self.where)


@dataclass(frozen=True)
class _Tok:
    kind: str
    text: str
    value: Any
    column: int


def _tokenize(text: str) -> list[_Tok]:
    tokens: list[_Tok] = []
    pos = 0
    stripped = text.rstrip()
    while pos < len(stripped):
        match = _TOKEN.match(stripped, pos)
        if match is None or match.end() == pos:
            bad = stripped[pos:].lstrip()[:1]
            column = len(stripped) - len(stripped[pos:].lstrip()) + 1
            raise QueryError(f'QueryParserError: Encountered " "{bad}" " at line 1, column {column}.')
        kind = match.lastgroup or ""
        raw = match.group(kind)
        column = match.start(kind) + 1
        value: Any = raw
        if kind == "str":
            value = _ESCAPE.sub(r"\1", raw[1:-1])
        elif kind == "num":
            value = Decimal(raw)
        elif kind == "op" and raw in ("!=", "<>"):
            raise QueryError(f'QueryParserError: Encountered " "{raw}" " at line 1, column {column}.')
        tokens.append(_Tok(kind, raw, value, column))
        pos = match.end()
    return tokens


class _Parser:
    def __init__(self, text: str, schema: Mapping[str, Iterable[str]]) -> None:
        self.tokens = _tokenize(text)
        self.pos = 0
        self.schema = {name.lower(): (name, {f.lower(): f for f in fields})
                       for name, fields in schema.items()}

    def _peek(self) -> _Tok | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def _fail(self, expecting: str) -> QueryError:
        tok = self._peek()
        if tok is None:
            return QueryError(f'QueryParserError: Encountered "<EOF>" at line 1. Was expecting: {expecting}')
        return QueryError(
            f'QueryParserError: Encountered " "{tok.text}" " at line 1, column {tok.column}. '
            f"Was expecting: {expecting}"
        )

    def _word(self, *words: str) -> str | None:
        tok = self._peek()
        if tok is not None and tok.kind == "word" and tok.text.upper() in words:
            self.pos += 1
            return tok.text.upper()
        return None

    def _expect_word(self, *words: str) -> str:
        found = self._word(*words)
        if found is None:
            raise self._fail(" | ".join(words))
        return found

    def _punct(self, char: str) -> bool:
        tok = self._peek()
        if tok is not None and tok.kind == "punct" and tok.text == char:
            self.pos += 1
            return True
        return False

    def _expect_punct(self, char: str) -> None:
        if not self._punct(char):
            raise self._fail(f'"{char}"')

    def _integer(self) -> int:
        tok = self._peek()
        if tok is None or tok.kind != "num" or "." in tok.text or tok.text.startswith("-"):
            raise self._fail("<INTEGER>")
        self.pos += 1
        return int(tok.text)

    def _field(self, fields: Mapping[str, str]) -> str:
        tok = self._peek()
        if tok is None or tok.kind != "word" or tok.text.upper() in _RESERVED:
            raise self._fail("<IDENTIFIER>")
        self.pos += 1
        head, _, rest = tok.text.partition(".")
        canonical = fields.get(head.lower())
        if canonical is None:
            msg = f"QueryParserError: property '{head}' is not queryable (column {tok.column})."
            raise QueryError(msg)
        return canonical + ("." + rest if rest else "")

    def _literal(self) -> Any:
        tok = self._peek()
        if tok is None:
            raise self._fail("<STRING>")
        if tok.kind in ("str", "num"):
            self.pos += 1
            return tok.value
        if tok.kind == "word" and tok.text.lower() in ("true", "false"):
            self.pos += 1
            return tok.text.lower() == "true"
        raise self._fail("<STRING>")

    def parse(self) -> Query:
        self._expect_word("SELECT")
        count = False
        if self._punct("*"):
            pass
        elif self._word("COUNT"):
            self._expect_punct("(")
            self._expect_punct("*")
            self._expect_punct(")")
            count = True
        else:
            raise self._fail('"*" | "count(*)"')
        self._expect_word("FROM")
        tok = self._peek()
        if tok is None or tok.kind != "word":
            raise self._fail("<ENTITY>")
        self.pos += 1
        known = self.schema.get(tok.text.lower())
        if known is None:
            raise QueryError(f"QueryParserError: Invalid entity name {tok.text!r} at column {tok.column}.")
        entity, fields = known
        query = Query(entity=entity, count=count)
        if self._word("WHERE"):
            query.where.append(self._condition(fields))
            while self._word("AND"):
                query.where.append(self._condition(fields))
        while self._peek() is not None:
            if self._word("ORDERBY") or (self._word("ORDER") and self._expect_word("BY")):
                query.order_by.append(self._order_term(fields))
                while self._punct(","):
                    query.order_by.append(self._order_term(fields))
            elif self._word("STARTPOSITION"):
                query.start_position = max(1, self._integer())
            elif self._word("MAXRESULTS"):
                query.max_results = min(LIMIT_MAX_RESULTS, self._integer())
            else:
                raise self._fail("ORDERBY | STARTPOSITION | MAXRESULTS | <EOF>")
        return query

    def _order_term(self, fields: Mapping[str, str]) -> tuple[str, bool]:
        name = self._field(fields)
        direction = self._word("ASC", "DESC")
        return (name, direction == "DESC")

    def _condition(self, fields: Mapping[str, str]) -> Condition:
        name = self._field(fields)
        tok = self._peek()
        if tok is not None and tok.kind == "op":
            self.pos += 1
            return Condition(name, tok.text, (self._literal(),))
        keyword = self._word("IN", "LIKE")
        if keyword == "LIKE":
            value = self._literal()
            if not isinstance(value, str):
                raise self._fail("<STRING>")
            return Condition(name, "LIKE", (value,))
        if keyword == "IN":
            self._expect_punct("(")
            values = [self._literal()]
            while self._punct(","):
                values.append(self._literal())
            self._expect_punct(")")
            return Condition(name, "IN", tuple(values))
        raise self._fail('"=" | "<" | ">" | "<=" | ">=" | "IN" | "LIKE"')


_RESERVED = frozenset(
    {"SELECT", "FROM", "WHERE", "AND", "OR", "NOT", "ORDERBY", "ORDER", "BY", "ASC", "DESC", "IN", "LIKE",
     "STARTPOSITION", "MAXRESULTS", "COUNT"}
)


def parse_query(text: str, schema: Mapping[str, Iterable[str]]) -> Query:
    """Parse a statement against ``schema`` (canonical entity name -> queryable top-level fields).

    Raises:
        QueryError: the statement is malformed, uses ``OR``, or names an unknown entity or field.
    """
    return _Parser(text, schema).parse()


# ---- evaluation ---------------------------------------------------------------------------------


def value_at(record: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted path, names matched case-insensitively; a reference yields its ``value``."""
    current: Any = record
    for part in path.split("."):
        if not isinstance(current, Mapping):
            return None
        lowered = part.lower()
        current = next((v for k, v in current.items() if k.lower() == lowered), None)
    if isinstance(current, Mapping) and "value" in current:
        return current["value"]
    return current


def _as_datetime(text: str, tz: tzinfo) -> datetime | None:
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), time(0), tzinfo=tz)
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=tz)


def _as_decimal(value: Any) -> Decimal | None:
    if isinstance(value, bool):
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


def _comparable(actual: Any, literal: Any, tz: tzinfo) -> tuple[Any, Any] | None:
    """Bring a stored value and a literal to one comparable type, or None when they cannot be."""
    if actual is None:
        return None
    if isinstance(actual, bool) or isinstance(literal, bool):
        left = actual if isinstance(actual, bool) else str(actual).lower() == "true"
        right = literal if isinstance(literal, bool) else str(literal).lower() == "true"
        return (left, right)
    if isinstance(actual, int | float | Decimal):
        number = _as_decimal(literal)
        return None if number is None else (_as_decimal(actual), number)
    text = str(actual)
    lit = str(literal)
    if _DATE.match(text) and _DATE.match(lit):
        left_dt, right_dt = _as_datetime(text, tz), _as_datetime(lit, tz)
        if left_dt is not None and right_dt is not None:
            return (left_dt, right_dt)
    if isinstance(literal, Decimal) and _as_decimal(text) is not None:
        return (_as_decimal(text), literal)
    return (text.casefold(), lit.casefold())


def _like(actual: Any, pattern: str) -> bool:
    if actual is None:
        return False
    regex = ".*".join(re.escape(piece) for piece in pattern.split("%"))
    return re.fullmatch(regex, str(actual), re.IGNORECASE | re.DOTALL) is not None


def matches(record: Mapping[str, Any], condition: Condition, tz: tzinfo = UTC) -> bool:
    """Whether one record satisfies one condition (string comparison is case-insensitive)."""
    actual = value_at(record, condition.field)
    if condition.op == "LIKE":
        return _like(actual, condition.values[0])
    if condition.op == "IN":
        return any(_compare(actual, "=", v, tz) for v in condition.values)
    return _compare(actual, condition.op, condition.values[0], tz)


def _compare(actual: Any, op: str, literal: Any, tz: tzinfo) -> bool:
    pair = _comparable(actual, literal, tz)
    if pair is None:
        return False
    left, right = pair
    try:
        if op == "=":
            return bool(left == right)
        if op == "<":
            return bool(left < right)
        if op == ">":
            return bool(left > right)
        if op == "<=":
            return bool(left <= right)
        if op == ">=":
            return bool(left >= right)
    except TypeError:
        return False
    return False


def _sort_key(value: Any, path: str, tz: tzinfo) -> tuple[int, Any]:
    if value is None:
        return (3, "")
    if isinstance(value, bool):
        return (0, Decimal(int(value)))
    if isinstance(value, int | float | Decimal) or (path.lower() == "id" and str(value).isdigit()):
        return (0, Decimal(str(value)))
    text = str(value)
    if _DATE.match(text):
        parsed = _as_datetime(text, tz)
        if parsed is not None:
            return (1, parsed.astimezone(UTC).isoformat())
    return (2, text.casefold())


def run_query(
    query: Query, records: Iterable[Mapping[str, Any]], tz: tzinfo = UTC
) -> tuple[list[Mapping[str, Any]], int]:
    """Filter, sort and page records.

    Returns:
        The page of records, and how many records matched before paging.
    """
    selected = [r for r in records if all(matches(r, c, tz) for c in query.where)]
    for name, descending in reversed(query.order_by):

        def key(record: Mapping[str, Any], name: str = name) -> tuple[int, Any]:
            return _sort_key(value_at(record, name), name, tz)

        selected.sort(key=key, reverse=descending)
    total = len(selected)
    start = query.start_position - 1
    return selected[start : start + query.max_results], total


def offset_tz(hours: int) -> tzinfo:
    """A fixed-offset time zone (the emulated company's), e.g. ``offset_tz(-7)``."""
    return timezone(timedelta(hours=hours))
