-- Wake workers only for a queue that had nothing due before this statement's jobs.
--
-- PostgreSQL serialises the commits of transactions that NOTIFY (a queue-wide lock taken at
-- commit), so a NOTIFY in every enqueueing transaction capped enqueue throughput at about one
-- commit at a time. Workers that are draining a queue fetch again as soon as a slot frees, without
-- being told, so only a queue with nothing due needs the wake-up. The one miss: a job committed
-- just as the last busy worker of its queue finds the queue empty, after this trigger saw an
-- earlier job still due, or a job arriving while the queue holds jobs that became due by time and
-- are not yet fetched; such a job waits for the workers' polling fallback (100 ms) instead.
CREATE OR REPLACE FUNCTION jobs_notify_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('paygate_jobs', q.queue)
    FROM (SELECT DISTINCT queue FROM inserted WHERE state = 'pending' AND run_at <= now()) AS q
    WHERE NOT EXISTS (
        SELECT 1 FROM jobs j
        WHERE j.queue = q.queue AND j.state = 'pending' AND j.run_at <= now()
          -- NOT EXISTS, not NOT IN: NOT IN over a transition table larger than work_mem is
          -- planned as a nested loop, quadratic in the size of a bulk enqueue.
          AND NOT EXISTS (SELECT 1 FROM inserted i WHERE i.id = j.id));
    RETURN NULL;
END
$$;
