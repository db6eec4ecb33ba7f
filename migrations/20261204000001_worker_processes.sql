-- Each worker process's own figures (CPU, memory, file descriptors, threads), written by the
-- process every few seconds and served by the web process's /metrics: a worker dyno takes no
-- HTTP traffic, so a scrape cannot reach it. A process removes its row when it stops cleanly;
-- the row of one that did not is no longer served once stale, and deleted after a day.
CREATE TABLE worker_processes (
    process               text             PRIMARY KEY,
    cpu_seconds           double precision NOT NULL,
    resident_memory_bytes bigint           NOT NULL,
    virtual_memory_bytes  bigint           NOT NULL,
    open_fds              bigint           NOT NULL,
    max_fds               bigint           NOT NULL,
    threads               bigint           NOT NULL,
    start_time_seconds    bigint           NOT NULL,
    sampled_at            timestamptz      NOT NULL DEFAULT now()
);
