-- The routing decision made when a message was first fetched (see migrations/0003_routes.sql).
ALTER TABLE messages ADD COLUMN route TEXT;
