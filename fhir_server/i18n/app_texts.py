"""Texts the form model builds in code rather than in constants (``fhir_server/smart/form_model.py``), marked here
so ``pybabel extract`` finds them; the web layer translates them when it renders a form (``form_texts.py`` in
fhir_server/web).  tests/i18n checks that these are still the texts form_model.py produces."""

from __future__ import annotations


def N_(text: str) -> str:
    """gettext's name for "mark only": Babel extracts the text; it is translated where a page shows it."""
    return text


# A boolean item's two answers (FormItem.choices)
YES, NO = N_("Yes"), N_("No")
# An answer the server could not read (read_answers: "This answer could not be used (<reason>).")
UNUSABLE = N_("This answer could not be used (%(reason)s).")
REASONS = (
    N_("not a whole number"),
    N_("outside the allowed range"),
    N_("not a number"),
    N_("not yes or no"),
    N_("not one of the answers"),
    N_("too long"),
)
# Where a response's EHR delivery stands (fhir_server/ehr/outbox.py delivery_state), on the result page and the view
DELIVERY = (N_("in the EHR"), N_("pending"), N_("failed"))
