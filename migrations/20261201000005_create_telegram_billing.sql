-- Telegram: the webhook's inbox of updates, the Stars payments it brought, the pre-checkout
-- answers it gave, the users who signed in through the Mini App, and promo clicks.

-- Every update the webhook accepted, by Telegram's update_id: a repeat is recognised here and
-- changes nothing.
CREATE TABLE telegram_updates (
    update_id   bigint      PRIMARY KEY,
    -- The update's kind as Telegram names its field, e.g. 'message', 'pre_checkout_query'.
    kind        text        NOT NULL,
    -- The update as Telegram sent it.
    payload     text        NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);

-- The answer given to each pre_checkout_query (inline, in the webhook's response), so that a
-- repeated delivery of the query gets the same answer.
CREATE TABLE telegram_pre_checkout_queries (
    id              text        PRIMARY KEY,
    user_id         bigint      NOT NULL,
    invoice_payload text        NOT NULL,
    currency        text        NOT NULL,
    total_amount    bigint      NOT NULL,
    ok              boolean     NOT NULL,
    error_message   text,
    answered_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT telegram_pre_checkout_queries_refusal_explained CHECK (ok OR error_message IS NOT NULL)
);

-- Stars payments, one per telegram_payment_charge_id: a repeat is recognised here. `source` is the
-- entitlement the payment counts toward: its own (`telegram_stars:<charge id>`), or for a renewal
-- of a Stars subscription the one its first payment started.
CREATE TABLE telegram_payments (
    charge_id                    text        PRIMARY KEY,
    user_id                      bigint      NOT NULL,
    -- The plan code our invoice carried.
    invoice_payload              text        NOT NULL,
    currency                     text        NOT NULL,
    total_amount                 bigint      NOT NULL,
    is_recurring                 boolean     NOT NULL DEFAULT false,
    is_first_recurring           boolean     NOT NULL DEFAULT false,
    subscription_expiration_date timestamptz,
    source                       text        NOT NULL,
    paid_at                      timestamptz NOT NULL,
    -- When the payment was refunded (by ops, or as Telegram told us); once set, kept.
    refunded_at                  timestamptz
);
CREATE INDEX telegram_payments_source ON telegram_payments (source);

-- Refunds Telegram told us of, by charge, also of payments not (yet) recorded: a payment update
-- that arrives after its refund (Telegram redelivers a failed delivery later) is recorded
-- refunded from the start.
CREATE TABLE telegram_refund_notices (
    charge_id   text        PRIMARY KEY,
    refunded_at timestamptz NOT NULL
);
CREATE INDEX telegram_payments_subscription_starts ON telegram_payments (user_id, invoice_payload, paid_at)
    WHERE is_first_recurring;

-- Users as the Mini App last showed them. `profile_at` is the auth_date of the sign-in the profile
-- came from, so an older sign-in processed late cannot overwrite a newer profile.
CREATE TABLE telegram_users (
    id                 bigint      PRIMARY KEY,
    first_name         text        NOT NULL,
    last_name          text,
    username           text,
    language_code      text,
    is_premium         boolean     NOT NULL DEFAULT false,
    allows_write_to_pm boolean     NOT NULL DEFAULT false,
    photo_url          text,
    profile_at         timestamptz NOT NULL,
    -- Banned users cannot pay (their pre-checkout queries are refused).
    banned             boolean     NOT NULL DEFAULT false,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);

-- Clicks on promo buttons and `/start <payload>` deep links, one per update.
CREATE TABLE promo_clicks (
    id         bigserial   PRIMARY KEY,
    update_id  bigint      NOT NULL UNIQUE,
    user_id    bigint      NOT NULL,
    chat_id    bigint,
    campaign   text        NOT NULL,
    promo      text        NOT NULL,
    via        text        NOT NULL,
    clicked_at timestamptz NOT NULL,
    CONSTRAINT promo_clicks_via_known CHECK (via IN ('callback', 'start'))
);
CREATE INDEX promo_clicks_user ON promo_clicks (user_id, clicked_at);

ALTER TABLE refunds DROP CONSTRAINT refunds_provider_known,
    ADD CONSTRAINT refunds_provider_known CHECK (provider IN ('stripe', 'telegram_stars'));
ALTER TABLE billing_requests DROP CONSTRAINT billing_requests_kind_known,
    ADD CONSTRAINT billing_requests_kind_known CHECK (kind IN ('checkout', 'portal', 'stars_invoice'));
