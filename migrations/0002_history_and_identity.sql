-- A row we deleted, or whose UIDL was taken by another message, is history, not identity:
-- a poll loads only the rows of messages on the server and looks the rest up by UIDL when a
-- UIDL it does not hold is listed. History is pruned after the configured retention.

-- The size LIST gave the last time (RETR's size can differ, and some servers' LIST changes
-- after the first RETR): a different LIST size for a known UIDL means "fetch and compare".
ALTER TABLE messages ADD COLUMN list_size INTEGER;
-- content::Fingerprint of the message: its bytes without what servers rewrite.
ALTER TABLE messages ADD COLUMN fingerprint TEXT;
-- When the UIDL stopped being listed (NULL while listed).
ALTER TABLE messages ADD COLUMN gone_at INTEGER;
-- When another message took this row's UIDL: the row was renamed to `<uidl> <idem_key>`.
ALTER TABLE messages ADD COLUMN retired_at INTEGER;

UPDATE messages SET gone_at = CAST(strftime('%s', 'now') AS INTEGER) * 1000
 WHERE on_server = 0 AND gone_at IS NULL;

-- The rows a poll loads.
CREATE INDEX messages_listed ON messages (mailbox, uidl)
 WHERE on_server = 1 AND deleted_at IS NULL AND replaced_by IS NULL AND retired_at IS NULL;
-- Candidates for "the same message re-listed under a new UIDL".
CREATE INDEX messages_vanished ON messages (mailbox, fingerprint)
 WHERE on_server = 0 AND deleted_at IS NULL AND replaced_by IS NULL AND retired_at IS NULL;
-- Pruning.
CREATE INDEX messages_history ON messages (mailbox, COALESCE(deleted_at, retired_at, gone_at))
 WHERE on_server = 0;

-- A message whose RETR broke the connection, by UIDL: after `max_retrieval_failures` it is a
-- dead letter (status 'dead'), skipped so the rest of the mailbox and its deletions go on.
CREATE TABLE retrieval_failures (
    mailbox    TEXT    NOT NULL,
    uidl       TEXT    NOT NULL,
    failures   INTEGER NOT NULL,
    last_error TEXT    NOT NULL,
    last_at    INTEGER NOT NULL,
    status     TEXT    NOT NULL CHECK (status IN ('failing', 'dead', 'dropped')),
    PRIMARY KEY (mailbox, uidl)
);
