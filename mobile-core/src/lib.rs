//! # souk-mobile-core
//!
//! The Rust core under the Souk Android and iOS apps, exported through uniffi, and the engine
//! of the `souk` CLI. It is deliberately small:
//!
//! - [`Wallet`]: one person's keys, made from the recovery phrase or seed the app keeps in the
//!   platform key store; signs profiles, listings and withdrawals into envelope bytes. Private
//!   keys never leave it; only [`Wallet::export_mnemonic`] shows the phrase.
//! - [`Client`]: talks to one or more index servers, falls back to the next when one fails,
//!   and verifies every envelope it receives (signature, id, and that the server's summary is
//!   what the seller signed). Servers are untrusted helpers.
//! - Plain records for drafts and results ([`ListingDraft`], [`ProfileDraft`],
//!   [`VerifiedListing`], [`SearchPage`], …) and one error enum per area ([`WalletError`],
//!   [`ClientError`]).
//!
//! - [`OrderBook`] (over [`orders::Orders`]): the order flow on the device — place, answer,
//!   pay, ship, complete, dispute, decide, refund, claim, rate — persisted in the one SQLite
//!   file the app names, with an outbox for messages no inbox server has taken yet.
//!
//! Only the order book writes to disk, to the file the app gives it. `mobile-core/README.md` states the contract with the native
//! apps (where the seed lives, threading, TLS roots).
//!
//! ```no_run
//! use souk_mobile_core::{Client, ClientConfig, SearchQuery, Wallet};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let wallet = Wallet::restore("abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about".into(), String::new())?;
//! println!("my store: {}", wallet.identity_address());
//!
//! let client = Client::new(ClientConfig::new(vec!["http://127.0.0.1:8080".into()]))?;
//! let page = client
//!     .search(SearchQuery { text: Some("lamp".into()), ..SearchQuery::default() })
//!     .await?;
//! for hit in &page.hits {
//!     println!("{} {}", hit.listing.title, hit.listing.price.amount);
//! }
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod chain;
mod client;
mod drafts;
mod error;
mod inbox;
mod moderators;
mod order_book;
pub mod orders;
mod verify;
mod wallet;

pub use client::{
    Client, ClientConfig, DEFAULT_CONNECT_TIMEOUT_MS, DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_TIMEOUT_MS, Facet, FacetValue, PublishOutcome, PublishStatus, SearchPage, SearchQuery,
    Sort, read_search_page,
};
pub use drafts::{
    Condition, Contact, Coupon, FeeType, Image, ListingDraft, ListingType, Location,
    ModeratorOffer, Price, ProfileDraft, ShippingOption, ShippingService, Sku, Tax, VariantOption,
};
pub use error::{ClientError, ServerFailure, WalletError};
pub use inbox::{Delivery, HeldMessage, InboxBatch, MAX_INBOX_PAGES, SendReport};
pub use moderators::{ModeratorChoice, VerifiedRatings};
pub use order_book::{
    EscrowFeeEstimate, OrderBook, OrderDraft, OrderFlowError, OrderMessage, OrderSummary,
    OutgoingMessage, QuotedOrderMessage, ReceivedMessage,
};
pub use verify::{DroppedHit, VerifiedListing, VerifiedStore};
pub use wallet::{SignedEnvelope, Wallet};

/// Serialises bytes as standard base64 (for the records' JSON form, used by the CLI).
fn base64_bytes<S: serde::Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
    use base64::Engine;
    serializer.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// The version of this core (the crate version), for an app's "about" screen.
#[uniffi::export]
#[must_use]
pub fn core_version() -> String {
    env!("CARGO_PKG_VERSION").into()
}

uniffi::setup_scaffolding!("souk");
