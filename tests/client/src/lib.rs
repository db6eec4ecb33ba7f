//! The paygate API as progenitor generates it from `openapi/openapi.json` (see `build.rs`),
//! unmodified: `Client::new(base_url)` or `Client::new_with_client(base_url, reqwest_client)`,
//! one method per operation, `types::*` for every schema.

#![allow(clippy::all, unused, missing_debug_implementations)]

include!(concat!(env!("OUT_DIR"), "/client.rs"));
