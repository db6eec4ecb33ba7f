-- Telegram delivery: who can be reached, what was sent, and the shared send-rate limiter.

CREATE TABLE telegram_chats (
    chat_id            bigint PRIMARY KEY,
    -- Set when Telegram answers 403 (bot blocked, user deactivated, kicked): sends stop.
    unreachable_at     timestamptz,
    unreachable_reason text
);

-- One row per notification job's logical key: a re-run finds it and does not send again.
CREATE TABLE telegram_deliveries (
    logical_key text        PRIMARY KEY,
    chat_id     bigint      NOT NULL,
    status      text        NOT NULL,
    message_id  bigint,
    job_id      bigint      NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT telegram_deliveries_status_known CHECK (status IN ('sent', 'unreachable'))
);

-- Send slots shared by every worker process: the row 'global' paces all sends, one row per chat
-- paces that chat. next_at is the earliest time the next send may go out.
CREATE TABLE telegram_send_slots (
    key     text        PRIMARY KEY,
    next_at timestamptz NOT NULL
);
INSERT INTO telegram_send_slots (key, next_at) VALUES ('global', '-infinity');

-- Reserves the earliest send time for a chat that respects both the global and the chat's pace,
-- if it is no more than max_wait away. Returns (granted, at): when granted, the caller sends at
-- `at`; when not, nothing is reserved and the caller should come back at `at`.
-- Rows are locked chat first, then global, always in that order, so callers never deadlock.
CREATE FUNCTION telegram_reserve_send(
    p_chat bigint, p_global_interval interval, p_chat_interval interval, p_max_wait interval,
    OUT granted boolean, OUT at timestamptz
) LANGUAGE plpgsql AS $$
DECLARE
    chat_key text := 'chat:' || p_chat;
    chat_next timestamptz;
    global_next timestamptz;
BEGIN
    INSERT INTO telegram_send_slots (key, next_at) VALUES (chat_key, '-infinity')
        ON CONFLICT (key) DO NOTHING;
    SELECT next_at INTO chat_next FROM telegram_send_slots WHERE key = chat_key FOR UPDATE;
    SELECT next_at INTO global_next FROM telegram_send_slots WHERE key = 'global' FOR UPDATE;
    at := greatest(clock_timestamp(), chat_next, global_next);
    granted := at <= clock_timestamp() + p_max_wait;
    IF granted THEN
        UPDATE telegram_send_slots SET next_at = at + p_chat_interval WHERE key = chat_key;
        UPDATE telegram_send_slots SET next_at = at + p_global_interval WHERE key = 'global';
    END IF;
END
$$;
