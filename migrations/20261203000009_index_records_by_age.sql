-- The records that guard against repeats are pruned by age once nothing can repeat
-- (jobs::retention): each needs its age indexed, or every pass would scan the whole table.
CREATE INDEX effect_ledger_applied_at ON effect_ledger (applied_at);
CREATE INDEX telegram_deliveries_created_at ON telegram_deliveries (created_at);
CREATE INDEX stripe_events_received_at ON stripe_events (received_at);
CREATE INDEX billing_requests_created_at ON billing_requests (created_at);
CREATE INDEX telegram_pre_checkout_queries_answered_at ON telegram_pre_checkout_queries (answered_at);
CREATE INDEX jobs_dead_finished_at ON jobs (finished_at) WHERE state = 'dead';
