//! Campaigns on a real PostgreSQL: one broadcast per slot however many schedulers fire it,
//! rotation, audiences, the paged fan-out and its re-runs, click and conversion attribution,
//! statistics, retention.

mod attribution;
mod fan_out;
mod retention;
mod scheduling;
mod support;
