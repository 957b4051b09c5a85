"""What a QuestionnaireResponse to a scored measure needs beyond the Questionnaire's own rules.

Scoring runs in the write transaction, after the response is stored: whatever it cannot do must be refused here,
before anything is written.  A scored response's Observations and Flags are about its subject and the rules read
the subject's earlier sessions, so it needs a ``subject`` reference (without one, a raised Flag had nothing to
point at: a 500).  And a completed response must be scorable: one whose scores would come out empty (an answer the
rules cannot read) would otherwise be stored as ``completed`` with no Observation, Flag or Provenance.
"""

from __future__ import annotations

from typing import Any

from fhir_server.errors import Issue
from fhir_server.scoring.rules import ScoringRules
from fhir_server.scoring.scores import answers_by_link_id, compute_scores, item_value, ordinal_values

SCORED_STATUSES = ("completed", "amended")
SUBJECT = "QuestionnaireResponse.subject"


def subject_issues(response: dict[str, Any], questionnaire: dict[str, Any]) -> list[Issue]:
    subject = response.get("subject")
    reference = subject.get("reference") if isinstance(subject, dict) else None
    if not isinstance(reference, str) or not reference:
        return [
            Issue(
                "required",
                f"{SUBJECT}: a response to a scored measure needs a subject reference (its scores and Flags are "
                "about that person, and the rules compare with their earlier sessions)",
                expression=[SUBJECT],
            )
        ]
    if reference.startswith(("#", "urn:")):
        # Copied into the Observations and Flags, a contained (#id) or Bundle-local (urn:) reference would point at
        # nothing there.
        return [
            Issue(
                "value",
                f"{SUBJECT}: the subject of a scored measure is a resource reference (Type/id or a URL), not "
                f"'{reference[:64]}': its scores and Flags refer to it",
                expression=[f"{SUBJECT}.reference"],
            )
        ]
    wanted = questionnaire.get("subjectType") or []
    kind = reference.split("/", 1)[0] if "/" in reference and ":" not in reference else None
    if kind is not None and wanted and kind not in wanted:
        return [
            Issue(
                "value",
                f"{SUBJECT}: the Questionnaire is about {' or '.join(wanted)}, not {kind[:64]}",
                expression=[f"{SUBJECT}.reference"],
            )
        ]
    return []


def unscorable_issues(
    response: dict[str, Any], questionnaire: dict[str, Any], rules: ScoringRules, paths: dict[str, str]
) -> list[Issue]:
    """Issues naming each scored item the rules cannot read, when a completed response would go unscored."""
    if response.get("status") not in SCORED_STATUSES:
        return []
    scores = compute_scores(rules, response, questionnaire)
    empty = [score for score in rules.scores if scores.get(score.id) is None]
    if not empty:
        return []
    needed = {link_id for score in empty for link_id in score.items}
    answers = answers_by_link_id(response)
    ordinals = ordinal_values(questionnaire)
    issues = []
    for rule in rules.itemScores:
        if rule.linkId not in needed or item_value(rule, answers.get(rule.linkId, []), ordinals) is not None:
            continue
        path = paths.get(rule.linkId, f"QuestionnaireResponse.item.where(linkId='{rule.linkId}')")
        if answers.get(rule.linkId):
            issues.append(Issue("value", f"{path}: the scoring rules cannot read this answer", expression=[path]))
        else:
            issues.append(Issue("required", f"{path}: '{rule.linkId}' is needed for the score", expression=[path]))
    if not issues:  # a score over an item without an item rule: a library fault, but never store unscored
        names = ", ".join(score.id for score in empty)
        issues.append(
            Issue("invariant", f"QuestionnaireResponse: the scores {names} cannot be computed from this response")
        )
    return issues
