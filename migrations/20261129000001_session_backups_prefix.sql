-- A session backup remembers the key prefix it was taken under, so that a restore puts each
-- session back where it came from, and backups of two prefixes never mix.
ALTER TABLE session_backups ADD COLUMN prefix text NOT NULL DEFAULT 'sess:';
ALTER TABLE session_backups DROP CONSTRAINT session_backups_pkey;
ALTER TABLE session_backups ADD PRIMARY KEY (prefix, session_id);
