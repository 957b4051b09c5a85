"""Scoring: instrument-agnostic.  Each instrument's rules are data (questionnaires/<id>/scoring.json)."""
