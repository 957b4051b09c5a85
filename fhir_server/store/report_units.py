"""Each counting rule (reporting/definitions.py) as one SQL statement over the reporting index (``idx_report``).

A rule's statement yields the members of its population, one row each, in the same columns whatever the rule:
``subject_id``, ``program``, ``clinician``, ``month``, ``at`` (for the age band), ``code`` (for the instrument),
``den`` / ``excl`` (0 or 1: in the denominator, excluded from it), ``value`` (the measure observation of a
continuous-variable group) and one numerator column per rule counted (``num_0``, ``num_1``, …: 0 or 1).
store/report_counts.py counts them per stratum.

Rules whose populations are the same (``population``: the SRS ratings of a year for the share below the cutoff, the
40/40 ceiling and the mean) share one statement, each with its own numerator: the members are selected once.

Only the client's own rater series counts (``self``): another rater's view of the same client is another series;
a score rule may count the clinicians' series instead (its ``rater``).
A member's attribution (program, clinician, month) is that of the result, Flag or session it stands for: for a
client, of their first session (early dropout) or of their last result in the period (change from intake).

Every statement is a set operation over the period's rows (a sort or a hash), never a lookup per member: at
500,000 Observations a year holds ~50,000 Flags and ~110,000 sessions, and one index probe each cost a second
(bench/reporting.py).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    DateTime,
    Float,
    Integer,
    Select,
    String,
    and_,
    case,
    cast,
    exists,
    func,
    literal_column,
    null,
    or_,
    select,
    union_all,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from fhir_server.reporting.definitions import (
    RATERS,
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


class bytewise(FunctionElement):
    """A text column sorted by its bytes: on PostgreSQL ``COLLATE "C"``, several times cheaper to sort than the
    database's linguistic collation (ids and references have no linguistic order); SQLite's default already is."""

    inherit_cache = True
    type = String()


@compiles(bytewise)
def _bytewise(element: bytewise, compiler: Any, **kw: Any) -> str:
    return compiler.process(element.clauses, **kw)


@compiles(bytewise, "postgresql")
def _bytewise_postgresql(element: bytewise, compiler: Any, **kw: Any) -> str:
    return f'{compiler.process(element.clauses, **kw)} COLLATE "C"'


# Inline constants, not bound parameters: PostgreSQL cannot type a parameter that only a SUM() later reads
_ONE, _ZERO = literal_column("1", Integer), literal_column("0", Integer)
# typed: an untyped NULL is text to PostgreSQL
_NO_VALUE, _NO_CODE, _NO_TIME = cast(null(), Float), cast(null(), String), cast(null(), DateTime)


def numerators(count: int) -> list[str]:
    """The names of the numerator columns of a statement counting ``count`` rules."""
    return [f"num_{i}" for i in range(count)]


def population(rule: Rule, repeated: frozenset[str] = frozenset()) -> Hashable:
    """Rules with equal keys have the same members (only their numerators differ): they share one statement."""
    if isinstance(rule, ScoreShare | ScoreMean):
        return ("score", tuple(sorted(rule.codes)), bool(repeated & set(rule.codes)), rule.rater)
    if isinstance(rule, ChangeFromIntake):
        return ("change", tuple(sorted(rule.codes)))
    if isinstance(rule, SessionHas):
        return ("session", tuple(sorted(rule.denominator)), rule.orEncounter)
    return rule  # the same rule (they are immutable)


def members(rules: Sequence[Rule], window: Window, scope: Scope, repeated: frozenset[str] = frozenset()) -> Select:
    """The members of ``rules``' common population (``population``), a numerator column per rule, in order.
    ``repeated``: codes written in several Observations of one response (Library.repeated_codes)."""
    first = rules[0]
    if any(population(rule, repeated) != population(first, repeated) for rule in rules):
        raise ValueError("rules counted together must have the same population")
    if isinstance(first, ScoreShare | ScoreMean):
        return _score_rows(rules, window, scope, once=bool(repeated & set(first.codes)))  # type: ignore[arg-type]
    builder = _BUILDERS[type(first)]
    return builder(rules, window, scope)  # type: ignore[operator]


def _one(flag: ColumnElement) -> ColumnElement:
    return case((flag, 1), else_=0)


def _scoped(table, scope: Scope) -> list[ColumnElement]:  # type: ignore[no-untyped-def]
    found = []
    if scope.programs is not None:
        found.append(table.c.program.in_(sorted(scope.programs)))
    if scope.clinicians is not None:
        found.append(table.c.clinician.in_(sorted(scope.clinicians)))
    return found


def _scores(table, codes: Sequence[str], series: str = SELF) -> list[ColumnElement]:  # type: ignore[no-untyped-def]
    return [table.c.param == SCORE, table.c.series == series, table.c.code.in_(sorted(codes))]


def _attribution(table) -> list[ColumnElement]:  # type: ignore[no-untyped-def]
    """The program, clinician and month of a member made of several rows (a session, a client's first session):
    they agree, as one session is attributed once; ``min`` picks one without a GROUP BY on each."""
    return [func.min(table.c[name]).label(name) for name in ("program", "clinician", "month")]


def _labelled(nums: Sequence[ColumnElement]) -> list[ColumnElement]:
    return [num.label(name) for num, name in zip(nums, numerators(len(nums)), strict=True)]


def _score_rows(rules: Sequence[ScoreShare | ScoreMean], window: Window, scope: Scope, *, once: bool) -> Select:
    """One member per rating.  ``once``: a code the scoring engine repeats in two Observations of one response (a
    WAI-SR subscale mean is a component of its subscale's Observation and of the total's) is counted once per
    client, code and instant; other codes need no grouping (and save a sort of every rating of the period)."""
    r = idx_report.alias("r")

    def num(rule: ScoreShare | ScoreMean) -> ColumnElement:
        if isinstance(rule, ScoreMean):
            return _ONE
        if rule.below:
            return _one(r.c.below.is_(True))
        if rule.atLeast is not None:
            return _one(r.c.value >= rule.atLeast)
        return _one(r.c.change.like(f"% {rule.change} %"))

    series = RATERS[rules[0].rater]
    where = [*_scores(r, rules[0].codes, series), r.c.at >= window.start, r.c.at < window.end, *_scoped(r, scope)]
    if not once:
        columns = [r.c.subject_id, r.c.program, r.c.clinician, r.c.month, r.c.at, r.c.code]
        counted = [_ONE.label("den"), _ZERO.label("excl"), r.c.value, *_labelled([num(rule) for rule in rules])]
        return select(*columns, *counted).where(*where)
    return (
        select(
            r.c.subject_id,
            *_attribution(r),
            r.c.at,
            r.c.code,
            _ONE.label("den"),
            _ZERO.label("excl"),
            func.max(r.c.value).label("value"),
            *_labelled([func.max(num(rule)) for rule in rules]),
        )
        .where(*where)
        .group_by(r.c.subject_id, r.c.code, r.c.at)
    )


def _sessions(rules: Sequence[SessionHas], window: Window, scope: Scope) -> Select:
    r, rule = idx_report.alias("r"), rules[0]
    counted = r.c.code.in_(sorted(rule.denominator))
    if rule.orEncounter:
        counted = or_(counted, r.c.encounter.is_not(None))
    codes = {*rule.denominator, *(code for each in rules for code in each.numerator)}
    return (
        select(
            r.c.subject_id,
            *_attribution(r),
            func.min(r.c.at).label("at"),
            _NO_CODE.label("code"),
            _ONE.label("den"),
            _ZERO.label("excl"),
            _NO_VALUE.label("value"),
            *_labelled([func.max(_one(r.c.code.in_(sorted(each.numerator)))) for each in rules]),
        )
        .where(*_scores(r, sorted(codes)), r.c.at >= window.start, r.c.at < window.end)
        .where(*_scoped(r, scope))
        .group_by(r.c.subject_id, r.c.session)
        # "> 0", not "= 1": the planner guesses 1/3 of the sessions pass, not 1/200, and hashes what follows
        .having(func.max(_one(counted)) > 0)
    )


def _flags(rules: Sequence[FlagFollowedUp], window: Window, scope: Scope) -> Select:
    """Each Flag raised in the period and the client's next rating after it, found by ordering the Flags among the
    client's ratings: one sort and a window, not one lookup per Flag."""
    rule, f, r = rules[0], idx_report.alias("f"), idx_report.alias("r")
    flag_columns = (f.c.resource_id, f.c.program, f.c.clinician, f.c.month, f.c.code)
    events = union_all(
        select(
            r.c.subject_id,
            r.c.at,
            _ZERO.label("kind"),
            _one(r.c.below.is_not(True)).label("ok"),
            *(_NO_CODE.label(c.name) for c in flag_columns),
            _NO_TIME.label("acknowledged_at"),
        ).where(*_scores(r, rule.next), r.c.at >= window.start),
        select(f.c.subject_id, f.c.at, _ONE, _ZERO, *flag_columns, f.c.acknowledged_at)
        .where(f.c.param == FLAG, f.c.code.in_(sorted(rule.codes)), f.c.at >= window.start, f.c.at < window.end)
        .where(f.c.series == SELF, *_scoped(f, scope)),
    ).subquery("events")
    # Latest first, and a Flag before the ratings of its own instant (they are not "next"): the rows before a Flag
    # in this order are the ratings after it, and running minimums over them (computed once) give its next rating
    # and its next rating not below the cutoff — the same instant when the next is not below (of two ratings at
    # one instant the better one counts).
    later = {
        "partition_by": bytewise(events.c.subject_id),
        "order_by": (events.c.at.desc(), events.c.kind.desc()),
        "rows": (None, -1),
    }
    next_at = func.min(case((events.c.kind == 0, events.c.at))).over(**later)
    next_ok_at = func.min(case((and_(events.c.kind == 0, events.c.ok == 1), events.c.at))).over(**later)
    ordered = select(events, next_at.label("next_at"), next_ok_at.label("next_ok_at")).subquery("ordered")
    raised = select(ordered).where(ordered.c.kind > 0).subquery("raised")  # "> 0": planned as a third, not 1/200
    followed = and_(
        raised.c.acknowledged_at.is_not(None),
        raised.c.acknowledged_at <= raised.c.next_at,
        raised.c.next_ok_at == raised.c.next_at,
    )
    return select(
        raised.c.subject_id,
        raised.c.program,
        raised.c.clinician,
        raised.c.month,
        raised.c.at,
        raised.c.code,
        _ONE.label("den"),
        _one(raised.c.next_at.is_(None)).label("excl"),
        _NO_VALUE.label("value"),
        *_labelled([_one(followed)] * len(rules)),
    )


def _dropouts(rules: Sequence[EarlyDropout], window: Window, scope: Scope) -> Select:
    """Clients whose first session is in the period: those with a session in it and none before (a probe per
    client of the period), their sessions counted over the period's rows alone."""
    rule, r, first, earlier = rules[0], idx_report.alias("r"), idx_report.alias("first"), idx_report.alias("earlier")
    judged_by = window.end - timedelta(days=window.dropout_days)  # a last session before this: none in the last N days
    sessions = (
        select(r.c.subject_id, func.min(r.c.at).label("at"))
        .where(*_scores(r, rule.codes), r.c.at >= window.start, r.c.at < window.end)
        .group_by(r.c.subject_id, r.c.session)
        .subquery("sessions")
    )
    spans = (
        select(
            sessions.c.subject_id,
            func.min(sessions.c.at).label("first_at"),
            func.max(sessions.c.at).label("last_at"),
            func.count().label("sessions"),
        )
        .group_by(sessions.c.subject_id)
        .subquery("spans")
    )
    new = ~exists().where(
        *_scores(earlier, rule.codes), earlier.c.subject_id == spans.c.subject_id, earlier.c.at < window.start
    )
    too_recent = spans.c.first_at >= judged_by
    dropped = and_(spans.c.sessions <= rule.maxSessions, spans.c.last_at < judged_by, ~too_recent)
    return (
        select(
            spans.c.subject_id,
            *_attribution(first),
            spans.c.first_at.label("at"),
            _NO_CODE.label("code"),
            _ONE.label("den"),
            _one(too_recent).label("excl"),
            _NO_VALUE.label("value"),
            *_labelled([_one(dropped)] * len(rules)),
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
        .where(new, *_scoped(first, scope))
        .group_by(spans.c.subject_id, spans.c.first_at, spans.c.last_at, spans.c.sessions)
    )


def _change(rules: Sequence[ChangeFromIntake], window: Window, scope: Scope) -> Select:
    """Each client's last rating of a code in the period beside their intake (their first ever): the two ends of
    each client's ratings by one hashed pass, then each end read once from the index (a few thousand clients)."""
    r, last, intake = idx_report.alias("r"), idx_report.alias("last"), idx_report.alias("intake")
    spans = (
        select(r.c.subject_id, r.c.code, func.min(r.c.at).label("intake_at"), func.max(r.c.at).label("last_at"))
        .where(*_scores(r, rules[0].codes), r.c.at < window.end)
        .group_by(r.c.subject_id, r.c.code)
        .having(and_(func.max(r.c.at) >= window.start, func.max(r.c.at) > func.min(r.c.at)))
        .subquery("spans")
    )

    def rating(table, at):  # type: ignore[no-untyped-def]
        """The client's own rating of the span's code at ``at`` (its intake, its last)."""
        return and_(
            table.c.param == SCORE, table.c.series == SELF, table.c.subject_id == spans.c.subject_id,
            table.c.code == spans.c.code, table.c.at == at,
        )  # fmt: skip

    # a scalar subquery, not a join: PostgreSQL then looks the intake up by all five columns of the index
    intake_value = select(func.min(intake.c.value)).where(rating(intake, spans.c.intake_at)).scalar_subquery()

    def num(rule: ChangeFromIntake) -> ColumnElement:
        return _one(last.c.change.like(f"% {rule.change} %")) if rule.change else _ONE

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
            (last.c.value - intake_value).label("value"),
            *_labelled([num(rule) for rule in rules]),
        )
        .select_from(spans.join(last, rating(last, spans.c.last_at)))
        .where(*_scoped(last, scope))
    )


_BUILDERS = {
    SessionHas: _sessions,
    FlagFollowedUp: _flags,
    EarlyDropout: _dropouts,
    ChangeFromIntake: _change,
}
