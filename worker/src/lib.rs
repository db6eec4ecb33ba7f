//! The worker dyno.
//!
//! # Layout
//! - [`config`]: the environment it reads.
//! - [`startup`]: `worker run` — the apalis workers, the job listener, maintenance, shutdown.
//! - [`handlers`]: one handler per queue, each one call into `jobs`.
//! - [`cli`]: the ops commands, `worker jobs …`, `worker campaigns …`, `worker telegram …`.

pub mod cli;
pub mod config;
pub mod handlers;
pub mod startup;
