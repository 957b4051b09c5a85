"""_include and _revinclude (with :iterate): the resources a page refers to, or that refer to it.

Bounded: iterate follows at most MAX_ROUNDS hops and the whole include set is capped at MAX_INCLUDED resources.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, false, or_, select
from sqlalchemy.engine import Connection

from fhir_server.canonical import version_key
from fhir_server.search.query import Include
from fhir_server.store.records import Stored
from fhir_server.store.tables import idx_reference, idx_token, idx_uri, resources

MAX_ROUNDS = 4
MAX_INCLUDED = 1000


def run_includes(conn: Connection, includes: list[Include], page: list[Stored]) -> tuple[list[Stored], bool]:
    """(included resources not already in the page, whether the cap cut the set short)."""
    seen = {(s.resource_type, s.id) for s in page}
    included: list[Stored] = []
    frontier = page
    for round_number in range(MAX_ROUNDS):
        active = [inc for inc in includes if round_number == 0 or inc.iterate]
        if not active or not frontier:
            break
        keys: list[tuple[str, str]] = []
        for inc in active:
            keys.extend(_follow(conn, inc, frontier))
        new_keys = list(dict.fromkeys(k for k in keys if k not in seen))
        if len(included) + len(new_keys) > MAX_INCLUDED:
            new_keys = new_keys[: MAX_INCLUDED - len(included)]
            included.extend(_load(conn, new_keys))
            return included, True
        frontier = _load(conn, new_keys)
        seen.update(new_keys)
        included.extend(frontier)
    return included, False


def _follow(conn: Connection, inc: Include, frontier: list[Stored]) -> list[tuple[str, str]]:
    ref = idx_reference.c
    if not inc.reverse:
        sources = [s for s in frontier if inc.source_type in ("*", s.resource_type)]
        if not sources:
            return []
        conditions = [_rows_of(ref.resource_type, ref.resource_id, sources), ref.target_id.is_not(None)]
        if inc.param is not None:
            conditions.append(ref.param == inc.param.code)
        if inc.target_type:
            conditions.append(ref.target_type == inc.target_type)
        query = select(ref.target_type, ref.target_id).where(*conditions)
        found = [(row[0], row[1]) for row in conn.execute(query.limit(MAX_INCLUDED + 1))]
        return found + _canonical_targets(conn, inc, sources)
    else:
        targets = frontier if inc.target_type is None else [s for s in frontier if s.resource_type == inc.target_type]
        if not targets:
            return []
        conditions = [_rows_of(ref.target_type, ref.target_id, targets)]
        if inc.source_type != "*":
            conditions.append(ref.resource_type == inc.source_type)
        if inc.param is not None:
            conditions.append(ref.param == inc.param.code)
        query = select(ref.resource_type, ref.resource_id).where(*conditions)
        found = [(row[0], row[1]) for row in conn.execute(query.limit(MAX_INCLUDED + 1))]
        return found + _canonical_sources(conn, inc, targets)
    return [(row[0], row[1]) for row in conn.execute(query.limit(MAX_INCLUDED + 1))]


def _canonical_targets(conn: Connection, inc: Include, sources: list[Stored]) -> list[tuple[str, str]]:
    """The resources a page's canonical references name (``QuestionnaireResponse:questionnaire``): by ``url``, and
    by ``version`` when the reference has one, else the newest version held."""
    if inc.param is None or inc.param.type != "reference":
        return []
    types = [inc.target_type] if inc.target_type else list(inc.param.targets)
    ref = idx_reference.c
    named = conn.execute(
        select(ref.url, ref.version)
        .where(
            _rows_of(ref.resource_type, ref.resource_id, sources),
            ref.param == inc.param.code,
            ref.target_id.is_(None),
            ref.url.is_not(None),
        )
        .distinct()
        .limit(MAX_INCLUDED + 1)
    ).all()
    if not named or not types:
        return []
    canonicals, uri, version = _urls_and_versions()
    found: list[tuple[str, str]] = []
    for url, wanted in named:
        query = (
            select(uri.resource_type, uri.resource_id, version.code)
            .select_from(canonicals)
            .where(uri.param == "url", uri.value == url, uri.resource_type.in_(types))
        )
        if wanted:
            query = query.where(version.code == wanted)
        rows = conn.execute(query.limit(MAX_INCLUDED + 1)).all()
        if rows and not wanted:  # a canonical without a version means the newest one held
            rows = [max(rows, key=lambda r: version_key(r[2] or ""))]
        found.extend((row[0], row[1]) for row in rows)
    return found


def _canonical_sources(conn: Connection, inc: Include, targets: list[Stored]) -> list[tuple[str, str]]:
    """``_revinclude`` over canonical references: what names a page's canonical resources by ``url|version``, or by
    ``url`` alone when it is the newest version held (what a bare ``url`` means, as ``_include`` reads it)."""
    if inc.param is not None and inc.param.type != "reference":
        return []
    canonicals, uri, version = _urls_and_versions()
    named = conn.execute(
        select(uri.value, version.code)
        .select_from(canonicals)
        .where(_rows_of(uri.resource_type, uri.resource_id, targets), uri.param == "url")
        .limit(MAX_INCLUDED + 1)
    ).all()
    if not named:
        return []
    newest = _newest_versions(conn, {url for url, _ in named})
    ref = idx_reference.c
    by_url = []
    for url, held_version in named:
        if not held_version:
            by_url.append(ref.url == url)
            continue
        versionless = ref.version.is_(None) if held_version == newest.get(url) else false()  # the newest only
        by_url.append(and_(ref.url == url, or_(ref.version == held_version, versionless)))
    conditions = [ref.target_id.is_(None), or_(*by_url)]
    if inc.source_type != "*":
        conditions.append(ref.resource_type == inc.source_type)
    if inc.param is not None:
        conditions.append(ref.param == inc.param.code)
    query = select(ref.resource_type, ref.resource_id).where(*conditions).limit(MAX_INCLUDED + 1)
    return [(row[0], row[1]) for row in conn.execute(query)]


def _urls_and_versions() -> tuple[Any, Any, Any]:
    """Canonical resources' ``url`` index rows, each beside its resource's ``version`` token (none if unversioned):
    (the join, the url columns, the version columns)."""
    tokens = idx_token.alias("canonical_version")
    uri, version = idx_uri.c, tokens.c
    held = and_(version.resource_type == uri.resource_type, version.resource_id == uri.resource_id,
                version.param == "version")  # fmt: skip
    return idx_uri.outerjoin(tokens, held), uri, version


def _newest_versions(conn: Connection, urls: set[str]) -> dict[str, str]:
    canonicals, uri, version = _urls_and_versions()
    rows = conn.execute(
        select(uri.value, version.code)
        .select_from(canonicals)
        .where(uri.param == "url", uri.value.in_(urls), version.code.is_not(None))
        .limit(MAX_INCLUDED + 1)
    ).all()
    newest: dict[str, str] = {}
    for url, code in rows:
        if url not in newest or version_key(code) > version_key(newest[url]):
            newest[url] = code
    return newest


def _rows_of(type_column, id_column, stored: list[Stored]):  # type: ignore[no-untyped-def]
    by_type: dict[str, list[str]] = {}
    for s in stored:
        by_type.setdefault(s.resource_type, []).append(s.id)
    return or_(*(and_(type_column == t, id_column.in_(ids)) for t, ids in by_type.items()))


def _load(conn: Connection, keys: list[tuple[str, str]]) -> list[Stored]:
    if not keys:
        return []
    r = resources.c
    rows = conn.execute(
        select(r.resource_type, r.id, r.version_id, r.last_updated, r.deleted, r.content).where(
            _rows_of(r.resource_type, r.id, [Stored(t, i, 0, None, False, None) for t, i in keys]),  # type: ignore[arg-type]
            r.deleted.is_(False),
        )
    ).all()
    found = {(row.resource_type, row.id): row for row in rows}
    return [
        Stored(row.resource_type, row.id, row.version_id, row.last_updated, row.deleted, row.content)
        for key in keys
        if (row := found.get(key)) is not None
    ]
