//! Orders on the device: the order flow of SPEC.md "Orders", driven by private messages and the
//! chain, persisted in SQLite so a restarted app resumes every open order.
//!
//! [`Orders`] holds one person's orders, whatever their role in each (buyer, seller, moderator).
//! Every step that creates a message returns an [`Outgoing`] — the sealed bytes and the inbox
//! servers to post them to (with [`Client::send_message`](crate::Client::send_message)); every
//! message fetched from an inbox goes through [`Orders::receive`]; [`Orders::watch_chain`] reads
//! funding, confirmations and timeouts through an Esplora API. Each of them moves the order only
//! through `souk_protocol::order` (one state machine), checks everything it can against the
//! order's terms before it signs, and commits its change before it returns.
//!
//! Money is never moved on trust: the buyer recomputes the escrow address before paying; every
//! PSBT is checked by `souk_escrow::check` against the terms this device derived itself (amounts,
//! addresses, fee caps) before it is signed, so a PSBT that pays other than agreed is refused.

use std::path::Path;
use std::sync::{Mutex, PoisonError};

use prost::Message as _;
use rusqlite::{Connection, OptionalExtension, params};
use souk_escrow::bitcoin::psbt::Psbt;
use souk_escrow::bitcoin::{Address, Amount, FeeRate, Network, OutPoint, Txid};
use souk_escrow::{Escrow, Funding, ModeratorFee, Spend, Terms};
use souk_protocol::message::{OpenedMessage, order_id_of, read_signed_message};
use souk_protocol::order::{
    Actor, Event, Order, OrderError, OrderState, Payment, event_for_message,
};
use souk_protocol::{
    IdentityKey, Keychain, MessageError, Object, PublicKey, ValidationContext, open, pb,
    rating_permit_digest,
};

use crate::chain::{Chain, ChainError};
use crate::drafts::hex;

/// Largest share of the escrowed amount that a spend may leave to miners, in basis points (the
/// cap is this share or [`MIN_FEE_CAP_SATS`], whichever is larger).
pub const MAX_MINER_FEE_BP: u64 = 500;
/// The miner-fee cap never falls below this many satoshis, so a small escrow stays spendable at
/// a modest fee rate.
pub const MIN_FEE_CAP_SATS: u64 = 1_000;
/// Above this share of the order (basis points) [`Orders::escrow_fee_estimate`] says the miner
/// fee is worth a warning before ordering.
pub const WARN_MINER_FEE_BP: u64 = 100;
/// Schema version of the order database.
pub const SCHEMA_VERSION: i64 = 2;

/// Why an order step was refused. Nothing is stored or sent when one is returned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FlowError {
    /// A message could not be opened or made.
    #[error(transparent)]
    Message(#[from] MessageError),
    /// The state machine refused the step.
    #[error(transparent)]
    Order(#[from] OrderError),
    /// A message or object does not fit the order (wrong amount, address, key, sender…).
    #[error("{0}")]
    Mismatch(String),
    /// No such order here.
    #[error("no order {0} on this device")]
    UnknownOrder(String),
    /// The escrow terms or a PSBT are refused.
    #[error("escrow: {0}")]
    Escrow(String),
    /// The chain API failed.
    #[error(transparent)]
    Chain(#[from] ChainError),
    /// The database failed.
    #[error("order database: {0}")]
    Storage(String),
    /// Key derivation failed.
    #[error("keys: {0}")]
    Keys(String),
    /// At the current fee rate, spending the escrow would leave more than the cap to miners, so
    /// the money could not be moved out again without breaking the cap: escrow is refused.
    #[error("{0}")]
    FeeTooHigh(String),
    /// Another step on the same order finished while this one ran (another thread, or another
    /// handle on the same book): this step was refused whole, and the other kept. Read the order
    /// again and retry if the step still applies.
    #[error("{0}")]
    Changed(String),
}

impl FlowError {
    /// The stable machine-readable code.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::Message(inner) => inner.code(),
            Self::Order(inner) => inner.code(),
            Self::Mismatch(_) => "order_mismatch",
            Self::UnknownOrder(_) => "unknown_order",
            Self::Escrow(_) => "escrow_refused",
            Self::Chain(inner) => inner.code(),
            Self::Storage(_) => "storage",
            Self::Keys(_) => "keys",
            Self::FeeTooHigh(_) => "fee_too_high",
            Self::Changed(_) => "order_changed",
        }
    }
}

impl From<rusqlite::Error> for FlowError {
    fn from(error: rusqlite::Error) -> Self {
        Self::Storage(error.to_string())
    }
}

fn mismatch(text: impl Into<String>) -> FlowError {
    FlowError::Mismatch(text.into())
}

fn escrow_error(error: impl std::fmt::Display) -> FlowError {
    FlowError::Escrow(error.to_string())
}

fn keys_error(error: impl std::fmt::Display) -> FlowError {
    FlowError::Keys(error.to_string())
}

/// This device's part in an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// It ordered.
    Buyer,
    /// It sells.
    Seller,
    /// It moderates a dispute about the order.
    Moderator,
}

impl Role {
    /// The state machine's actor for this part.
    #[must_use]
    pub fn actor(self) -> Actor {
        match self {
            Self::Buyer => Actor::Buyer,
            Self::Seller => Actor::Seller,
            Self::Moderator => Actor::Moderator,
        }
    }

    /// Stable lower-case name (`buyer`, `seller`, `moderator`).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Buyer => "buyer",
            Self::Seller => "seller",
            Self::Moderator => "moderator",
        }
    }

    fn parse(text: &str) -> Result<Self, FlowError> {
        match text {
            "buyer" => Ok(Self::Buyer),
            "seller" => Ok(Self::Seller),
            "moderator" => Ok(Self::Moderator),
            _ => Err(FlowError::Storage(format!("unknown role {text}"))),
        }
    }
}

/// A message to post: sealed for `recipient`, to be handed to `servers`.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The order it belongs to.
    pub order_id: [u8; 32],
    /// Who it is for.
    pub recipient: PublicKey,
    /// Their inbox servers.
    pub servers: Vec<String>,
    /// The `SealedMessage` bytes.
    pub sealed: Vec<u8>,
}

/// What [`Orders::receive`] did with a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// It was processed before (a copy from another inbox server); nothing changed.
    AlreadySeen,
    /// It started an order (a request to this seller, or a dispute to this moderator).
    NewOrder {
        /// The order.
        order_id: [u8; 32],
    },
    /// It moved an order.
    Moved {
        /// The order.
        order_id: [u8; 32],
        /// Its state now.
        state: OrderState,
    },
    /// It was stored with its order without moving it (payment notice, evidence, PSBT, chat).
    Noted {
        /// The order.
        order_id: [u8; 32],
    },
}

/// What a buyer orders.
#[derive(Debug, Clone)]
pub struct PlaceOrder {
    /// The signed listing envelope, as the buyer saw it.
    pub listing: Vec<u8>,
    /// Lines: SKU index and quantity.
    pub items: Vec<(u32, u32)>,
    /// Shipping option and service names (empty for digital goods).
    pub shipping_option: String,
    /// The service within the option.
    pub shipping_service: String,
    /// Where to ship.
    pub shipping_address: String,
    /// The moderator's signed profile envelope for a moderated order; `None` pays directly.
    pub moderator_profile: Option<Vec<u8>>,
    /// The total offered, in satoshis.
    pub amount_sats: u64,
    /// The seller's inbox servers (from its profile).
    pub seller_inbox: Vec<String>,
    /// The buyer's own inbox servers, where answers go.
    pub reply_inbox: Vec<String>,
    /// A note to the seller.
    pub memo: String,
    /// The chain's current fee rate. With it, a moderated order is refused
    /// ([`FlowError::FeeTooHigh`]) when spending its escrow would cost more than the cap
    /// ([`max_fee`]); see [`Orders::escrow_fee_estimate`].
    pub fee_rate: Option<FeeRate>,
}

/// One message of an order's conversation, decoded for display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationEntry {
    /// `in` (received) or `out` (sent by this device).
    pub direction: String,
    /// Who signed it.
    pub sender: Actor,
    /// The message kind (`order`, `confirmation`, `decline`, `payment`, `fulfillment`,
    /// `completion`, `cancel`, `dispute`, `evidence`, `decision`, `psbt`, `chat`).
    pub kind: &'static str,
    /// Its text: the memo, reason, note, evidence or chat text.
    pub text: String,
    /// The message's own time (`created_at`).
    pub at: u64,
    /// Earlier signed messages it quotes (a dispute quotes the order and the confirmation;
    /// evidence quotes what the party chose), each checked: signed by a party of this order and
    /// about this order.
    pub quoted: Vec<QuotedMessage>,
}

/// A signed message quoted in a dispute or in evidence, after its signature was checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotedMessage {
    /// Who signed it.
    pub sender: Actor,
    /// Its kind.
    pub kind: &'static str,
    /// Its text.
    pub text: String,
    /// Its `created_at`.
    pub at: u64,
}

/// Stable name of a message body's kind.
#[must_use]
pub fn message_kind(body: &pb::message::Body) -> &'static str {
    use pb::message::Body;
    match body {
        Body::Order(_) => "order",
        Body::Confirmation(_) => "confirmation",
        Body::Decline(_) => "decline",
        Body::Payment(_) => "payment",
        Body::Fulfillment(_) => "fulfillment",
        Body::Completion(_) => "completion",
        Body::Cancel(_) => "cancel",
        Body::Dispute(_) => "dispute",
        Body::Evidence(_) => "evidence",
        Body::Decision(_) => "decision",
        Body::Psbt(_) => "psbt",
        Body::Chat(_) => "chat",
    }
}

/// The human text of a message body.
fn message_text(body: &pb::message::Body) -> String {
    use pb::message::Body;
    match body {
        Body::Order(o) => o.memo.clone(),
        Body::Confirmation(_) | Body::Psbt(_) => String::new(),
        Body::Completion(c) => c.note.clone(),
        Body::Decline(d) => d.reason.clone(),
        Body::Payment(p) => format!("paid {} sats", p.amount_sats),
        Body::Fulfillment(f) => {
            let mut text = f.note.clone();
            if !f.carrier.is_empty() || !f.tracking.is_empty() {
                text = format!("{text} ({} {})", f.carrier, f.tracking)
                    .trim()
                    .to_owned();
            }
            text
        }
        Body::Cancel(c) => c.reason.clone(),
        Body::Dispute(d) => d.reason.clone(),
        Body::Evidence(e) => e.text.clone(),
        Body::Decision(d) => format!(
            "buyer gets {}.{:02} % of the rest after the fee: {}",
            d.buyer_share_bps / 100,
            d.buyer_share_bps % 100,
            d.reason
        ),
        Body::Chat(c) => c.text.clone(),
    }
}

/// One order as stored.
#[derive(Debug, Clone)]
pub struct OrderRecord {
    /// The order id.
    pub id: [u8; 32],
    /// This device's part.
    pub role: Role,
    /// The state machine's view.
    pub order: Order,
    /// The buyer's `SignedMessage` that carried the request.
    pub request_signed: Vec<u8>,
    /// The request.
    pub request: pb::OrderRequest,
    /// The buyer.
    pub buyer: PublicKey,
    /// The seller.
    pub seller: PublicKey,
    /// The seller's confirmation, once received or sent.
    pub confirmation: Option<(Vec<u8>, pb::OrderConfirmation)>,
    /// Escrow, rating and payout indices this device allocated for the order.
    pub escrow_index: Option<u32>,
    /// Rating key index (buyer).
    pub rating_index: Option<u32>,
    /// Payout or refund address index.
    pub payout_index: Option<u32>,
    /// The funding output, once seen.
    pub funding: Option<(OutPoint, u64, Option<u32>)>,
    /// The seller's release PSBT (buyer), the refund PSBT, or the moderator's payout PSBT.
    pub pending_psbt: Option<Vec<u8>>,
    /// The moderator's decision, once received or made.
    pub decision: Option<pb::Decision>,
    /// The seller's inbox servers (the buyer's record; empty elsewhere).
    pub seller_servers: Vec<String>,
    /// How many times the order's row was rewritten when this record was read: a step writes
    /// only if it is unchanged (see [`FlowError::Changed`]).
    pub version: i64,
}

impl OrderRecord {
    /// The fields a received message may set, to tell whether it changed the order's row.
    #[allow(clippy::type_complexity, reason = "a private snapshot compared once")]
    fn row_fields(
        &self,
    ) -> (
        Option<Vec<u8>>,
        Option<Vec<u8>>,
        Option<pb::Decision>,
        Option<(OutPoint, u64, Option<u32>)>,
    ) {
        (
            self.confirmation.as_ref().map(|(bytes, _)| bytes.clone()),
            self.pending_psbt.clone(),
            self.decision.clone(),
            self.funding,
        )
    }

    /// The moderator's identity key, for a moderated order.
    #[must_use]
    pub fn moderator(&self) -> Option<PublicKey> {
        PublicKey::from_bytes(&self.request.moderator).ok()
    }

    fn network(&self) -> Result<Network, FlowError> {
        souk_protocol::order::parse_network(&self.request.network)
            .ok_or_else(|| mismatch("the order names an unknown network"))
    }

    fn actor_of(&self, key: &PublicKey) -> Option<Actor> {
        if *key == self.buyer {
            Some(Actor::Buyer)
        } else if *key == self.seller {
            Some(Actor::Seller)
        } else if Some(*key) == self.moderator() {
            Some(Actor::Moderator)
        } else {
            None
        }
    }
}

/// One person's orders, persisted.
#[derive(Debug)]
pub struct Orders {
    db: Mutex<Connection>,
    keychain: Keychain,
    /// The network new orders are placed on (a name `parse_network` knows).
    network: String,
}

fn opt_u32(value: Option<i64>) -> Option<u32> {
    value.and_then(|v| u32::try_from(v).ok())
}

/// The moderator's offer and escrow xpub from its signed profile, checked.
fn moderator_offer(profile: &[u8], at: u64) -> Result<(PublicKey, pb::ModeratorOffer), FlowError> {
    let opened = open(profile, &ValidationContext::at(at))
        .map_err(|e| mismatch(format!("the moderator's profile is refused: {e}")))?;
    let Object::Profile(p) = opened.object() else {
        return Err(mismatch("the moderator's profile is not a profile"));
    };
    let offer = p
        .moderator
        .clone()
        .ok_or_else(|| mismatch("that person offers no moderation"))?;
    if offer.escrow_xpub.is_empty() {
        return Err(mismatch(
            "the moderator's offer has no escrow xpub; it cannot take escrowed orders",
        ));
    }
    Ok((opened.signer(), offer))
}

/// The moderator's fee for an escrow of `total` sats, from its offer (fixed part in BTC only).
fn moderator_fee(offer: &pb::ModeratorOffer) -> Result<ModeratorFee, FlowError> {
    let fee = offer.fee.clone().unwrap_or_default();
    let fixed = match &fee.fixed {
        None => Amount::ZERO,
        Some(price) if price.currency == "BTC" && price.divisibility == 8 => {
            Amount::from_sat(price.amount)
        }
        Some(_) => {
            return Err(mismatch(
                "the moderator's fixed fee is not in BTC; escrow fees must be in satoshis",
            ));
        }
    };
    Ok(ModeratorFee {
        fixed,
        percentage_bp: u16::try_from(fee.percentage_bp).unwrap_or(u16::MAX),
    })
}

/// Stable name of a payment method, as stored and shown (`direct`, `moderated`).
#[must_use]
pub fn payment_name(payment: Payment) -> &'static str {
    match payment {
        Payment::Direct => "direct",
        Payment::Moderated => "moderated",
    }
}

fn parse_address(text: &str, network: Network) -> Result<Address, FlowError> {
    text.parse::<Address<_>>()
        .ok()
        .and_then(|a| a.require_network(network).ok())
        .ok_or_else(|| mismatch(format!("{text:.100} is not an address on {network}")))
}

/// The miner-fee cap of an escrow of `total` sats: [`MAX_MINER_FEE_BP`] of it, at least
/// [`MIN_FEE_CAP_SATS`].
#[must_use]
pub fn max_fee(total: u64) -> Amount {
    Amount::from_sat((total.saturating_mul(MAX_MINER_FEE_BP) / 10_000).max(MIN_FEE_CAP_SATS))
}

/// What spending an order's escrow would cost in miner fees at one fee rate (the largest spend:
/// a dispute payout with three outputs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeeEstimate {
    /// The miner fee of that spend, in satoshis.
    pub fee_sats: u64,
    /// That fee as a share of the order's amount, in basis points.
    pub share_bp: u64,
    /// The cap a spend of this escrow may leave to miners ([`max_fee`]).
    pub cap_sats: u64,
    /// The fee is above [`WARN_MINER_FEE_BP`] of the amount: tell the buyer before ordering.
    pub warn: bool,
    /// The fee is above the cap: escrow is refused at this fee rate.
    pub refused: bool,
}

impl Orders {
    /// Opens (creating if needed) the order database at `path` for the person of `keychain`,
    /// placing new orders on `network` (`"bitcoin"`, `"testnet"`, `"signet"` or `"regtest"`;
    /// orders received carry their own network and are refused if it differs).
    ///
    /// # Errors
    /// [`FlowError::Storage`] if the file cannot be opened or is from a newer version;
    /// [`FlowError::Mismatch`] for an unknown network.
    pub fn open(path: &Path, keychain: Keychain, network: &str) -> Result<Self, FlowError> {
        let network_name = network.to_string();
        souk_protocol::order::parse_network(network)
            .ok_or_else(|| mismatch(format!("unknown network {network:.20}")))?;
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS orders (
                 id BLOB PRIMARY KEY, role TEXT NOT NULL, payment TEXT NOT NULL,
                 state TEXT NOT NULL, request BLOB NOT NULL, confirmation BLOB,
                 escrow_index INTEGER, rating_index INTEGER, payout_index INTEGER,
                 funding_txid BLOB, funding_vout INTEGER, funding_sats INTEGER,
                 funding_height INTEGER, pending_psbt BLOB, decision BLOB,
                 seller_servers TEXT NOT NULL DEFAULT '',
                 created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL,
                 version INTEGER NOT NULL DEFAULT 0);
             CREATE TABLE IF NOT EXISTS transitions (
                 order_id BLOB NOT NULL, seq INTEGER NOT NULL, from_state TEXT NOT NULL,
                 event TEXT NOT NULL, actor TEXT NOT NULL, to_state TEXT NOT NULL,
                 at INTEGER NOT NULL, PRIMARY KEY (order_id, seq));
             CREATE TABLE IF NOT EXISTS messages (
                 seq INTEGER PRIMARY KEY AUTOINCREMENT, order_id BLOB NOT NULL,
                 direction TEXT NOT NULL, signed BLOB NOT NULL, at INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS seen (id BLOB PRIMARY KEY);
             CREATE TABLE IF NOT EXISTS outbox (
                 id BLOB PRIMARY KEY, order_id BLOB NOT NULL, recipient BLOB NOT NULL,
                 servers TEXT NOT NULL, sealed BLOB NOT NULL, created_at INTEGER NOT NULL);",
        )?;
        let version: Option<i64> = conn
            .query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| {
                r.get(0)
            })
            .optional()?;
        match version {
            None => {
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema', ?1)",
                    params![SCHEMA_VERSION],
                )?;
            }
            Some(v) if v > SCHEMA_VERSION => {
                return Err(FlowError::Storage(format!(
                    "the order database is from a newer version (schema {v}); update the app"
                )));
            }
            Some(v) if v < SCHEMA_VERSION => {
                // Schema 1 → 2: the row version that steps check before they write.
                let has_version = conn
                    .prepare("SELECT 1 FROM pragma_table_info('orders') WHERE name = 'version'")?
                    .exists([])?;
                if !has_version {
                    conn.execute_batch(
                        "ALTER TABLE orders ADD COLUMN version INTEGER NOT NULL DEFAULT 0",
                    )?;
                }
                conn.execute(
                    "UPDATE meta SET value = ?1 WHERE key = 'schema'",
                    params![SCHEMA_VERSION],
                )?;
            }
            Some(_) => {}
        }
        Ok(Self {
            db: Mutex::new(conn),
            keychain,
            network: network_name,
        })
    }

    fn db(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.db.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn identity(&self) -> IdentityKey {
        self.keychain.identity()
    }

    /// Hands out the next index of `counter` (escrow, rating or payout), persisting the next one
    /// first so a crash can skip an index but never reuse one.
    fn allocate(&self, counter: &str) -> Result<u32, FlowError> {
        let db = self.db();
        let next: i64 = db
            .query_row(
                "SELECT value FROM meta WHERE key = ?1",
                params![counter],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0);
        let index = u32::try_from(next)
            .ok()
            .filter(|i| *i < 0x8000_0000)
            .ok_or_else(|| keys_error("index space exhausted"))?;
        db.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![counter, next + 1],
        )?;
        Ok(index)
    }

    fn seal(
        &self,
        order_id: [u8; 32],
        recipient: PublicKey,
        servers: Vec<String>,
        body: pb::message::Body,
        at: u64,
    ) -> Result<(Outgoing, Vec<u8>), FlowError> {
        // A message nobody can be given would sit in the outbox forever: refuse the step.
        if servers.is_empty() {
            return Err(mismatch(format!(
                "{} names no inbox server to send to",
                recipient.to_address()
            )));
        }
        let message = pb::Message {
            created_at: at,
            recipient: recipient.as_bytes().to_vec(),
            order_id: if matches!(body, pb::message::Body::Order(_)) {
                Vec::new()
            } else {
                order_id.to_vec()
            },
            body: Some(body),
        };
        let sealed = self
            .identity()
            .seal_message(&message, &ValidationContext::at(at))?;
        Ok((
            Outgoing {
                order_id,
                recipient,
                servers,
                sealed: sealed.bytes,
            },
            sealed.signed,
        ))
    }

    // ---- reading and writing records ---------------------------------------------------

    /// Every order on the device, newest first.
    ///
    /// # Errors
    /// [`FlowError::Storage`].
    pub fn list(&self) -> Result<Vec<OrderRecord>, FlowError> {
        let ids: Vec<Vec<u8>> = {
            let db = self.db();
            let mut statement = db.prepare("SELECT id FROM orders ORDER BY created_at DESC")?;
            statement
                .query_map([], |r| r.get::<_, Vec<u8>>(0))?
                .collect::<Result<_, _>>()?
        };
        ids.iter()
            .filter_map(|id| <[u8; 32]>::try_from(id.as_slice()).ok())
            .map(|id| self.get(&id))
            .collect()
    }

    /// One order.
    ///
    /// # Errors
    /// [`FlowError::UnknownOrder`], [`FlowError::Storage`].
    pub fn get(&self, id: &[u8; 32]) -> Result<OrderRecord, FlowError> {
        let db = self.db();
        type Row = (
            String,
            String,
            String,
            Vec<u8>,
            Option<Vec<u8>>,
            (Option<i64>, Option<i64>, Option<i64>),
            (Option<Vec<u8>>, Option<i64>, Option<i64>, Option<i64>),
            Option<Vec<u8>>,
            Option<Vec<u8>>,
            (String, i64),
        );
        let row: Option<Row> = db
            .query_row(
                "SELECT role, payment, state, request, confirmation, escrow_index, rating_index,
                        payout_index, funding_txid, funding_vout, funding_sats, funding_height,
                        pending_psbt, decision, seller_servers, version
                 FROM orders WHERE id = ?1",
                params![id.as_slice()],
                |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        (r.get(5)?, r.get(6)?, r.get(7)?),
                        (r.get(8)?, r.get(9)?, r.get(10)?, r.get(11)?),
                        r.get(12)?,
                        r.get(13)?,
                        (r.get(14)?, r.get(15)?),
                    ))
                },
            )
            .optional()?;
        let Some((
            role,
            payment,
            state,
            request_signed,
            confirmation,
            indices,
            funding,
            psbt,
            decision,
            (seller_servers, version),
        )) = row
        else {
            return Err(FlowError::UnknownOrder(hex(id)));
        };
        let mut statement = db.prepare(
            "SELECT from_state, event, actor, to_state, at FROM transitions
             WHERE order_id = ?1 ORDER BY seq",
        )?;
        let history = statement
            .query_map(params![id.as_slice()], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, i64>(4)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .map(|(from, event, actor, to, at)| {
                Ok(souk_protocol::order::Transition {
                    from: from.parse()?,
                    event: *Event::ALL
                        .iter()
                        .find(|e| e.as_str() == event)
                        .ok_or(OrderError::UnknownState)?,
                    actor: match actor.as_str() {
                        "buyer" => Actor::Buyer,
                        "seller" => Actor::Seller,
                        "moderator" => Actor::Moderator,
                        _ => Actor::Chain,
                    },
                    to: to.parse()?,
                    at: u64::try_from(at).unwrap_or(0),
                })
            })
            .collect::<Result<Vec<_>, FlowError>>()?;
        drop(statement);
        drop(db);
        // Stored messages were checked when they came in; re-read without the clock rules.
        let old = ValidationContext::at(u64::MAX / 2);
        let request_opened = read_signed_message(&request_signed, &old)?;
        let Some(pb::message::Body::Order(request)) = request_opened.message().body.clone() else {
            return Err(FlowError::Storage("stored request is not an order".into()));
        };
        let seller = PublicKey::from_bytes(&request_opened.message().recipient)
            .map_err(|e| FlowError::Storage(e.to_string()))?;
        let confirmation = match confirmation {
            Some(bytes) => {
                let opened = read_signed_message(&bytes, &old)?;
                match opened.message().body.clone() {
                    Some(pb::message::Body::Confirmation(c)) => Some((bytes, c)),
                    _ => return Err(FlowError::Storage("stored confirmation is not one".into())),
                }
            }
            None => None,
        };
        let funding = match funding {
            (Some(txid), Some(vout), Some(sats), height) => Some((
                OutPoint {
                    txid: <[u8; 32]>::try_from(txid.as_slice())
                        .map(souk_escrow::bitcoin::hashes::Hash::from_byte_array)
                        .map_err(|_| FlowError::Storage("funding txid".into()))?,
                    vout: opt_u32(Some(vout)).unwrap_or(0),
                },
                u64::try_from(sats).unwrap_or(0),
                opt_u32(height),
            )),
            _ => None,
        };
        let decision = decision
            .map(|bytes| pb::Decision::decode(bytes.as_slice()))
            .transpose()
            .map_err(|e| FlowError::Storage(e.to_string()))?;
        Ok(OrderRecord {
            id: *id,
            role: Role::parse(&role)?,
            order: Order::restore(
                *id,
                if payment == "moderated" {
                    Payment::Moderated
                } else {
                    Payment::Direct
                },
                state.parse()?,
                history,
            ),
            buyer: request_opened.sender(),
            seller,
            request_signed,
            request,
            confirmation,
            escrow_index: opt_u32(indices.0),
            rating_index: opt_u32(indices.1),
            payout_index: opt_u32(indices.2),
            funding,
            pending_psbt: psbt,
            decision,
            seller_servers: seller_servers
                .lines()
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect(),
            version,
        })
    }

    fn insert(&self, record: &OrderRecord, at: u64) -> Result<(), FlowError> {
        self.db().execute(
            "INSERT INTO orders (id, role, payment, state, request, escrow_index, rating_index,
                                 payout_index, seller_servers, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?10, ?9, ?9)",
            params![
                record.id.as_slice(),
                record.role.as_str(),
                payment_name(record.order.payment()),
                record.order.state().as_str(),
                record.request_signed,
                record.escrow_index,
                record.rating_index,
                record.payout_index,
                i64::try_from(at).unwrap_or(i64::MAX),
                record.seller_servers.join("\n"),
            ],
        )?;
        Ok(())
    }

    /// Applies `event` and writes the new state, the step, the record's changed fields and the
    /// message (if any) in one transaction.
    fn commit(
        &self,
        record: &mut OrderRecord,
        event: Option<(Event, Actor)>,
        message: Option<(&str, &[u8])>,
        at: u64,
    ) -> Result<(), FlowError> {
        self.commit_with(record, event, message, &[], at)
    }

    /// [`Self::commit`], and in the same transaction puts `outbox` messages in the outbox, where
    /// they stay until [`Orders::delivered`] is called for them.
    fn commit_with(
        &self,
        record: &mut OrderRecord,
        event: Option<(Event, Actor)>,
        message: Option<(&str, &[u8])>,
        outbox: &[&Outgoing],
        at: u64,
    ) -> Result<(), FlowError> {
        self.commit_inner(record, event, message, outbox, at, true)
    }

    /// Commits a step whose transaction is already broadcast. If another step changed the
    /// order while the step waited on the network, the step is applied to the order as it is
    /// now (its pending PSBT as the step left it), so money that moved is never left
    /// unrecorded; only when the step no longer applies to the order at all is that error
    /// returned.
    fn commit_broadcast(
        &self,
        record: &mut OrderRecord,
        event: (Event, Actor),
        message: Option<(&str, &[u8])>,
        outbox: &[&Outgoing],
        at: u64,
    ) -> Result<(), FlowError> {
        let pending_psbt = record.pending_psbt.clone();
        match self.commit_with(record, Some(event), message, outbox, at) {
            Err(FlowError::Changed(_)) => {
                let mut fresh = self.get(&record.id)?;
                fresh.pending_psbt = pending_psbt;
                self.commit_with(&mut fresh, Some(event), message, outbox, at)?;
                *record = fresh;
                Ok(())
            }
            other => other,
        }
    }

    /// Stores a message this device sent that changes nothing of the order (chat, evidence, a
    /// payment notice) and puts it in the outbox, without rewriting the order's row: a step
    /// that moved the order meanwhile keeps its change.
    fn commit_note(
        &self,
        record: &mut OrderRecord,
        signed: &[u8],
        outbox: &[&Outgoing],
        at: u64,
    ) -> Result<(), FlowError> {
        self.commit_inner(record, None, Some(("out", signed)), outbox, at, false)
    }

    /// Seals a message that changes nothing of the order for one recipient and stores it with
    /// the order ([`Self::commit_note`]).
    fn send_note(
        &self,
        record: &mut OrderRecord,
        recipient: PublicKey,
        servers: Vec<String>,
        body: pb::message::Body,
        at: u64,
    ) -> Result<Outgoing, FlowError> {
        let (outgoing, signed) = self.seal(record.id, recipient, servers, body, at)?;
        self.commit_note(record, &signed, &[&outgoing], at)?;
        Ok(outgoing)
    }

    fn commit_inner(
        &self,
        record: &mut OrderRecord,
        event: Option<(Event, Actor)>,
        message: Option<(&str, &[u8])>,
        outbox: &[&Outgoing],
        at: u64,
        update_row: bool,
    ) -> Result<(), FlowError> {
        if let Some((event, actor)) = event {
            record.order.apply(event, actor, at)?;
        }
        let mut db = self.db();
        // Immediate: the write lock is taken now, so the version check below and the write are
        // one step even against another handle on the same file.
        let tx = db.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let at_i = i64::try_from(at).unwrap_or(i64::MAX);
        let (funding_txid, funding_vout, funding_sats, funding_height) = match &record.funding {
            Some((outpoint, sats, height)) => (
                Some(souk_escrow::bitcoin::hashes::Hash::to_byte_array(outpoint.txid).to_vec()),
                Some(i64::from(outpoint.vout)),
                i64::try_from(*sats).ok(),
                height.map(i64::from),
            ),
            None => (None, None, None, None),
        };
        if update_row {
            // Optimistic: the row is written only if nobody rewrote it since this step read it
            // (every rewrite bumps `version`); otherwise another step finished first, and
            // writing what this step read would undo it.
            let written = tx.execute(
                "UPDATE orders SET state = ?2, confirmation = ?3, escrow_index = ?4,
                 payout_index = ?5, funding_txid = ?6, funding_vout = ?7, funding_sats = ?8,
                 funding_height = ?9, pending_psbt = ?10, decision = ?11, updated_at = ?12,
                 version = version + 1
             WHERE id = ?1 AND version = ?13",
                params![
                    record.id.as_slice(),
                    record.order.state().as_str(),
                    record.confirmation.as_ref().map(|(bytes, _)| bytes.clone()),
                    record.escrow_index,
                    record.payout_index,
                    funding_txid,
                    funding_vout,
                    funding_sats,
                    funding_height,
                    record.pending_psbt,
                    record.decision.as_ref().map(prost::Message::encode_to_vec),
                    at_i,
                    record.version,
                ],
            )?;
            if written == 0 {
                return Err(FlowError::Changed(format!(
                    "order {} changed while this step ran (another step on it finished first); \
                     this step stored nothing: read the order again and retry",
                    hex(&record.id)
                )));
            }
        }
        if event.is_some()
            && let Some(step) = record.order.history().last()
        {
            tx.execute(
                "INSERT INTO transitions (order_id, seq, from_state, event, actor, to_state, at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    record.id.as_slice(),
                    i64::try_from(record.order.history().len()).unwrap_or(i64::MAX),
                    step.from.as_str(),
                    step.event.as_str(),
                    step.actor.as_str(),
                    step.to.as_str(),
                    at_i,
                ],
            )?;
        }
        if let Some((direction, signed)) = message {
            tx.execute(
                "INSERT INTO messages (order_id, direction, signed, at) VALUES (?1, ?2, ?3, ?4)",
                params![record.id.as_slice(), direction, signed, at_i],
            )?;
            // A received message is marked processed in the same transaction as its effect, so
            // a crash between the two cannot make a redelivered copy count twice.
            if direction == "in" {
                tx.execute(
                    "INSERT INTO seen (id) VALUES (?1) ON CONFLICT (id) DO NOTHING",
                    params![souk_protocol::message::SealedId::of(signed).0.as_slice()],
                )?;
            }
        }
        for outgoing in outbox {
            tx.execute(
                "INSERT INTO outbox (id, order_id, recipient, servers, sealed, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (id) DO NOTHING",
                params![
                    souk_protocol::message::SealedId::of(&outgoing.sealed)
                        .0
                        .as_slice(),
                    outgoing.order_id.as_slice(),
                    outgoing.recipient.as_bytes().as_slice(),
                    outgoing.servers.join("\n"),
                    outgoing.sealed,
                    at_i,
                ],
            )?;
        }
        tx.commit()?;
        if update_row {
            record.version += 1;
        }
        Ok(())
    }

    fn mark_seen(&self, sealed_id: &[u8; 32]) -> Result<bool, FlowError> {
        let inserted = self.db().execute(
            "INSERT INTO seen (id) VALUES (?1) ON CONFLICT (id) DO NOTHING",
            params![sealed_id.as_slice()],
        )?;
        Ok(inserted == 1)
    }

    fn was_seen(&self, sealed_id: &[u8; 32]) -> Result<bool, FlowError> {
        Ok(self
            .db()
            .query_row(
                "SELECT 1 FROM seen WHERE id = ?1",
                params![sealed_id.as_slice()],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    /// The signed messages stored with an order, oldest first, with their direction (`in` or
    /// `out`).
    ///
    /// # Errors
    /// [`FlowError::Storage`].
    pub fn messages(&self, id: &[u8; 32]) -> Result<Vec<(String, Vec<u8>)>, FlowError> {
        let db = self.db();
        let mut statement =
            db.prepare("SELECT direction, signed FROM messages WHERE order_id = ?1 ORDER BY seq")?;
        let rows = statement
            .query_map(params![id.as_slice()], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Messages made by this device that no inbox server has confirmed holding yet, oldest
    /// first: send each again and call [`Orders::delivered`] once a server took it.
    ///
    /// # Errors
    /// [`FlowError::Storage`].
    pub fn outbox(&self) -> Result<Vec<Outgoing>, FlowError> {
        let db = self.db();
        let mut statement = db.prepare(
            "SELECT order_id, recipient, servers, sealed FROM outbox ORDER BY created_at, rowid",
        )?;
        let rows = statement
            .query_map([], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, Vec<u8>>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Vec<u8>>(3)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter()
            .map(|(order_id, recipient, servers, sealed)| {
                Ok(Outgoing {
                    order_id: order_id
                        .as_slice()
                        .try_into()
                        .map_err(|_| FlowError::Storage("outbox order id".into()))?,
                    recipient: PublicKey::from_bytes(&recipient)
                        .map_err(|e| FlowError::Storage(e.to_string()))?,
                    servers: servers.lines().map(str::to_owned).collect(),
                    sealed,
                })
            })
            .collect()
    }

    /// Takes a message out of the outbox: an inbox server holds it.
    ///
    /// # Errors
    /// [`FlowError::Storage`].
    pub fn delivered(&self, sealed: &[u8]) -> Result<(), FlowError> {
        self.db().execute(
            "DELETE FROM outbox WHERE id = ?1",
            params![souk_protocol::message::SealedId::of(sealed).0.as_slice()],
        )?;
        Ok(())
    }

    // ---- escrow -------------------------------------------------------------------------

    fn moderator_key(
        &self,
        record: &OrderRecord,
    ) -> Result<souk_escrow::bitcoin::CompressedPublicKey, FlowError> {
        let profile = &record.request.moderator_profile;
        let (_, offer) = moderator_offer(profile, record.request_created_at())?;
        souk_protocol::identity::moderation_key_from_xpub(&offer.escrow_xpub, &record.id)
            .map_err(keys_error)
    }

    fn escrow_of(&self, record: &OrderRecord) -> Result<Escrow, FlowError> {
        let (_, confirmation) = record
            .confirmation
            .as_ref()
            .ok_or_else(|| mismatch("the order is not confirmed"))?;
        let buyer =
            souk_escrow::bitcoin::CompressedPublicKey::from_slice(&record.request.buyer_escrow_key)
                .map_err(escrow_error)?;
        let seller =
            souk_escrow::bitcoin::CompressedPublicKey::from_slice(&confirmation.seller_escrow_key)
                .map_err(escrow_error)?;
        let timeout = u16::try_from(confirmation.escrow_timeout_blocks)
            .map_err(|_| mismatch("escrow timeout out of range"))?;
        Escrow::moderated(buyer, seller, self.moderator_key(record)?, timeout).map_err(escrow_error)
    }

    fn terms(&self, record: &OrderRecord, spend: &Spend) -> Result<Terms, FlowError> {
        let (outpoint, sats, _) = record
            .funding
            .ok_or_else(|| mismatch("the escrow is not funded yet"))?;
        Terms::new(
            self.escrow_of(record)?,
            record.network()?,
            &[Funding {
                outpoint,
                amount: Amount::from_sat(sats),
            }],
            spend,
            max_fee(sats),
        )
        .map_err(escrow_error)
    }

    fn escrow_secret(
        &self,
        record: &OrderRecord,
    ) -> Result<souk_escrow::bitcoin::secp256k1::SecretKey, FlowError> {
        let network = record.network()?;
        match record.role {
            Role::Moderator => Ok(self
                .keychain
                .moderation_key(network, &record.id)
                .map_err(keys_error)?
                .secret),
            _ => {
                let index = record
                    .escrow_index
                    .ok_or_else(|| mismatch("no escrow key was allocated for this order"))?;
                Ok(self
                    .keychain
                    .escrow_key(network, index)
                    .map_err(keys_error)?
                    .secret)
            }
        }
    }

    fn seller_payout(record: &OrderRecord) -> Result<Address, FlowError> {
        let (_, confirmation) = record
            .confirmation
            .as_ref()
            .ok_or_else(|| mismatch("the order is not confirmed"))?;
        parse_address(&confirmation.payout_address, record.network()?)
    }

    /// Checks `psbt` against `spend` for this order, signs it with this device's escrow key, and
    /// returns it; with `finalize`, also finalizes it into the transaction to broadcast.
    fn sign_spend(
        &self,
        record: &OrderRecord,
        psbt: Option<&[u8]>,
        spend: &Spend,
        fee_rate: FeeRate,
    ) -> Result<(Psbt, Terms), FlowError> {
        let terms = self.terms(record, spend)?;
        let mut psbt = match psbt {
            Some(bytes) => souk_escrow::parse_psbt(bytes).map_err(escrow_error)?,
            None => terms.build(fee_rate).map_err(escrow_error)?,
        };
        let secret = self.escrow_secret(record)?;
        souk_escrow::sign(&mut psbt, &terms, &secret).map_err(escrow_error)?;
        Ok((psbt, terms))
    }
}

impl OrderRecord {
    fn request_created_at(&self) -> u64 {
        read_signed_message(&self.request_signed, &ValidationContext::at(u64::MAX / 2))
            .map_or(0, |m| m.message().created_at)
    }

    fn buyer_servers(&self) -> Vec<String> {
        self.request.reply_inbox_servers.clone()
    }
}

/// What the seller learns from an order request before accepting it into its book.
fn check_request(
    me: &PublicKey,
    opened: &OpenedMessage,
    request: &pb::OrderRequest,
) -> Result<pb::Listing, FlowError> {
    let at = opened.message().created_at;
    let listing = open(&request.listing, &ValidationContext::at(at))
        .map_err(|e| mismatch(format!("the ordered listing is refused: {e}")))?;
    if listing.signer() != *me {
        return Err(mismatch("the ordered listing is not this seller's"));
    }
    let Object::Listing(l) = listing.object().clone() else {
        return Err(mismatch("the ordered object is not a listing"));
    };
    for (sku, _) in request.items.iter().map(|i| (i.sku, i.quantity)) {
        if !(l.skus.is_empty() && sku == 0 || (sku as usize) < l.skus.len()) {
            return Err(mismatch(format!("the listing has no SKU {sku}")));
        }
    }
    if request.payment == pb::PaymentMethod::Moderated as i32 {
        let (moderator, _) = moderator_offer(&request.moderator_profile, at)?;
        if moderator.as_bytes().as_slice() != request.moderator.as_slice() {
            return Err(mismatch(
                "the moderator's profile is not the named moderator's",
            ));
        }
        if !l
            .accepted_moderators
            .iter()
            .any(|m| m.as_slice() == moderator.as_bytes())
        {
            return Err(mismatch("the listing does not accept that moderator"));
        }
    }
    Ok(l)
}

fn rating_permit_ok(
    order_id: &[u8; 32],
    rating_key: &[u8],
    subject: &PublicKey,
    role: pb::RatingRole,
    signature: &[u8],
) -> bool {
    let (Ok(rating_key), Ok(signature)) = (
        PublicKey::from_bytes(rating_key),
        <[u8; 64]>::try_from(signature),
    ) else {
        return false;
    };
    let digest = rating_permit_digest(order_id, &rating_key, subject, role);
    subject.verify_digest(&digest, &signature)
}

// ---- the steps --------------------------------------------------------------------------------

impl Orders {
    /// The buyer orders: checks the listing (and moderator), allocates this order's keys, signs
    /// and seals the request to the seller and records the order as `requested`.
    ///
    /// # Errors
    /// [`FlowError::Mismatch`] for a listing or moderator that does not allow the order;
    /// [`FlowError::Message`] for a request that breaks a rule (the code names it).
    pub fn place_order(&self, order: PlaceOrder, at: u64) -> Result<Outgoing, FlowError> {
        let ctx = ValidationContext::at(at);
        let listing = open(&order.listing, &ctx)
            .map_err(|e| mismatch(format!("the listing is refused: {e}")))?;
        let Object::Listing(l) = listing.object() else {
            return Err(mismatch("that envelope is not a listing"));
        };
        let network_name = self.network.as_str();
        let network = souk_protocol::order::parse_network(network_name)
            .ok_or_else(|| mismatch("unknown network"))?;
        let (payment, moderator, buyer_escrow_key, escrow_index) = match &order.moderator_profile {
            Some(profile) => {
                let (moderator, _offer) = moderator_offer(profile, at)?;
                if moderator == listing.signer() {
                    return Err(mismatch(
                        "the seller cannot moderate its own sale (it would hold two of the three escrow keys)",
                    ));
                }
                if let Some(rate) = order.fee_rate {
                    let estimate =
                        self.escrow_fee_estimate(order.amount_sats, profile, rate, at)?;
                    if estimate.refused {
                        return Err(FlowError::FeeTooHigh(format!(
                            "at {} sat/vB, spending this escrow would cost about {} sats in miner fees, more than the cap of {} sats ({} % of the order, at least {MIN_FEE_CAP_SATS} sats): pay directly, order more, or wait for lower fees",
                            rate.to_sat_per_vb_ceil(),
                            estimate.fee_sats,
                            estimate.cap_sats,
                            MAX_MINER_FEE_BP / 100
                        )));
                    }
                }
                if !l
                    .accepted_moderators
                    .iter()
                    .any(|m| m.as_slice() == moderator.as_bytes())
                {
                    return Err(mismatch("the listing does not accept that moderator"));
                }
                let index = self.allocate("escrow")?;
                let key = self
                    .keychain
                    .escrow_key(network, index)
                    .map_err(keys_error)?;
                (
                    pb::PaymentMethod::Moderated,
                    moderator.as_bytes().to_vec(),
                    key.public.to_bytes().to_vec(),
                    Some(index),
                )
            }
            None => (pb::PaymentMethod::Direct, Vec::new(), Vec::new(), None),
        };
        let rating_index = self.allocate("rating")?;
        let payout_index = self.allocate("payout")?;
        let rating_key = self.keychain.rating_key(rating_index).map_err(keys_error)?;
        let refund = self
            .keychain
            .payout_address(network, payout_index)
            .map_err(keys_error)?;
        let request = pb::OrderRequest {
            listing: order.listing.clone(),
            items: order
                .items
                .iter()
                .map(|(sku, quantity)| pb::OrderItem {
                    sku: *sku,
                    quantity: *quantity,
                })
                .collect(),
            shipping_option: order.shipping_option,
            shipping_service: order.shipping_service,
            shipping_address: order.shipping_address,
            payment: payment as i32,
            moderator,
            buyer_escrow_key,
            refund_address: refund.to_string(),
            amount_sats: order.amount_sats,
            rating_key: rating_key.public_key().as_bytes().to_vec(),
            reply_inbox_servers: order.reply_inbox,
            network: network_name.into(),
            memo: order.memo,
            moderator_profile: order.moderator_profile.unwrap_or_default(),
        };
        let seller = listing.signer();
        let (outgoing, signed) = self.seal(
            [0; 32],
            seller,
            order.seller_inbox,
            pb::message::Body::Order(request.clone()),
            at,
        )?;
        let id = order_id_of(&signed);
        let mut record = OrderRecord {
            id,
            role: Role::Buyer,
            order: Order::new(
                id,
                if payment == pb::PaymentMethod::Moderated {
                    Payment::Moderated
                } else {
                    Payment::Direct
                },
            ),
            request_signed: signed.clone(),
            request,
            buyer: self.identity().public_key(),
            seller,
            confirmation: None,
            escrow_index,
            rating_index: Some(rating_index),
            payout_index: Some(payout_index),
            funding: None,
            pending_psbt: None,
            decision: None,
            seller_servers: outgoing.servers.clone(),
            version: 0,
        };
        let outgoing = Outgoing {
            order_id: id,
            ..outgoing
        };
        self.insert(&record, at)?;
        self.commit_with(&mut record, None, Some(("out", &signed)), &[&outgoing], at)?;
        Ok(outgoing)
    }

    /// Reads a sealed message fetched from an inbox: opens it, checks it against its order and
    /// moves the order. Copies already processed (from another inbox server) change nothing.
    ///
    /// # Errors
    /// [`FlowError`] naming what does not fit; the message is then not recorded, so it can be
    /// looked at again.
    pub fn receive(&self, sealed: &[u8], at: u64) -> Result<Received, FlowError> {
        let header = souk_protocol::message::inspect_sealed(sealed)?;
        if self.was_seen(&header.id.0)? {
            return Ok(Received::AlreadySeen);
        }
        let me = self.identity();
        let opened = me.open_message(sealed, &ValidationContext::at(at))?;
        // The same signed message may come sealed twice (a sender's retry): one id for both.
        let signed_id = souk_protocol::message::SealedId::of(opened.signed_bytes()).0;
        if self.was_seen(&signed_id)? {
            self.mark_seen(&header.id.0)?;
            return Ok(Received::AlreadySeen);
        }
        let body = opened
            .message()
            .body
            .clone()
            .ok_or_else(|| mismatch("empty message"))?;
        let outcome = match body {
            pb::message::Body::Order(request) => self.receive_request(&opened, request, at)?,
            pb::message::Body::Dispute(dispute) if self.is_unknown(&opened)? => {
                self.receive_dispute_as_moderator(&opened, &dispute, at)?
            }
            body => self.receive_update(&opened, body, at)?,
        };
        self.mark_seen(&header.id.0)?;
        self.mark_seen(&signed_id)?;
        Ok(outcome)
    }

    fn is_unknown(&self, opened: &OpenedMessage) -> Result<bool, FlowError> {
        let Some(id) = opened.order_id() else {
            return Ok(true);
        };
        match self.get(&id) {
            Ok(_) => Ok(false),
            Err(FlowError::UnknownOrder(_)) => Ok(true),
            Err(other) => Err(other),
        }
    }

    fn receive_request(
        &self,
        opened: &OpenedMessage,
        request: pb::OrderRequest,
        at: u64,
    ) -> Result<Received, FlowError> {
        let me = self.identity().public_key();
        if request.network != self.network {
            return Err(mismatch(format!(
                "the order is for {}, this book is on {}",
                request.network, self.network
            )));
        }
        check_request(&me, opened, &request)?;
        let id = opened
            .order_id()
            .ok_or_else(|| mismatch("an order request without an id"))?;
        if self.get(&id).is_ok() {
            return Ok(Received::AlreadySeen);
        }
        let payment = if request.payment == pb::PaymentMethod::Moderated as i32 {
            Payment::Moderated
        } else {
            Payment::Direct
        };
        let mut record = OrderRecord {
            id,
            role: Role::Seller,
            order: Order::new(id, payment),
            request_signed: opened.signed_bytes().to_vec(),
            request,
            buyer: opened.sender(),
            seller: me,
            confirmation: None,
            escrow_index: None,
            rating_index: None,
            payout_index: None,
            funding: None,
            pending_psbt: None,
            decision: None,
            seller_servers: Vec::new(),
            version: 0,
        };
        self.insert(&record, at)?;
        self.commit(&mut record, None, Some(("in", opened.signed_bytes())), at)?;
        Ok(Received::NewOrder { order_id: id })
    }

    fn receive_dispute_as_moderator(
        &self,
        opened: &OpenedMessage,
        dispute: &pb::DisputeOpen,
        at: u64,
    ) -> Result<Received, FlowError> {
        let old = ValidationContext::at(at);
        let request_msg = read_signed_message(&dispute.order, &old)?;
        let Some(pb::message::Body::Order(request)) = request_msg.message().body.clone() else {
            return Err(mismatch("the dispute does not quote an order request"));
        };
        let id = order_id_of(&dispute.order);
        if opened.order_id() != Some(id) {
            return Err(mismatch(
                "the dispute is about another order than it quotes",
            ));
        }
        if request.moderator.as_slice() != self.identity().public_key().as_bytes() {
            return Err(mismatch("this device is not the order's moderator"));
        }
        let confirmation_msg = read_signed_message(&dispute.confirmation, &old)?;
        let seller = PublicKey::from_bytes(&request_msg.message().recipient)
            .map_err(|e| mismatch(e.to_string()))?;
        let Some(pb::message::Body::Confirmation(confirmation)) =
            confirmation_msg.message().body.clone()
        else {
            return Err(mismatch("the dispute does not quote a confirmation"));
        };
        if confirmation_msg.sender() != seller || confirmation_msg.order_id() != Some(id) {
            return Err(mismatch(
                "the quoted confirmation is not the seller's for this order",
            ));
        }
        if opened.sender() != seller && opened.sender() != request_msg.sender() {
            return Err(mismatch("only the buyer or the seller can open a dispute"));
        }
        let txid: [u8; 32] = dispute
            .funding_txid
            .as_slice()
            .try_into()
            .map_err(|_| mismatch("funding txid"))?;
        let mut record = OrderRecord {
            id,
            role: Role::Moderator,
            order: Order::restore(id, Payment::Moderated, OrderState::Disputed, Vec::new()),
            request_signed: dispute.order.clone(),
            request,
            buyer: request_msg.sender(),
            seller,
            confirmation: Some((dispute.confirmation.clone(), confirmation)),
            escrow_index: None,
            rating_index: None,
            payout_index: None,
            funding: Some((
                OutPoint {
                    txid: souk_escrow::bitcoin::hashes::Hash::from_byte_array(txid),
                    vout: dispute.funding_vout,
                },
                dispute.funding_sats,
                None,
            )),
            pending_psbt: None,
            decision: None,
            seller_servers: Vec::new(),
            version: 0,
        };
        // The escrow must be the one the quoted messages define, or there is nothing to decide.
        let escrow = self.escrow_of(&record)?;
        let (_, confirmation) = record
            .confirmation
            .as_ref()
            .ok_or_else(|| mismatch("no confirmation"))?;
        if escrow.address(record.network()?).to_string() != confirmation.payment_address {
            return Err(mismatch(
                "the quoted confirmation's escrow address does not match its keys",
            ));
        }
        self.insert(&record, at)?;
        self.commit(&mut record, None, Some(("in", opened.signed_bytes())), at)?;
        Ok(Received::NewOrder { order_id: id })
    }

    fn receive_update(
        &self,
        opened: &OpenedMessage,
        body: pb::message::Body,
        at: u64,
    ) -> Result<Received, FlowError> {
        let id = opened
            .order_id()
            .ok_or_else(|| mismatch("chat outside an order is not handled here"))?;
        let mut record = self.get(&id)?;
        let actor = record
            .actor_of(&opened.sender())
            .ok_or_else(|| mismatch("the sender takes no part in this order"))?;
        let network = record.network()?;
        let row_before = record.row_fields();
        match &body {
            pb::message::Body::Confirmation(c) => {
                if c.amount_sats != record.request.amount_sats {
                    return Err(mismatch(format!(
                        "the confirmation asks {} sats; the order offered {}",
                        c.amount_sats, record.request.amount_sats
                    )));
                }
                parse_address(&c.payout_address, network)?;
                if !rating_permit_ok(
                    &id,
                    &record.request.rating_key,
                    &record.seller,
                    pb::RatingRole::Seller,
                    &c.rating_permit,
                ) {
                    return Err(mismatch("the seller's rating permit does not verify"));
                }
                record.confirmation = Some((opened.signed_bytes().to_vec(), c.clone()));
                if record.order.payment() == Payment::Moderated {
                    let expected = self.escrow_of(&record)?.address(network).to_string();
                    if expected != c.payment_address {
                        return Err(mismatch(format!(
                            "the seller asks payment to {}, but the escrow of these keys is {expected}",
                            c.payment_address
                        )));
                    }
                } else {
                    parse_address(&c.payment_address, network)?;
                }
            }
            pb::message::Body::Fulfillment(f) if record.order.payment() == Payment::Moderated => {
                if f.release_psbt.is_empty() {
                    return Err(mismatch(
                        "a moderated fulfilment must carry the release PSBT",
                    ));
                }
                // Checked now, so a bad PSBT is refused at once, not at completion.
                let spend = Spend::Release {
                    seller: Self::seller_payout(&record)?.as_unchecked().clone(),
                };
                let terms = self.terms(&record, &spend)?;
                let psbt = souk_escrow::parse_psbt(&f.release_psbt).map_err(escrow_error)?;
                souk_escrow::check(&psbt, &terms).map_err(escrow_error)?;
                record.pending_psbt = Some(f.release_psbt.clone());
            }
            pb::message::Body::Cancel(c)
                if event_for_message(record.order.state(), &body) == Some(Event::Refund)
                    && record.order.payment() == Payment::Moderated =>
            {
                // A refund after payment: the seller's PSBT must give the buyer everything
                // (less the capped miner fee) at the refund address of the order.
                let psbt = souk_escrow::parse_psbt(&c.refund_psbt).map_err(escrow_error)?;
                let terms = self.terms(&record, &Self::full_refund(&record)?)?;
                souk_escrow::check(&psbt, &terms).map_err(escrow_error)?;
                record.pending_psbt = Some(c.refund_psbt.clone());
            }
            pb::message::Body::Decision(d) => {
                // Checked on arrival, like a release: a decision that pays other than the
                // moderator's offer and the escrow allow is refused here, and the order stays
                // disputed (so the timeout path stays open) instead of ending on a payout that
                // can never be carried out.
                record.order.check(Event::Resolve, actor)?;
                self.check_decision(&record, d)?;
                record.decision = Some(d.clone());
                record.pending_psbt = Some(d.payout_psbt.clone());
            }
            pb::message::Body::Payment(_) if actor != Actor::Buyer => {
                return Err(mismatch("only the buyer sends a payment notice"));
            }
            pb::message::Body::Evidence(_) if actor == Actor::Moderator => {
                return Err(mismatch("evidence comes from the buyer or the seller"));
            }
            pb::message::Body::Payment(p) if record.funding.is_none() => {
                let txid: [u8; 32] = p.txid.as_slice().try_into().map_err(|_| mismatch("txid"))?;
                record.funding = Some((
                    OutPoint {
                        txid: souk_escrow::bitcoin::hashes::Hash::from_byte_array(txid),
                        vout: p.vout,
                    },
                    p.amount_sats,
                    None,
                ));
            }
            _ => {}
        }
        let event = match &body {
            // The other party's dispute reaching the moderator, or both parties opening one:
            // the order is already disputed; the message is that side's case, kept with it.
            pb::message::Body::Dispute(_)
                if record.role == Role::Moderator
                    || record.order.state() == OrderState::Disputed =>
            {
                None
            }
            body => event_for_message(record.order.state(), body),
        };
        let event = event.map(|e| (e, actor));
        // A message that moves nothing and sets nothing (chat, evidence, a repeated notice) is
        // stored without rewriting the order's row, so it never conflicts with a step.
        let row_changed = event.is_some() || record.row_fields() != row_before;
        self.commit_inner(
            &mut record,
            event,
            Some(("in", opened.signed_bytes())),
            &[],
            at,
            row_changed,
        )?;
        Ok(match event {
            Some(_) => Received::Moved {
                order_id: id,
                state: record.order.state(),
            },
            None => Received::Noted { order_id: id },
        })
    }

    /// The seller accepts an order: allocates its escrow key and payout address, computes the
    /// escrow address (moderated), signs the buyer's rating permit, and answers.
    ///
    /// # Errors
    /// [`FlowError`].
    pub fn confirm(&self, id: &[u8; 32], at: u64) -> Result<Outgoing, FlowError> {
        let mut record = self.get(id)?;
        record.order.check(Event::Confirm, Actor::Seller)?;
        let network = record.network()?;
        let listing = open(
            &record.request.listing,
            &ValidationContext::at(u64::MAX / 2),
        );
        let timeout = match listing.as_ref().map(|l| l.object()) {
            Ok(Object::Listing(l)) if l.escrow_timeout_blocks != 0 => l.escrow_timeout_blocks,
            _ => souk_protocol::limits::DEFAULT_ESCROW_TIMEOUT_BLOCKS,
        };
        let payout_index = self.allocate("payout")?;
        let payout = self
            .keychain
            .payout_address(network, payout_index)
            .map_err(keys_error)?;
        record.payout_index = Some(payout_index);
        let rating_key = PublicKey::from_bytes(&record.request.rating_key)
            .map_err(|e| mismatch(e.to_string()))?;
        let permit = self
            .identity()
            .sign_rating_permit(id, &rating_key, pb::RatingRole::Seller);
        let mut confirmation = pb::OrderConfirmation {
            seller_escrow_key: Vec::new(),
            payment_address: payout.to_string(),
            amount_sats: record.request.amount_sats,
            escrow_timeout_blocks: 0,
            payout_address: payout.to_string(),
            rating_permit: permit.permit_signature,
        };
        if record.order.payment() == Payment::Moderated {
            let index = self.allocate("escrow")?;
            let key = self
                .keychain
                .escrow_key(network, index)
                .map_err(keys_error)?;
            record.escrow_index = Some(index);
            confirmation.seller_escrow_key = key.public.to_bytes().to_vec();
            confirmation.escrow_timeout_blocks = timeout;
            // Placeholder until the escrow is computed from the confirmation itself.
            record.confirmation = Some((Vec::new(), confirmation.clone()));
            confirmation.payment_address = self.escrow_of(&record)?.address(network).to_string();
        }
        let (outgoing, signed) = self.seal(
            *id,
            record.buyer,
            record.buyer_servers(),
            pb::message::Body::Confirmation(confirmation.clone()),
            at,
        )?;
        record.confirmation = Some((signed.clone(), confirmation));
        self.commit_with(
            &mut record,
            Some((Event::Confirm, Actor::Seller)),
            Some(("out", &signed)),
            &[&outgoing],
            at,
        )?;
        Ok(outgoing)
    }

    /// The seller refuses an order.
    ///
    /// # Errors
    /// [`FlowError`].
    pub fn decline(&self, id: &[u8; 32], reason: &str, at: u64) -> Result<Outgoing, FlowError> {
        let mut record = self.get(id)?;
        record.order.check(Event::Decline, Actor::Seller)?;
        let (outgoing, signed) = self.seal(
            *id,
            record.buyer,
            record.buyer_servers(),
            pb::message::Body::Decline(pb::OrderDecline {
                reason: reason.into(),
            }),
            at,
        )?;
        self.commit_with(
            &mut record,
            Some((Event::Decline, Actor::Seller)),
            Some(("out", &signed)),
            &[&outgoing],
            at,
        )?;
        Ok(outgoing)
    }

    /// The payment address and amount the buyer is to pay, once the order is confirmed.
    ///
    /// # Errors
    /// [`FlowError`] if the order is not confirmed.
    pub fn payment_due(&self, id: &[u8; 32]) -> Result<(String, u64), FlowError> {
        let record = self.get(id)?;
        let (_, c) = record
            .confirmation
            .ok_or_else(|| mismatch("the order is not confirmed yet"))?;
        Ok((c.payment_address, c.amount_sats))
    }

    /// Reads funding, confirmations and the escrow timeout of every open order from the chain
    /// and moves the orders accordingly. Returns the orders that moved.
    ///
    /// # Errors
    /// [`FlowError::Chain`] when the API fails (nothing is changed for the order at hand).
    pub async fn watch_chain(&self, chain: &Chain, at: u64) -> Result<Vec<[u8; 32]>, FlowError> {
        let tip = chain.tip_height().await?;
        let mut moved = Vec::new();
        for mut record in self.list()? {
            let version = record.version;
            let watched = self.watch_order(&mut record, chain, tip, at).await;
            // Each step it took rewrote the row once.
            if record.version > version {
                moved.push(record.id);
            }
            match watched {
                // Another step moved this order while its chain state was read: it is looked
                // at again on the next call, and the other orders are not held up.
                Ok(()) | Err(FlowError::Changed(_)) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(moved)
    }

    /// [`Self::watch_chain`] for one order.
    async fn watch_order(
        &self,
        record: &mut OrderRecord,
        chain: &Chain,
        tip: u32,
        at: u64,
    ) -> Result<(), FlowError> {
        let state = record.order.state();
        if state.is_final() || record.role == Role::Moderator {
            return Ok(());
        }
        let Some((_, confirmation)) = record.confirmation.clone() else {
            return Ok(());
        };
        if state == OrderState::AwaitingPayment {
            let utxos = chain.utxos(&confirmation.payment_address).await?;
            if let Some(utxo) = utxos.iter().find(|u| u.value >= confirmation.amount_sats) {
                record.funding = Some((utxo.outpoint, utxo.value, utxo.status.block_height));
                self.commit(record, Some((Event::Fund, Actor::Chain)), None, at)?;
            }
        }
        if record.order.state() == OrderState::Funded
            && let Some((outpoint, sats, _)) = record.funding
        {
            let utxos = chain.utxos(&confirmation.payment_address).await?;
            if let Some(height) = utxos
                .iter()
                .find(|u| u.outpoint == outpoint)
                .and_then(|u| u.status.block_height)
            {
                record.funding = Some((outpoint, sats, Some(height)));
                self.commit(
                    record,
                    Some((Event::FundingConfirmed, Actor::Chain)),
                    None,
                    at,
                )?;
            }
        }
        if record.order.payment() == Payment::Moderated
            && matches!(
                record.order.state(),
                OrderState::Confirmed | OrderState::Shipped | OrderState::Disputed
            )
            && let Some((_, _, Some(height))) = record.funding
            && tip + 1 >= height + confirmation.escrow_timeout_blocks
        {
            self.commit(record, Some((Event::Timeout, Actor::Chain)), None, at)?;
        }
        Ok(())
    }

    /// The seller ships: for a moderated order, builds the release PSBT to its payout address and
    /// signs it, so the buyer completes by adding its signature.
    ///
    /// # Errors
    /// [`FlowError`].
    pub fn ship(
        &self,
        id: &[u8; 32],
        note: &str,
        fee_rate: FeeRate,
        at: u64,
    ) -> Result<Outgoing, FlowError> {
        let mut record = self.get(id)?;
        record.order.check(Event::Ship, Actor::Seller)?;
        let release_psbt = if record.order.payment() == Payment::Moderated {
            let spend = Spend::Release {
                seller: Self::seller_payout(&record)?.as_unchecked().clone(),
            };
            let (psbt, _) = self.sign_spend(&record, None, &spend, fee_rate)?;
            psbt.serialize()
        } else {
            Vec::new()
        };
        let (outgoing, signed) = self.seal(
            *id,
            record.buyer,
            record.buyer_servers(),
            pb::message::Body::Fulfillment(pb::Fulfillment {
                note: note.into(),
                carrier: String::new(),
                tracking: String::new(),
                release_psbt,
            }),
            at,
        )?;
        self.commit_with(
            &mut record,
            Some((Event::Ship, Actor::Seller)),
            Some(("out", &signed)),
            &[&outgoing],
            at,
        )?;
        Ok(outgoing)
    }

    /// The buyer completes: for a moderated order, checks the seller's release PSBT against the
    /// order (it must pay the seller's confirmed payout address the escrowed amount less at most
    /// the capped miner fee), signs, finalizes and broadcasts it; then tells the seller.
    ///
    /// # Errors
    /// [`FlowError::Escrow`] for a PSBT that pays other than agreed (nothing is signed), or
    /// another [`FlowError`].
    pub async fn complete(
        &self,
        id: &[u8; 32],
        chain: &Chain,
        at: u64,
    ) -> Result<(Outgoing, Option<Txid>), FlowError> {
        let mut record = self.get(id)?;
        record.order.check(Event::Complete, Actor::Buyer)?;
        let txid = if record.order.payment() == Payment::Moderated {
            let psbt = record
                .pending_psbt
                .clone()
                .ok_or_else(|| mismatch("no release PSBT from the seller"))?;
            let spend = Spend::Release {
                seller: Self::seller_payout(&record)?.as_unchecked().clone(),
            };
            Some(
                self.sign_and_broadcast(&record, Some(&psbt), &spend, chain)
                    .await?,
            )
        } else {
            None
        };
        let (outgoing, signed) = self.seal(
            *id,
            record.seller,
            record.seller_servers.clone(),
            pb::message::Body::Completion(pb::Completion {
                txid: txid
                    .map(|t| souk_escrow::bitcoin::hashes::Hash::to_byte_array(t).to_vec())
                    .unwrap_or_default(),
                note: String::new(),
            }),
            at,
        )?;
        record.pending_psbt = None;
        if txid.is_some() {
            self.commit_broadcast(
                &mut record,
                (Event::Complete, Actor::Buyer),
                Some(("out", &signed)),
                &[&outgoing],
                at,
            )?;
        } else {
            self.commit_with(
                &mut record,
                Some((Event::Complete, Actor::Buyer)),
                Some(("out", &signed)),
                &[&outgoing],
                at,
            )?;
        }
        Ok((outgoing, txid))
    }

    /// Either party calls off an order that is not paid yet.
    ///
    /// # Errors
    /// [`FlowError`].
    pub fn cancel(&self, id: &[u8; 32], reason: &str, at: u64) -> Result<Outgoing, FlowError> {
        let mut record = self.get(id)?;
        let actor = record.role.actor();
        record.order.check(Event::Cancel, actor)?;
        let (recipient, servers) = self.counterparty(&record)?;
        let (outgoing, signed) = self.seal(
            *id,
            recipient,
            servers,
            pb::message::Body::Cancel(pb::Cancellation {
                reason: reason.into(),
                refund_psbt: Vec::new(),
                refund_txid: Vec::new(),
            }),
            at,
        )?;
        self.commit_with(
            &mut record,
            Some((Event::Cancel, actor)),
            Some(("out", &signed)),
            &[&outgoing],
            at,
        )?;
        Ok(outgoing)
    }

    /// A party asks the moderator to decide: the dispute quotes the signed order and
    /// confirmation and names the funding, goes to the moderator, and a copy to the other party.
    ///
    /// # Errors
    /// [`FlowError`].
    pub fn open_dispute(
        &self,
        id: &[u8; 32],
        reason: &str,
        at: u64,
    ) -> Result<Vec<Outgoing>, FlowError> {
        let mut record = self.get(id)?;
        let actor = record.role.actor();
        record.order.check(Event::OpenDispute, actor)?;
        let moderator = record
            .moderator()
            .ok_or_else(|| mismatch("a direct order has no moderator"))?;
        let (confirmation, _) = record
            .confirmation
            .clone()
            .ok_or_else(|| mismatch("the order is not confirmed"))?;
        let (outpoint, sats, _) = record
            .funding
            .ok_or_else(|| mismatch("the escrow is not funded"))?;
        let dispute = pb::DisputeOpen {
            reason: reason.into(),
            order: record.request_signed.clone(),
            confirmation,
            funding_txid: souk_escrow::bitcoin::hashes::Hash::to_byte_array(outpoint.txid).to_vec(),
            funding_vout: outpoint.vout,
            funding_sats: sats,
        };
        let (to_moderator, signed) = self.seal(
            *id,
            moderator,
            Self::moderator_servers(&record),
            pb::message::Body::Dispute(dispute.clone()),
            at,
        )?;
        let (recipient, servers) = self.counterparty(&record)?;
        let (to_party, _) = self.seal(
            *id,
            recipient,
            servers,
            pb::message::Body::Dispute(dispute),
            at,
        )?;
        self.commit_with(
            &mut record,
            Some((Event::OpenDispute, actor)),
            Some(("out", &signed)),
            &[&to_moderator, &to_party],
            at,
        )?;
        Ok(vec![to_moderator, to_party])
    }

    /// The moderator decides: `buyer_share_bps` of what remains after its fee (from its offer,
    /// as quoted in the order) to the buyer, the rest to the seller. Builds and signs the payout
    /// PSBT, signs a rating permit for the buyer's rating key, and sends the decision to both
    /// (the buyer at the servers its order named, the seller at `seller_inbox`, from the seller's
    /// profile).
    ///
    /// # Errors
    /// [`FlowError`].
    pub fn decide(
        &self,
        id: &[u8; 32],
        buyer_share_bps: u16,
        reason: &str,
        seller_inbox: Vec<String>,
        fee_rate: FeeRate,
        at: u64,
    ) -> Result<Vec<Outgoing>, FlowError> {
        let mut record = self.get(id)?;
        if record.role != Role::Moderator {
            return Err(mismatch("only the order's moderator decides"));
        }
        record.order.check(Event::Resolve, Actor::Moderator)?;
        let network = record.network()?;
        let fee_index = self.allocate("payout")?;
        let fee_address = self
            .keychain
            .payout_address(network, fee_index)
            .map_err(keys_error)?;
        record.payout_index = Some(fee_index);
        let spend = Self::dispute_spend(&record, &fee_address, buyer_share_bps)?;
        let (psbt, terms) = self.sign_spend(&record, None, &spend, fee_rate)?;
        let fee_sats = terms
            .payments(Amount::ZERO)
            .map_err(escrow_error)?
            .iter()
            .find(|p| p.role == souk_escrow::Role::Moderator)
            .map_or(0, |p| p.amount.to_sat());
        let rating_key = PublicKey::from_bytes(&record.request.rating_key)
            .map_err(|e| mismatch(e.to_string()))?;
        let permit = self
            .identity()
            .sign_rating_permit(id, &rating_key, pb::RatingRole::Moderator);
        let decision = pb::Decision {
            buyer_share_bps: u32::from(buyer_share_bps),
            moderator_fee_sats: fee_sats,
            payout_psbt: psbt.serialize(),
            rating_permit: permit.permit_signature,
            reason: reason.into(),
            fee_address: if fee_sats > 0 {
                fee_address.to_string()
            } else {
                String::new()
            },
        };
        let (to_buyer, signed) = self.seal(
            *id,
            record.buyer,
            record.buyer_servers(),
            pb::message::Body::Decision(decision.clone()),
            at,
        )?;
        let (to_seller, _) = self.seal(
            *id,
            record.seller,
            seller_inbox,
            pb::message::Body::Decision(decision.clone()),
            at,
        )?;
        record.decision = Some(decision);
        self.commit_with(
            &mut record,
            Some((Event::Resolve, Actor::Moderator)),
            Some(("out", &signed)),
            &[&to_buyer, &to_seller],
            at,
        )?;
        Ok(vec![to_buyer, to_seller])
    }

    /// The buyer tells the seller it paid: the funding output this device saw on the chain
    /// (after [`Orders::watch_chain`] found it). The seller still reads the chain itself; the
    /// notice only saves it waiting.
    ///
    /// # Errors
    /// [`FlowError::Mismatch`] before the payment is seen or for a seller's device.
    pub fn notify_payment(&self, id: &[u8; 32], at: u64) -> Result<Outgoing, FlowError> {
        let mut record = self.get(id)?;
        if record.role != Role::Buyer {
            return Err(mismatch("only the buyer sends a payment notice"));
        }
        if record.order.state().is_final() {
            return Err(OrderError::Finished {
                state: record.order.state(),
            }
            .into());
        }
        let (outpoint, sats, _) = record.funding.ok_or_else(|| {
            mismatch("no payment seen on the chain yet: pay, then watch the chain")
        })?;
        let (seller, servers) = (record.seller, record.seller_servers.clone());
        self.send_note(
            &mut record,
            seller,
            servers,
            pb::message::Body::Payment(pb::PaymentNotice {
                txid: souk_escrow::bitcoin::hashes::Hash::to_byte_array(outpoint.txid).to_vec(),
                vout: outpoint.vout,
                amount_sats: sats,
            }),
            at,
        )
    }

    /// A party of a disputed order sends the moderator its case: `text`, and with
    /// `quote_messages` every signed message of the order this device holds (up to
    /// [`MAX_EVIDENCE_MESSAGES`](souk_protocol::limits::MAX_EVIDENCE_MESSAGES), newest kept), each
    /// signed by its sender so the moderator can check it.
    ///
    /// # Errors
    /// [`FlowError`]: not a party, not moderated, not disputed, or a message over the limits.
    pub fn send_evidence(
        &self,
        id: &[u8; 32],
        text: &str,
        quote_messages: bool,
        at: u64,
    ) -> Result<Outgoing, FlowError> {
        let mut record = self.get(id)?;
        if record.role == Role::Moderator {
            return Err(mismatch("evidence comes from the buyer or the seller"));
        }
        if record.order.state() != OrderState::Disputed {
            return Err(mismatch(format!(
                "evidence is for a disputed order; this one is {}",
                record.order.state().as_str()
            )));
        }
        let moderator = record
            .moderator()
            .ok_or_else(|| mismatch("a direct order has no moderator"))?;
        let messages = if quote_messages {
            let mut all: Vec<Vec<u8>> = self.messages(id)?.into_iter().map(|(_, m)| m).collect();
            let keep = souk_protocol::limits::MAX_EVIDENCE_MESSAGES;
            if all.len() > keep {
                all.drain(..all.len() - keep);
            }
            all
        } else {
            Vec::new()
        };
        let servers = Self::moderator_servers(&record);
        self.send_note(
            &mut record,
            moderator,
            servers,
            pb::message::Body::Evidence(pb::Evidence {
                text: text.into(),
                messages,
                attachments: Vec::new(),
            }),
            at,
        )
    }

    /// A chat message about an order: from the buyer to the seller or back; from the moderator
    /// to both parties (the seller at `seller_inbox`, from its profile, as for
    /// [`Orders::decide`]; ignored for the parties). Stored with the order on both sides.
    ///
    /// # Errors
    /// [`FlowError`].
    pub fn chat(
        &self,
        id: &[u8; 32],
        text: &str,
        seller_inbox: Vec<String>,
        at: u64,
    ) -> Result<Vec<Outgoing>, FlowError> {
        let mut record = self.get(id)?;
        let body = pb::message::Body::Chat(pb::Chat { text: text.into() });
        let recipients = match record.role {
            Role::Moderator => vec![
                (record.buyer, record.buyer_servers()),
                (record.seller, seller_inbox),
            ],
            _ => vec![self.counterparty(&record)?],
        };
        let mut outgoing = Vec::new();
        let mut signed_first = None;
        for (recipient, servers) in recipients {
            let (message, signed) = self.seal(*id, recipient, servers, body.clone(), at)?;
            signed_first.get_or_insert(signed);
            outgoing.push(message);
        }
        let refs: Vec<&Outgoing> = outgoing.iter().collect();
        if let Some(signed) = signed_first.as_deref() {
            self.commit_note(&mut record, signed, &refs, at)?;
        }
        Ok(outgoing)
    }

    /// An order's messages, oldest first, decoded: who sent each, its kind and text, and the
    /// signed messages it quotes (a dispute's order and confirmation, evidence's chosen
    /// messages), each checked to be signed by a party of this order and about this order —
    /// what a moderator reads before deciding.
    ///
    /// # Errors
    /// [`FlowError::UnknownOrder`], [`FlowError::Storage`].
    pub fn conversation(&self, id: &[u8; 32]) -> Result<Vec<ConversationEntry>, FlowError> {
        let record = self.get(id)?;
        let ctx = ValidationContext::at(u64::MAX / 2);
        let decode = |signed: &[u8]| -> Option<(Actor, pb::message::Body, u64)> {
            let message = read_signed_message(signed, &ctx).ok()?;
            let sender = record.actor_of(&message.sender())?;
            let about_this = match message.message().body {
                Some(pb::message::Body::Order(_)) => order_id_of(signed) == record.id,
                _ => message.order_id() == Some(record.id),
            };
            if !about_this {
                return None;
            }
            let body = message.message().body.clone()?;
            Some((sender, body, message.message().created_at))
        };
        let mut entries = Vec::new();
        for (direction, signed) in self.messages(id)? {
            let Some((sender, body, at)) = decode(&signed) else {
                continue;
            };
            let quoted_bytes: Vec<&[u8]> = match &body {
                pb::message::Body::Dispute(d) => vec![&d.order, &d.confirmation],
                pb::message::Body::Evidence(e) => e.messages.iter().map(Vec::as_slice).collect(),
                _ => Vec::new(),
            };
            let quoted = quoted_bytes
                .into_iter()
                .filter_map(&decode)
                .map(|(sender, body, at)| QuotedMessage {
                    sender,
                    kind: message_kind(&body),
                    text: message_text(&body),
                    at,
                })
                .collect();
            entries.push(ConversationEntry {
                direction,
                sender,
                kind: message_kind(&body),
                text: message_text(&body),
                at,
                quoted,
            });
        }
        Ok(entries)
    }

    /// What spending the escrow of an order of `amount_sats` with this moderator would cost in
    /// miner fees at `fee_rate`: the largest spend (a dispute payout to buyer, seller and
    /// moderator), against the cap ([`max_fee`]). A buyer's app shows it before ordering;
    /// [`Orders::place_order`] refuses escrow when `refused`.
    ///
    /// # Errors
    /// [`FlowError::Mismatch`] for a profile without a usable moderator offer.
    pub fn escrow_fee_estimate(
        &self,
        amount_sats: u64,
        moderator_profile: &[u8],
        fee_rate: FeeRate,
        at: u64,
    ) -> Result<FeeEstimate, FlowError> {
        let (_, offer) = moderator_offer(moderator_profile, at)?;
        let network = souk_protocol::order::parse_network(&self.network)
            .ok_or_else(|| mismatch("unknown network"))?;
        // The weight depends only on the script shapes, not on whose keys they are: this
        // device's first three escrow keys stand in for the three parties.
        let key = |i| {
            self.keychain
                .escrow_key(network, i)
                .map(|k| k.public)
                .map_err(keys_error)
        };
        let escrow = Escrow::moderated(
            key(0)?,
            key(1)?,
            key(2)?,
            u16::try_from(souk_protocol::limits::DEFAULT_ESCROW_TIMEOUT_BLOCKS).unwrap_or(u16::MAX),
        )
        .map_err(escrow_error)?;
        // Three distinct outputs (the same address would merge them into one and price a
        // smaller transaction than the real payout).
        let address = |i| {
            self.keychain
                .payout_address(network, i)
                .map(|a| a.as_unchecked().clone())
                .map_err(keys_error)
        };
        let spend = Spend::Dispute {
            buyer: address(0)?,
            seller: address(1)?,
            moderator: address(2)?,
            buyer_bp: souk_escrow::FULL_SHARE_BP / 2,
            fee: moderator_fee(&offer)?,
        };
        let cap = max_fee(amount_sats);
        let terms = Terms::new(
            escrow,
            network,
            &[Funding {
                outpoint: OutPoint::null(),
                amount: Amount::from_sat(amount_sats),
            }],
            &spend,
            // Measured without a cap, then compared with it.
            Amount::from_sat(amount_sats),
        )
        .map_err(escrow_error)?;
        // A spend that cannot be built at this rate at all (the fee would eat the escrow, or
        // every output would be dust) is the extreme case of too expensive.
        let fee = match terms.build(fee_rate) {
            Ok(psbt) => psbt.fee().map_err(escrow_error)?.to_sat(),
            Err(_) => amount_sats,
        };
        let share_bp = fee.saturating_mul(10_000) / amount_sats.max(1);
        Ok(FeeEstimate {
            fee_sats: fee,
            share_bp,
            cap_sats: cap.to_sat(),
            warn: share_bp > WARN_MINER_FEE_BP,
            refused: fee > cap.to_sat(),
        })
    }

    fn full_refund(record: &OrderRecord) -> Result<Spend, FlowError> {
        let network = record.network()?;
        Ok(Spend::Refund {
            buyer: parse_address(&record.request.refund_address, network)?
                .as_unchecked()
                .clone(),
            seller: Self::seller_payout(record)?.as_unchecked().clone(),
            buyer_bp: souk_escrow::FULL_SHARE_BP,
        })
    }

    /// The seller calls off a paid order and gives the buyer the money back. Moderated: the
    /// seller signs a refund of the whole escrow (less the miner fee) to the order's refund
    /// address, and the buyer completes it with [`Orders::execute_refund`]. Direct: the seller
    /// has paid the buyer back from its own wallet and names that transaction.
    ///
    /// # Errors
    /// [`FlowError`].
    pub fn refund(
        &self,
        id: &[u8; 32],
        reason: &str,
        direct_refund_txid: Option<Txid>,
        fee_rate: FeeRate,
        at: u64,
    ) -> Result<Outgoing, FlowError> {
        let mut record = self.get(id)?;
        record.order.check(Event::Refund, Actor::Seller)?;
        let (refund_psbt, refund_txid) = match record.order.payment() {
            Payment::Moderated => {
                let (psbt, _) =
                    self.sign_spend(&record, None, &Self::full_refund(&record)?, fee_rate)?;
                (psbt.serialize(), Vec::new())
            }
            Payment::Direct => {
                let txid = direct_refund_txid.ok_or_else(|| {
                    mismatch("a direct order is refunded from the seller's wallet: name the txid")
                })?;
                (
                    Vec::new(),
                    souk_escrow::bitcoin::hashes::Hash::to_byte_array(txid).to_vec(),
                )
            }
        };
        let (outgoing, signed) = self.seal(
            *id,
            record.buyer,
            record.buyer_servers(),
            pb::message::Body::Cancel(pb::Cancellation {
                reason: reason.into(),
                refund_psbt,
                refund_txid,
            }),
            at,
        )?;
        self.commit_with(
            &mut record,
            Some((Event::Refund, Actor::Seller)),
            Some(("out", &signed)),
            &[&outgoing],
            at,
        )?;
        Ok(outgoing)
    }

    /// The buyer completes a moderated refund: checks the seller's refund PSBT again, adds its
    /// signature, finalizes and broadcasts.
    ///
    /// # Errors
    /// [`FlowError`].
    pub async fn execute_refund(&self, id: &[u8; 32], chain: &Chain) -> Result<Txid, FlowError> {
        let record = self.get(id)?;
        if record.order.state() != OrderState::Refunded || record.role != Role::Buyer {
            return Err(mismatch("there is no refund to complete"));
        }
        let psbt = record
            .pending_psbt
            .clone()
            .ok_or_else(|| mismatch("no refund PSBT from the seller"))?;
        self.sign_and_broadcast(&record, Some(&psbt), &Self::full_refund(&record)?, chain)
            .await
    }

    /// A party carries out the moderator's decision: checks the payout PSBT against the terms
    /// this device derives from the decision (its share, the fee from the offer), adds its
    /// signature, finalizes and broadcasts.
    ///
    /// # Errors
    /// [`FlowError::Escrow`] for a payout other than the decision says, or another
    /// [`FlowError`].
    pub async fn execute_decision(&self, id: &[u8; 32], chain: &Chain) -> Result<Txid, FlowError> {
        let record = self.get(id)?;
        if record.order.state() != OrderState::Resolved {
            return Err(mismatch("there is no decision to carry out"));
        }
        let decision = record
            .decision
            .clone()
            .ok_or_else(|| mismatch("no decision stored"))?;
        let spend = Self::decision_spend(&record, &decision)?;
        self.sign_and_broadcast(&record, Some(&decision.payout_psbt), &spend, chain)
            .await
    }

    /// The seller claims the escrow alone once the timeout has passed (state `timed_out`).
    ///
    /// # Errors
    /// [`FlowError`]; [`FlowError::Chain`] with the node's reason if the timeout has not really
    /// passed.
    pub async fn claim(
        &self,
        id: &[u8; 32],
        chain: &Chain,
        fee_rate: FeeRate,
        at: u64,
    ) -> Result<Txid, FlowError> {
        let mut record = self.get(id)?;
        record.order.check(Event::Claim, Actor::Seller)?;
        let spend = Spend::TimeoutClaim {
            seller: Self::seller_payout(&record)?.as_unchecked().clone(),
        };
        let (psbt, terms) = self.sign_spend(&record, None, &spend, fee_rate)?;
        let txid = Self::finalize_and_broadcast(psbt, &terms, chain).await?;
        self.commit_broadcast(&mut record, (Event::Claim, Actor::Seller), None, &[], at)?;
        Ok(txid)
    }

    /// The buyer rates the seller (after completion) or the moderator (after its decision),
    /// with the order's rating key and the rated party's permit: the signed rating envelope, to
    /// publish at any index server. `scores` are overall, quality, description, delivery and
    /// service (1–5); a moderator is rated on overall and service only (the others 0).
    ///
    /// # Errors
    /// [`FlowError`].
    pub fn rate(
        &self,
        id: &[u8; 32],
        role: pb::RatingRole,
        scores: [u32; 5],
        review: &str,
        at: u64,
    ) -> Result<Vec<u8>, FlowError> {
        let record = self.get(id)?;
        if record.role != Role::Buyer {
            return Err(mismatch("only the buyer rates"));
        }
        let (subject, permit) = match role {
            pb::RatingRole::Seller => {
                // After the deal ended with money moved: completed, refunded, decided by the
                // moderator or claimed after the timeout. The seller's permit came with its
                // confirmation, so it needs no further proof (SPEC.md, "Ratings").
                if !matches!(
                    record.order.state(),
                    OrderState::Completed
                        | OrderState::Refunded
                        | OrderState::Resolved
                        | OrderState::Claimed
                        | OrderState::TimedOut
                ) {
                    return Err(mismatch(format!(
                        "a seller is rated once the order has ended after payment; it is {}",
                        record.order.state().as_str()
                    )));
                }
                let (_, c) = record
                    .confirmation
                    .clone()
                    .ok_or_else(|| mismatch("not confirmed"))?;
                (record.seller, c.rating_permit)
            }
            _ => {
                let decision = record
                    .decision
                    .clone()
                    .ok_or_else(|| mismatch("a moderator is rated after its decision"))?;
                (
                    record.moderator().ok_or_else(|| mismatch("no moderator"))?,
                    decision.rating_permit,
                )
            }
        };
        let index = record
            .rating_index
            .ok_or_else(|| mismatch("no rating key for this order"))?;
        let key = self.keychain.rating_key(index).map_err(keys_error)?;
        let rating = pb::Rating {
            created_at: at,
            order_id: id.to_vec(),
            subject: subject.as_bytes().to_vec(),
            role: role as i32,
            proof: Some(pb::RatingProof {
                permit_signer: subject.as_bytes().to_vec(),
                permit_signature: permit,
            }),
            overall: scores[0],
            quality: scores[1],
            description: scores[2],
            delivery: scores[3],
            service: scores[4],
            review: review.into(),
        };
        let signed = key
            .seal(&Object::Rating(rating), &ValidationContext::at(at))
            .map_err(|e| mismatch(format!("the rating is refused: {e}")))?;
        Ok(signed.envelope().bytes().to_vec())
    }

    /// The moderator's split: its fee (from the offer the order quotes) to `fee_address`, then
    /// `buyer_bp` of the rest to the order's refund address and the remainder to the seller.
    fn dispute_spend(
        record: &OrderRecord,
        fee_address: &Address,
        buyer_bp: u16,
    ) -> Result<Spend, FlowError> {
        let (_, offer) = moderator_offer(
            &record.request.moderator_profile,
            record.request_created_at(),
        )?;
        Ok(Spend::Dispute {
            buyer: parse_address(&record.request.refund_address, record.network()?)?
                .as_unchecked()
                .clone(),
            seller: Self::seller_payout(record)?.as_unchecked().clone(),
            moderator: fee_address.as_unchecked().clone(),
            buyer_bp,
            fee: moderator_fee(&offer)?,
        })
    }

    /// The spend a received decision describes: its share, the fee from the offer, paid to its
    /// fee address (a moderator without a fee names none; the seller's payout address then
    /// stands in, and the terms leave it no output).
    fn decision_spend(record: &OrderRecord, decision: &pb::Decision) -> Result<Spend, FlowError> {
        let share = u16::try_from(decision.buyer_share_bps)
            .ok()
            .filter(|s| *s <= souk_escrow::FULL_SHARE_BP)
            .ok_or_else(|| mismatch("the decision's share is above 10,000 basis points"))?;
        let fee_address = if decision.fee_address.is_empty() {
            Self::seller_payout(record)?
        } else {
            parse_address(&decision.fee_address, record.network()?)?
        };
        Self::dispute_spend(record, &fee_address, share)
    }

    /// What a party checks when a decision arrives: the fee is the one the moderator's offer
    /// gives for this escrow, a fee is paid to an address the decision names, the payout PSBT
    /// pays exactly the decided split of the escrow this device saw funded, and the moderator's
    /// rating permit verifies.
    fn check_decision(
        &self,
        record: &OrderRecord,
        decision: &pb::Decision,
    ) -> Result<(), FlowError> {
        // The fee the offer gives for this escrow, measured with an output of its own (a
        // decision naming no fee address would otherwise fold the fee into the seller's).
        let network = record.network()?;
        let probe = self
            .keychain
            .payout_address(network, 0x7FFF_FFFF)
            .map_err(keys_error)?;
        let share = u16::try_from(decision.buyer_share_bps)
            .ok()
            .filter(|s| *s <= souk_escrow::FULL_SHARE_BP)
            .ok_or_else(|| mismatch("the decision's share is above 10,000 basis points"))?;
        let fee = self
            .terms(record, &Self::dispute_spend(record, &probe, share)?)?
            .payments(Amount::ZERO)
            .map_err(escrow_error)?
            .iter()
            .find(|p| p.role == souk_escrow::Role::Moderator)
            .map_or(0, |p| p.amount.to_sat());
        let spend = Self::decision_spend(record, decision)?;
        let terms = self.terms(record, &spend)?;
        if fee != decision.moderator_fee_sats {
            return Err(mismatch(format!(
                "the decision claims a moderator fee of {} sats; the moderator's offer gives {fee} for this escrow",
                decision.moderator_fee_sats
            )));
        }
        if fee > 0 && decision.fee_address.is_empty() {
            return Err(mismatch(
                "the decision charges a fee but names no fee address",
            ));
        }
        let psbt = souk_escrow::parse_psbt(&decision.payout_psbt).map_err(escrow_error)?;
        souk_escrow::check(&psbt, &terms).map_err(escrow_error)?;
        let moderator = record
            .moderator()
            .ok_or_else(|| mismatch("a direct order has no moderator"))?;
        if !rating_permit_ok(
            &record.id,
            &record.request.rating_key,
            &moderator,
            pb::RatingRole::Moderator,
            &decision.rating_permit,
        ) {
            return Err(mismatch("the moderator's rating permit does not verify"));
        }
        Ok(())
    }

    /// Checks a PSBT another party signed against `spend`, adds this device's signature,
    /// finalizes and broadcasts it.
    async fn sign_and_broadcast(
        &self,
        record: &OrderRecord,
        psbt: Option<&[u8]>,
        spend: &Spend,
        chain: &Chain,
    ) -> Result<Txid, FlowError> {
        // The fee rate only matters when building; a received PSBT keeps its own.
        let (psbt, terms) =
            self.sign_spend(record, psbt, spend, FeeRate::from_sat_per_vb_u32(1))?;
        Self::finalize_and_broadcast(psbt, &terms, chain).await
    }

    async fn finalize_and_broadcast(
        psbt: Psbt,
        terms: &Terms,
        chain: &Chain,
    ) -> Result<Txid, FlowError> {
        let tx = souk_escrow::finalize(psbt, terms).map_err(escrow_error)?;
        Ok(chain.broadcast(&tx).await?)
    }

    fn counterparty(&self, record: &OrderRecord) -> Result<(PublicKey, Vec<String>), FlowError> {
        match record.role {
            Role::Buyer => Ok((record.seller, record.seller_servers.clone())),
            Role::Seller => Ok((record.buyer, record.buyer_servers())),
            Role::Moderator => Err(mismatch("the moderator is no party")),
        }
    }

    fn moderator_servers(record: &OrderRecord) -> Vec<String> {
        open(
            &record.request.moderator_profile,
            &ValidationContext::at(u64::MAX / 2),
        )
        .ok()
        .and_then(|p| match p.object() {
            Object::Profile(profile) => Some(profile.inbox_servers.clone()),
            _ => None,
        })
        .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use souk_protocol::order::OrderState;
    use souk_protocol::{Keychain, Mnemonic, samples};

    /// Two steps that read one order at the same time (two threads, or two handles on one
    /// book): the first to write wins, and the other is refused whole with `order_changed`
    /// instead of writing back the state it read, which would undo the first.
    #[test]
    fn a_step_that_raced_another_is_refused_and_the_other_kept() {
        let dir = tempfile::tempdir().expect("temp dir");
        let keys = |n: u8| {
            Keychain::from_mnemonic(&Mnemonic::from_entropy(&[n; 16]).expect("entropy"), "")
        };
        let (buyer, seller) = (keys(41), keys(42));
        let at = ValidationContext::now().now;
        let listing = seller
            .identity()
            .seal(
                &Object::Listing(samples::listing(at - 5, "blue-mug", None)),
                &ValidationContext::at(at),
            )
            .expect("listing")
            .envelope()
            .bytes()
            .to_vec();
        let orders = Orders::open(&dir.path().join("orders.db"), buyer, "regtest").expect("db");
        let placed = orders
            .place_order(
                PlaceOrder {
                    listing,
                    items: vec![(0, 1)],
                    shipping_option: String::new(),
                    shipping_service: String::new(),
                    shipping_address: String::new(),
                    moderator_profile: None,
                    amount_sats: 150_000,
                    seller_inbox: vec!["https://seller.example".into()],
                    reply_inbox: vec!["https://buyer.example".into()],
                    memo: String::new(),
                    fee_rate: None,
                },
                at,
            )
            .expect("placed");
        let id = placed.order_id;
        let before = orders.get(&id).expect("order").order.state();
        let messages = orders.messages(&id).expect("messages").len();

        // Three steps read the order; the first cancels it.
        let mut first = orders.get(&id).expect("order");
        let mut row_only = orders.get(&id).expect("order");
        let mut another_event = orders.get(&id).expect("order");
        orders
            .commit(&mut first, Some((Event::Cancel, Actor::Buyer)), None, at)
            .expect("the first step");

        // One that only rewrites the row (as recording a funding transaction does) would have
        // put the order back in the state it read.
        row_only.pending_psbt = Some(vec![1, 2, 3]);
        let error = orders
            .commit(&mut row_only, None, None, at + 1)
            .expect_err("raced");
        assert_eq!(error.code(), "order_changed", "{error}");
        // One with an event of its own is refused the same way.
        let error = orders
            .commit(
                &mut another_event,
                Some((Event::Cancel, Actor::Buyer)),
                Some(("out", b"never stored")),
                at + 1,
            )
            .expect_err("raced");
        assert_eq!(error.code(), "order_changed", "{error}");

        let stored = orders.get(&id).expect("order");
        assert_ne!(before, OrderState::Canceled);
        assert_eq!(stored.order.state(), OrderState::Canceled);
        assert_eq!(stored.order.history().len(), 1, "one cancellation, once");
        assert!(
            stored.pending_psbt.is_none(),
            "the refused step wrote nothing"
        );
        assert_eq!(
            orders.messages(&id).expect("messages").len(),
            messages,
            "nor its message"
        );

        // A step that reads the order afresh goes through.
        let mut fresh = orders.get(&id).expect("order");
        let mut stale = orders.get(&id).expect("order");
        fresh.pending_psbt = Some(vec![4]);
        orders
            .commit(&mut fresh, None, None, at + 2)
            .expect("a fresh read");
        assert_eq!(orders.get(&id).expect("order").pending_psbt, Some(vec![4]));
        // A change that moves no state is guarded all the same.
        stale.pending_psbt = None;
        let error = orders
            .commit(&mut stale, None, None, at + 3)
            .expect_err("raced");
        assert_eq!(error.code(), "order_changed", "{error}");
        assert_eq!(orders.get(&id).expect("order").pending_psbt, Some(vec![4]));

        // A book from before row versions (schema 1) gets the column when opened.
        drop(orders);
        let path = dir.path().join("orders.db");
        {
            let conn = Connection::open(&path).expect("db");
            conn.execute_batch(
                "ALTER TABLE orders DROP COLUMN version;
                 UPDATE meta SET value = 1 WHERE key = 'schema';",
            )
            .expect("back to schema 1");
        }
        let orders = Orders::open(&path, keys(41), "regtest").expect("upgraded");
        let mut upgraded = orders.get(&id).expect("order");
        assert_eq!(upgraded.version, 0);
        upgraded.pending_psbt = Some(vec![5]);
        orders
            .commit(&mut upgraded, None, None, at + 4)
            .expect("steps work after the upgrade");
        assert_eq!(upgraded.version, 1);
    }
}
