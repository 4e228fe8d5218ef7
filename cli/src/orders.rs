//! `souk order`, `souk inbox`, `souk chain`: the order flow of the phone core (`OrderBook`),
//! with the order book in `<home>/orders.db`. Every step that makes a message sends it to the
//! other party's inbox servers at once; a message that could not be delivered stays in the
//! outbox and `souk inbox sync` sends it again.

use std::sync::Arc;

use anyhow::Result;
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use souk_mobile_core::{
    Client, OrderBook, OrderDraft, OrderFlowError, OrderMessage, OutgoingMessage, Wallet,
};

use crate::{Ctx, emit, fail, output, unlock, warn};

/// Fee rate used when neither `--fee-rate` is given nor the Esplora API answers, in sat/vB.
const FALLBACK_FEE_RATE: u32 = 2;
/// Confirmation target of the default fee rate, in blocks.
const FEE_TARGET_BLOCKS: u16 = 6;

/// `--fee-rate`, or the chain's estimate, or (with a warning) the fallback.
fn fee_rate(ctx: &Ctx, book: &OrderBook, given: Option<u32>) -> Result<u32> {
    if let Some(rate) = given {
        return Ok(rate);
    }
    match ctx.block_on(book.fee_rate(ctx.esplora.clone(), FEE_TARGET_BLOCKS))? {
        Ok(rate) => Ok(rate),
        Err(e) => {
            warn(&format!(
                "no fee estimate from {} ({e}); using {FALLBACK_FEE_RATE} sat/vB (set --fee-rate)",
                ctx.esplora
            ));
            Ok(FALLBACK_FEE_RATE)
        }
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum OrderCommand {
    /// Order a listing: the order is signed, sealed to the seller and sent to its inbox
    Place(PlaceArgs),
    /// Your orders, newest first
    List,
    /// One order: state, parties, where to pay, and its messages (disputes and evidence with
    /// the signed messages they quote, checked)
    Show {
        /// Order id (64 hex digits)
        id: String,
    },
    /// Buyer: tell the seller you paid (after `souk chain watch` saw the payment)
    Paid {
        /// Order id
        id: String,
    },
    /// Buyer or seller of a disputed order: send the moderator your case, with the order's
    /// signed messages so it can check them
    Evidence {
        /// Order id
        id: String,
        /// What you say
        #[arg(long)]
        text: String,
        /// Send the text alone, without the order's signed messages
        #[arg(long)]
        no_messages: bool,
    },
    /// Write to the other party (the moderator writes to both)
    Chat {
        /// Order id
        id: String,
        /// The text
        text: String,
    },
    /// Seller: accept an order (a moderated order gets its escrow address here)
    Confirm {
        /// Order id
        id: String,
    },
    /// Seller: refuse an order
    Decline {
        /// Order id
        id: String,
        /// Why, for the buyer
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Either party: call off an order that is not paid
    Cancel {
        /// Order id
        id: String,
        /// Why
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Seller: mark shipped (a moderated order's release is signed here)
    Ship {
        /// Order id
        id: String,
        /// A note for the buyer (tracking, download link, …)
        #[arg(long, default_value = "")]
        note: String,
        /// Fee rate of the release transaction, sat/vB [default: the Esplora estimate for 6
        /// blocks]
        #[arg(long)]
        fee_rate: Option<u32>,
    },
    /// Buyer: received; checks, signs and broadcasts the release (moderated)
    Complete {
        /// Order id
        id: String,
    },
    /// Seller: give a paid order's money back (moderated: a signed full refund)
    Refund {
        /// Order id
        id: String,
        /// Why
        #[arg(long, default_value = "")]
        reason: String,
        /// Direct orders: the transaction that paid the buyer back
        #[arg(long)]
        txid: Option<String>,
        /// Fee rate of the refund transaction, sat/vB [default: the Esplora estimate for 6
        /// blocks]
        #[arg(long)]
        fee_rate: Option<u32>,
    },
    /// Buyer: complete the seller's refund (sign and broadcast)
    AcceptRefund {
        /// Order id
        id: String,
    },
    /// Either party: ask the moderator to decide
    Dispute {
        /// Order id
        id: String,
        /// What went wrong
        #[arg(long)]
        reason: String,
    },
    /// Moderator: decide a dispute
    Decide {
        /// Order id
        id: String,
        /// The buyer's share of what remains after your fee, in basis points (7000 = 70 %)
        #[arg(long, value_parser = clap::value_parser!(u16).range(0..=10_000))]
        buyer_share_bps: u16,
        /// Your reasoning, for both parties
        #[arg(long, default_value = "")]
        reason: String,
        /// Fee rate of the payout transaction, sat/vB [default: the Esplora estimate for 6
        /// blocks]
        #[arg(long)]
        fee_rate: Option<u32>,
    },
    /// Either party: carry out the moderator's decision (sign and broadcast the payout)
    AcceptDecision {
        /// Order id
        id: String,
    },
    /// Seller: claim the escrow alone after the timeout
    Claim {
        /// Order id
        id: String,
        /// Fee rate of the claim, sat/vB [default: the Esplora estimate for 6 blocks]
        #[arg(long)]
        fee_rate: Option<u32>,
    },
    /// Buyer: rate the seller (or, with --moderator, the moderator) and publish the rating
    Rate {
        /// Order id
        id: String,
        /// Rate the moderator (overall and service only) instead of the seller
        #[arg(long)]
        moderator: bool,
        /// Overall score, 1–5
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=5))]
        overall: u32,
        /// Quality, description, delivery scores (seller only), 1–5 each
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=5))]
        quality: Option<u32>,
        /// How well the listing described it (seller only)
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=5))]
        description: Option<u32>,
        /// Delivery (seller only)
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=5))]
        delivery: Option<u32>,
        /// Service, 1–5
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=5))]
        service: u32,
        /// A review
        #[arg(long, default_value = "")]
        review: String,
    },
}

#[derive(Debug, Args)]
pub(crate) struct PlaceArgs {
    /// The listing's id (64 hex digits), as `souk search` shows it
    listing: String,
    /// The total you offer, in satoshis
    #[arg(long)]
    amount: u64,
    /// SKU index to order (repeat with --qty for several lines)
    #[arg(long = "sku", default_value = "0")]
    skus: Vec<u32>,
    /// Quantity of each --sku, in the same order
    #[arg(long = "qty", default_value = "1")]
    quantities: Vec<u32>,
    /// Pay into escrow with this moderator (souk1… address); without it you pay the seller
    /// directly
    #[arg(long)]
    moderator: Option<String>,
    /// Where to ship
    #[arg(long, default_value = "")]
    ship_to: String,
    /// Shipping option name
    #[arg(long, default_value = "")]
    option: String,
    /// Shipping service name
    #[arg(long, default_value = "")]
    service: String,
    /// A note to the seller
    #[arg(long, default_value = "")]
    memo: String,
    /// Your inbox servers for the answers [default: those of your published profile]
    #[arg(long = "inbox", value_name = "URL")]
    inbox: Vec<String>,
    /// Fee rate to judge the escrow's miner fee by, sat/vB [default: the Esplora estimate for 6
    /// blocks]. A moderated order whose escrow could only be spent above the fee cap (5 % of
    /// the order, at least 1,000 sats) is refused
    #[arg(long)]
    fee_rate: Option<u32>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum InboxCommand {
    /// Send what the outbox holds, then read your inbox servers, feed every message to your
    /// orders, and acknowledge what was taken
    Sync {
        /// Inbox servers to read [default: those of your published profile]
        #[arg(long = "inbox", value_name = "URL")]
        inbox: Vec<String>,
    },
    /// Messages you made that no inbox server has taken yet (`sync` sends them again)
    Pending,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ChainCommand {
    /// Read payments, confirmations and timeouts of your open orders from the Esplora API
    Watch,
}

fn flow_error(e: OrderFlowError) -> anyhow::Error {
    let OrderFlowError::Refused { code, detail } = e;
    let hint = match code.as_str() {
        "illegal_transition" | "order_finished" => {
            "see the order's state with `souk order show ID`"
        }
        "unknown_order" => "list your orders with `souk order list`",
        "chain_unreachable" | "chain_refused" => "check --esplora (SOUK_ESPLORA) and the network",
        _ => "",
    };
    fail(leak(code), detail, hint)
}

/// Codes come from the core as strings; `fail` wants a `'static` code. The set is small and
/// fixed, so each distinct code is leaked at most once per process.
fn leak(code: String) -> &'static str {
    Box::leak(code.into_boxed_str())
}

fn book(ctx: &Ctx, wallet: &Arc<Wallet>) -> Result<Arc<OrderBook>> {
    std::fs::create_dir_all(&ctx.home)?;
    let path = ctx.home.join("orders.db");
    OrderBook::open(
        path.to_string_lossy().into_owned(),
        Arc::clone(wallet),
        ctx.network.clone(),
    )
    .map_err(flow_error)
}

/// Sends messages; what no server took stays in the outbox (with a warning).
fn send(
    ctx: &Ctx,
    client: &Client,
    book: &OrderBook,
    messages: Vec<OutgoingMessage>,
) -> Result<Vec<Value>> {
    let mut sent = Vec::new();
    for message in messages {
        let report =
            ctx.block_on(client.send_message(message.servers.clone(), message.sealed.clone()))?;
        let delivered = match report {
            Ok(report) if report.delivered => {
                book.delivered(message.sealed.clone()).map_err(flow_error)?;
                true
            }
            Ok(report) => {
                let reasons: Vec<String> = report
                    .deliveries
                    .iter()
                    .map(|d| format!("{}: {}", d.server, d.error.clone().unwrap_or_default()))
                    .collect();
                warn(&format!(
                    "the message to {} was not delivered ({}); it stays in the outbox and `souk inbox sync` sends it again",
                    message.recipient,
                    reasons.join("; ")
                ));
                false
            }
            Err(e) => {
                warn(&format!(
                    "the message to {} was not sent ({e}); it stays in the outbox",
                    message.recipient
                ));
                false
            }
        };
        sent.push(json!({
            "order_id": message.order_id,
            "to": message.recipient,
            "servers": message.servers,
            "delivered": delivered,
        }));
    }
    Ok(sent)
}

fn own_inbox(ctx: &Ctx, client: &Client, wallet: &Wallet, given: &[String]) -> Result<Vec<String>> {
    if !given.is_empty() {
        return Ok(given.to_vec());
    }
    let store = ctx
        .block_on(client.get_store(wallet.identity_address()))?
        .map_err(|e| {
            fail(
                "no_inbox",
                format!("cannot read your profile to find your inbox servers: {e}"),
                "publish them with `souk store set --inbox URL`, or pass --inbox URL",
            )
        })?;
    if store.profile.inbox_servers.is_empty() {
        return Err(fail(
            "no_inbox",
            "your profile names no inbox servers",
            "publish them with `souk store set --inbox URL`, or pass --inbox URL",
        ));
    }
    Ok(store.profile.inbox_servers)
}

fn inbox_of(ctx: &Ctx, client: &Client, person: &str, who: &str) -> Result<Vec<String>> {
    ctx.block_on(client.inbox_servers(person.to_owned()))?
        .map_err(|e| {
            fail(
                "no_inbox",
                format!("cannot find the {who}'s inbox servers: {e}"),
                "its profile must name at least one inbox server",
            )
        })
}

fn print(ctx: &Ctx, value: &Value, text: &str) -> Result<()> {
    if ctx.json {
        return ctx.print_json(value);
    }
    emit(text);
    Ok(())
}

/// [`print()`] for a list of lines, saying `none` when there are none.
fn print_lines(ctx: &Ctx, value: &Value, text: &str, none: &str) -> Result<()> {
    print(ctx, value, if text.is_empty() { none } else { text })
}

fn summary_of(book: &OrderBook, id: &str) -> Result<souk_mobile_core::OrderSummary> {
    book.list()
        .map_err(flow_error)?
        .into_iter()
        .find(|o| o.id == id)
        .ok_or_else(|| {
            fail(
                "unknown_order",
                format!("no order {id} here"),
                "list them with `souk order list`",
            )
        })
}

fn summary_json(o: &souk_mobile_core::OrderSummary) -> Value {
    json!({
        "id": o.id, "role": o.role, "state": o.state, "final": o.is_final, "payment": o.payment,
        "amount_sats": o.amount_sats, "buyer": o.buyer, "seller": o.seller,
        "payment_address": o.payment_address,
    })
}

pub(crate) fn order(ctx: &Ctx, command: OrderCommand) -> Result<()> {
    let wallet = unlock(ctx)?;
    let client = ctx.client()?;
    let book = book(ctx, &wallet)?;
    let esplora = ctx.esplora.clone();
    let step = |messages: Result<Vec<OutgoingMessage>, OrderFlowError>, what: &str| -> Result<()> {
        let sent = send(ctx, &client, &book, messages.map_err(flow_error)?)?;
        let id = sent
            .first()
            .and_then(|s| s["order_id"].as_str())
            .unwrap_or("")
            .to_owned();
        let state = summary_of(&book, &id).map(|o| o.state).unwrap_or_default();
        print(
            ctx,
            &json!({ "order_id": id, "state": state, "messages": sent }),
            &format!("{what}  {id}  (now {state})\n"),
        )
    };
    match command {
        OrderCommand::Place(args) => {
            if args.skus.len() != args.quantities.len() {
                return Err(fail("usage", "give one --qty per --sku", ""));
            }
            let listing = ctx.block_on(client.get_listing(args.listing.clone()))??;
            let seller_inbox = inbox_of(ctx, &client, &listing.seller, "seller")?;
            let moderator_profile = match &args.moderator {
                Some(m) => Some(ctx.block_on(client.get_store(m.clone()))??.envelope),
                None => None,
            };
            let reply_inbox = own_inbox(ctx, &client, &wallet, &args.inbox)?;
            let fee_rate_sat_vb = match &moderator_profile {
                Some(profile) => {
                    let rate = fee_rate(ctx, &book, args.fee_rate)?;
                    let estimate = book
                        .escrow_fee_estimate(args.amount, profile.clone(), rate)
                        .map_err(flow_error)?;
                    let line = format!(
                        "spending the escrow costs about {} sats in miner fees at {rate} sat/vB ({}.{:02} % of the order; the cap is {} sats)",
                        estimate.fee_sats,
                        estimate.share_bp / 100,
                        estimate.share_bp % 100,
                        estimate.cap_sats
                    );
                    // On stderr with or without --json (stdout carries the one document).
                    if estimate.warn || estimate.refused {
                        warn(&line);
                    } else {
                        eprintln!("{line}");
                    }
                    Some(rate)
                }
                None => None,
            };
            let placed = book.place_order(OrderDraft {
                listing: listing.envelope,
                skus: args.skus,
                quantities: args.quantities,
                shipping_option: args.option,
                shipping_service: args.service,
                shipping_address: args.ship_to,
                moderator_profile,
                amount_sats: args.amount,
                seller_inbox,
                reply_inbox,
                memo: args.memo,
                fee_rate_sat_vb,
            });
            step(placed.map(|m| vec![m]), "ordered")
        }
        OrderCommand::List => {
            let orders = book.list().map_err(flow_error)?;
            let text: String = orders
                .iter()
                .map(|o| {
                    format!(
                        "{}  {:<9} {:<17} {:<9} {:>12} sats\n",
                        o.id, o.role, o.state, o.payment, o.amount_sats
                    )
                })
                .collect();
            let list: Vec<Value> = orders.iter().map(summary_json).collect();
            print_lines(ctx, &json!({ "orders": list }), &text, "no orders\n")
        }
        OrderCommand::Show { id } => {
            let o = summary_of(&book, &id)?;
            let pay = o
                .payment_address
                .as_ref()
                .map(|a| format!("pay to     {a}  ({} sats)\n", o.amount_sats))
                .unwrap_or_default();
            let mut text = format!(
                "order      {}\nrole       {}\nstate      {}\npayment    {}\nbuyer      {}\nseller     {}\n{pay}",
                o.id, o.role, o.state, o.payment, o.buyer, o.seller
            );
            let messages = book.conversation(id.clone()).map_err(flow_error)?;
            let pending = book
                .outbox()
                .map_err(flow_error)?
                .into_iter()
                .filter(|m| m.order_id == id)
                .count();
            if !messages.is_empty() {
                text.push_str("messages\n");
            }
            for m in &messages {
                text.push_str(&format!(
                    "  {} {:<3} {:<9} {:<12} {}\n",
                    output::format_time(m.at),
                    m.direction,
                    m.sender,
                    m.kind,
                    m.text
                ));
                for q in &m.quoted {
                    text.push_str(&format!(
                        "      quotes {} {:<9} {:<12} {}\n",
                        output::format_time(q.at),
                        q.sender,
                        q.kind,
                        q.text
                    ));
                }
            }
            if pending > 0 {
                text.push_str(&format!(
                    "{pending} message(s) not yet taken by an inbox server: `souk inbox sync` sends them again\n"
                ));
            }
            let mut doc = summary_json(&o);
            doc["messages"] = messages.iter().map(message_json).collect();
            doc["pending_messages"] = json!(pending);
            print(ctx, &doc, &text)
        }
        OrderCommand::Paid { id } => {
            step(book.notify_payment(id).map(|m| vec![m]), "told the seller")
        }
        OrderCommand::Evidence {
            id,
            text,
            no_messages,
        } => step(
            book.send_evidence(id, text, !no_messages).map(|m| vec![m]),
            "evidence sent",
        ),
        OrderCommand::Chat { id, text } => {
            let o = summary_of(&book, &id)?;
            let seller_inbox = if o.role == "moderator" {
                inbox_of(ctx, &client, &o.seller, "seller")?
            } else {
                Vec::new()
            };
            step(book.chat(id, text, seller_inbox), "sent")
        }
        OrderCommand::Confirm { id } => step(book.confirm(id).map(|m| vec![m]), "confirmed"),
        OrderCommand::Decline { id, reason } => {
            step(book.decline(id, reason).map(|m| vec![m]), "declined")
        }
        OrderCommand::Cancel { id, reason } => {
            step(book.cancel(id, reason).map(|m| vec![m]), "canceled")
        }
        OrderCommand::Ship {
            id,
            note,
            fee_rate: rate,
        } => {
            let rate = fee_rate(ctx, &book, rate)?;
            step(book.ship(id, note, rate).map(|m| vec![m]), "shipped")
        }
        OrderCommand::Complete { id } => {
            let done = ctx.block_on(book.complete(id, esplora))?;
            step(done.map(|m| vec![m]), "completed")
        }
        OrderCommand::Refund {
            id,
            reason,
            txid,
            fee_rate: rate,
        } => {
            let rate = fee_rate(ctx, &book, rate)?;
            step(
                book.refund(id, reason, txid, rate).map(|m| vec![m]),
                "refunded",
            )
        }
        OrderCommand::AcceptRefund { id } => {
            let txid = ctx
                .block_on(book.execute_refund(id.clone(), esplora))?
                .map_err(flow_error)?;
            txid_done(ctx, &book, &id, &txid, "refund broadcast")
        }
        OrderCommand::Dispute { id, reason } => step(book.open_dispute(id, reason), "disputed"),
        OrderCommand::Decide {
            id,
            buyer_share_bps,
            reason,
            fee_rate: rate,
        } => {
            let seller = summary_of(&book, &id)?.seller;
            let seller_inbox = inbox_of(ctx, &client, &seller, "seller")?;
            let rate = fee_rate(ctx, &book, rate)?;
            step(
                book.decide(id, buyer_share_bps, reason, seller_inbox, rate),
                "decided",
            )
        }
        OrderCommand::AcceptDecision { id } => {
            let txid = ctx
                .block_on(book.execute_decision(id.clone(), esplora))?
                .map_err(flow_error)?;
            txid_done(ctx, &book, &id, &txid, "payout broadcast")
        }
        OrderCommand::Claim { id, fee_rate: rate } => {
            let rate = fee_rate(ctx, &book, rate)?;
            let txid = ctx
                .block_on(book.claim(id.clone(), esplora, rate))?
                .map_err(flow_error)?;
            txid_done(ctx, &book, &id, &txid, "claim broadcast")
        }
        OrderCommand::Rate {
            id,
            moderator,
            overall,
            quality,
            description,
            delivery,
            service,
            review,
        } => {
            let scores = if moderator {
                vec![overall, 0, 0, 0, service]
            } else {
                vec![
                    overall,
                    quality.unwrap_or(overall),
                    description.unwrap_or(overall),
                    delivery.unwrap_or(overall),
                    service,
                ]
            };
            let signed = book
                .rate(id.clone(), moderator, scores, review)
                .map_err(flow_error)?;
            let outcome = ctx.block_on(client.publish(signed.bytes))??;
            print(
                ctx,
                &json!({ "order_id": id, "rating": outcome.id }),
                &format!("rated  {}  (rating {})\n", id, outcome.id),
            )
        }
    }
}

/// What a step that broadcast a transaction prints: the order, its state now, the txid.
fn txid_done(ctx: &Ctx, book: &OrderBook, id: &str, txid: &str, what: &str) -> Result<()> {
    let state = summary_of(book, id).map(|o| o.state).unwrap_or_default();
    print(
        ctx,
        &json!({ "order_id": id, "state": state, "txid": txid }),
        &format!("{what}  {txid}  (order {id} now {state})\n"),
    )
}

fn message_json(m: &OrderMessage) -> Value {
    json!({
        "direction": m.direction,
        "sender": m.sender,
        "kind": m.kind,
        "text": m.text,
        "at": m.at,
        "quoted": m.quoted.iter().map(|q| json!({
            "sender": q.sender, "kind": q.kind, "text": q.text, "at": q.at,
        })).collect::<Vec<_>>(),
    })
}

pub(crate) fn inbox(ctx: &Ctx, command: InboxCommand) -> Result<()> {
    let inbox = match command {
        InboxCommand::Sync { inbox } => inbox,
        InboxCommand::Pending => return pending(ctx),
    };
    let wallet = unlock(ctx)?;
    let client = ctx.client()?;
    let book = book(ctx, &wallet)?;
    let resent = send(ctx, &client, &book, book.outbox().map_err(flow_error)?)?;
    let servers = own_inbox(ctx, &client, &wallet, &inbox)?;
    let mut results = Vec::new();
    let mut text = String::new();
    for server in servers {
        let batch = match ctx.block_on(client.fetch_inbox(Arc::clone(&wallet), server.clone()))? {
            Ok(batch) => batch,
            Err(e) => {
                warn(&format!("cannot read the inbox at {server}: {e}"));
                continue;
            }
        };
        let mut taken = Vec::new();
        for message in &batch.messages {
            match book.receive(message.sealed.clone()) {
                Ok(got) => {
                    taken.push(message.id.clone());
                    text.push_str(&format!(
                        "{:<12} {}{}\n",
                        got.outcome,
                        got.order_id.clone().unwrap_or_default(),
                        got.state
                            .as_ref()
                            .map(|s| format!("  (now {s})"))
                            .unwrap_or_default()
                    ));
                    results.push(json!({ "id": message.id, "outcome": got.outcome, "order_id": got.order_id, "state": got.state }));
                }
                Err(OrderFlowError::Refused { code, detail }) => {
                    warn(&format!(
                        "message {} from {server} not taken ({code}): {detail}",
                        message.id
                    ));
                    results.push(
                        json!({ "id": message.id, "error": { "code": code, "message": detail } }),
                    );
                }
            }
        }
        if !taken.is_empty() {
            ctx.block_on(client.acknowledge(
                Arc::clone(&wallet),
                batch.server.clone(),
                batch.token.clone(),
                taken,
            ))??;
        }
    }
    print_lines(
        ctx,
        &json!({ "resent": resent, "messages": results }),
        &text,
        "nothing new\n",
    )
}

/// `souk moderators LISTING`: the listing's moderators to choose from.
pub(crate) fn moderators(ctx: &Ctx, listing: String) -> Result<()> {
    let client = ctx.client()?;
    let listing = ctx.block_on(client.get_listing(listing))??;
    let choices = ctx.block_on(client.moderators_for_listing(listing))??;
    let mut text = String::new();
    for c in &choices {
        let fee = match (&c.offer.fee_fixed, c.offer.fee_percentage_bp) {
            (Some(fixed), 0) => output::format_price(fixed),
            (Some(fixed), bp) => format!(
                "{} + {}.{:02} %",
                output::format_price(fixed),
                bp / 100,
                bp % 100
            ),
            (None, bp) => format!("{}.{:02} %", bp / 100, bp % 100),
        };
        let ratings = if c.ratings.count == 0 {
            "no ratings yet".to_owned()
        } else {
            format!(
                "{:.1}/5 overall, {:.1}/5 service from {} verified rating(s)",
                c.ratings.overall, c.ratings.service, c.ratings.count
            )
        };
        text.push_str(&format!(
            "{}  {}\n  fee        {fee}\n  languages  {}\n  ratings    {ratings}\n",
            c.address,
            c.name,
            c.offer.languages.join(", ")
        ));
        if c.ratings.server_count > c.ratings.count + c.ratings.refused {
            text.push_str(&format!(
                "  (the server says {} ratings; it sent {})\n",
                c.ratings.server_count,
                c.ratings.count + c.ratings.refused
            ));
        }
        if c.ratings.refused > 0 {
            text.push_str(&format!(
                "  ({} rating(s) from the server did not verify and are not counted)\n",
                c.ratings.refused
            ));
        }
        if !c.offer.terms.is_empty() {
            text.push_str(&format!("  terms      {}\n", c.offer.terms));
        }
    }
    print_lines(
        ctx,
        &json!({ "moderators": choices }),
        &text,
        "this listing accepts no moderator that can take escrow: pay directly\n",
    )
}

/// `souk inbox pending`: the outbox, a line per message.
fn pending(ctx: &Ctx) -> Result<()> {
    let wallet = unlock(ctx)?;
    let book = book(ctx, &wallet)?;
    let outbox = book.outbox().map_err(flow_error)?;
    let text: String = outbox
        .iter()
        .map(|m| {
            format!(
                "{}  to {}  via {}\n",
                m.order_id,
                m.recipient,
                m.servers.join(", ")
            )
        })
        .collect();
    let list: Vec<Value> = outbox
        .iter()
        .map(|m| json!({ "order_id": m.order_id, "recipient": m.recipient, "servers": m.servers }))
        .collect();
    print_lines(
        ctx,
        &json!({ "pending": list }),
        &text,
        "nothing pending: every message was taken by an inbox server\n",
    )
}

pub(crate) fn chain(ctx: &Ctx, command: ChainCommand) -> Result<()> {
    let ChainCommand::Watch = command;
    let wallet = unlock(ctx)?;
    let book = book(ctx, &wallet)?;
    let moved = ctx
        .block_on(book.watch_chain(ctx.esplora.clone()))?
        .map_err(flow_error)?;
    let states: Vec<Value> = moved
        .iter()
        .filter_map(|id| summary_of(&book, id).ok())
        .map(|o| json!({ "id": o.id, "state": o.state }))
        .collect();
    let text: String = states
        .iter()
        .map(|s| {
            format!(
                "{}  now {}\n",
                s["id"].as_str().unwrap_or(""),
                s["state"].as_str().unwrap_or("")
            )
        })
        .collect();
    print_lines(ctx, &json!({ "moved": states }), &text, "no order moved\n")
}
