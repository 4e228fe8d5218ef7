//! The uniffi face of [`Orders`](crate::orders::Orders): a thin layer of records, hex ids and
//! one flat error, so Kotlin, Swift and Python drive the same order flow as Rust. Network steps
//! (chain reads, broadcasts) run on the core's runtime like every `Client` call.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use souk_protocol::bitcoin::{FeeRate, Txid};
use souk_protocol::order::OrderState;
use souk_protocol::pb;

use crate::chain::Chain;
use crate::drafts::hex;
use crate::orders::{
    ConversationEntry, FeeEstimate, FlowError, Orders, Outgoing, PlaceOrder, QuotedMessage,
    Received, payment_name,
};
use crate::wallet::{SignedEnvelope, Wallet};

/// Why an order step was refused; nothing was stored or sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, uniffi::Error)]
pub enum OrderFlowError {
    /// The step was refused: `code` is stable (`illegal_transition`, `order_finished`,
    /// `wrong_actor`, `not_moderated`, `order_mismatch`, `escrow_refused`, `unknown_order`, a
    /// message or validation code, `chain_refused`, `chain_unreachable`, `storage`,
    /// `order_changed` when another step on the same order finished first, …).
    #[error("{code}: {detail}")]
    Refused {
        /// Stable machine-readable code.
        code: String,
        /// What happened, for people.
        detail: String,
    },
}

impl From<FlowError> for OrderFlowError {
    fn from(error: FlowError) -> Self {
        Self::Refused {
            code: error.code().to_string(),
            detail: error.to_string(),
        }
    }
}

fn refused(code: &str, detail: impl Into<String>) -> OrderFlowError {
    OrderFlowError::Refused {
        code: code.into(),
        detail: detail.into(),
    }
}

fn parse_id(id: &str) -> Result<[u8; 32], OrderFlowError> {
    souk_protocol::ObjectId::from_str(id)
        .map(|id| id.0)
        .map_err(|_| refused("invalid_argument", "an order id is 64 hex digits"))
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn fee_rate(sat_per_vb: u32) -> FeeRate {
    FeeRate::from_sat_per_vb_u32(sat_per_vb.clamp(1, 1_000))
}

/// A message to post with `Client.sendMessage(servers, sealed)`.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct OutgoingMessage {
    /// The order (hex).
    pub order_id: String,
    /// The recipient's address (`souk1…`).
    pub recipient: String,
    /// The recipient's inbox servers.
    pub servers: Vec<String>,
    /// The sealed message.
    pub sealed: Vec<u8>,
}

impl From<Outgoing> for OutgoingMessage {
    fn from(o: Outgoing) -> Self {
        Self {
            order_id: hex(&o.order_id),
            recipient: o.recipient.to_address(),
            servers: o.servers,
            sealed: o.sealed,
        }
    }
}

/// What a fetched message did.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct ReceivedMessage {
    /// `already_seen`, `new_order`, `moved` or `noted`.
    pub outcome: String,
    /// The order (hex), when there is one.
    pub order_id: Option<String>,
    /// Its state after the message (snake case), when it moved.
    pub state: Option<String>,
}

/// An order to place.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct OrderDraft {
    /// The signed listing envelope (from a verified listing).
    pub listing: Vec<u8>,
    /// Lines, as SKU indices and quantities (same length).
    pub skus: Vec<u32>,
    /// Quantities, one per SKU index.
    pub quantities: Vec<u32>,
    /// The shipping option's name.
    #[uniffi(default = "")]
    pub shipping_option: String,
    /// The service within it.
    #[uniffi(default = "")]
    pub shipping_service: String,
    /// Where to ship.
    #[uniffi(default = "")]
    pub shipping_address: String,
    /// The chosen moderator's signed profile envelope; absent pays the seller directly.
    #[uniffi(default = None)]
    pub moderator_profile: Option<Vec<u8>>,
    /// The total offered, in satoshis.
    pub amount_sats: u64,
    /// The seller's inbox servers (from its profile).
    pub seller_inbox: Vec<String>,
    /// The buyer's inbox servers.
    pub reply_inbox: Vec<String>,
    /// A note to the seller.
    #[uniffi(default = "")]
    pub memo: String,
    /// The chain's fee rate now, in sat/vB (from `feeRate`). With it, a moderated order whose
    /// escrow could only be spent above the miner-fee cap is refused with `fee_too_high`; show
    /// `escrowFeeEstimate` first.
    #[uniffi(default = None)]
    pub fee_rate_sat_vb: Option<u32>,
}

/// What spending an order's escrow would cost in miner fees (see `escrowFeeEstimate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Record)]
pub struct EscrowFeeEstimate {
    /// The miner fee of the largest spend (a dispute payout), in satoshis.
    pub fee_sats: u64,
    /// That fee as a share of the order, in basis points (100 = 1 %).
    pub share_bp: u64,
    /// The most a spend of this escrow may leave to miners, in satoshis.
    pub cap_sats: u64,
    /// Worth telling the buyer before ordering (above 1 % of the order).
    pub warn: bool,
    /// Above the cap: `placeOrder` refuses escrow at this fee rate.
    pub refused: bool,
}

impl From<FeeEstimate> for EscrowFeeEstimate {
    fn from(e: FeeEstimate) -> Self {
        Self {
            fee_sats: e.fee_sats,
            share_bp: e.share_bp,
            cap_sats: e.cap_sats,
            warn: e.warn,
            refused: e.refused,
        }
    }
}

/// A signed message quoted in a dispute or in evidence (its signature checked).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct QuotedOrderMessage {
    /// `buyer`, `seller` or `moderator`.
    pub sender: String,
    /// The message kind.
    pub kind: String,
    /// Its text.
    pub text: String,
    /// Its time (Unix seconds).
    pub at: u64,
}

/// One message of an order's conversation.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct OrderMessage {
    /// `in` or `out`.
    pub direction: String,
    /// `buyer`, `seller` or `moderator`.
    pub sender: String,
    /// `order`, `confirmation`, `decline`, `payment`, `fulfillment`, `completion`, `cancel`,
    /// `dispute`, `evidence`, `decision`, `psbt` or `chat`.
    pub kind: String,
    /// The memo, reason, note, evidence or chat text.
    pub text: String,
    /// Its time (Unix seconds).
    pub at: u64,
    /// What it quotes, each checked.
    pub quoted: Vec<QuotedOrderMessage>,
}

fn quoted(q: QuotedMessage) -> QuotedOrderMessage {
    QuotedOrderMessage {
        sender: q.sender.as_str().into(),
        kind: q.kind.into(),
        text: q.text,
        at: q.at,
    }
}

impl From<ConversationEntry> for OrderMessage {
    fn from(e: ConversationEntry) -> Self {
        Self {
            direction: e.direction,
            sender: e.sender.as_str().into(),
            kind: e.kind.into(),
            text: e.text,
            at: e.at,
            quoted: e.quoted.into_iter().map(quoted).collect(),
        }
    }
}

/// One order as the app lists it.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct OrderSummary {
    /// The order id (hex).
    pub id: String,
    /// `buyer`, `seller` or `moderator`.
    pub role: String,
    /// The state (snake case: `requested`, `awaiting_payment`, …).
    pub state: String,
    /// Whether it is final.
    pub is_final: bool,
    /// `direct` or `moderated`.
    pub payment: String,
    /// The amount in satoshis.
    pub amount_sats: u64,
    /// The buyer's address.
    pub buyer: String,
    /// The seller's address.
    pub seller: String,
    /// Where to pay, once confirmed.
    pub payment_address: Option<String>,
}

/// Runs `fut` on the core's runtime (where reqwest lives) and waits for it from whatever
/// executor polls us, as every `Client` call does.
async fn on_core_runtime<T: Send + 'static>(
    fut: impl Future<Output = Result<T, OrderFlowError>> + Send + 'static,
) -> Result<T, OrderFlowError> {
    let runtime = crate::client::runtime().map_err(|e| refused("runtime", e.to_string()))?;
    runtime
        .spawn(fut)
        .await
        .map_err(|e| refused("runtime", format!("the task failed: {e}")))?
}

/// The chain client for a URL, with the core's timeout.
fn chain(url: &str) -> Result<Chain, OrderFlowError> {
    Chain::new(url, Duration::from_secs(20)).map_err(|e| FlowError::from(e).into())
}

/// One person's orders on this device.
#[derive(uniffi::Object)]
pub struct OrderBook {
    inner: Arc<Orders>,
}

impl std::fmt::Debug for OrderBook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrderBook").finish_non_exhaustive()
    }
}

#[uniffi::export]
impl OrderBook {
    /// Opens (creating) the order book file at `path` for `wallet`'s person, placing orders on
    /// `network` (`bitcoin`, `testnet`, `signet` or `regtest`). Keep it in the app's private
    /// storage; it holds order messages in plaintext.
    ///
    /// # Errors
    /// [`OrderFlowError`] with code `storage`, or `order_mismatch` for an unknown network.
    #[uniffi::constructor]
    pub fn open(
        path: String,
        wallet: Arc<Wallet>,
        network: String,
    ) -> Result<Arc<Self>, OrderFlowError> {
        let orders = Orders::open(
            std::path::Path::new(&path),
            wallet.keychain().clone(),
            &network,
        )?;
        Ok(Arc::new(Self {
            inner: Arc::new(orders),
        }))
    }

    /// Every order, newest first.
    ///
    /// # Errors
    /// [`OrderFlowError`].
    pub fn list(&self) -> Result<Vec<OrderSummary>, OrderFlowError> {
        Ok(self
            .inner
            .list()?
            .into_iter()
            .map(|r| OrderSummary {
                id: hex(&r.id),
                role: r.role.as_str().into(),
                state: r.order.state().as_str().into(),
                is_final: r.order.state().is_final(),
                payment: payment_name(r.order.payment()).into(),
                amount_sats: r.request.amount_sats,
                buyer: r.buyer.to_address(),
                seller: r.seller.to_address(),
                payment_address: r.confirmation.map(|(_, c)| c.payment_address),
            })
            .collect())
    }

    /// Messages made here that no inbox server has taken yet (a send failed, or the app stopped
    /// before sending): send each again with `Client.sendMessage`, then call `delivered`.
    ///
    /// # Errors
    /// [`OrderFlowError`].
    pub fn outbox(&self) -> Result<Vec<OutgoingMessage>, OrderFlowError> {
        Ok(self.inner.outbox()?.into_iter().map(Into::into).collect())
    }

    /// Takes a message out of the outbox once `sendMessage` reported it delivered.
    ///
    /// # Errors
    /// [`OrderFlowError`].
    pub fn delivered(&self, sealed: Vec<u8>) -> Result<(), OrderFlowError> {
        Ok(self.inner.delivered(&sealed)?)
    }

    /// Places an order; post the result to the seller's inbox servers.
    ///
    /// # Errors
    /// [`OrderFlowError`].
    pub fn place_order(&self, draft: OrderDraft) -> Result<OutgoingMessage, OrderFlowError> {
        if draft.skus.len() != draft.quantities.len() {
            return Err(refused(
                "invalid_argument",
                "skus and quantities must have the same length",
            ));
        }
        let order = PlaceOrder {
            listing: draft.listing,
            items: draft.skus.into_iter().zip(draft.quantities).collect(),
            shipping_option: draft.shipping_option,
            shipping_service: draft.shipping_service,
            shipping_address: draft.shipping_address,
            moderator_profile: draft.moderator_profile,
            amount_sats: draft.amount_sats,
            seller_inbox: draft.seller_inbox,
            reply_inbox: draft.reply_inbox,
            memo: draft.memo,
            fee_rate: draft.fee_rate_sat_vb.map(fee_rate),
        };
        Ok(self.inner.place_order(order, now())?.into())
    }

    /// Feeds one sealed message fetched from the inbox; acknowledge it at the server only when
    /// this succeeds.
    ///
    /// # Errors
    /// [`OrderFlowError`]: the message does not fit (it is not recorded).
    pub fn receive(&self, sealed: Vec<u8>) -> Result<ReceivedMessage, OrderFlowError> {
        let state = |s: OrderState| Some(s.as_str().to_string());
        Ok(match self.inner.receive(&sealed, now())? {
            Received::AlreadySeen => ReceivedMessage {
                outcome: "already_seen".into(),
                order_id: None,
                state: None,
            },
            Received::NewOrder { order_id } => ReceivedMessage {
                outcome: "new_order".into(),
                order_id: Some(hex(&order_id)),
                state: None,
            },
            Received::Moved { order_id, state: s } => ReceivedMessage {
                outcome: "moved".into(),
                order_id: Some(hex(&order_id)),
                state: state(s),
            },
            Received::Noted { order_id } => ReceivedMessage {
                outcome: "noted".into(),
                order_id: Some(hex(&order_id)),
                state: None,
            },
        })
    }

    /// The seller accepts the order.
    ///
    /// # Errors
    /// [`OrderFlowError`].
    pub fn confirm(&self, order_id: String) -> Result<OutgoingMessage, OrderFlowError> {
        Ok(self.inner.confirm(&parse_id(&order_id)?, now())?.into())
    }

    /// The seller refuses the order.
    ///
    /// # Errors
    /// [`OrderFlowError`].
    pub fn decline(
        &self,
        order_id: String,
        reason: String,
    ) -> Result<OutgoingMessage, OrderFlowError> {
        Ok(self
            .inner
            .decline(&parse_id(&order_id)?, &reason, now())?
            .into())
    }

    /// Either party calls off an unpaid order.
    ///
    /// # Errors
    /// [`OrderFlowError`].
    pub fn cancel(
        &self,
        order_id: String,
        reason: String,
    ) -> Result<OutgoingMessage, OrderFlowError> {
        Ok(self
            .inner
            .cancel(&parse_id(&order_id)?, &reason, now())?
            .into())
    }

    /// The seller ships (a moderated order's release PSBT is built and signed here).
    ///
    /// # Errors
    /// [`OrderFlowError`].
    pub fn ship(
        &self,
        order_id: String,
        note: String,
        fee_rate_sat_vb: u32,
    ) -> Result<OutgoingMessage, OrderFlowError> {
        Ok(self
            .inner
            .ship(
                &parse_id(&order_id)?,
                &note,
                fee_rate(fee_rate_sat_vb),
                now(),
            )?
            .into())
    }

    /// The seller refunds a paid moderated order in full (direct orders are refunded from the
    /// seller's own wallet; name that transaction in `direct_refund_txid`).
    ///
    /// # Errors
    /// [`OrderFlowError`].
    pub fn refund(
        &self,
        order_id: String,
        reason: String,
        direct_refund_txid: Option<String>,
        fee_rate_sat_vb: u32,
    ) -> Result<OutgoingMessage, OrderFlowError> {
        let txid = direct_refund_txid
            .map(|t| {
                t.parse::<Txid>()
                    .map_err(|_| refused("invalid_argument", "not a transaction id"))
            })
            .transpose()?;
        Ok(self
            .inner
            .refund(
                &parse_id(&order_id)?,
                &reason,
                txid,
                fee_rate(fee_rate_sat_vb),
                now(),
            )?
            .into())
    }

    /// A party opens a dispute: messages for the moderator and the other party.
    ///
    /// # Errors
    /// [`OrderFlowError`].
    pub fn open_dispute(
        &self,
        order_id: String,
        reason: String,
    ) -> Result<Vec<OutgoingMessage>, OrderFlowError> {
        Ok(self
            .inner
            .open_dispute(&parse_id(&order_id)?, &reason, now())?
            .into_iter()
            .map(Into::into)
            .collect())
    }

    /// The moderator decides: `buyer_share_bps` of what remains after its fee to the buyer.
    ///
    /// # Errors
    /// [`OrderFlowError`].
    pub fn decide(
        &self,
        order_id: String,
        buyer_share_bps: u16,
        reason: String,
        seller_inbox: Vec<String>,
        fee_rate_sat_vb: u32,
    ) -> Result<Vec<OutgoingMessage>, OrderFlowError> {
        Ok(self
            .inner
            .decide(
                &parse_id(&order_id)?,
                buyer_share_bps,
                &reason,
                seller_inbox,
                fee_rate(fee_rate_sat_vb),
                now(),
            )?
            .into_iter()
            .map(Into::into)
            .collect())
    }

    /// What spending the escrow of an order of `amount_sats` with the moderator of
    /// `moderator_profile` (its signed profile) would cost in miner fees at `fee_rate_sat_vb`:
    /// show it before a moderated order; above the cap, `placeOrder` refuses escrow.
    ///
    /// # Errors
    /// [`OrderFlowError`] (`order_mismatch` for a profile without a usable moderator offer).
    pub fn escrow_fee_estimate(
        &self,
        amount_sats: u64,
        moderator_profile: Vec<u8>,
        fee_rate_sat_vb: u32,
    ) -> Result<EscrowFeeEstimate, OrderFlowError> {
        Ok(self
            .inner
            .escrow_fee_estimate(
                amount_sats,
                &moderator_profile,
                fee_rate(fee_rate_sat_vb),
                now(),
            )?
            .into())
    }

    /// The buyer tells the seller it paid (after `watchChain` saw the payment).
    ///
    /// # Errors
    /// [`OrderFlowError`].
    pub fn notify_payment(&self, order_id: String) -> Result<OutgoingMessage, OrderFlowError> {
        Ok(self
            .inner
            .notify_payment(&parse_id(&order_id)?, now())?
            .into())
    }

    /// A party of a disputed order sends the moderator its case; with `quote_messages`, the
    /// order's signed messages go with it so the moderator can check them.
    ///
    /// # Errors
    /// [`OrderFlowError`].
    pub fn send_evidence(
        &self,
        order_id: String,
        text: String,
        quote_messages: bool,
    ) -> Result<OutgoingMessage, OrderFlowError> {
        Ok(self
            .inner
            .send_evidence(&parse_id(&order_id)?, &text, quote_messages, now())?
            .into())
    }

    /// A chat message: buyer to seller or back; the moderator to both (the seller at
    /// `seller_inbox`, ignored for the parties).
    ///
    /// # Errors
    /// [`OrderFlowError`].
    pub fn chat(
        &self,
        order_id: String,
        text: String,
        seller_inbox: Vec<String>,
    ) -> Result<Vec<OutgoingMessage>, OrderFlowError> {
        Ok(self
            .inner
            .chat(&parse_id(&order_id)?, &text, seller_inbox, now())?
            .into_iter()
            .map(Into::into)
            .collect())
    }

    /// The order's messages, oldest first, decoded — what a moderator reads before deciding:
    /// both sides' disputes and evidence with the signed messages they quote.
    ///
    /// # Errors
    /// [`OrderFlowError`].
    pub fn conversation(&self, order_id: String) -> Result<Vec<OrderMessage>, OrderFlowError> {
        Ok(self
            .inner
            .conversation(&parse_id(&order_id)?)?
            .into_iter()
            .map(Into::into)
            .collect())
    }

    /// Where the buyer pays, once the order is confirmed (the amount is the order's
    /// `amountSats`).
    ///
    /// # Errors
    /// [`OrderFlowError`].
    pub fn payment_address(&self, order_id: String) -> Result<String, OrderFlowError> {
        Ok(self.inner.payment_due(&parse_id(&order_id)?)?.0)
    }

    /// The buyer rates the seller, or with `moderator` the moderator: the signed rating to
    /// publish with `Client.publish`. `scores`: overall, quality, description, delivery, service
    /// (1–5; a moderator gets overall and service only, the others 0).
    ///
    /// # Errors
    /// [`OrderFlowError`].
    pub fn rate(
        &self,
        order_id: String,
        moderator: bool,
        scores: Vec<u32>,
        review: String,
    ) -> Result<SignedEnvelope, OrderFlowError> {
        let scores: [u32; 5] = scores
            .try_into()
            .map_err(|_| refused("invalid_argument", "give five scores"))?;
        let role = if moderator {
            pb::RatingRole::Moderator
        } else {
            pb::RatingRole::Seller
        };
        let bytes = self
            .inner
            .rate(&parse_id(&order_id)?, role, scores, &review, now())?;
        let signed = souk_protocol::open(&bytes, &souk_protocol::ValidationContext::at(now()))
            .map_err(|e| refused("invalid_rating", e.to_string()))?;
        Ok(SignedEnvelope::from_sealed(&signed, "rating"))
    }
}

impl OrderBook {
    /// What a network step needs: the book, the chain client and the parsed order id.
    fn step(
        &self,
        order_id: &str,
        esplora_url: &str,
    ) -> Result<(Arc<Orders>, Chain, [u8; 32]), OrderFlowError> {
        Ok((
            Arc::clone(&self.inner),
            chain(esplora_url)?,
            parse_id(order_id)?,
        ))
    }
}

#[uniffi::export]
impl OrderBook {
    /// The fee rate in sat/vB that the Esplora API at `esplora_url` estimates for confirmation
    /// within `target_blocks` (for the `fee_rate_sat_vb` of `ship`, `refund`, `decide` and
    /// `claim`).
    ///
    /// # Errors
    /// [`OrderFlowError`] with a chain code.
    pub async fn fee_rate(
        &self,
        esplora_url: String,
        target_blocks: u16,
    ) -> Result<u32, OrderFlowError> {
        let chain = chain(&esplora_url)?;
        on_core_runtime(async move {
            chain
                .fee_rate(target_blocks)
                .await
                .map_err(|e| FlowError::from(e).into())
        })
        .await
    }

    /// Reads every open order's payment, confirmations and timeout from the Esplora API at
    /// `esplora_url`; returns the ids of orders that moved.
    ///
    /// # Errors
    /// [`OrderFlowError`].
    pub async fn watch_chain(&self, esplora_url: String) -> Result<Vec<String>, OrderFlowError> {
        let (inner, chain) = (Arc::clone(&self.inner), chain(&esplora_url)?);
        on_core_runtime(async move {
            Ok(inner
                .watch_chain(&chain, now())
                .await?
                .iter()
                .map(|id| hex(id))
                .collect())
        })
        .await
    }

    /// The buyer completes: checks, signs and broadcasts the release (moderated); returns the
    /// message for the seller.
    ///
    /// # Errors
    /// [`OrderFlowError`].
    pub async fn complete(
        &self,
        order_id: String,
        esplora_url: String,
    ) -> Result<OutgoingMessage, OrderFlowError> {
        let (inner, chain, id) = self.step(&order_id, &esplora_url)?;
        on_core_runtime(async move { Ok(inner.complete(&id, &chain, now()).await?.0.into()) }).await
    }

    /// A party carries out the moderator's decision; returns the payout's txid.
    ///
    /// # Errors
    /// [`OrderFlowError`].
    pub async fn execute_decision(
        &self,
        order_id: String,
        esplora_url: String,
    ) -> Result<String, OrderFlowError> {
        let (inner, chain, id) = self.step(&order_id, &esplora_url)?;
        on_core_runtime(async move { Ok(inner.execute_decision(&id, &chain).await?.to_string()) })
            .await
    }

    /// The buyer completes the seller's refund; returns its txid.
    ///
    /// # Errors
    /// [`OrderFlowError`].
    pub async fn execute_refund(
        &self,
        order_id: String,
        esplora_url: String,
    ) -> Result<String, OrderFlowError> {
        let (inner, chain, id) = self.step(&order_id, &esplora_url)?;
        on_core_runtime(async move { Ok(inner.execute_refund(&id, &chain).await?.to_string()) })
            .await
    }

    /// The seller claims the escrow after the timeout; returns the claim's txid.
    ///
    /// # Errors
    /// [`OrderFlowError`].
    pub async fn claim(
        &self,
        order_id: String,
        esplora_url: String,
        fee_rate_sat_vb: u32,
    ) -> Result<String, OrderFlowError> {
        let (inner, chain, id) = self.step(&order_id, &esplora_url)?;
        on_core_runtime(async move {
            Ok(inner
                .claim(&id, &chain, fee_rate(fee_rate_sat_vb), now())
                .await?
                .to_string())
        })
        .await
    }
}
