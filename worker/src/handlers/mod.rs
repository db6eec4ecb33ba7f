//! One handler per queue: the apalis-facing function that runs an attempt of a job.

pub mod notifications;
