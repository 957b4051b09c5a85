"""Each counting rule (reporting/definitions.py) as one SQL statement over the reporting index (``idx_report``).

A rule's statement yields the members of its population, one row each, in the same columns whatever the rule:
``subject_id``, ``program``, ``clinician``, ``month``, ``at`` (for the age band), ``code`` (for the instrument),
``den`` / ``excl`` / ``num`` (0 or 1: in the denominator, excluded from it, in the numerator) and ``value`` (the
measure observation of a continuous-variable group).  store/report_counts.py counts them per stratum.

Only the client's own rater series counts (``self``): another rater's view of the same client is another series.
A member's attribution (program, clinician, month) is that of the result, Flag or session it stands for: for a
client, of their first session (early dropout) or of their last result in the period (change from intake).
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import (
    ColumnElement,
    Float,
    Integer,
    Select,
    String,
    and_,
    case,
    cast,
    func,
    literal_column,
    null,
    or_,
    select,
)

from fhir_server.reporting.definitions import (
    ChangeFromIntake,
    EarlyDropout,
    FlagFollowedUp,
    Rule,
    ScoreMean,
    ScoreShare,
    SessionHas,
)
from fhir_server.reporting.facts import FLAG, SCORE
from fhir_server.reporting.scope import Scope, Window
from fhir_server.store.tables import idx_report

SELF = "self"
# Inline constants, not bound parameters: PostgreSQL cannot type a parameter that only a SUM() later reads
_ONE, _ZERO = literal_column("1", Integer), literal_column("0", Integer)
_NO_VALUE, _NO_CODE = cast(null(), Float), cast(null(), String)  # typed: an untyped NULL is text to PostgreSQL


def members(rule: Rule, window: Window, scope: Scope, repeated: frozenset[str] = frozenset()) -> Select:
    """``repeated``: codes written in several Observations of one response (Library.repeated_codes)."""
    if isinstance(rule, ScoreShare | ScoreMean):
        return _score_rows(rule, window, scope, once=bool(repeated & set(rule.codes)))
    builder = _BUILDERS[type(rule)]
    return builder(rule, window, scope)  # type: ignore[operator]


def _one(flag: ColumnElement) -> ColumnElement:
    return case((flag, 1), else_=0)


def _scoped(table, scope: Scope) -> list[ColumnElement]:  # type: ignore[no-untyped-def]
    found = []
    if scope.programs is not None:
        found.append(table.c.program.in_(sorted(scope.programs)))
    if scope.clinicians is not None:
        found.append(table.c.clinician.in_(sorted(scope.clinicians)))
    return found


def _scores(table, codes: tuple[str, ...] | list[str]) -> list[ColumnElement]:  # type: ignore[no-untyped-def]
    return [table.c.param == SCORE, table.c.series == SELF, table.c.code.in_(sorted(codes))]


def _score_rows(rule: ScoreShare | ScoreMean, window: Window, scope: Scope, *, once: bool) -> Select:
    """One member per rating.  ``once``: a code the scoring engine repeats in two Observations of one response (a
    WAI-SR subscale mean is a component of its subscale's Observation and of the total's) is counted once per
    client, code and instant; other codes need no grouping (and save a sort of every rating of the period)."""
    r = idx_report.alias("r")
    if isinstance(rule, ScoreMean):
        num: ColumnElement = _ONE
    elif rule.below:
        num = _one(r.c.below.is_(True))
    elif rule.atLeast is not None:
        num = _one(r.c.value >= rule.atLeast)
    else:
        num = _one(r.c.change.like(f"% {rule.change} %"))
    where = [*_scores(r, rule.codes), r.c.at >= window.start, r.c.at < window.end, *_scoped(r, scope)]
    if not once:
        columns = [r.c.subject_id, r.c.program, r.c.clinician, r.c.month, r.c.at, r.c.code]
        return select(*columns, _ONE.label("den"), _ZERO.label("excl"), num.label("num"), r.c.value).where(*where)
    return (
        select(
            r.c.subject_id,
            func.min(r.c.program).label("program"),
            func.min(r.c.clinician).label("clinician"),
            func.min(r.c.month).label("month"),
            r.c.at,
            r.c.code,
            _ONE.label("den"),
            _ZERO.label("excl"),
            func.max(num).label("num"),
            func.max(r.c.value).label("value"),
        )
        .where(*where)
        .group_by(r.c.subject_id, r.c.code, r.c.at)
    )


def _sessions(rule: SessionHas, window: Window, scope: Scope) -> Select:
    r = idx_report.alias("r")
    counted = r.c.code.in_(sorted(rule.denominator))
    if rule.orEncounter:
        counted = or_(counted, r.c.encounter.is_not(None))
    grouped = (
        select(
            r.c.subject_id,
            func.min(r.c.program).label("program"),
            func.min(r.c.clinician).label("clinician"),
            func.min(r.c.month).label("month"),
            func.min(r.c.at).label("at"),
            _NO_CODE.label("code"),
            _ONE.label("den"),
            _ZERO.label("excl"),
            func.max(_one(r.c.code.in_(sorted(rule.numerator)))).label("num"),
            _NO_VALUE.label("value"),
        )
        .where(*_scores(r, [*rule.denominator, *rule.numerator]), r.c.at >= window.start, r.c.at < window.end)
        .where(*_scoped(r, scope))
        .group_by(r.c.subject_id, r.c.session)
        .having(func.max(_one(counted)) == 1)
    )
    return grouped


def _flags(rule: FlagFollowedUp, window: Window, scope: Scope) -> Select:
    f, n, later = idx_report.alias("f"), idx_report.alias("n"), idx_report.alias("later")
    next_at = (
        select(func.min(later.c.at))
        .where(*_scores(later, rule.next), later.c.subject_id == f.c.subject_id, later.c.at > f.c.at)
        .where(later.c.series == f.c.series)
        .scalar_subquery()
    )
    raised = (
        select(
            f.c.resource_id,
            f.c.subject_id,
            f.c.program,
            f.c.clinician,
            f.c.month,
            f.c.at,
            f.c.code,
            f.c.series,
            f.c.acknowledged_at,
            next_at.label("next_at"),
        )
        .where(f.c.param == FLAG, f.c.code.in_(sorted(rule.codes)), f.c.at >= window.start, f.c.at < window.end)
        .where(f.c.series == SELF, *_scoped(f, scope))
        .offset(0)  # a fence: each Flag's next rating is looked up once, not again in every clause that names it
        .subquery("raised")
    )
    # the next result itself (its cutoff interpretation); two results at the same instant: the better one counts
    joined = and_(
        *_scores(n, rule.next),
        n.c.subject_id == raised.c.subject_id,
        n.c.series == raised.c.series,
        n.c.at == raised.c.next_at,
    )
    followed = and_(
        raised.c.acknowledged_at.is_not(None),
        raised.c.acknowledged_at <= raised.c.next_at,
        n.c.below.is_not(True),
    )
    return (
        select(
            raised.c.subject_id,
            raised.c.program,
            raised.c.clinician,
            raised.c.month,
            raised.c.at,
            raised.c.code,
            _ONE.label("den"),
            _one(raised.c.next_at.is_(None)).label("excl"),
            func.max(_one(followed)).label("num"),
            _NO_VALUE.label("value"),
        )
        .select_from(raised.outerjoin(n, joined))
        .group_by(
            raised.c.resource_id,
            raised.c.code,
            raised.c.subject_id,
            raised.c.program,
            raised.c.clinician,
            raised.c.month,
            raised.c.at,
            raised.c.next_at,
        )
    )


def _dropouts(rule: EarlyDropout, window: Window, scope: Scope) -> Select:
    r, first = idx_report.alias("r"), idx_report.alias("first")
    judged_by = window.end - timedelta(days=window.dropout_days)  # a last session before this: none in the last N days
    spans = (
        select(
            r.c.subject_id,
            func.min(r.c.at).label("first_at"),
            func.max(r.c.at).label("last_at"),
            func.count(r.c.session.distinct()).label("sessions"),
        )
        .where(*_scores(r, rule.codes), r.c.at < window.end)
        .group_by(r.c.subject_id)
        .having(and_(func.min(r.c.at) >= window.start, func.min(r.c.at) < window.end))
        .subquery("spans")
    )
    too_recent = spans.c.first_at >= judged_by
    dropped = and_(spans.c.sessions <= rule.maxSessions, spans.c.last_at < judged_by, ~too_recent)
    return (
        select(
            spans.c.subject_id,
            func.min(first.c.program).label("program"),
            func.min(first.c.clinician).label("clinician"),
            func.min(first.c.month).label("month"),
            spans.c.first_at.label("at"),
            _NO_CODE.label("code"),
            _ONE.label("den"),
            _one(too_recent).label("excl"),
            _one(dropped).label("num"),
            _NO_VALUE.label("value"),
        )
        .select_from(
            spans.join(
                first,
                and_(
                    *_scores(first, rule.codes),
                    first.c.subject_id == spans.c.subject_id,
                    first.c.at == spans.c.first_at,
                ),
            )
        )
        .where(*_scoped(first, scope))
        .group_by(spans.c.subject_id, spans.c.first_at, spans.c.last_at, spans.c.sessions)
    )


def _change(rule: ChangeFromIntake, window: Window, scope: Scope) -> Select:
    r, last, intake = idx_report.alias("r"), idx_report.alias("last"), idx_report.alias("intake")
    spans = (
        select(r.c.subject_id, r.c.code, func.min(r.c.at).label("intake_at"), func.max(r.c.at).label("last_at"))
        .where(*_scores(r, rule.codes), r.c.at < window.end)
        .group_by(r.c.subject_id, r.c.code)
        .having(and_(func.max(r.c.at) >= window.start, func.max(r.c.at) > func.min(r.c.at)))
        .subquery("spans")
    )
    num = _one(last.c.change.like(f"% {rule.change} %")) if rule.change else _ONE

    def rating(table, at):  # type: ignore[no-untyped-def]
        """The client's own rating of the span's code at ``at`` (its intake, its last)."""
        return and_(
            table.c.param == SCORE, table.c.series == SELF, table.c.subject_id == spans.c.subject_id,
            table.c.code == spans.c.code, table.c.at == at,
        )  # fmt: skip

    return (
        select(
            last.c.subject_id,
            last.c.program,
            last.c.clinician,
            last.c.month,
            last.c.at,
            last.c.code,
            _ONE.label("den"),
            _ZERO.label("excl"),
            num.label("num"),
            (last.c.value - intake.c.value).label("value"),
        )
        .select_from(spans.join(last, rating(last, spans.c.last_at)).join(intake, rating(intake, spans.c.intake_at)))
        .where(*_scoped(last, scope))
    )


_BUILDERS = {
    SessionHas: _sessions,
    FlagFollowedUp: _flags,
    EarlyDropout: _dropouts,
    ChangeFromIntake: _change,
}
