-- Reference Mission authority: missions, their audit trail, the state-event feed and signing keys.
-- Times are Unix seconds. JSON columns hold documents exactly as validated at creation.

CREATE TABLE authority_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;

-- ES256 signing keys. `retired_at IS NULL` marks the one current key. A key is published in the JWKS
-- while it is current or while `signed_until` (a lease that covers the expiry of everything it signed)
-- is in the future.
CREATE TABLE signing_keys (
    kid          TEXT PRIMARY KEY,
    alg          TEXT NOT NULL,
    secret       BLOB NOT NULL,
    created_at   INTEGER NOT NULL,
    retired_at   INTEGER,
    signed_until INTEGER NOT NULL
) STRICT;

CREATE TABLE missions (
    id                   TEXT PRIMARY KEY,
    issuer               TEXT NOT NULL,
    state                TEXT NOT NULL,
    version              INTEGER NOT NULL,
    intent               TEXT NOT NULL,
    authority            TEXT NOT NULL,
    intent_hash          TEXT NOT NULL,
    authority_hash       TEXT NOT NULL,
    client_id            TEXT NOT NULL,
    client_secret_sha256 BLOB NOT NULL,
    expires_at           INTEGER NOT NULL,
    created_at           INTEGER NOT NULL,
    updated_at           INTEGER NOT NULL
) STRICT;

CREATE INDEX missions_open_by_expiry ON missions (expires_at)
    WHERE state IN ('pending_approval', 'active', 'suspended');
CREATE INDEX missions_by_created ON missions (created_at);

-- Audit trail: one row per transition, including creation (from_state NULL).
CREATE TABLE mission_transitions (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    mission_id TEXT NOT NULL REFERENCES missions (id),
    from_state TEXT,
    to_state   TEXT NOT NULL,
    version    INTEGER NOT NULL,
    actor      TEXT NOT NULL,
    at         INTEGER NOT NULL,
    UNIQUE (mission_id, version)
) STRICT;

-- State-event feed. AUTOINCREMENT: a sequence number is never reused, even after pruning.
CREATE TABLE mission_events (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    mission_id TEXT NOT NULL,
    state      TEXT NOT NULL,
    version    INTEGER NOT NULL,
    at         INTEGER NOT NULL,
    kid        TEXT NOT NULL,
    set_jws    TEXT NOT NULL
) STRICT;

CREATE INDEX mission_events_by_at ON mission_events (at);
