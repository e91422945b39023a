-- The routing decision made when a message was first fetched (JSON of route::Route: the
-- rules that matched and each target sink with its parameters). NULL for mailboxes without
-- rules. Never overwritten, so a retry routes as the first attempt did.
ALTER TABLE messages ADD COLUMN route TEXT;
