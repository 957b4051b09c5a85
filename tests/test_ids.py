"""Server-assigned resource ids (fhir_server/ids.py): UUID version 7, so new resources' rows land together at the
end of the indexes keyed by id."""

from __future__ import annotations

import re
import time
import uuid

from fhir_server.ids import new_id

FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")  # R4 id datatype


def test_an_id_is_a_version_7_uuid_carrying_its_creation_time() -> None:
    before = time.time_ns() // 1_000_000
    made = new_id()
    after = time.time_ns() // 1_000_000
    value = uuid.UUID(made)
    assert str(value) == made and FHIR_ID.fullmatch(made)
    assert value.version == 7 and value.variant == uuid.RFC_4122
    assert before <= value.int >> 80 <= after  # the first 48 bits: Unix time in milliseconds


def test_ids_made_later_sort_later() -> None:
    first = new_id()
    time.sleep(0.002)
    second = new_id()
    assert first < second  # as text, as index keys compare them


def test_ids_made_in_the_same_millisecond_differ_in_74_random_bits() -> None:
    made = [uuid.UUID(new_id()).int for _ in range(20_000)]
    assert len(set(made)) == len(made)
    for field, width in ((lambda v: (v >> 64) & 0xFFF, 12), (lambda v: v & ((1 << 62) - 1), 62)):  # rand_a, rand_b
        ored, anded = 0, (1 << width) - 1
        for value in made:
            ored, anded = ored | field(value), anded & field(value)
        assert ored == (1 << width) - 1 and anded == 0  # every bit of the field is set in some id, clear in another
