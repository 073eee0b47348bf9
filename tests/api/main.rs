//! The integration tests: the real app on 127.0.0.1:0, driven over a real socket.

#![allow(unreachable_pub, missing_docs)]

mod access;
mod balancer;
mod cluster;
mod durability;
mod health;
mod helpers;
mod idempotency;
mod ingest;
mod metrics;
mod openapi;
mod overload;
mod prometheus;
mod reload;
mod replicas;
mod routes;
mod shutdown;
mod statistics;
mod store_outage;
mod tls;
mod wire;
