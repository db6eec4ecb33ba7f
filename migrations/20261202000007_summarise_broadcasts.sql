-- Broadcasts keep their final counts on their own row once their per-recipient rows are pruned
-- (BROADCAST_RETENTION_DAYS after the fan-out finished): progress and statistics read these
-- instead of broadcast_recipients, which at 100,000 users every four hours would otherwise grow
-- by 600,000 rows a day, as would the messages' deliveries and effect ledger rows.
ALTER TABLE broadcasts
    ADD COLUMN summarised_at timestamptz,
    ADD COLUMN total         bigint,
    ADD COLUMN sent          bigint,
    ADD COLUMN failed        bigint,
    ADD COLUMN unreachable   bigint,
    ADD CONSTRAINT broadcasts_summary_whole CHECK (
        (summarised_at IS NULL) = (total IS NULL)
        AND (total IS NULL) = (sent IS NULL)
        AND (sent IS NULL) = (failed IS NULL)
        AND (failed IS NULL) = (unreachable IS NULL));
