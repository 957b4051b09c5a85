"""The revocation list the resource server consults on every request (issue 6; docs/security.md "Tokens"): local
revocations count at once, another process's within the refresh interval, and expired entries are pruned."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy.engine import Engine

from fhir_server.auth import revocation
from fhir_server.auth.revocation import RevocationList, utcnow
from fhir_server.config import Settings
from fhir_server.store import oauth_store
from fhir_server.store.engine import build_engine
from fhir_server.store.migrate import upgrade
from tests.auth.smart_support import unique


@pytest.fixture(scope="module")
def engine(database_url: str) -> Iterator[Engine]:
    upgrade(database_url)
    built = build_engine(Settings(database_url=database_url, _env_file=None))
    yield built
    built.dispose()


def test_local_revocations_count_at_once(engine):
    revocations = RevocationList(engine)
    jti, sid = unique("jti"), unique("sid")
    assert not revocations.is_revoked(jti, sid)
    revocations.revoke_token(jti, time.time() + 300)
    revocations.revoke_grant(sid)
    assert revocations.is_revoked(jti, None) and revocations.is_revoked(None, sid)
    assert not revocations.is_revoked(unique("jti"), unique("sid")) and not revocations.is_revoked(None, None)


def test_another_process_sees_a_revocation_after_the_refresh_interval(engine, monkeypatch):
    here, elsewhere = RevocationList(engine), RevocationList(engine)
    sid = unique("sid")
    assert not elsewhere.is_revoked(None, sid)  # loaded once
    here.revoke_grant(sid)
    monkeypatch.setattr(revocation, "REFRESH_SECONDS", 0.0)
    assert elsewhere.is_revoked(None, sid)


def test_revoking_a_grant_kills_its_refresh_tokens(engine):
    sid, token_hash = unique("sid"), unique("hash")
    values = {"token_hash": token_hash, "sid": sid, "client_id": "c", "user_id": None, "scope": "openid"}
    times = {"issued_at": utcnow(), "expires_at": utcnow() + timedelta(days=1)}
    oauth_store.save_refresh_token(engine, {**values, **times, "context": "{}"})
    RevocationList(engine).revoke_grant(sid)
    row = oauth_store.find_refresh_token(engine, token_hash)
    assert row is not None and row["revoked"] and row["grant_revoked"]


def test_expired_revocations_are_pruned(engine):
    jti = unique("jti")
    RevocationList(engine).revoke_token(jti, time.time() - 3600)  # expired an hour ago (plus the margin)
    oauth_store.prune_expired(engine, utcnow())
    assert jti not in oauth_store.load_revocations(engine, utcnow())[0]
    assert not RevocationList(engine).is_revoked(jti, None)
