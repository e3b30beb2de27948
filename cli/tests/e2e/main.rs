//! End-to-end tests: the real services in process (or the real binary as a
//! subprocess), a real nats-server per test, SQLite or a fresh PostgreSQL database.

mod bad_input;
mod bounds;
mod governance;
mod grpc;
mod harness;
mod idempotency;
mod json_output;
mod monitoring;
mod observability;
mod pipeline;
mod producers;
mod quality;
mod restart;
mod rollout;
mod security;
mod traces;
