-- The durable job queue: our own tables, drained by apalis workers through jobs::queue::backend.
-- States and their transitions are drawn in docs/state_machine.md.

CREATE TABLE jobs (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queue        text        NOT NULL,
    -- The job's logical identity: a second enqueue with the same key is a no-op, the effect ledger
    -- records it when the effect commits, and provider calls derive their idempotency keys from it.
    logical_key  text        NOT NULL,
    payload      jsonb       NOT NULL,
    state        text        NOT NULL DEFAULT 'pending',
    -- Attempts started so far; incremented when a worker takes the job.
    attempt      integer     NOT NULL DEFAULT 0,
    max_attempts integer     NOT NULL,
    -- When the job may next run: the durable backoff schedule lives here.
    run_at       timestamptz NOT NULL DEFAULT now(),
    created_at   timestamptz NOT NULL DEFAULT now(),
    locked_by    text,
    locked_at    timestamptz,
    finished_at  timestamptz,
    -- Every failed attempt, oldest first: [{"attempt", "at", "error", "kind"}].
    errors       jsonb       NOT NULL DEFAULT '[]',
    CONSTRAINT jobs_state_known CHECK (state IN ('pending', 'running', 'completed', 'dead', 'discarded')),
    CONSTRAINT jobs_attempts_positive CHECK (max_attempts > 0),
    CONSTRAINT jobs_logical_key_unique UNIQUE (queue, logical_key)
);

-- The fetch: the next due jobs of one queue in order. Partial, so done rows cost it nothing.
CREATE INDEX jobs_pending_by_run_at ON jobs (queue, run_at, id) WHERE state = 'pending';
-- Orphan rescue and shutdown hand-back find a worker's running jobs.
CREATE INDEX jobs_running_by_worker ON jobs (locked_by) WHERE state = 'running';
-- Ops listings of dead jobs, and pruning of finished ones.
CREATE INDEX jobs_dead_by_queue ON jobs (queue, finished_at) WHERE state = 'dead';
CREATE INDEX jobs_finished_at ON jobs (finished_at) WHERE state IN ('completed', 'discarded');

-- One NOTIFY per enqueueing statement and queue (not per row), so idle workers wake at once.
CREATE FUNCTION jobs_notify_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('paygate_jobs', q.queue)
    FROM (SELECT DISTINCT queue FROM inserted WHERE state = 'pending') AS q;
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_notify_inserted
    AFTER INSERT ON jobs
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION jobs_notify_inserted();

-- Worker processes and their heartbeats: a worker silent for longer than the rescue timeout is
-- presumed dead and its running jobs are handed to others.
CREATE TABLE job_workers (
    name       text        PRIMARY KEY,
    queues     text[]      NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    last_seen  timestamptz NOT NULL DEFAULT now()
);

-- The effect ledger: one row per logical job whose effect has committed. A handler's effect
-- transaction inserts it first; finding it already there means the effect was applied before.
CREATE TABLE effect_ledger (
    queue       text        NOT NULL,
    logical_key text        NOT NULL,
    job_id      bigint      NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (queue, logical_key)
);

-- Job counters flushed by every worker process, read by the web process's /metrics.
CREATE TABLE job_metrics (
    queue  text   NOT NULL,
    metric text   NOT NULL,
    value  double precision NOT NULL DEFAULT 0,
    PRIMARY KEY (queue, metric)
);
