-- Postgres schema of the Mission authority (mirrors ../0001_authority.sql; times are Unix seconds).

CREATE TABLE authority_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE signing_keys (
    kid          TEXT PRIMARY KEY,
    alg          TEXT NOT NULL,
    secret       BYTEA NOT NULL,
    created_at   BIGINT NOT NULL,
    retired_at   BIGINT,
    signed_until BIGINT NOT NULL
);

CREATE TABLE missions (
    id                   TEXT PRIMARY KEY,
    issuer               TEXT NOT NULL,
    state                TEXT NOT NULL,
    version              BIGINT NOT NULL,
    intent               TEXT NOT NULL,
    authority            TEXT NOT NULL,
    intent_hash          TEXT NOT NULL,
    authority_hash       TEXT NOT NULL,
    client_id            TEXT NOT NULL,
    client_secret_sha256 BYTEA NOT NULL,
    expires_at           BIGINT NOT NULL,
    created_at           BIGINT NOT NULL,
    updated_at           BIGINT NOT NULL
);

CREATE INDEX missions_open_by_expiry ON missions (expires_at)
    WHERE state IN ('pending_approval', 'active', 'suspended');
CREATE INDEX missions_by_created ON missions (created_at);

CREATE TABLE mission_transitions (
    id         BIGSERIAL PRIMARY KEY,
    mission_id TEXT NOT NULL REFERENCES missions (id),
    from_state TEXT,
    to_state   TEXT NOT NULL,
    version    BIGINT NOT NULL,
    actor      TEXT NOT NULL,
    at         BIGINT NOT NULL,
    UNIQUE (mission_id, version)
);

-- State-event feed. `seq` comes from the one-row counter below, bumped in the event's own transaction
-- (under the write lock every replica takes), so numbers are committed in order and never reused,
-- even after pruning; `last_seq` is the highest committed one.
CREATE TABLE mission_events (
    seq        BIGINT PRIMARY KEY,
    mission_id TEXT NOT NULL,
    state      TEXT NOT NULL,
    version    BIGINT NOT NULL,
    at         BIGINT NOT NULL,
    kid        TEXT NOT NULL,
    set_jws    TEXT NOT NULL
);

CREATE INDEX mission_events_by_at ON mission_events (at);

CREATE TABLE mission_event_counter (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    last_seq BIGINT NOT NULL
);
INSERT INTO mission_event_counter (id, last_seq) VALUES (1, 0);
