-- Promo campaigns: what they send (promos, in rotation), to whom (audiences), when (schedules);
-- their broadcasts, one row per recipient; clicks attributed to broadcasts; conversions.

-- The bot's audience: a private chat is in it once its user has written to the bot (or signed in
-- to the Mini App allowing messages). Rows made only by a 403 stay out (first_seen_at NULL).
-- last_seen_at: the latest time its user wrote to the bot (or restarted it), so that a block
-- reported out of order does not outlive a later message.
ALTER TABLE telegram_chats ADD COLUMN first_seen_at timestamptz, ADD COLUMN last_seen_at timestamptz;

-- Users known before this migration join it as of the first thing we know of them: a stored
-- message in their private chat (updates are kept JOB_RETENTION_HOURS), a Stars payment, a Mini
-- App sign-in allowing messages, a message delivered to them, a promo click. A block recorded
-- before their latest stored message is lifted, as a live message lifts it.
WITH seen (chat_id, at, wrote) AS (
    -- (PostgreSQL's JSON functions refuse a \u0000 escape, which JSON allows: such rare rows
    -- are skipped rather than failing the migration.)
    SELECT (payload::jsonb #>> '{message,chat,id}')::bigint, received_at, true
    FROM telegram_updates WHERE kind = 'message' AND strpos(payload, '\u0000') = 0
    UNION ALL SELECT user_id, paid_at, false FROM telegram_payments
    UNION ALL SELECT id, profile_at, false FROM telegram_users WHERE allows_write_to_pm
    UNION ALL SELECT chat_id, created_at, false FROM telegram_deliveries WHERE status = 'sent'
    UNION ALL SELECT user_id, clicked_at, false FROM promo_clicks
), known AS (
    SELECT chat_id, min(at) AS first_seen, max(at) FILTER (WHERE wrote) AS last_wrote
    FROM seen WHERE chat_id > 0 GROUP BY chat_id
)
INSERT INTO telegram_chats (chat_id, first_seen_at, last_seen_at)
SELECT chat_id, first_seen, last_wrote FROM known
ON CONFLICT (chat_id) DO UPDATE SET
    first_seen_at = excluded.first_seen_at,
    last_seen_at = excluded.last_seen_at,
    unreachable_reason = CASE WHEN telegram_chats.unreachable_at
                                   < (SELECT last_wrote FROM known k WHERE k.chat_id = excluded.chat_id)
                              THEN NULL ELSE telegram_chats.unreachable_reason END,
    unreachable_at = CASE WHEN telegram_chats.unreachable_at
                               < (SELECT last_wrote FROM known k WHERE k.chat_id = excluded.chat_id)
                          THEN NULL ELSE telegram_chats.unreachable_at END;

CREATE TABLE campaigns (
    -- Also the campaign's part of its promos' button payloads, hence the alphabet and length.
    name        text        PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9_]{1,24}$'),
    audience    text        NOT NULL,
    -- The chats of the 'chats' audience (users, groups, channels); empty otherwise.
    chat_ids    bigint[]    NOT NULL DEFAULT '{}',
    -- Exactly one schedule: every N hours counted from created_at, or a 5-field cron (UTC).
    every_hours int         CHECK (every_hours BETWEEN 1 AND 8760),
    cron        text,
    -- The latest scheduled slot that became a broadcast; a slot fires once, and only if later.
    last_slot   timestamptz,
    -- Slots up to here do not fire: set on resume, so that a pause skips what it covered.
    skip_until  timestamptz,
    -- The rotation cursor: the position (mod the promo count) the next broadcast sends.
    next_promo  int         NOT NULL DEFAULT 0,
    paused_at   timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT campaigns_audience_known CHECK (audience IN ('all_users', 'without_entitlement', 'chats')),
    CONSTRAINT campaigns_one_schedule CHECK ((every_hours IS NULL) <> (cron IS NULL))
);

CREATE TABLE campaign_promos (
    campaign   text  NOT NULL REFERENCES campaigns ON DELETE CASCADE,
    position   int   NOT NULL,
    name       text  NOT NULL CHECK (name ~ '^[A-Za-z0-9_]{1,24}$'),
    -- The message as the notifications queue carries it, without its chat: text, parse_mode,
    -- buttons (deep links and callback data already rendered).
    message    jsonb NOT NULL,
    PRIMARY KEY (campaign, position),
    UNIQUE (campaign, name)
);

CREATE TABLE broadcasts (
    id            bigserial   PRIMARY KEY,
    campaign      text        NOT NULL REFERENCES campaigns,
    promo         text        NOT NULL,
    -- The schedule slot it was sent for; NULL for a send-now. One broadcast per slot, however
    -- many worker processes saw the slot come due.
    slot          timestamptz,
    -- Copied from the campaign and promo when the broadcast began.
    audience      text        NOT NULL,
    chat_ids      bigint[]    NOT NULL,
    message       jsonb       NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    -- When the fan-out had queued every recipient.
    fanned_out_at timestamptz,
    UNIQUE (campaign, slot)
);
CREATE INDEX broadcasts_campaign ON broadcasts (campaign, created_at);

-- One row per recipient: the primary key is what makes a re-run fan-out send nobody twice.
CREATE TABLE broadcast_recipients (
    broadcast_id bigint      NOT NULL REFERENCES broadcasts,
    chat_id      bigint      NOT NULL,
    -- NULL while pending.
    outcome      text,
    done_at      timestamptz,
    PRIMARY KEY (broadcast_id, chat_id),
    CONSTRAINT broadcast_recipients_outcome_known CHECK (outcome IN ('sent', 'unreachable', 'failed'))
);
CREATE INDEX broadcast_recipients_chat ON broadcast_recipients (chat_id, broadcast_id);
-- Campaign statistics count sent messages per broadcast from the index alone.
CREATE INDEX broadcast_recipients_sent ON broadcast_recipients (broadcast_id) WHERE outcome = 'sent';

-- The broadcast a click came from: the latest of its campaign and promo its chat was sent.
ALTER TABLE promo_clicks ADD COLUMN broadcast_id bigint;
CREATE INDEX promo_clicks_campaign ON promo_clicks (campaign, clicked_at);

-- Payments attributed to the user's last click before them within the attribution window:
-- one row per payment, decided once.
CREATE TABLE conversions (
    -- 'stripe:<invoice id>' or 'telegram_stars:<charge id>'.
    payment      text        PRIMARY KEY,
    user_id      bigint      NOT NULL,
    amount       bigint      NOT NULL,
    currency     text        NOT NULL,
    paid_at      timestamptz NOT NULL,
    click_id     bigint      NOT NULL REFERENCES promo_clicks,
    campaign     text        NOT NULL,
    promo        text        NOT NULL,
    broadcast_id bigint
);
CREATE INDEX conversions_campaign ON conversions (campaign, paid_at);
