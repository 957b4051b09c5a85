"""Erasure (``$expunge``): a patient's record or one resource removed for good, what names it renamed to a
pseudonym (expunge.py; what is touched: plan.py; the names: names.py; CDS feedback: cds.py; export files:
exports.py)."""
