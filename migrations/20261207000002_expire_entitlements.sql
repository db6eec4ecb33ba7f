-- Entitlements end on time: an active entitlement whose paid period ended (plus the grace) without
-- a renewal is recorded 'expired' by the worker's expiry pass, with its history row and message.
ALTER TABLE entitlements DROP CONSTRAINT entitlements_status_known;
ALTER TABLE entitlements ADD CONSTRAINT entitlements_status_known
    CHECK (status IN ('active', 'suspended', 'revoked', 'expired'));

-- The expiry and reminder passes read active entitlements by their end.
CREATE INDEX entitlements_active_by_end ON entitlements (expires_at) WHERE status = 'active';

-- The reminders sent before an entitlement that will not renew ends: one per entitlement, paid
-- end and offset, written by the pass that queues the message, so that every worker process can
-- run the pass and each reminder goes out once.
CREATE TABLE entitlement_reminders (
    entitlement_id bigint      NOT NULL REFERENCES entitlements (id),
    expires_at     timestamptz NOT NULL,
    hours          integer     NOT NULL,
    sent_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (entitlement_id, expires_at, hours)
);

-- Entitlements that ran out before this version are recorded expired now, silently (the users
-- were never told, and a message months late would only confuse): those the expiry pass would
-- take, with the default grace of 6 hours. Renewing Stripe subscriptions are Stripe's to end.
WITH lapsed AS (
    UPDATE entitlements SET status = 'expired', renews = false, updated_at = now()
    WHERE status = 'active' AND expires_at < now() - interval '6 hours'
      AND NOT (renews AND source LIKE 'stripe:%')
    RETURNING id, expires_at)
INSERT INTO entitlement_changes (entitlement_id, status, expires_at, renews, cause)
SELECT id, 'expired', expires_at, false, 'migration:expire_lapsed' FROM lapsed;
