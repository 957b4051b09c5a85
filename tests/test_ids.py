"""Server-assigned resource ids (fhir_server/ids.py): UUID version 7, so new resources' rows land together at the
end of the indexes keyed by id."""

from __future__ import annotations

import itertools
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


def test_consecutive_ids_are_strictly_increasing_as_text() -> None:
    # 100,000 ids span only a few dozen milliseconds: most are made within the same millisecond as another
    made = [new_id() for _ in range(100_000)]
    out_of_order = sum(1 for before, after in itertools.pairwise(made) if after <= before)
    assert out_of_order == 0


def test_ids_made_in_the_same_millisecond_carry_random_bits() -> None:
    # rand_a and the top 30 bits of rand_b are a counter seeded at random each millisecond; the low 32 bits of
    # rand_b are random in every id
    made = [uuid.UUID(new_id()).int for _ in range(20_000)]
    assert len(set(made)) == len(made)
    ored, anded = 0, (1 << 32) - 1
    for value in made:
        ored, anded = ored | (value & 0xFFFFFFFF), anded & (value & 0xFFFFFFFF)
    assert ored == (1 << 32) - 1 and anded == 0  # every random bit is set in some id, clear in another
    first_of_each_millisecond = {}
    for value in made:
        first_of_each_millisecond.setdefault(value >> 80, value)
    counters = {
        ((value >> 64) & 0xFFF) << 30 | (value >> 32) & ((1 << 30) - 1) for value in first_of_each_millisecond.values()
    }
    assert len(counters) == len(first_of_each_millisecond)  # each millisecond's counter starts somewhere new
