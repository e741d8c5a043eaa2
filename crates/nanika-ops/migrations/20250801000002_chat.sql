-- Chat rooms and their messages. Deleting a room deletes its messages; deleting a user keeps
-- their messages, without an author.
CREATE TABLE chat_rooms (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name       text        NOT NULL UNIQUE,
    created_by bigint      REFERENCES users (id) ON DELETE SET NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT chat_rooms_name_not_blank CHECK (length(btrim(name)) > 0 AND length(name) <= 64)
);

CREATE TABLE chat_messages (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    room_id    bigint      NOT NULL REFERENCES chat_rooms (id) ON DELETE CASCADE,
    author_id  bigint      REFERENCES users (id) ON DELETE SET NULL,
    body       text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT chat_messages_body_length CHECK (length(btrim(body)) > 0 AND length(body) <= 4000)
);

-- The latest messages of a room, newest first.
CREATE INDEX chat_messages_room_latest ON chat_messages (room_id, created_at DESC, id DESC);
-- The messages of a user.
CREATE INDEX chat_messages_author ON chat_messages (author_id, created_at DESC);
