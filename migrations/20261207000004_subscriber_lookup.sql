-- What GET /v1/ops/users/{id} reads by user: the messages sent to them (the largest table, by
-- broadcasts), their Stripe subscriptions, their Stars payments.
CREATE INDEX telegram_deliveries_chat ON telegram_deliveries (chat_id, created_at DESC);
CREATE INDEX stripe_subscriptions_user ON stripe_subscriptions (user_id);
CREATE INDEX telegram_payments_user ON telegram_payments (user_id, paid_at DESC);
