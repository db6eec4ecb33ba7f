-- Billing: what users are entitled to, how they came to it, the Stripe events and the user
-- requests (checkout, portal, refunds) that change it. Plans are configuration, not rows.

-- What a user may use: one row per source (a Stripe subscription, a Telegram Stars charge), holding
-- the state derived from everything known about that source. Every change is kept in
-- entitlement_changes.
CREATE TABLE entitlements (
    id          bigserial   PRIMARY KEY,
    user_id     bigint      NOT NULL,
    -- 'stripe:<subscription id>' or 'telegram_stars:<charge id>'.
    source      text        NOT NULL UNIQUE,
    plan        text        NOT NULL,
    entitlement text        NOT NULL,
    status      text        NOT NULL,
    -- Access ends here even while status is 'active'. NULL only for a revoked source that was never paid.
    expires_at  timestamptz,
    -- Whether the provider will charge again at expires_at (false once cancelled at period end).
    renews      boolean     NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT entitlements_status_known CHECK (status IN ('active', 'suspended', 'revoked'))
);
CREATE INDEX entitlements_user ON entitlements (user_id);

-- The audit trail: one row per change of an entitlement, naming what caused it.
CREATE TABLE entitlement_changes (
    id             bigserial   PRIMARY KEY,
    entitlement_id bigint      NOT NULL REFERENCES entitlements (id),
    status         text        NOT NULL,
    expires_at     timestamptz,
    renews         boolean     NOT NULL,
    -- 'stripe_event:evt_…', 'refund:<id>', 'telegram_payment:<charge id>' …
    cause          text        NOT NULL,
    recorded_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX entitlement_changes_entitlement ON entitlement_changes (entitlement_id, id);

-- The Stripe webhook inbox: every verified event, once, keyed by Stripe's event id.
CREATE TABLE stripe_events (
    id           text        PRIMARY KEY,
    type         text        NOT NULL,
    -- Stripe's `created` of the event: when the object was in the state the event carries.
    created      timestamptz NOT NULL,
    livemode     boolean     NOT NULL,
    -- The body exactly as Stripe signed it. Text, not jsonb: jsonb refuses \u0000, which a
    -- signed event may carry, and a refusal would make Stripe redeliver it for days.
    payload      text        NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    processed_at timestamptz,
    -- What processing made of it: 'applied', 'unchanged', 'ignored' (a type we do not act on) …
    outcome      text
);

-- Which Stripe customer is which Telegram user.
CREATE TABLE stripe_customers (
    user_id    bigint      PRIMARY KEY,
    customer   text        NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- What is known of each Stripe subscription, merged from its events whatever their order: facts
-- that only accumulate (who, which plan, ended) and the latest status snapshot by event time.
CREATE TABLE stripe_subscriptions (
    id                   text        PRIMARY KEY,
    user_id              bigint,
    plan                 text,
    customer             text,
    status               text,
    cancel_at_period_end boolean     NOT NULL DEFAULT false,
    -- The event that carried the snapshot: a later (created, id) replaces it, an earlier one does not.
    status_created       timestamptz,
    status_event         text,
    ended_at             timestamptz,
    updated_at           timestamptz NOT NULL DEFAULT now()
);

-- The paid periods of subscriptions: one row per invoice (the first one may come from the
-- Checkout Session before its invoice.paid event, with a provisional period end).
CREATE TABLE stripe_invoices (
    id             text        PRIMARY KEY,
    -- NULL until an event names it: invoice_payment.paid may come before invoice.paid.
    subscription   text,
    paid           boolean     NOT NULL DEFAULT false,
    period_end     timestamptz,
    -- False while period_end is the plan's period counted from checkout, not the invoice's own.
    period_exact   boolean     NOT NULL DEFAULT false,
    payment_intent text,
    charge         text,
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX stripe_invoices_subscription ON stripe_invoices (subscription);
CREATE INDEX stripe_invoices_payment_intent ON stripe_invoices (payment_intent) WHERE payment_intent IS NOT NULL;
CREATE INDEX stripe_invoices_charge ON stripe_invoices (charge) WHERE charge IS NOT NULL;

-- Refunds and disputes of Stripe payments, by payment intent and by charge id (an event names
-- both when it can), which may arrive before the invoice that links the payment to a subscription.
CREATE TABLE stripe_reversals (
    -- 'pi_…' or 'ch_…'.
    payment    text        PRIMARY KEY,
    -- The whole amount was refunded (partial refunds leave access as it is).
    refunded   boolean     NOT NULL DEFAULT false,
    disputed   boolean     NOT NULL DEFAULT false,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- What users asked of a payment provider (a Checkout Session, a Billing Portal session) and what
-- came of it. The web process writes the row and its job; a worker fills in url or failure.
CREATE TABLE billing_requests (
    id              bigserial   PRIMARY KEY,
    user_id         bigint      NOT NULL,
    kind            text        NOT NULL,
    plan            text,
    -- The client's Idempotency-Key; a repeat with the same key answers with the same request.
    idempotency_key text,
    status          text        NOT NULL DEFAULT 'pending',
    url             text,
    provider_id     text,
    failure         text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT billing_requests_kind_known CHECK (kind IN ('checkout', 'portal')),
    CONSTRAINT billing_requests_status_known CHECK (status IN ('pending', 'ready', 'failed')),
    CONSTRAINT billing_requests_settled CHECK (
        (status = 'pending' AND url IS NULL AND failure IS NULL)
        OR (status = 'ready' AND url IS NOT NULL)
        OR (status = 'failed' AND failure IS NOT NULL))
);
CREATE UNIQUE INDEX billing_requests_idempotency ON billing_requests (user_id, kind, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- Long-polling clients wait on this channel for their request to settle.
CREATE FUNCTION billing_requests_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('paygate_billing_requests', NEW.id::text);
    RETURN NULL;
END;
$$;
CREATE TRIGGER billing_requests_settled AFTER UPDATE OF status ON billing_requests
    FOR EACH ROW WHEN (OLD.status = 'pending' AND NEW.status <> 'pending')
    EXECUTE FUNCTION billing_requests_notify();

-- Refunds ops asked for, one per Idempotency-Key.
CREATE TABLE refunds (
    id                 bigserial   PRIMARY KEY,
    provider           text        NOT NULL,
    -- A Stripe payment intent ('pi_…') or charge ('ch_…'); a Telegram Stars charge id.
    payment            text        NOT NULL,
    amount             bigint,
    reason             text,
    idempotency_key    text        UNIQUE,
    status             text        NOT NULL DEFAULT 'pending',
    provider_refund_id text,
    failure            text,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT refunds_provider_known CHECK (provider IN ('stripe')),
    CONSTRAINT refunds_status_known CHECK (status IN ('pending', 'succeeded', 'failed')),
    CONSTRAINT refunds_amount_positive CHECK (amount IS NULL OR amount > 0)
);

-- Counters of business outcomes (payments, refunds), added to in the same transaction as the
-- outcome itself, so each is counted exactly once whichever process applied it. The web process
-- serves them in /metrics as `name{labels}`.
CREATE TABLE counters (
    name   text             NOT NULL,
    -- Prometheus labels as written inside the braces, e.g. 'status="paid"'.
    labels text             NOT NULL,
    value  double precision NOT NULL DEFAULT 0,
    PRIMARY KEY (name, labels)
);
