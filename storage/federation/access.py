"""Who may do what: permission levels, their inheritance, and the SQL filters they become.

Levels: 1 read, 2 write, 3 admin (each implies the lower). A user holds a level on an item as
the highest of: ownership (admin), a store admin account (admin), a grant on the item, a grant
or membership on its project, and a grant on any collection that holds it, or any ancestor of
such a collection. What a collection passes on to a record is capped by the link
(``CollectionItem.max_level``): a link made by someone without admin on the record passes
nothing on, so read on a record never becomes more through a collection the reader owns.
The same computed ``Grants`` yields both single-item checks and the WHERE
clause of search, so the two cannot disagree.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Integer,
    Select,
    and_,
    cast,
    false,
    literal,
    null,
    or_,
    select,
    true,
    union_all,
)
from sqlalchemy.orm import Session

from scopeflow.errors import InputError
from storage.federation.models import (
    Collection,
    CollectionItem,
    Grant,
    MetadataEntry,
    Project,
    ProjectMember,
    Record,
)


class Level(IntEnum):
    """Permission levels; comparisons work (``Level.WRITE >= Level.READ``)."""

    NONE = 0
    READ = 1
    WRITE = 2
    ADMIN = 3

    @classmethod
    def parse(cls, text: str | int) -> Level:
        """``"read"``/``"write"``/``"admin"`` (or 1-3) to a Level; InputError otherwise."""
        if isinstance(text, int) and 1 <= text <= 3:
            return cls(text)
        try:
            level = cls[str(text).upper()]
        except KeyError:
            raise InputError(f"unknown permission {text!r}: use read, write or admin") from None
        if level is cls.NONE:
            raise InputError("permission 'none' cannot be granted; revoke instead")
        return level


@dataclass(frozen=True)
class Principal:
    """The authenticated caller."""

    user_id: int
    name: str
    is_admin: bool = False


@dataclass(frozen=True)
class Route:
    """One way to hold a level on records, three ways to ask it."""

    #: A condition on ``Record``.
    condition: ColumnElement[bool]
    #: The record ids it admits, from an index.
    ids: Select[Any]
    #: The same as a condition on a ``MetadataEntry`` (an alias of it), from the record's
    #: owner or project copied into each index row; None for grants and links (``holders``).
    on_entry: Callable[[type[MetadataEntry]], ColumnElement[bool]] | None = None
    #: For a grant or a collection link: the holders whose copies of the records' index rows
    #: (``SharedEntry``, at ``level`` or above) are exactly the records it admits.
    holders: tuple[int, ...] = ()
    level: int = 0


@dataclass
class Grants:
    """The levels one principal holds, computed once per request."""

    principal: Principal
    projects: dict[int, int] = field(default_factory=dict)
    collections: dict[int, int] = field(default_factory=dict)

    def record_filter(self, level: Level) -> ColumnElement[bool]:
        """A condition on ``Record`` true for the records the principal holds ``level`` on."""
        routes = self.routes(level)
        return true() if routes is None else or_(*(route.condition for route in routes))

    def routes(self, level: Level) -> list[Route] | None:
        """Each way to hold ``level`` on a record (None: every record, for an admin). One
        list, so the filter, the id sets and the metadata-index scopes cannot disagree."""
        p = self.principal
        if p.is_admin:
            return None
        mine = Record.owner_id == p.user_id
        uid = p.user_id
        routes = [Route(mine, select(Record.id).where(mine), lambda e: e.owner_id == uid)]
        projects = [pid for pid, lvl in self.projects.items() if lvl >= level]
        if projects:
            member = Record.project_id.in_(projects)
            routes.append(
                Route(member, select(Record.id).where(member), lambda e: e.project_id.in_(projects))
            )
        # Grants to the user and grants to everyone (user NULL): two ranges of one index.
        # Their holders in the shared metadata index: the user's id, 0 (``shared_index``).
        for grantee, holder in ((Grant.user_id == p.user_id, p.user_id), (Grant.user_id.is_(None), 0)):
            direct = select(Grant.target_id).where(
                grantee, Grant.target_kind == "d", Grant.level >= int(level)
            )
            routes.append(Route(Record.id.in_(direct), direct, holders=(holder,), level=int(level)))
        collections = [cid for cid, lvl in self.collections.items() if lvl >= level]
        if collections:
            held = select(CollectionItem.record_id).where(
                and_(CollectionItem.collection_id.in_(collections), CollectionItem.max_level >= int(level))
            )
            links = tuple(-cid for cid in collections)
            routes.append(Route(Record.id.in_(held), held, holders=links, level=int(level)))
        return routes

    def collection_filter(self, level: Level) -> ColumnElement[bool]:
        """A condition on ``Collection`` true for the collections held at ``level`` or above."""
        if self.principal.is_admin:
            return true()
        ids = [cid for cid, lvl in self.collections.items() if lvl >= level]
        return Collection.id.in_(ids) if ids else false()

    def record_level(self, session: Session, record: Record) -> Level:
        """The level held on one record."""
        p = self.principal
        if p.is_admin or record.owner_id == p.user_id:
            return Level.ADMIN
        best = self.projects.get(record.project_id, 0) if record.project_id else 0
        direct = session.scalar(
            select(Grant.level)
            .where(
                Grant.target_kind == "d",
                Grant.target_id == record.id,
                or_(Grant.user_id == p.user_id, Grant.user_id.is_(None)),
            )
            .order_by(Grant.level.desc())
            .limit(1)
        )
        best = max(best, direct or 0)
        if best < Level.ADMIN:
            best = max(best, self.linked_level(session, record))
        return Level(best)

    def linked_level(self, session: Session, record: Record) -> int:
        """The best level reached through collections, each capped by its link."""
        if not self.collections:
            return 0
        links = session.execute(
            select(CollectionItem.collection_id, CollectionItem.max_level).where(
                CollectionItem.record_id == record.id
            )
        )
        return max([0, *(min(self.collections.get(cid, 0), cap) for cid, cap in links)])

    def collection_level(self, collection: Collection) -> Level:
        """The level held on one collection."""
        if self.principal.is_admin:
            return Level.ADMIN
        return Level(self.collections.get(collection.id, 0))

    def project_level(self, project: Project) -> Level:
        """The level held on one project."""
        if self.principal.is_admin or project.owner_id == self.principal.user_id:
            return Level.ADMIN
        return Level(self.projects.get(project.id, 0))


def compute_grants(session: Session, principal: Principal) -> Grants:
    """Collect the principal's project and collection levels, inheritance applied."""
    grants = Grants(principal)
    if principal.is_admin:
        return grants
    uid = principal.user_id
    mine_or_public = or_(Grant.user_id == uid, Grant.user_id.is_(None))
    # One statement for the five sources (a round trip each cost more than reading them,
    # every request of a restricted user pays it); rows tagged by source.
    void = cast(null(), Integer)
    sources = union_all(
        select(literal("m"), ProjectMember.project_id, ProjectMember.level, void, void).where(
            ProjectMember.user_id == uid
        ),
        select(literal("o"), Project.id, literal(int(Level.ADMIN)), void, void).where(
            Project.owner_id == uid
        ),
        select(literal("p"), Grant.target_id, Grant.level, void, void).where(
            Grant.target_kind == "p", mine_or_public
        ),
        select(literal("c"), Grant.target_id, Grant.level, void, void).where(
            Grant.target_kind == "c", mine_or_public
        ),
        select(literal("C"), Collection.id, Collection.parent_id, Collection.owner_id, Collection.project_id),
    )
    rows: dict[str, list[Any]] = {tag: [] for tag in "mopcC"}
    for tag, *values in session.execute(sources):
        rows[tag].append(values)
    # Memberships, then ownership (admin), then grants on projects: as the levels combine.
    for pid, level, _, _ in rows["m"] + rows["o"] + rows["p"]:
        grants.projects[pid] = max(grants.projects.get(pid, 0), level)

    own: dict[int, int] = {}
    for cid, level, _, _ in rows["c"]:
        own[cid] = max(own.get(cid, 0), level)
    children: dict[int | None, list[int]] = {}
    for cid, parent, owner, project in rows["C"]:
        children.setdefault(parent, []).append(cid)
        level = own.get(cid, 0)
        if owner == uid:
            level = int(Level.ADMIN)
        if project is not None:
            level = max(level, grants.projects.get(project, 0))
        if level:
            own[cid] = level
    # Push levels down the tree: a sub-collection inherits the best level of its ancestors.
    stack = [(cid, 0) for cid in children.get(None, [])]
    while stack:
        cid, inherited = stack.pop()
        level = max(inherited, own.get(cid, 0))
        if level:
            grants.collections[cid] = level
        stack.extend((child, level) for child in children.get(cid, []))
    return grants
