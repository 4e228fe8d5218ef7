//! # souk-server
//!
//! A Souk index server. It accepts signed envelopes (REST, gRPC and P2P all call the same
//! [`ingest::Ingestor`]), keeps them byte for byte in SQLite or PostgreSQL ([`store`]), indexes
//! current listings with tantivy ([`search`]), holds sealed private messages for offline
//! recipients ([`mailbox`]), and serves the public REST API ([`api`]) and the gRPC API
//! ([`grpc`]), both thin adapters over one service layer ([`service`]).
//!
//! Errors by layer: `StoreError` (database), `SearchError` (index), `IngestError` (a batch that
//! could not be stored), all converted into [`api::ApiError`] at the HTTP edge; `anyhow` only in
//! the binary.

pub mod admin;
pub mod api;
pub mod config;
pub mod demo;
pub mod grpc;
pub mod ingest;
pub mod mailbox;
pub mod p2p;
pub mod search;
pub mod server;
pub mod service;
pub mod store;
