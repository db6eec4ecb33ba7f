-- Queues ops have paused: no worker fetches from them until they are resumed. Jobs keep being
-- enqueued, and jobs already running finish. A row per paused queue; resuming deletes it.
CREATE TABLE queue_pauses (
    queue     text        PRIMARY KEY,
    paused_at timestamptz NOT NULL DEFAULT now()
);
