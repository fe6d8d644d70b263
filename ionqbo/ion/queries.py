"""Every GraphQL document ionqbo sends to ION: built from the live schema's resolution.

The record queries (purchase orders, lines, parts, by id, keys only) are not fixed texts: :func:`build`
writes them from a :class:`ionqbo.ion.schema.Plan` (the needs of :mod:`ionqbo.ion.schema` resolved
against the introspected schema), with only the arguments the live root field has and the variable
types it declares, and :func:`validate_documents` checks each one against the same schema before it
is sent. A document that validates locally cannot be refused by ION for a name.

The few fixed texts below use only names First Resonance's public code and docs show ([V] in
``docs/reference/ion.md``). Values never appear in any text: every value travels in ``variables``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from graphql import GraphQLSchema, get_introspection_query, parse, validate

from ionqbo.ion.schema import ListRead, Plan

# docs-v3 getting-started [V]: the "who am I" check.
ME = """
query Me {
  me { id name email organization { id domain } }
}
"""

# manual /api/examples/notifications [V]. The one mutation ionqbo sends: never retried.
DISPATCH_NOTIFICATION = """
mutation DispatchNotification($input: DispatchNotificationInput!) {
  dispatchNotification(input: $input) { response { messageId } }
}
"""

# The standard introspection query (graphql-core's, without descriptions: smaller answer).
INTROSPECTION = get_introspection_query(descriptions=False)

Tree = dict[str, "Tree"]


@dataclass
class Documents:
    """The documents built for one plan, by operation name, and what each reads."""

    texts: dict[str, str] = field(default_factory=dict)
    roots: dict[str, str] = field(default_factory=dict)  # operation -> root field
    roles: dict[str, str] = field(default_factory=dict)  # operation -> role of its nodes (po, part, line)
    keys: dict[str, str] = field(default_factory=dict)  # record operation -> its keys-only twin
    single: dict[str, str] = field(default_factory=dict)  # record operation -> its by-id twin

    def __getitem__(self, name: str) -> str:
        return self.texts[name]

    def __contains__(self, name: object) -> bool:
        return name in self.texts


def _insert(tree: Tree, path: tuple[str, ...], sub: Tree | None = None) -> None:
    node = tree
    for step in path:
        node = node.setdefault(step, {})
    if sub:
        _merge(node, sub)


def _merge(into: Tree, other: Tree) -> None:
    for key, value in other.items():
        _merge(into.setdefault(key, {}), value)


def selection(plan: Plan, role: str, *, keys_only: bool = False) -> Tree:
    """The fields to ask for on a node of ``role``."""
    tree: Tree = {}
    for found in plan.role_found(role):
        need = found.need
        if keys_only and need.key.split(".", 1)[1] not in ("id", "etag", "updatedAt"):
            continue
        if found.path == ("__root__",):
            continue  # lines read from the root query, separately
        if need.kind in ("list", "object"):
            _insert(tree, found.path, selection(plan, need.child))
        else:
            _insert(tree, found.path)
    return tree


def render(tree: Tree, indent: int = 2) -> str:
    pad = " " * indent
    lines = []
    for name, sub in tree.items():
        if sub:
            lines.append(f"{pad}{name} {{\n{render(sub, indent + 2)}\n{pad}}}")
        else:
            lines.append(f"{pad}{name}")
    return "\n".join(lines)


def _list_query(name: str, read: ListRead | Any, tree: Tree) -> str:
    wanted = [a for a in ("filters", "sort", "first", "after") if a in read.args]
    header = ", ".join(f"${a}: {read.args[a]}" for a in wanted)
    call = ", ".join(f"{a}: ${a}" for a in wanted)
    head = f"query {name}({header})" if header else f"query {name}"
    args = f"({call})" if call else ""
    return (f"{head} {{\n  {read.root}{args} {{\n    edges {{ node {{\n{render(tree, 6)}\n    }} }}\n"
            f"    pageInfo {{ hasNextPage endCursor }}\n  }}\n}}\n")


def _single_query(name: str, root: str, arg_type: str, tree: Tree) -> str:
    return f"query {name}($id: {arg_type}) {{\n  {root}(id: $id) {{\n{render(tree, 4)}\n  }}\n}}\n"


def build(plan: Plan) -> Documents:
    """Every record document for ``plan``, plus the fixed ones."""
    docs = Documents()
    query = plan.schema.query_type
    for role, read, name in (("po", plan.po, "PurchaseOrders"), ("part", plan.part, "Parts")):
        if read is None or role not in plan.types:
            continue
        docs.texts[name] = _list_query(name, read, selection(plan, role))
        docs.roots[name] = read.root
        docs.roles[name] = role
        keys_name = name.removesuffix("s") + "Keys"
        docs.texts[keys_name] = _list_query(keys_name, read, selection(plan, role, keys_only=True))
        docs.roots[keys_name] = read.root
        docs.roles[keys_name] = role
        docs.keys[name] = keys_name
        if read.single_root and query is not None:
            single = name.removesuffix("s")
            arg_type = str(query.fields[read.single_root].args["id"].type)
            docs.texts[single] = _single_query(single, read.single_root, arg_type, selection(plan, role))
            docs.roots[single] = read.single_root
            docs.roles[single] = role
            docs.single[name] = single
    if plan.lines_root is not None:
        lr = plan.lines_root
        tree = selection(plan, "line")
        _insert(tree, lr.po_link)
        docs.texts["PurchaseOrderLines"] = _list_query("PurchaseOrderLines", lr, tree)
        docs.roots["PurchaseOrderLines"] = lr.root  # raw nodes: they become canonical with their order
    users = query.fields.get("users") if query is not None else None
    if users is not None:
        wanted = [a for a in ("filters", "first") if a in users.args]
        header = ", ".join(f"${a}: {users.args[a].type}" for a in wanted)
        call = ", ".join(f"{a}: ${a}" for a in wanted)
        docs.texts["Users"] = (f"query Users{f'({header})' if header else ''} {{\n  users{f'({call})' if call else ''}"
                               " {\n    edges { node { id name email } }\n    pageInfo { hasNextPage endCursor }\n"
                               "  }\n}\n")
        docs.roots["Users"] = "users"
    docs.texts["Me"] = ME
    docs.texts["DispatchNotification"] = DISPATCH_NOTIFICATION
    return docs


# Documents a sync can do without: `me` (check-mappings' connectivity row), the notification path
# (its own check-mappings warnings, :func:`ionqbo.ion.schema.notification_problems`).
NOT_FOR_RECORDS = frozenset({"Me", "DispatchNotification", "Users"})


def validate_documents(schema: GraphQLSchema, docs: Documents, *, records_only: bool = False) -> list[str]:
    """One line per validation error of a document against ``schema`` (empty: every one fits).

    ``records_only``: only the documents that read purchase orders, lines and parts.
    """
    problems = []
    for name, text in docs.texts.items():
        if records_only and name in NOT_FOR_RECORDS:
            continue
        for error in validate(schema, parse(text)):
            problems.append(f"query {name}: {error.message}")
    return problems
