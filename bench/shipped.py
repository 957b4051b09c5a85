"""A measure's canonical (``url|version``) as the tree being measured ships it: an A/B run copies these scripts into
an older checkout, whose measures may have another version (1.0.0 before 1.0.1), and its responses must name it."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@cache
def canonical(instrument: str) -> str:
    questionnaire = json.loads((ROOT / "questionnaires" / instrument / "questionnaire.json").read_text())
    return f"{questionnaire['url']}|{questionnaire['version']}"
