"""The metadata query language: ``md.drift_score > 0.3 and md.material == "MoS2"``.

Parsed with a lark grammar and compiled to SQLAlchemy expressions over the indexed metadata
table (``MetadataEntry``); values travel as bound parameters, never pasted into SQL.

Grammar, informally::

    expr    := term (("or") term)*          term := factor ("and" factor)*
    factor  := "not" factor | "(" expr ")" | "exists" field | field OP value
             | field "in" "[" value, ... "]" | field "like" STRING
    field   := "md" ("." NAME | "." STRING)+          OP := == != < <= > >=
    value   := number | "string" | 'string' | true | false | null

Semantics: a comparison holds when *some* value at that key satisfies it, so for a list
``md.elements == "Mo"`` means "the list contains Mo"; comparisons of one key joined by ``and``
must hold for the same value (``md.x > 1 and md.x < 2`` is a range). Numbers compare with numbers, strings
with strings (lexically, so ISO dates order correctly); ``like`` takes ``*`` and ``?`` wildcards.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import LarkError, UnexpectedCharacters, UnexpectedEOF, UnexpectedInput
from sqlalchemy import ColumnElement, Select, and_, exists, literal, not_, or_, select, true, union_all
from sqlalchemy.sql.elements import True_
from sqlalchemy.sql.expression import Alias

from storage.federation.errors import QuerySyntaxError
from storage.federation.models import MetadataEntry, Record

#: Longest expression accepted, in characters (a guard against pathological input).
MAX_EXPRESSION_CHARS = 4096
#: Most comparisons in one expression. A search joins the index once per term of an "and",
#: and SQLite joins at most 64 tables in one query: 32 leaves room for the rest.
MAX_TERMS = 32
#: Deepest nesting of "not" and parentheses; SQL compilers recurse once per level.
MAX_NESTING = 32
#: Most values in one ``in [...]`` list; each is one comparison in the SQL (SQLite's
#: expression tree is at most 1000 deep).
MAX_IN_VALUES = 100

_GRAMMAR = r"""
?start: or_expr
?or_expr: and_expr (_OR and_expr)*
?and_expr: factor (_AND factor)*
?factor: _NOT factor                         -> negate
       | "(" or_expr ")"
       | _EXISTS field                       -> exists
       | field CMP value                     -> compare
       | field _IN "[" value ("," value)* "]" -> member
       | field _LIKE STRING                  -> like
field: "md" ("." (NAME | STRING))+
value: SIGNED_NUMBER -> number
     | STRING        -> string
     | _TRUE         -> true
     | _FALSE        -> false
     | _NULL         -> null
CMP: "==" | "!=" | "<=" | ">=" | "<" | ">"
_OR: /or\b/i
_AND: /and\b/i
_NOT: /not\b/i
_EXISTS: /exists\b/i
_IN: /in\b/i
_LIKE: /like\b/i
_TRUE: /true\b/i
_FALSE: /false\b/i
_NULL: /null\b/i
NAME: /(?!(or|and|not|in|like)\b)[A-Za-z_][A-Za-z0-9_\-]*/i
STRING: /"(?:[^"\\]|\\.)*"/ | /'(?:[^'\\]|\\.)*'/
%import common.SIGNED_NUMBER
%import common.WS
%ignore WS
"""


@functools.cache
def _parser() -> Lark:
    return Lark(_GRAMMAR, parser="lalr", maybe_placeholders=False)


def _unquote(token: str) -> str:
    if token.startswith("'"):
        # Single-quoted: swap quoting so json can decode the escapes.
        token = '"' + token[1:-1].replace('\\"', '"').replace('"', '\\"').replace("\\'", "'") + '"'
    try:
        return json.loads(token)
    except json.JSONDecodeError as error:
        raise QuerySyntaxError(f"bad string literal {token}: {error.msg}") from error


def _wildcards_to_like(pattern: str) -> str:
    """``*`` -> ``%``, ``?`` -> ``_``, with SQL's own wildcards escaped by ``\\``."""
    out = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return out.replace("*", "%").replace("?", "_")


Cond = Callable[[ColumnElement[Any], ColumnElement[Any], ColumnElement[Any]], ColumnElement[bool]]


@dataclass(frozen=True)
class _Leaf:
    """Conditions on the index rows of one key (all must hold for the same value); each is a
    function of the (number, text, kind) columns of the index rows."""

    key: str
    conditions: tuple[Cond, ...]


@dataclass(frozen=True)
class _Op:
    op: str  # "and" | "or" | "not"
    parts: tuple[Any, ...]


#: The metadata index's columns as the table's own (Core): an ORM entity's or alias's columns
#: are adapted on every access, ~1/3 of the Python a restricted user's search spent building
#: its statements (PostgreSQL, 1 M records).
_ENTRY = MetadataEntry.__table__.c


def _alias(entries: Any) -> Alias:
    """A fresh alias of the table of ``entries`` (``MetadataEntry`` or ``SharedEntry``)."""
    return entries.__table__.alias()


def _to_sql(node: Any, correlated: bool, fenced: bool = False) -> ColumnElement[bool]:
    """SQL for a node. ``correlated``: EXISTS probes per record (fast for one sorted page);
    otherwise ``id IN (…)`` sets driven by the indexes (fast for counting every match).

    ``fenced`` (PostgreSQL, with ``correlated``): each probe is an ``EXISTS (… OFFSET 0)``,
    which the planner keeps as a per-record probe instead of turning it into a join it may
    drive from. It estimated ``md.material == "MoS2"`` at 2 213 of 1 M records (166 667 hold
    it: one histogram per column serves every key) and, without parallel workers, drove the
    page from every one of them: 5.3 s instead of walking 3 000 records newest first."""
    if isinstance(node, _Leaf):
        E = _ENTRY
        if correlated and fenced:
            conds = [c(E.num, E.text, E.kind) for c in node.conditions]
            probe = select(E.id).where(E.record_id == Record.id, E.key == node.key, *conds)
            return exists(probe.offset(0))
        if correlated:
            # Values wrapped (x + 0, x || '') so no value index is usable: the planner must
            # look the record up by (record_id, key) instead of scanning a value range per record.
            num, text = E.num + 0, E.text.concat("")
            conds = [c(num, text, E.kind) for c in node.conditions]
            return exists(select(E.id).where(E.record_id == Record.id, E.key == node.key, *conds))
        conds = [c(E.num, E.text, E.kind) for c in node.conditions]
        return Record.id.in_(select(E.record_id).where(E.key == node.key, *conds))
    if node.op == "not":
        return not_(_to_sql(node.parts[0], correlated, fenced))
    if node.op == "or":
        return or_(*[_to_sql(p, correlated, fenced) for p in node.parts])
    return and_(*[_to_sql(p, correlated, fenced) for p in _and_parts(node)])


def _and_parts(node: Any) -> list[Any]:
    """The conjuncts of an "and" node (a lone leaf is its own), comparisons of one key merged.

    Comparisons on one key joined by "and" become one range on one value: index-friendly, and
    what "md.x > 1 and md.x < 2" means for a scalar.
    """
    if isinstance(node, _Leaf):
        return [node]
    if node.op != "and":
        return [node]
    merged: dict[str, _Leaf] = {}
    others = []
    for part in node.parts:
        if isinstance(part, _Leaf):
            prior = merged.get(part.key)
            merged[part.key] = _Leaf(part.key, (prior.conditions if prior else ()) + part.conditions)
        else:
            others.append(part)
    return [*merged.values(), *others]


def leaf_rows(leaf: _Leaf) -> Select[Any]:
    """``SELECT 1`` per index row a leaf matches (answered from a covering index)."""
    E = _ENTRY
    return select(literal(1)).where(E.key == leaf.key, *[c(E.num, E.text, E.kind) for c in leaf.conditions])


def and_terms(text: str) -> list[_Leaf]:
    """The top-level terms of an expression joined by "and" that one index range answers
    (comparisons of one key merged); empty when the top is an "or" or a "not"."""
    return [p for p in _and_parts(_compile(text)) if isinstance(p, _Leaf)]


def driven_ids(
    text: str,
    driver: _Leaf | Sequence[Select[Any]],
    where: list[ColumnElement[bool]],
    scope: Callable[[Any], ColumnElement[bool]] | None = None,
    lateral: bool = False,
    entries: Any = MetadataEntry,
) -> Select[Any]:
    """``SELECT records.id`` of the records matching the expression and ``where`` (a record
    may come more than once),
    driven by ``driver``: one of ``and_terms(text)`` (a range of its value index), or
    selects of record ids whose union holds every match (the records a user may read).

    The other terms join the per-record index by (record id, key), with values wrapped so
    that the planner cannot turn them into value ranges of their own. The cost is then in
    proportion to the driver's rows, where ``IN`` sets for every term cost the sum of all.

    ``scope``: a condition on the driver term's index rows (their copied owner or project,
    ``Route.on_entry``) that narrows its range to the records of one owner or project.
    ``entries``: the index the driver term and, with a ``scope`` and ``lateral``, the other
    terms are read from: ``MetadataEntry``, or ``SharedEntry`` with a ``scope`` on its holders
    (the other terms then from the same holder's copies).

    ``lateral`` (PostgreSQL): each other term is a ``LATERAL`` subquery with ``LIMIT 1``, which
    the planner cannot flatten into a join of its own choosing. Wrapped values stop it from
    reading a term's value range, not from hashing the term's whole key range (333 000 rows of
    ``material``, 110 of 170 ms for a restricted user's match query, 1 M records): it guessed
    the wrapped ``text || ''`` at 0.5 % of them. The driver was chosen by counting its rows, so
    the per-row probe is the plan wanted; each probe stops at its first index row. With a
    ``scope``, the other terms are joined within the same scope instead (bounded either way).
    """
    parts = _and_parts(_compile(text))
    # Records rows are read only for conditions on them (an admin's search of metadata alone
    # is answered from the metadata indexes: a records row costs a random read per match).
    where = [w for w in where if not isinstance(w, True_)]
    joined = probed = False
    if isinstance(driver, _Leaf):
        D = _alias(entries).c
        query = select(D.record_id).where(
            *([scope(D)] if scope is not None else []),
            D.key == driver.key,
            *[c(D.num, D.text, D.kind) for c in driver.conditions],
        )
        anchor = D.record_id
    else:
        # The ids as an ``IN`` set: SQLite collects them into a sorted temporary index and
        # probes each term by (record id, key) in id order, where a join on the union probes
        # in the order the routes yield (measured 1.3-1.7x slower at 34 000 ids); a record
        # reachable by several routes is also probed once.
        ids = union_all(*driver) if len(driver) > 1 else driver[0]
        first = next((p for p in parts if isinstance(p, _Leaf)), None)
        if first is None:
            query = select(Record.id).where(Record.id.in_(ids))
            anchor, joined = Record.id, True
        else:
            # Values wrapped as for the other terms, and the key too: the (record id, key)
            # index is then the only one usable, so each id is probed instead of the term's
            # range scanned (with the key bare and a range's two "kind" conditions, SQLite
            # without statistics took the (key, kind) range of 1 M rows: 280 ms for 4 000 ids).
            D = _alias(MetadataEntry).c
            values = (D.num + 0, D.text.concat(""), D.kind)
            key = D.key.concat("")
            if lateral:
                # PostgreSQL plans by statistics: the key bare seeks (record id, key) in the
                # probe index, where wrapped it read every index row of the record (8 here) to
                # filter; the kind wrapped instead keeps the value ranges out of reach (the
                # key alone is every record's row of that key, which the planner knows).
                values, key = (D.num + 0, D.text.concat(""), D.kind.concat("")), D.key
            query = select(D.record_id).where(
                D.record_id.in_(ids),
                key == first.key,
                *[c(*values) for c in first.conditions],
            )
            # "+ 0": SQLite would carry ``IN`` over to every term joined on the same id and loop
            # over the whole set once per row (measured: 34 s instead of 0.1).
            anchor = D.record_id + 0
            driver, probed = first, True
    if not joined and (where or any(not isinstance(p, _Leaf) for p in parts)):
        query = query.join(Record, Record.id == anchor)
    for part in parts:
        if isinstance(part, _Leaf) and isinstance(driver, _Leaf) and part.key == driver.key:
            continue  # keys are unique among the parts: comparisons of one key are merged
        if isinstance(part, _Leaf) and lateral and scope is not None:
            # Within one owner or project both plans are bounded by the scope: the planner may
            # hash the other term's range of it (5 053 rows of ``conditions.dose > 50`` for
            # 1 008 of ``defocus`` here) where a probe per row costs ~10x a row read in order
            # (CPU per search 0.88-0.90x, restricted user, 1 M records, three alternating runs).
            joined_entries = _alias(entries)
            P = joined_entries.c
            conds = [c(P.num, P.text, P.kind) for c in part.conditions]
            same = [P.holder == D.holder] if entries is not MetadataEntry else []
            on = [P.record_id == anchor, scope(P), *same, P.key == part.key, *conds]
            query = query.join(joined_entries, and_(*on))
        elif isinstance(part, _Leaf) and lateral:
            P = _alias(MetadataEntry).c
            conds = [c(P.num, P.text, P.kind) for c in part.conditions]
            probe = select(literal(1)).where(P.record_id == anchor, P.key == part.key, *conds)
            query = query.join(probe.limit(1).lateral(), true())
        elif isinstance(part, _Leaf):
            joined_entries = _alias(MetadataEntry)
            P = joined_entries.c
            values = (P.num + 0, P.text.concat(""), P.kind)
            # Driven by ids, every term is a probe: its key wrapped too, so that no term's
            # (key, kind) range can become the outer loop either.
            key = P.key.concat("") if probed else P.key
            on = [P.record_id == anchor, key == part.key, *[c(*values) for c in part.conditions]]
            query = query.join(joined_entries, and_(*on))
        else:
            query = query.where(_to_sql(part, correlated=True, fenced=lateral))
    # No DISTINCT: a record appears once per row of the driver's key (several for a list), and
    # DISTINCT before a LIMIT makes PostgreSQL collect every match before the first is out.
    return query.where(*where)


_OPS = {
    "==": lambda c, v: c == v,
    "!=": lambda c, v: c != v,
    "<": lambda c, v: c < v,
    "<=": lambda c, v: c <= v,
    ">": lambda c, v: c > v,
    ">=": lambda c, v: c >= v,
}


def _value_condition(op: str, value: Any, key: str) -> Cond:
    if value is None:
        if op not in ("==", "!="):
            raise QuerySyntaxError(f"md.{key}: null can only be compared with == or !=")
        return lambda _n, _t, k: k == "z" if op == "==" else k != "z"
    if isinstance(value, bool):
        if op not in ("==", "!="):
            raise QuerySyntaxError(f"md.{key}: true/false can only be compared with == or !=")
        return lambda n, _t, k: and_(k == "b", _OPS[op](n, float(value)))
    if isinstance(value, float):
        return lambda n, _t, k: and_(k == "n", _OPS[op](n, value))
    return lambda _n, t, k: and_(k == "s", _OPS[op](t, value))


@v_args(inline=True)
class _Compiler(Transformer[Token, Any]):
    def __init__(self) -> None:
        super().__init__()
        self.terms = 0

    def _count(self) -> None:
        self.terms += 1
        if self.terms > MAX_TERMS:
            raise QuerySyntaxError(f"the expression has more than {MAX_TERMS} comparisons")

    def field(self, *parts: Token) -> str:
        names = [_unquote(p) if p.type == "STRING" else str(p) for p in parts]
        return ".".join(names)

    def number(self, tok: Token) -> float:
        return float(tok)

    def string(self, tok: Token) -> str:
        return _unquote(tok)

    def true(self) -> bool:
        return True

    def false(self) -> bool:
        return False

    def null(self) -> None:
        return None

    def compare(self, key: str, op: Token, value: Any) -> _Leaf:
        self._count()
        return _Leaf(key, (_value_condition(str(op), value, key),))

    def member(self, key: str, *values: Any) -> _Leaf:
        self._count()
        if len(values) > MAX_IN_VALUES:
            raise QuerySyntaxError(
                f"md.{key} in [...] lists {len(values)} values; the limit is {MAX_IN_VALUES}"
            )
        conds = [_value_condition("==", v, key) for v in values]
        return _Leaf(key, (lambda n, t, k: or_(*[c(n, t, k) for c in conds]),))

    def like(self, key: str, pattern: Token) -> _Leaf:
        self._count()
        like = _wildcards_to_like(_unquote(pattern))
        return _Leaf(key, (lambda _n, t, k: and_(k == "s", t.like(like, escape="\\")),))

    def exists(self, key: str) -> _Leaf:
        self._count()
        return _Leaf(key, ())

    def negate(self, inner: Any) -> _Op:
        return _Op("not", (inner,))

    def and_expr(self, *parts: Any) -> _Op:
        return _Op("and", parts)

    def or_expr(self, *parts: Any) -> _Op:
        return _Op("or", parts)


def compile_expression(text: str, correlated: bool = False, fenced: bool = False) -> ColumnElement[bool]:
    """Compile a metadata expression into a SQLAlchemy condition on ``Record``.

    ``correlated`` picks EXISTS probes instead of ``IN`` sets (see ``_to_sql``); both select
    the same records (and so does ``driven_ids``); ``fenced`` keeps PostgreSQL from turning
    those probes into joins (see ``_to_sql``). Raises QuerySyntaxError naming the position
    and what was expected.
    """
    return _to_sql(_compile(text), correlated, fenced)


# A search compiles its expression once per use (the terms, each route's match query, the
# page's probes): the tree is immutable, so each use after the first is a lookup.
@functools.lru_cache(maxsize=256)
def _compile(text: str) -> Any:
    if len(text) > MAX_EXPRESSION_CHARS:
        raise QuerySyntaxError(
            f"the expression is {len(text)} characters long; the limit is {MAX_EXPRESSION_CHARS}"
        )
    if not text.strip():
        raise QuerySyntaxError("the metadata expression is empty")
    try:
        tree = _parser().parse(text)
    except (UnexpectedCharacters, UnexpectedEOF) as error:
        raise QuerySyntaxError(_describe(text, error)) from None
    except UnexpectedInput as error:
        raise QuerySyntaxError(_describe(text, error)) from None
    except LarkError as error:
        raise QuerySyntaxError(f"cannot parse {text!r}: {error}") from None
    _check_nesting(tree)
    try:
        return _Compiler().transform(tree)
    except LarkError as error:  # errors raised inside the transformer come wrapped
        cause = getattr(error, "orig_exc", None)
        if isinstance(cause, QuerySyntaxError):
            raise cause from None
        raise QuerySyntaxError(f"cannot compile {text!r}: {error}") from None


def _check_nesting(tree: Any) -> None:
    """Refuse trees nested deeper than ``MAX_NESTING`` (walked without recursion)."""
    stack = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_NESTING:
            raise QuerySyntaxError(
                f"the expression nests deeper than {MAX_NESTING} levels (not, parentheses)"
            )
        stack.extend(
            (child, depth + 1) for child in getattr(node, "children", ()) if hasattr(child, "children")
        )


_READABLE = {
    "SIGNED_NUMBER": "a number",
    "STRING": "a quoted string",
    "_TRUE": "true",
    "_FALSE": "false",
    "_NULL": "null",
    "MD": "md.<field>",
    "LPAR": "'('",
    "RPAR": "')'",
    "_NOT": "not",
    "_EXISTS": "exists",
    "_AND": "and",
    "_OR": "or",
    "CMP": "a comparison (== != < <= > >=)",
    "_IN": "in",
    "_LIKE": "like",
    "DOT": "'.'",
    "NAME": "a field name",
    "LSQB": "'['",
    "RSQB": "']'",
    "COMMA": "','",
}


def _describe(text: str, error: UnexpectedInput) -> str:
    col = getattr(error, "column", None)
    where = f" at column {col}" if isinstance(col, int) and col > 0 else " at the end"
    raw = getattr(error, "expected", None) or getattr(error, "allowed", None) or []
    expected = sorted({_READABLE.get(name, name) for name in raw})
    hint = f"; expected one of {', '.join(expected[:8])}" if expected else ""
    snippet = error.get_context(text, span=20).splitlines()[0] if col and col > 0 else text[-20:]
    return f"cannot parse metadata expression{where} near {snippet.strip()!r}{hint}"
