-- Copies of the Redis session store, so sessions survive the loss of Redis. `payload` is the value
-- exactly as Redis held it; `data` is the same value as JSON, for queries.
CREATE TABLE session_backups (
    session_id   text        PRIMARY KEY,
    user_id      bigint      REFERENCES users (id) ON DELETE CASCADE,
    payload      text        NOT NULL,
    data         jsonb       NOT NULL,
    expires_at   timestamptz NOT NULL,
    backed_up_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT session_backups_id_not_blank CHECK (length(session_id) > 0)
);

CREATE INDEX session_backups_expires_at ON session_backups (expires_at);
CREATE INDEX session_backups_user ON session_backups (user_id);
