//! The order state machine (SPEC.md, "Orders"), in one place for phone, CLI and tests.
//!
//! ```text
//!  Requested ──Confirm──▶ AwaitingPayment ──Fund──▶ Funded ──FundingConfirmed──▶ Confirmed
//!     │ ╲                      │                      │  ╲                          │
//!  Decline Cancel            Cancel                 Ship  Refund / OpenDispute     Ship ...
//!     ▼    ▼                   ▼                      ▼
//!  Declined Canceled        Canceled              Shipped ──Complete──▶ Completed
//!
//!  Funded | Confirmed | Shipped ──Refund──▶ Refunded
//!  Funded | Confirmed | Shipped ──OpenDispute──▶ Disputed ──Resolve──▶ Resolved   (moderated)
//!  Confirmed | Shipped | Disputed ──Timeout──▶ TimedOut ──Claim──▶ Claimed        (moderated)
//!  TimedOut ──Complete──▶ Completed,  TimedOut ──Refund──▶ Refunded               (moderated)
//! ```
//!
//! The machine is pure: [`Order::apply`] takes an [`Event`] and who caused it, and either moves
//! to the next state or returns a typed [`OrderError`] and changes nothing. Messages map to
//! events with [`event_for_message`]; the chain watcher produces `Fund`, `FundingConfirmed` and
//! `Timeout`. Checks that need more than the state (amounts, keys, PSBT outputs) happen before an
//! event is applied, in the caller that holds the order's terms.

use core::fmt;
use core::str::FromStr;

use crate::pb;

/// Who takes part in an order, or the chain (which no one signs for).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Actor {
    /// The person who ordered and pays.
    Buyer,
    /// The person who sells.
    Seller,
    /// The moderator the buyer chose (moderated payment only).
    Moderator,
    /// What the chain shows (funding seen, confirmed, timeout reached).
    Chain,
}

impl Actor {
    /// Stable lower-case name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Buyer => "buyer",
            Self::Seller => "seller",
            Self::Moderator => "moderator",
            Self::Chain => "chain",
        }
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the order is paid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Payment {
    /// Straight to the seller; no moderator, no dispute, no timeout.
    Direct,
    /// Into the 2-of-3 escrow with a moderator.
    Moderated,
}

/// Where an order is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OrderState {
    /// The buyer sent the order; the seller has not answered.
    Requested,
    /// The seller confirmed; the buyer is to pay.
    AwaitingPayment,
    /// The payment is seen on the chain, unconfirmed.
    Funded,
    /// The payment is confirmed.
    Confirmed,
    /// The seller shipped or delivered.
    Shipped,
    /// The buyer received it and the seller was paid. Final.
    Completed,
    /// The seller refused the order. Final.
    Declined,
    /// Called off before payment. Final.
    Canceled,
    /// Called off after payment; the buyer was paid back. Final.
    Refunded,
    /// A party asked the moderator to decide.
    Disputed,
    /// The moderator decided and the payout was signed. Final.
    Resolved,
    /// The escrow timeout passed; the seller may claim alone.
    TimedOut,
    /// The seller claimed the escrow after the timeout. Final.
    Claimed,
}

impl OrderState {
    /// Every state, in the order above.
    pub const ALL: [Self; 13] = [
        Self::Requested,
        Self::AwaitingPayment,
        Self::Funded,
        Self::Confirmed,
        Self::Shipped,
        Self::Completed,
        Self::Declined,
        Self::Canceled,
        Self::Refunded,
        Self::Disputed,
        Self::Resolved,
        Self::TimedOut,
        Self::Claimed,
    ];

    /// Whether nothing can happen to the order any more.
    #[must_use]
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Completed
                | Self::Declined
                | Self::Canceled
                | Self::Refunded
                | Self::Resolved
                | Self::Claimed
        )
    }

    /// Stable snake-case name, used in storage and APIs.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Requested => "requested",
            Self::AwaitingPayment => "awaiting_payment",
            Self::Funded => "funded",
            Self::Confirmed => "confirmed",
            Self::Shipped => "shipped",
            Self::Completed => "completed",
            Self::Declined => "declined",
            Self::Canceled => "canceled",
            Self::Refunded => "refunded",
            Self::Disputed => "disputed",
            Self::Resolved => "resolved",
            Self::TimedOut => "timed_out",
            Self::Claimed => "claimed",
        }
    }
}

impl fmt::Display for OrderState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for OrderState {
    type Err = OrderError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or(OrderError::UnknownState)
    }
}

/// What can happen to an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Event {
    /// The seller accepts (an `OrderConfirmation`).
    Confirm,
    /// The seller refuses (an `OrderDecline`).
    Decline,
    /// Either party calls the order off before payment (a `Cancellation`).
    Cancel,
    /// The payment is seen on the chain.
    Fund,
    /// The payment reached the required confirmations.
    FundingConfirmed,
    /// The seller shipped or delivered (a `Fulfillment`).
    Ship,
    /// The buyer received it and released the payment (a `Completion`).
    Complete,
    /// The seller pays the buyer back after payment (a `Cancellation` with a refund).
    Refund,
    /// A party asks the moderator (a `DisputeOpen`).
    OpenDispute,
    /// The moderator decides (a `Decision`).
    Resolve,
    /// The escrow timeout is reached on the chain.
    Timeout,
    /// The seller spends the escrow alone after the timeout.
    Claim,
}

impl Event {
    /// Every event.
    pub const ALL: [Self; 12] = [
        Self::Confirm,
        Self::Decline,
        Self::Cancel,
        Self::Fund,
        Self::FundingConfirmed,
        Self::Ship,
        Self::Complete,
        Self::Refund,
        Self::OpenDispute,
        Self::Resolve,
        Self::Timeout,
        Self::Claim,
    ];

    /// Stable snake-case name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Confirm => "confirm",
            Self::Decline => "decline",
            Self::Cancel => "cancel",
            Self::Fund => "fund",
            Self::FundingConfirmed => "funding_confirmed",
            Self::Ship => "ship",
            Self::Complete => "complete",
            Self::Refund => "refund",
            Self::OpenDispute => "open_dispute",
            Self::Resolve => "resolve",
            Self::Timeout => "timeout",
            Self::Claim => "claim",
        }
    }

    /// Who may cause this event.
    #[must_use]
    pub fn actors(self) -> &'static [Actor] {
        match self {
            Self::Confirm | Self::Decline | Self::Ship | Self::Refund | Self::Claim => {
                &[Actor::Seller]
            }
            Self::Cancel | Self::OpenDispute => &[Actor::Buyer, Actor::Seller],
            Self::Complete => &[Actor::Buyer],
            Self::Resolve => &[Actor::Moderator],
            Self::Fund | Self::FundingConfirmed | Self::Timeout => &[Actor::Chain],
        }
    }

    /// Whether the event exists only with a moderator (escrow).
    #[must_use]
    pub fn needs_moderator(self) -> bool {
        matches!(
            self,
            Self::OpenDispute | Self::Resolve | Self::Timeout | Self::Claim
        )
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an event was refused. Nothing changes when one is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OrderError {
    /// The order already ended.
    #[error("the order is {state} and cannot change any more")]
    Finished {
        /// Its final state.
        state: OrderState,
    },
    /// This event needs a moderated (escrow) order.
    #[error("{event} needs a moderated order; this one is paid directly")]
    NotModerated {
        /// The event.
        event: Event,
    },
    /// This party may not cause this event.
    #[error("the {actor} cannot {event}")]
    WrongActor {
        /// The event.
        event: Event,
        /// Who tried.
        actor: Actor,
    },
    /// The event does not follow from the current state.
    #[error("cannot {event} an order that is {from}")]
    IllegalTransition {
        /// The current state.
        from: OrderState,
        /// The event.
        event: Event,
    },
    /// A stored state name is not one of [`OrderState::ALL`].
    #[error("unknown order state")]
    UnknownState,
}

impl OrderError {
    /// The stable machine-readable code of this error.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::Finished { .. } => "order_finished",
            Self::NotModerated { .. } => "not_moderated",
            Self::WrongActor { .. } => "wrong_actor",
            Self::IllegalTransition { .. } => "illegal_transition",
            Self::UnknownState => "unknown_order_state",
        }
    }
}

/// The state an event leads to from `from`, ignoring who caused it and how the order is paid;
/// `None` if the event does not follow from `from`. This table is the whole machine.
#[must_use]
pub fn next_state(from: OrderState, event: Event) -> Option<OrderState> {
    use Event as E;
    use OrderState as S;
    Some(match (from, event) {
        (S::Requested, E::Confirm) => S::AwaitingPayment,
        (S::Requested, E::Decline) => S::Declined,
        (S::Requested | S::AwaitingPayment, E::Cancel) => S::Canceled,
        (S::AwaitingPayment, E::Fund) => S::Funded,
        (S::Funded, E::FundingConfirmed) => S::Confirmed,
        (S::Funded | S::Confirmed, E::Ship) => S::Shipped,
        (S::Shipped | S::TimedOut, E::Complete) => S::Completed,
        (S::Funded | S::Confirmed | S::Shipped | S::TimedOut, E::Refund) => S::Refunded,
        (S::Funded | S::Confirmed | S::Shipped, E::OpenDispute) => S::Disputed,
        (S::Disputed, E::Resolve) => S::Resolved,
        (S::Confirmed | S::Shipped | S::Disputed, E::Timeout) => S::TimedOut,
        (S::TimedOut, E::Claim) => S::Claimed,
        _ => return None,
    })
}

/// The event a message body causes in an order that is in `state`, or `None` for messages that
/// inform without moving the order (payment notice, evidence, PSBTs, chat) and for the order
/// request itself (which creates the order).
///
/// A `Cancellation` is [`Event::Cancel`] before the order is funded and [`Event::Refund`] after.
#[must_use]
pub fn event_for_message(state: OrderState, body: &pb::message::Body) -> Option<Event> {
    use pb::message::Body;
    match body {
        Body::Confirmation(_) => Some(Event::Confirm),
        Body::Decline(_) => Some(Event::Decline),
        Body::Fulfillment(_) => Some(Event::Ship),
        Body::Completion(_) => Some(Event::Complete),
        Body::Cancel(_) => Some(
            if matches!(state, OrderState::Requested | OrderState::AwaitingPayment) {
                Event::Cancel
            } else {
                Event::Refund
            },
        ),
        Body::Dispute(_) => Some(Event::OpenDispute),
        Body::Decision(_) => Some(Event::Resolve),
        Body::Order(_) | Body::Payment(_) | Body::Evidence(_) | Body::Psbt(_) | Body::Chat(_) => {
            None
        }
    }
}

/// One step an order took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// The state before.
    pub from: OrderState,
    /// The event.
    pub event: Event,
    /// Who caused it.
    pub actor: Actor,
    /// The state after.
    pub to: OrderState,
    /// When (Unix seconds, the caller's clock or the message's `created_at`).
    pub at: u64,
}

/// An order's progress: its id, how it is paid, its state and every step so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    id: [u8; 32],
    payment: Payment,
    state: OrderState,
    history: Vec<Transition>,
}

impl Order {
    /// A new order, just requested.
    #[must_use]
    pub fn new(id: [u8; 32], payment: Payment) -> Self {
        Self {
            id,
            payment,
            state: OrderState::Requested,
            history: Vec::new(),
        }
    }

    /// An order restored from storage in `state` with its recorded history.
    #[must_use]
    pub fn restore(
        id: [u8; 32],
        payment: Payment,
        state: OrderState,
        history: Vec<Transition>,
    ) -> Self {
        Self {
            id,
            payment,
            state,
            history,
        }
    }

    /// The order id.
    #[must_use]
    pub fn id(&self) -> &[u8; 32] {
        &self.id
    }

    /// How it is paid.
    #[must_use]
    pub fn payment(&self) -> Payment {
        self.payment
    }

    /// Where it is.
    #[must_use]
    pub fn state(&self) -> OrderState {
        self.state
    }

    /// Every step so far, oldest first.
    #[must_use]
    pub fn history(&self) -> &[Transition] {
        &self.history
    }

    /// Whether `event` caused by `actor` may happen now, and to which state it would lead.
    ///
    /// # Errors
    /// [`OrderError::Finished`], [`OrderError::NotModerated`], [`OrderError::WrongActor`] or
    /// [`OrderError::IllegalTransition`], checked in that order.
    pub fn check(&self, event: Event, actor: Actor) -> Result<OrderState, OrderError> {
        if self.state.is_final() {
            return Err(OrderError::Finished { state: self.state });
        }
        if event.needs_moderator() && self.payment == Payment::Direct {
            return Err(OrderError::NotModerated { event });
        }
        if !event.actors().contains(&actor) {
            return Err(OrderError::WrongActor { event, actor });
        }
        next_state(self.state, event).ok_or(OrderError::IllegalTransition {
            from: self.state,
            event,
        })
    }

    /// Applies `event` caused by `actor` at time `at`: moves the order and records the step.
    ///
    /// # Errors
    /// As [`Self::check`]; the order is unchanged on error.
    pub fn apply(&mut self, event: Event, actor: Actor, at: u64) -> Result<Transition, OrderError> {
        let to = self.check(event, actor)?;
        let step = Transition {
            from: self.state,
            event,
            actor,
            to,
            at,
        };
        self.state = to;
        self.history.push(step);
        Ok(step)
    }
}

/// The Bitcoin network an order names (`"bitcoin"`, `"testnet"`, `"signet"`, `"regtest"`).
#[must_use]
pub fn parse_network(name: &str) -> Option<bitcoin::Network> {
    match name {
        "bitcoin" => Some(bitcoin::Network::Bitcoin),
        "testnet" => Some(bitcoin::Network::Testnet),
        "signet" => Some(bitcoin::Network::Signet),
        "regtest" => Some(bitcoin::Network::Regtest),
        _ => None,
    }
}
