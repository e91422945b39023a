-- The PostgreSQL state: the same rows as the SQLite schema (migrations/), plus mailbox leases
-- and the replicas that hold them. Times of messages are Unix milliseconds (UTC); lease times
-- are the database's clock, so replicas' clocks do not matter.

CREATE TABLE messages (
    mailbox       TEXT    NOT NULL,
    uidl          TEXT    NOT NULL,
    idem_key      TEXT    NOT NULL,
    size          BIGINT,
    sha256        TEXT,
    first_seen_at BIGINT  NOT NULL,
    fetched_at    BIGINT,
    on_server     BOOLEAN NOT NULL DEFAULT TRUE,
    deleted_at    BIGINT,
    replaced_by   TEXT,
    list_size     BIGINT,
    fingerprint   TEXT,
    gone_at       BIGINT,
    retired_at    BIGINT,
    PRIMARY KEY (mailbox, uidl)
);

CREATE INDEX messages_listed ON messages (mailbox, uidl)
 WHERE on_server AND deleted_at IS NULL AND replaced_by IS NULL AND retired_at IS NULL;
CREATE INDEX messages_vanished ON messages (mailbox, fingerprint)
 WHERE NOT on_server AND deleted_at IS NULL AND replaced_by IS NULL AND retired_at IS NULL;
CREATE INDEX messages_by_content ON messages (mailbox, sha256, size);
CREATE INDEX messages_history ON messages (mailbox, COALESCE(deleted_at, retired_at, gone_at))
 WHERE NOT on_server;

CREATE TABLE deliveries (
    mailbox          TEXT   NOT NULL,
    uidl             TEXT   NOT NULL,
    sink             TEXT   NOT NULL,
    status           TEXT   NOT NULL CHECK (status IN ('pending', 'delivered', 'dead', 'dropped')),
    attempts         BIGINT NOT NULL DEFAULT 0,
    first_attempt_at BIGINT,
    last_attempt_at  BIGINT,
    next_attempt_at  BIGINT,
    last_error       TEXT,
    receipt          TEXT,
    delivered_at     BIGINT,
    PRIMARY KEY (mailbox, uidl, sink),
    FOREIGN KEY (mailbox, uidl) REFERENCES messages (mailbox, uidl) ON DELETE CASCADE
);

CREATE INDEX deliveries_by_status ON deliveries (status, mailbox);

CREATE TABLE retrieval_failures (
    mailbox    TEXT   NOT NULL,
    uidl       TEXT   NOT NULL,
    failures   BIGINT NOT NULL,
    last_error TEXT   NOT NULL,
    last_at    BIGINT NOT NULL,
    status     TEXT   NOT NULL CHECK (status IN ('failing', 'dead', 'dropped')),
    PRIMARY KEY (mailbox, uidl)
);

-- Who polls a mailbox. `epoch` grows on every claim and `claim_id` is new on every claim:
-- every state write of the mailbox checks both (FOR SHARE) in its own transaction, so a
-- replica that lost the lease (paused, partitioned) can never commit.
CREATE TABLE mailbox_lease (
    mailbox      TEXT   PRIMARY KEY,
    owner        TEXT,
    epoch        BIGINT NOT NULL DEFAULT 0,
    claim_id     TEXT,
    expires_at   TIMESTAMPTZ,
    next_poll_at BIGINT,
    last_poll_at BIGINT
);

-- Live replicas (heartbeats), for each one's fair share of the mailboxes.
CREATE TABLE replica (
    id           TEXT        PRIMARY KEY,
    started_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    heartbeat_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
