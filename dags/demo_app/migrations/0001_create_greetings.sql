-- 0001: the greetings table.
CREATE TABLE IF NOT EXISTS greetings (
    id         serial PRIMARY KEY,
    message    text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
