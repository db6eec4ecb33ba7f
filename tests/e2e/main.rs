//! End-to-end tests: real PostgreSQL, the fake Bot API on loopback, the worker as it runs.

mod access;
mod billing;
mod bot;
mod browser;
mod client;
mod contract;
mod crash;
mod deploy;
mod expiry;
mod journey;
mod marketing;
mod notifications;
mod telegram;
