-- One row per message a mailbox has listed; one row per (message, sink) delivery.
-- Times are Unix milliseconds (UTC).

CREATE TABLE messages (
    mailbox       TEXT    NOT NULL,
    uidl          TEXT    NOT NULL,
    -- Usually derived from (mailbox, uidl); kept because a message re-listed under a new UIDL
    -- (server lost its UIDL state) keeps the key it was first delivered with.
    idem_key      TEXT    NOT NULL,
    size          INTEGER,
    sha256        TEXT,
    first_seen_at INTEGER NOT NULL,
    fetched_at    INTEGER,
    -- 1 while the last listing contained the UIDL.
    on_server     INTEGER NOT NULL DEFAULT 1,
    -- Set once QUIT answered +OK after our DELE: the server has removed it.
    deleted_at    INTEGER,
    -- Set when a later UIDL with the same content took this message's place.
    replaced_by   TEXT,
    PRIMARY KEY (mailbox, uidl)
);

CREATE INDEX messages_by_content ON messages (mailbox, sha256, size);

CREATE TABLE deliveries (
    mailbox          TEXT    NOT NULL,
    uidl             TEXT    NOT NULL,
    sink             TEXT    NOT NULL,
    status           TEXT    NOT NULL CHECK (status IN ('pending', 'delivered', 'dead', 'dropped')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    first_attempt_at INTEGER,
    last_attempt_at  INTEGER,
    next_attempt_at  INTEGER,
    last_error       TEXT,
    -- JSON of sink::Receipt once delivered.
    receipt          TEXT,
    delivered_at     INTEGER,
    PRIMARY KEY (mailbox, uidl, sink),
    FOREIGN KEY (mailbox, uidl) REFERENCES messages (mailbox, uidl) ON DELETE CASCADE
);

CREATE INDEX deliveries_by_status ON deliveries (status, mailbox);
