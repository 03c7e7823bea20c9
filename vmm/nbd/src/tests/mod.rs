//! Tests: client ↔ server round trips, negotiation, hostile peers on
//! both sides, and fuzzing of the server.

mod bad_server;
mod fuzz;
mod harness;
mod hostile;
mod negotiate;
mod roundtrip;
