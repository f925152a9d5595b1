"""Lineage graphs (``StoreClient.lineage``) as W3C PROV-JSON and as text."""

from __future__ import annotations

from typing import Any

#: Namespaces of the exported document.
PREFIXES = {
    "scopeflow": "https://scopeflow.dev/ns#",
    "record": "urn:scopeflow:record:",
    "user": "urn:scopeflow:user:",
}


def _qn(record_id: str) -> str:
    return "record:" + record_id.replace("/", "")


def to_prov_json(lineage: dict[str, Any]) -> dict[str, Any]:
    """A PROV-JSON document (https://www.w3.org/submissions/prov-json/) of a lineage graph.

    Records are entities, owners agents (``wasAttributedTo``); ``der`` is ``wasDerivedFrom``,
    ``ver`` a ``wasDerivedFrom`` of ``prov:type`` ``prov:Revision``, and ``comp`` (subject is a
    component of object) a ``hadMember`` of the object.
    """
    doc: dict[str, Any] = {"prefix": dict(PREFIXES), "entity": {}, "agent": {}}
    attributed: dict[str, Any] = {}
    for rid, node in lineage["nodes"].items():
        entity: dict[str, Any] = {
            "prov:label": node["title"],
            "scopeflow:id": rid,
            "scopeflow:created": node["created"],
        }
        if node.get("kind"):
            entity["prov:type"] = f"scopeflow:{node['kind']}"
        if node.get("alias"):
            entity["scopeflow:alias"] = node["alias"]
        doc["entity"][_qn(rid)] = entity
        if node.get("owner"):
            agent = f"user:{node['owner']}"
            doc["agent"][agent] = {"prov:type": "prov:Person", "prov:label": node["owner"]}
            attributed[f"_:attr{len(attributed) + 1}"] = {"prov:entity": _qn(rid), "prov:agent": agent}
    derived: dict[str, Any] = {}
    members: dict[str, Any] = {}
    for edge in lineage["edges"]:
        subject, obj = _qn(edge["subject"]), _qn(edge["object"])
        if edge["kind"] == "comp":
            members[f"_:mem{len(members) + 1}"] = {"prov:collection": obj, "prov:entity": subject}
            doc["entity"][obj].setdefault("prov:type", "prov:Collection")
        else:
            rel: dict[str, Any] = {"prov:generatedEntity": subject, "prov:usedEntity": obj}
            if edge["kind"] == "ver":
                rel["prov:type"] = "prov:Revision"
            derived[f"_:der{len(derived) + 1}"] = rel
    if attributed:
        doc["wasAttributedTo"] = attributed
    if derived:
        doc["wasDerivedFrom"] = derived
    if members:
        doc["hadMember"] = members
    return doc


def lineage_text(lineage: dict[str, Any]) -> str:
    """The graph as an indented tree: what the root came from, then what came from it."""
    nodes, edges, root = lineage["nodes"], lineage["edges"], lineage["root"]

    def label(rid: str) -> str:
        node = nodes.get(rid, {})
        kind = f" [{node['kind']}]" if node.get("kind") else ""
        return f"{rid}{kind} {node.get('title', '?')!r}"

    lines = [label(root)]

    def walk(rid: str, depth: int, upstream: bool, seen: set[str]) -> None:
        for e in edges:
            nxt, arrow = (
                (e["object"], f"--{e['kind']}-->") if upstream else (e["subject"], f"<--{e['kind']}--")
            )
            if (e["subject"] if upstream else e["object"]) != rid:
                continue
            cyc = " (seen above)" if nxt in seen else ""
            lines.append(f"{'    ' * depth}{arrow} {label(nxt)}{cyc}")
            if not cyc:
                walk(nxt, depth + 1, upstream, seen | {nxt})

    walk(root, 1, True, {root})
    down_start = len(lines)
    walk(root, 1, False, {root})
    if len(lines) > down_start:
        lines.insert(down_start, "  used by:")
    return "\n".join(lines)
