//! Orders end to end (issue 7, flows a–g): real `souk-server` processes on loopback as inbox and
//! index servers, the Esplora stand-in (`souk-testkit`) as the chain — every broadcast judged by
//! Bitcoin Core's script interpreter — and two or three people, each with their own wallet,
//! order database and client. Every wait is bounded.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use souk_mobile_core::chain::Chain;
use souk_mobile_core::orders::{FlowError, Orders, Outgoing, PlaceOrder, Received};
use souk_mobile_core::{Client, ClientConfig, Wallet};
use souk_protocol::bitcoin::{Address, FeeRate, Network};
use souk_protocol::order::OrderState;
use souk_protocol::{Keychain, Mnemonic, Object, ValidationContext, pb, samples};
use souk_testkit::Esplora;

const PRICE: u64 = 150_000;

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A `souk-server` process with its own data directory, stopped when dropped.
struct Server {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn server_binary() -> std::path::PathBuf {
    // target/<profile>/deps/orders-… → target/<profile>/souk-server
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(std::path::Path::parent)
        .expect("target dir");
    let binary = dir.join(format!("souk-server{}", std::env::consts::EXE_SUFFIX));
    assert!(
        binary.exists(),
        "{} is missing: these tests run the real server; `cargo test --workspace` builds it (or run `cargo build -p souk-server` first)",
        binary.display()
    );
    binary
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

async fn start_server() -> Server {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let child = Command::new(server_binary())
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--p2p", "false", "--inbox-replicate-private", "true"])
        .args(["--grpc-addr", "127.0.0.1:0"])
        .args([
            "--rate-limit-per-second",
            "10000",
            "--rate-limit-burst",
            "10000",
        ])
        .env("SOUK_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn souk-server");
    let url = format!("http://127.0.0.1:{port}");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(response) = http.get(format!("{url}/readyz")).send().await
            && response.status().is_success()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "souk-server was not ready within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Server {
        child,
        url,
        _dir: dir,
    }
}

/// One person: wallet, order database, client, and their inbox servers.
struct Person {
    wallet: std::sync::Arc<Wallet>,
    keys: Keychain,
    orders: Orders,
    client: std::sync::Arc<Client>,
    inbox: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Person {
    fn new(n: u8, inbox: &[&Server], index: &Server) -> Self {
        let phrase = Mnemonic::from_entropy(&[n; 16])
            .expect("entropy")
            .phrase()
            .to_string();
        let wallet = Wallet::restore(phrase.clone(), String::new()).expect("wallet");
        let keys = || Keychain::from_mnemonic(&Mnemonic::parse(&phrase).expect("valid"), "");
        let dir = tempfile::tempdir().expect("temp dir");
        let orders =
            Orders::open(&dir.path().join("orders.db"), keys(), "regtest").expect("order db");
        let client = Client::new(ClientConfig::new(vec![index.url.clone()])).expect("client");
        Self {
            wallet,
            keys: keys(),
            orders,
            client,
            inbox: inbox.iter().map(|s| s.url.clone()).collect(),
            _dir: dir,
        }
    }

    /// The app is killed and started again: the order book is reopened from its file.
    fn restart(&mut self) {
        let path = self._dir.path().join("orders.db");
        self.orders = Orders::open(&path, self.keys.clone(), "regtest").expect("reopens");
    }

    fn identity(&self) -> souk_protocol::IdentityKey {
        self.keys.identity()
    }

    async fn publish(&self, object: Object) -> Vec<u8> {
        let signed = self
            .identity()
            .seal(&object, &ValidationContext::at(now()))
            .expect("valid object");
        let bytes = signed.envelope().bytes().to_vec();
        self.client.publish(bytes.clone()).await.expect("published");
        bytes
    }

    async fn publish_profile(&self, moderator: bool) -> Vec<u8> {
        let mut profile = samples::profile(now() - 5);
        profile.inbox_servers = self.inbox.clone();
        match &mut profile.moderator {
            Some(offer) if moderator => {
                offer.escrow_xpub = self
                    .keys
                    .moderation_xpub(Network::Regtest)
                    .expect("xpub")
                    .to_string();
            }
            _ => profile.moderator = None,
        }
        self.publish(Object::Profile(profile)).await
    }

    /// Reads every inbox server of this person, feeds each message to the order book, and
    /// acknowledges what was taken. Returns what each message did (errors included).
    async fn sync(&self) -> Vec<Result<Received, FlowError>> {
        let mut results = Vec::new();
        for server in &self.inbox {
            let batch = self
                .client
                .fetch_inbox(std::sync::Arc::clone(&self.wallet), server.clone())
                .await
                .expect("inbox reachable");
            let mut taken = Vec::new();
            for message in &batch.messages {
                let result = self.orders.receive(&message.sealed, now());
                if result.is_ok() {
                    taken.push(message.id.clone());
                }
                results.push(result);
            }
            if !taken.is_empty() {
                self.client
                    .acknowledge(
                        std::sync::Arc::clone(&self.wallet),
                        batch.server.clone(),
                        batch.token.clone(),
                        taken,
                    )
                    .await
                    .expect("acknowledged");
            }
        }
        results
    }

    /// Reads the inbox and expects exactly one message, which moved its order to `state`.
    async fn expect_moved(&self, state: OrderState) {
        let results = self.sync().await;
        assert!(
            matches!(results.as_slice(), [Ok(Received::Moved { state: moved, .. })] if *moved == state),
            "{results:?}"
        );
    }

    fn state(&self, id: &[u8; 32]) -> OrderState {
        self.orders.get(id).expect("order").order.state()
    }
}

async fn send(from: &Person, outgoing: Outgoing) {
    let report = from
        .client
        .send_message(outgoing.servers.clone(), outgoing.sealed.clone())
        .await
        .expect("sendable");
    assert!(report.delivered, "not delivered: {:?}", report.deliveries);
    from.orders.delivered(&outgoing.sealed).expect("outbox");
}

fn chain_client(chain: &Esplora) -> Chain {
    Chain::new(&chain.url, Duration::from_secs(10)).expect("chain url")
}

/// A world: one index/inbox server per person, the chain, a seller with a listing and a buyer
/// (and a moderator, for moderated listings).
struct World {
    seller: Person,
    buyer: Person,
    moderator: Person,
    listing: Vec<u8>,
    moderator_profile: Vec<u8>,
    chain: Esplora,
    _servers: Vec<Server>,
}

async fn world() -> World {
    let servers = vec![
        start_server().await,
        start_server().await,
        start_server().await,
    ];
    let seller = Person::new(11, &[&servers[0]], &servers[0]);
    let buyer = Person::new(12, &[&servers[1]], &servers[0]);
    let moderator = Person::new(13, &[&servers[2]], &servers[0]);
    let moderator_profile = moderator.publish_profile(true).await;
    seller.publish_profile(false).await;
    let listing = seller
        .publish(Object::Listing(samples::listing(
            now() - 5,
            "blue-mug",
            Some(&moderator.identity().public_key()),
        )))
        .await;
    World {
        seller,
        buyer,
        moderator,
        listing,
        moderator_profile,
        chain: Esplora::start(Network::Regtest).await.expect("chain"),
        _servers: servers,
    }
}

impl World {
    fn order(&self, moderated: bool) -> PlaceOrder {
        PlaceOrder {
            listing: self.listing.clone(),
            items: vec![(0, 1)],
            shipping_option: "Germany".into(),
            shipping_service: "DHL Paket".into(),
            shipping_address: "Hauptstrasse 1\n10115 Berlin".into(),
            moderator_profile: moderated.then(|| self.moderator_profile.clone()),
            amount_sats: PRICE,
            seller_inbox: self.seller.inbox.clone(),
            reply_inbox: self.buyer.inbox.clone(),
            memo: String::new(),
            fee_rate: None,
        }
    }

    /// Ordered, confirmed, paid and confirmed on the chain; returns the order id.
    async fn funded_order(&self, moderated: bool) -> [u8; 32] {
        let outgoing = self
            .buyer
            .orders
            .place_order(self.order(moderated), now())
            .expect("order");
        let id = outgoing.order_id;
        send(&self.buyer, outgoing).await;
        assert!(matches!(
            self.seller.sync().await.as_slice(),
            [Ok(Received::NewOrder { .. })]
        ));
        send(
            &self.seller,
            self.seller.orders.confirm(&id, now()).expect("confirm"),
        )
        .await;
        self.buyer.expect_moved(OrderState::AwaitingPayment).await;
        // The buyer pays from its own wallet (the stand-in pays from outside).
        let (address, amount) = self.buyer.orders.payment_due(&id).expect("due");
        assert_eq!(amount, PRICE);
        self.chain.pay(&address, amount).expect("paid");
        let chain = chain_client(&self.chain);
        for person in [&self.buyer, &self.seller] {
            person
                .orders
                .watch_chain(&chain, now())
                .await
                .expect("watch");
            assert_eq!(person.state(&id), OrderState::Funded);
        }
        self.chain.mine(1);
        for person in [&self.buyer, &self.seller] {
            person
                .orders
                .watch_chain(&chain, now())
                .await
                .expect("watch");
            assert_eq!(person.state(&id), OrderState::Confirmed);
        }
        id
    }

    async fn shipped_order(&self, moderated: bool) -> [u8; 32] {
        let id = self.funded_order(moderated).await;
        let fulfilment = self
            .seller
            .orders
            .ship(&id, "Posted today", FeeRate::from_sat_per_vb_u32(2), now())
            .expect("ship");
        send(&self.seller, fulfilment).await;
        self.buyer.expect_moved(OrderState::Shipped).await;
        id
    }

    /// The dispute the moderator holds for `id` (what either party's copy quotes).
    fn moderator_copy_of_dispute(&self, id: &[u8; 32]) -> pb::DisputeOpen {
        let record = self
            .moderator
            .orders
            .get(id)
            .expect("the moderator's order");
        let (outpoint, sats, _) = record.funding.expect("funding");
        pb::DisputeOpen {
            reason: String::new(),
            order: record.request_signed.clone(),
            confirmation: record.confirmation.expect("confirmation").0,
            funding_txid: souk_protocol::bitcoin::hashes::Hash::to_byte_array(outpoint.txid)
                .to_vec(),
            funding_vout: outpoint.vout,
            funding_sats: sats,
        }
    }

    fn balance(&self, address: &Address) -> u64 {
        self.chain.balance(&address.script_pubkey())
    }

    /// The buyer rates the seller and publishes it; the index counts exactly that rating.
    async fn rate_seller(&self, id: &[u8; 32], scores: [u32; 5], review: &str) {
        let rating = self
            .buyer
            .orders
            .rate(id, pb::RatingRole::Seller, scores, review, now())
            .expect("the buyer may rate the seller now");
        self.publish_rating(rating).await;
        let ratings = ratings_of(&self.seller.inbox[0], &self.seller.identity().public_key()).await;
        assert_eq!(ratings["seller"]["count"], 1, "{ratings}");
    }

    async fn publish_rating(&self, envelope: Vec<u8>) {
        let outcome = self
            .buyer
            .client
            .publish(envelope)
            .await
            .expect("rating accepted");
        assert_eq!(outcome.status, souk_mobile_core::PublishStatus::Accepted);
    }
}

fn payout_address(keys: &Keychain, index: u32) -> Address {
    keys.payout_address(Network::Regtest, index)
        .expect("address")
}

async fn ratings_of(url: &str, subject: &souk_protocol::PublicKey) -> serde_json::Value {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
        .get(format!("{url}/api/v1/ratings/{}", subject.to_address()))
        .send()
        .await
        .expect("ratings")
        .json()
        .await
        .expect("json")
}

/// (a) Moderated purchase: funded → confirmed → shipped → completed (the release is checked,
/// signed by both, and accepted by the interpreter) → the buyer rates the seller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moderated_purchase_completes_and_the_seller_is_rated() {
    let w = world().await;
    let id = w.shipped_order(true).await;
    let (done, txid) = w
        .buyer
        .orders
        .complete(&id, &chain_client(&w.chain), now())
        .await
        .expect("complete");
    assert!(txid.is_some(), "the release was broadcast");
    send(&w.buyer, done).await;
    w.seller.expect_moved(OrderState::Completed).await;
    assert_eq!(w.buyer.state(&id), OrderState::Completed);
    // The seller's payout address (payout index 0) holds the price less the miner fee.
    let paid = w.balance(&payout_address(&w.seller.keys, 0));
    assert!(paid > PRICE - 5_000 && paid < PRICE, "seller got {paid}");

    w.rate_seller(&id, [5, 5, 4, 5, 5], "Lovely mug").await;
}

/// (b) Direct purchase: the buyer pays the seller's own address; no escrow, no moderator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_purchase_pays_the_seller_and_completes() {
    let w = world().await;
    let id = w.shipped_order(false).await;
    let (address, _) = w.buyer.orders.payment_due(&id).expect("due");
    assert_eq!(address, payout_address(&w.seller.keys, 0).to_string());
    assert_eq!(w.balance(&payout_address(&w.seller.keys, 0)), PRICE);
    let (done, txid) = w
        .buyer
        .orders
        .complete(&id, &chain_client(&w.chain), now())
        .await
        .expect("complete");
    assert!(
        txid.is_none(),
        "nothing to release: the seller was paid directly"
    );
    send(&w.buyer, done).await;
    w.seller.expect_moved(OrderState::Completed).await;
    // No dispute on a direct order.
    let refused = w
        .buyer
        .orders
        .open_dispute(&id, "too late", now())
        .expect_err("finished");
    assert_eq!(refused.code(), "order_finished");
}

/// (c) The seller declines; nothing was paid, the buyer's order ends `declined`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_order_ends_without_payment() {
    let w = world().await;
    // An order nobody could deliver is refused before anything is stored.
    let mut nowhere = w.order(true);
    nowhere.seller_inbox.clear();
    let refused = w
        .buyer
        .orders
        .place_order(nowhere, now())
        .expect_err("no inbox");
    assert_eq!(refused.code(), "order_mismatch");
    assert!(w.buyer.orders.list().expect("list").is_empty());
    assert!(w.buyer.orders.outbox().expect("outbox").is_empty());
    let outgoing = w
        .buyer
        .orders
        .place_order(w.order(true), now())
        .expect("order");
    let id = outgoing.order_id;
    send(&w.buyer, outgoing).await;
    w.seller.sync().await;
    send(
        &w.seller,
        w.seller
            .orders
            .decline(&id, "Sold out, sorry", now())
            .expect("decline"),
    )
    .await;
    w.buyer.expect_moved(OrderState::Declined).await;
    assert_eq!(w.seller.state(&id), OrderState::Declined);
    assert!(
        w.buyer.orders.payment_due(&id).is_err(),
        "there is nothing to pay"
    );
    let late = w
        .seller
        .orders
        .confirm(&id, now())
        .expect_err("declined is final");
    assert_eq!(late.code(), "order_finished");
}

/// (c) After payment, the seller cannot fulfil: it signs a full refund, the buyer completes it,
/// and the interpreter accepts it; the buyer gets the price back less the miner fee.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seller_who_cannot_fulfil_refunds_the_buyer() {
    let w = world().await;
    let id = w.funded_order(true).await;
    let refund = w
        .seller
        .orders
        .refund(
            &id,
            "Broke it while packing, sorry",
            None,
            FeeRate::from_sat_per_vb_u32(2),
            now(),
        )
        .expect("refund");
    send(&w.seller, refund).await;
    w.buyer.expect_moved(OrderState::Refunded).await;
    let txid = w
        .buyer
        .orders
        .execute_refund(&id, &chain_client(&w.chain))
        .await
        .expect("the refund is valid");
    assert!(w.chain.transaction(&txid).is_some());
    let back = w.balance(&payout_address(&w.buyer.keys, 0));
    assert!(back > PRICE - 5_000 && back < PRICE, "buyer got {back}");
    assert_eq!(w.seller.state(&id), OrderState::Refunded);
}

/// (d) Dispute: the moderator decides 70/30; the buyer carries out the decision; the payout is
/// valid and pays the moderator's fee; the buyer rates the moderator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispute_is_settled_by_the_moderator_and_the_fee_is_paid() {
    let w = world().await;
    let id = w.shipped_order(true).await;
    for outgoing in w
        .buyer
        .orders
        .open_dispute(&id, "The mug arrived broken", now())
        .expect("dispute")
    {
        send(&w.buyer, outgoing).await;
    }
    assert!(matches!(
        w.moderator.sync().await.as_slice(),
        [Ok(Received::NewOrder { .. })]
    ));
    w.seller.expect_moved(OrderState::Disputed).await;
    for outgoing in w
        .moderator
        .orders
        .decide(
            &id,
            7_000,
            "Broken in transit; the seller's packing was thin",
            w.seller.inbox.clone(),
            FeeRate::from_sat_per_vb_u32(2),
            now(),
        )
        .expect("decide")
    {
        send(&w.moderator, outgoing).await;
    }
    w.buyer.expect_moved(OrderState::Resolved).await;
    let txid = w
        .buyer
        .orders
        .execute_decision(&id, &chain_client(&w.chain))
        .await
        .expect("the payout is valid");
    let tx = w.chain.transaction(&txid).expect("broadcast");
    assert_eq!(tx.output.len(), 3);
    // The offer: 5,000 sats fixed + 1.5 % of 150,000 = 7,250 sats.
    assert_eq!(w.balance(&payout_address(&w.moderator.keys, 0)), 7_250);
    let buyer_share = w.balance(&payout_address(&w.buyer.keys, 0));
    let seller_share = w.balance(&payout_address(&w.seller.keys, 0));
    assert!(
        buyer_share > seller_share * 2,
        "70/30: {buyer_share} vs {seller_share}"
    );

    let rating = w
        .buyer
        .orders
        .rate(
            &id,
            pb::RatingRole::Moderator,
            [4, 0, 0, 0, 5],
            "Fair and quick",
            now(),
        )
        .expect("rating");
    w.publish_rating(rating).await;
    let ratings = ratings_of(&w.seller.inbox[0], &w.moderator.identity().public_key()).await;
    assert_eq!(ratings["moderator"]["count"], 1, "{ratings}");
}

/// (e) The buyer goes silent after the goods were shipped: once the escrow timeout has passed
/// on the chain, the seller claims alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_buyer_cannot_lock_the_seller_out() {
    let w = world().await;
    let id = w.shipped_order(true).await;
    let chain = chain_client(&w.chain);
    let early = w
        .seller
        .orders
        .claim(&id, &chain, FeeRate::from_sat_per_vb_u32(2), now())
        .await
        .expect_err("not timed out");
    assert_eq!(early.code(), "illegal_transition");
    w.chain.mine(4_320 - 2);
    w.seller
        .orders
        .watch_chain(&chain, now())
        .await
        .expect("watch");
    assert_eq!(w.seller.state(&id), OrderState::Shipped, "one block early");
    w.chain.mine(1);
    w.seller
        .orders
        .watch_chain(&chain, now())
        .await
        .expect("watch");
    assert_eq!(w.seller.state(&id), OrderState::TimedOut);
    let txid = w
        .seller
        .orders
        .claim(&id, &chain, FeeRate::from_sat_per_vb_u32(2), now())
        .await
        .expect("the claim is valid now");
    assert!(w.chain.transaction(&txid).is_some());
    assert_eq!(w.seller.state(&id), OrderState::Claimed);
}

/// (f) The seller is offline when the order is sent to one of its inbox servers; it comes back
/// and reads its other inbox server, which received a copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_seller_receives_the_order_from_its_other_inbox_server() {
    let first = start_server().await;
    let second = start_server().await;
    let buyer_inbox = start_server().await;
    let seller = Person::new(21, &[&second, &first], &first);
    let buyer = Person::new(22, &[&buyer_inbox], &first);
    seller.publish_profile(false).await; // lists both servers; published at the first
    let listing = seller
        .publish(Object::Listing(samples::listing(now() - 5, "lamp", None)))
        .await;
    let outgoing = buyer
        .orders
        .place_order(
            PlaceOrder {
                listing,
                items: vec![(0, 1)],
                shipping_option: String::new(),
                shipping_service: String::new(),
                shipping_address: "1 Market Street".into(),
                moderator_profile: None,
                amount_sats: PRICE,
                seller_inbox: vec![first.url.clone()],
                reply_inbox: buyer.inbox.clone(),
                memo: String::new(),
                fee_rate: None,
            },
            now(),
        )
        .expect("order");
    let id = outgoing.order_id;
    send(&buyer, outgoing).await;
    // The seller reads only the second server (its first in the list) until the copy is there.
    let only_second = Person {
        inbox: vec![second.url.clone()],
        ..Person::new(21, &[&second], &first)
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let results = only_second.sync().await;
        if !results.is_empty() {
            assert!(
                matches!(results.as_slice(), [Ok(Received::NewOrder { .. })]),
                "{results:?}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the copy never reached the second server"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(only_second.state(&id), OrderState::Requested);
    drop(seller);
}

/// (g) A seller's release PSBT that pays anything other than agreed is refused when it arrives;
/// the buyer signs nothing and the order does not move.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_refuses_to_sign_a_psbt_that_pays_other_than_agreed() {
    use souk_escrow::{Escrow, Funding, Spend, Terms};
    let w = world().await;
    let id = w.funded_order(true).await;
    let record = w.seller.orders.get(&id).expect("order");
    let (outpoint, sats, _) = record.funding.expect("funded");
    let (_, confirmation) = record.confirmation.clone().expect("confirmed");
    // The seller builds a release to an address of its own choosing (not the confirmed payout)
    // and signs it, as a dishonest app would.
    let escrow_key = w
        .seller
        .keys
        .escrow_key(Network::Regtest, record.escrow_index.expect("index"))
        .expect("key");
    let escrow = Escrow::moderated(
        souk_protocol::bitcoin::CompressedPublicKey::from_slice(&record.request.buyer_escrow_key)
            .expect("key"),
        escrow_key.public,
        souk_protocol::identity::moderation_key_from_xpub(
            &w.moderator
                .keys
                .moderation_xpub(Network::Regtest)
                .expect("xpub")
                .to_string(),
            &id,
        )
        .expect("key"),
        u16::try_from(confirmation.escrow_timeout_blocks).expect("fits"),
    )
    .expect("escrow");
    let elsewhere = payout_address(&w.seller.keys, 7);
    let terms = Terms::new(
        escrow,
        Network::Regtest,
        &[Funding {
            outpoint,
            amount: souk_protocol::bitcoin::Amount::from_sat(sats),
        }],
        &Spend::Release {
            seller: elsewhere.as_unchecked().clone(),
        },
        souk_protocol::bitcoin::Amount::from_sat(5_000),
    )
    .expect("terms");
    let mut psbt = terms.build(FeeRate::from_sat_per_vb_u32(2)).expect("psbt");
    souk_escrow::sign(&mut psbt, &terms, &escrow_key.secret).expect("signs its own terms");
    let message = pb::Message {
        created_at: now(),
        recipient: w.buyer.identity().public_key().as_bytes().to_vec(),
        order_id: id.to_vec(),
        body: Some(pb::message::Body::Fulfillment(pb::Fulfillment {
            note: "Posted".into(),
            carrier: String::new(),
            tracking: String::new(),
            release_psbt: psbt.serialize(),
        })),
    };
    let sealed = w
        .seller
        .identity()
        .seal_message(&message, &ValidationContext::at(now()))
        .expect("valid message");
    let refused = w
        .buyer
        .orders
        .receive(&sealed.bytes, now())
        .expect_err("refused");
    assert_eq!(refused.code(), "escrow_refused", "{refused}");
    assert_eq!(
        w.buyer.state(&id),
        OrderState::Confirmed,
        "the order did not move"
    );
    assert!(
        w.buyer
            .orders
            .get(&id)
            .expect("order")
            .pending_psbt
            .is_none()
    );
    let not_shipped = w
        .buyer
        .orders
        .complete(&id, &chain_client(&w.chain), now())
        .await
        .expect_err("nothing to complete");
    assert_eq!(not_shipped.code(), "illegal_transition");
}

/// An app restarted in the middle of an order resumes it from its order book: state, history,
/// the seller's escrow key index and the funding all come back, and the order completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_app_resumes_every_open_order() {
    let mut w = world().await;
    let id = w.funded_order(true).await;
    // A message whose sending failed stays in the outbox across the restart, and is sent then.
    let unsent = w
        .seller
        .orders
        .ship(&id, "Posted", FeeRate::from_sat_per_vb_u32(2), now())
        .expect("ship");
    let before = w.seller.orders.get(&id).expect("order");
    w.seller.restart();
    w.buyer.restart();
    let after = w.seller.orders.get(&id).expect("order survives");
    assert_eq!(after.order.state(), OrderState::Shipped);
    assert_eq!(after.order.history(), before.order.history());
    assert_eq!(after.escrow_index, before.escrow_index);
    assert_eq!(after.funding, before.funding);
    // The next order gets fresh keys: indices were persisted, not reset.
    let next = w
        .buyer
        .orders
        .place_order(w.order(true), now())
        .expect("order");
    let next = w.buyer.orders.get(&next.order_id).expect("second order");
    let first = w.buyer.orders.get(&id).expect("first order");
    assert_ne!(next.escrow_index, first.escrow_index);
    assert_ne!(next.rating_index, first.rating_index);
    // And the first order goes on to the end, starting with the message left in the outbox.
    let pending = w.seller.orders.outbox().expect("outbox");
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].sealed, unsent.sealed);
    for outgoing in pending {
        send(&w.seller, outgoing).await;
    }
    assert!(w.seller.orders.outbox().expect("outbox").is_empty());
    w.buyer.sync().await;
    let (done, _) = w
        .buyer
        .orders
        .complete(&id, &chain_client(&w.chain), now())
        .await
        .expect("complete");
    send(&w.buyer, done).await;
    w.seller.sync().await;
    assert_eq!(w.seller.state(&id), OrderState::Completed);
}

/// Fee rates come from the chain API's estimates: the largest target not above the one asked
/// for (the stand-in offers 1: 5, 2: 4, 3: 3, 6: 2 and 144: 1 sat/vB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fee_rates_follow_the_chain_apis_estimates() {
    let chain = Esplora::start(Network::Regtest).await.expect("chain");
    let client = chain_client(&chain);
    for (target, expected) in [(1, 5), (2, 4), (4, 3), (6, 2), (100, 2), (1_008, 1)] {
        assert_eq!(
            client.fee_rate(target).await.expect("estimate"),
            expected,
            "{target}"
        );
    }
}

/// Seals `body` about order `id` from `from` to `to`, as a device would (for forged and replayed
/// messages that no honest step makes).
fn sealed_by(
    from: &Keychain,
    to: &souk_protocol::PublicKey,
    id: &[u8; 32],
    body: pb::message::Body,
) -> Vec<u8> {
    let message = pb::Message {
        created_at: now(),
        recipient: to.as_bytes().to_vec(),
        order_id: id.to_vec(),
        body: Some(body),
    };
    from.identity()
        .seal_message(&message, &ValidationContext::at(now()))
        .expect("sealable")
        .bytes
}

/// A dispute the seller opens: the moderator builds the order from the seller's copy alone,
/// hears the buyer's side too (its copy of the dispute is kept, and its evidence quotes the
/// order's signed messages, each checked), and decides. Forged decisions — from a party, with a
/// fee above the offer, paying more than the escrow holds — are refused on arrival and leave the
/// order disputed; the moderator's real decision is carried out, and the buyer rates the seller
/// after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moderator_hears_both_sides_and_forged_decisions_are_refused() {
    let mut w = world().await;
    let id = w.shipped_order(true).await;
    // The seller opens the dispute; the moderator has nothing of this order but that message.
    for outgoing in w
        .seller
        .orders
        .open_dispute(
            &id,
            "The buyer says it never arrived; tracking says delivered",
            now(),
        )
        .expect("dispute")
    {
        send(&w.seller, outgoing).await;
    }
    assert!(matches!(
        w.moderator.sync().await.as_slice(),
        [Ok(Received::NewOrder { .. })]
    ));
    w.buyer.expect_moved(OrderState::Disputed).await;
    // The buyer answers with its own dispute message and evidence quoting the order's messages.
    let own = pb::message::Body::Dispute(pb::DisputeOpen {
        reason: "Nothing arrived; the tracking number is for another town".into(),
        ..w.moderator_copy_of_dispute(&id)
    });
    let moderator_key = w.moderator.identity().public_key();
    w.moderator
        .orders
        .receive(&sealed_by(&w.buyer.keys, &moderator_key, &id, own), now())
        .expect("the buyer's side is kept");
    let evidence = w
        .buyer
        .orders
        .send_evidence(
            &id,
            "The tracking number points to Hamburg; I live in Berlin",
            true,
            now(),
        )
        .expect("evidence");
    send(&w.buyer, evidence.clone()).await;
    assert!(matches!(
        w.moderator.sync().await.as_slice(),
        [Ok(Received::Noted { .. })]
    ));
    assert_eq!(w.moderator.state(&id), OrderState::Disputed);
    // The moderator's app restarts mid-dispute: the case is all still there, and a copy of the
    // evidence delivered again (from another inbox server) is taken as already seen.
    w.moderator.restart();
    assert_eq!(w.moderator.state(&id), OrderState::Disputed);
    assert_eq!(
        w.moderator
            .orders
            .receive(&evidence.sealed, now())
            .expect("a copy"),
        Received::AlreadySeen
    );
    let conversation = w.moderator.orders.conversation(&id).expect("conversation");
    let said: Vec<(&str, &str)> = conversation
        .iter()
        .map(|m| (m.sender.as_str(), m.kind))
        .collect();
    assert_eq!(
        said,
        [
            ("seller", "dispute"),
            ("buyer", "dispute"),
            ("buyer", "evidence")
        ]
    );
    assert!(conversation[2].text.contains("Hamburg"));
    // Each side's dispute quotes the order and the confirmation; the evidence quotes every
    // message the buyer's device holds (request, confirmation, fulfilment, dispute), each
    // checked to be signed by its party.
    let quoted_kinds = |i: usize| -> Vec<(&str, &str)> {
        conversation[i]
            .quoted
            .iter()
            .map(|q| (q.sender.as_str(), q.kind))
            .collect()
    };
    assert_eq!(
        quoted_kinds(0),
        [("buyer", "order"), ("seller", "confirmation")]
    );
    assert_eq!(
        quoted_kinds(2),
        [
            ("buyer", "order"),
            ("seller", "confirmation"),
            ("seller", "fulfillment"),
            ("seller", "dispute")
        ]
    );

    let decided = w
        .moderator
        .orders
        .decide(
            &id,
            10_000,
            "Delivered to the wrong town: full refund",
            w.seller.inbox.clone(),
            FeeRate::from_sat_per_vb_u32(2),
            now(),
        )
        .expect("decide");
    let real = w
        .moderator
        .orders
        .get(&id)
        .expect("order")
        .decision
        .expect("decision");
    let buyer_key = w.buyer.identity().public_key();
    let refused = |keys: &Keychain, decision: pb::Decision| {
        let sealed = sealed_by(keys, &buyer_key, &id, pb::message::Body::Decision(decision));
        let error = w
            .buyer
            .orders
            .receive(&sealed, now())
            .expect_err("a forged decision is refused");
        assert_eq!(w.buyer.state(&id), OrderState::Disputed, "{error}");
        error.code()
    };
    // A party cannot decide.
    assert_eq!(refused(&w.seller.keys, real.clone()), "wrong_actor");
    // The moderator cannot charge more than its offer gives.
    let greedy = pb::Decision {
        moderator_fee_sats: real.moderator_fee_sats + 10_000,
        ..real.clone()
    };
    assert_eq!(refused(&w.moderator.keys, greedy), "order_mismatch");
    // A payout of more than the escrow holds.
    let mut psbt = souk_escrow::parse_psbt(&real.payout_psbt).expect("psbt");
    psbt.unsigned_tx.output[0].value += souk_protocol::bitcoin::Amount::from_sat(50_000);
    let inflated = pb::Decision {
        payout_psbt: psbt.serialize(),
        ..real.clone()
    };
    assert_eq!(refused(&w.moderator.keys, inflated), "escrow_refused");
    // A decision saying 70 % while its PSBT pays the full refund.
    let misdescribed = pb::Decision {
        buyer_share_bps: 7_000,
        ..real.clone()
    };
    assert_eq!(refused(&w.moderator.keys, misdescribed), "escrow_refused");
    // A rating permit that is not the moderator's.
    let no_permit = pb::Decision {
        rating_permit: vec![7; 64],
        ..real.clone()
    };
    assert_eq!(refused(&w.moderator.keys, no_permit), "order_mismatch");

    for outgoing in decided {
        send(&w.moderator, outgoing).await;
    }
    w.buyer.expect_moved(OrderState::Resolved).await;
    let txid = w
        .buyer
        .orders
        .execute_decision(&id, &chain_client(&w.chain))
        .await
        .expect("the payout is valid");
    assert!(w.chain.transaction(&txid).is_some());
    // A full refund less the moderator's 7,250 sats and the miner fee.
    let back = w.balance(&payout_address(&w.buyer.keys, 0));
    assert!(
        back > PRICE - 7_250 - 2_000 && back < PRICE - 7_250,
        "buyer got {back}"
    );
    // After a dispute the buyer rates the seller with the permit of the seller's confirmation.
    w.rate_seller(&id, [1, 1, 1, 1, 2], "Sent it to the wrong town")
        .await;
}

/// Messages that are not for this order book, replayed, or from someone outside the order
/// change nothing; chat and a payment notice travel and are kept with the order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_misaddressed_and_outside_messages_change_nothing() {
    let w = world().await;
    let outgoing = w
        .buyer
        .orders
        .place_order(w.order(true), now())
        .expect("order");
    let id = outgoing.order_id;
    // Sealed to the seller: the moderator's device cannot open it.
    let error = w
        .moderator
        .orders
        .receive(&outgoing.sealed, now())
        .expect_err("not for the moderator");
    assert_eq!(error.code(), "wrong_recipient", "{error}");
    assert!(w.moderator.orders.list().expect("list").is_empty());
    // Delivered twice: the second copy is seen as such.
    assert!(matches!(
        w.seller.orders.receive(&outgoing.sealed, now()),
        Ok(Received::NewOrder { .. })
    ));
    assert_eq!(
        w.seller
            .orders
            .receive(&outgoing.sealed, now())
            .expect("copy"),
        Received::AlreadySeen
    );
    let confirmation = w.seller.orders.confirm(&id, now()).expect("confirm");
    assert!(matches!(
        w.buyer.orders.receive(&confirmation.sealed, now()),
        Ok(Received::Moved {
            state: OrderState::AwaitingPayment,
            ..
        })
    ));
    // The same signed confirmation under a fresh seal (a sender's retry) is taken once too.
    let resealed = w.seller.orders.messages(&id).expect("messages");
    assert_eq!(resealed.len(), 2, "the request in, the confirmation out");
    assert_eq!(
        w.buyer
            .orders
            .receive(&confirmation.sealed, now())
            .expect("copy"),
        Received::AlreadySeen
    );
    // Someone outside the order writes about it.
    let stranger =
        Keychain::from_mnemonic(&Mnemonic::from_entropy(&[99; 16]).expect("entropy"), "");
    let chat = pb::message::Body::Chat(pb::Chat {
        text: "Pay me instead".into(),
    });
    let error = w
        .buyer
        .orders
        .receive(
            &sealed_by(&stranger, &w.buyer.identity().public_key(), &id, chat),
            now(),
        )
        .expect_err("a stranger takes no part");
    assert_eq!(error.code(), "order_mismatch", "{error}");
    // The moderator cannot complete an order for the buyer.
    let error = w
        .buyer
        .orders
        .receive(
            &sealed_by(
                &w.moderator.keys,
                &w.buyer.identity().public_key(),
                &id,
                pb::message::Body::Completion(pb::Completion::default()),
            ),
            now(),
        )
        .expect_err("the moderator does not complete");
    assert_eq!(error.code(), "wrong_actor", "{error}");
    assert_eq!(w.buyer.state(&id), OrderState::AwaitingPayment);

    // Chat both ways, and the payment notice once the chain shows the payment.
    for outgoing in w
        .buyer
        .orders
        .chat(&id, "Paying tonight", Vec::new(), now())
        .expect("chat")
    {
        w.seller
            .orders
            .receive(&outgoing.sealed, now())
            .expect("chat in");
    }
    let early = w
        .buyer
        .orders
        .notify_payment(&id, now())
        .expect_err("not paid yet");
    assert_eq!(early.code(), "order_mismatch");
    let (address, amount) = w.buyer.orders.payment_due(&id).expect("due");
    w.chain.pay(&address, amount).expect("paid");
    w.buyer
        .orders
        .watch_chain(&chain_client(&w.chain), now())
        .await
        .expect("watch");
    let notice = w.buyer.orders.notify_payment(&id, now()).expect("notice");
    assert!(matches!(
        w.seller.orders.receive(&notice.sealed, now()),
        Ok(Received::Noted { .. })
    ));
    let kinds: Vec<(String, &str, String)> = w
        .seller
        .orders
        .conversation(&id)
        .expect("conversation")
        .into_iter()
        .map(|m| (m.direction, m.kind, m.text))
        .collect();
    assert_eq!(
        kinds,
        [
            ("in".to_string(), "order", String::new()),
            ("out".to_string(), "confirmation", String::new()),
            ("in".to_string(), "chat", "Paying tonight".to_string()),
            ("in".to_string(), "payment", format!("paid {PRICE} sats")),
        ]
    );
}

/// Before a moderated order the buyer learns what spending its escrow would cost in miner fees;
/// when that would exceed the cap (5 % of the order, at least 1,000 sats) escrow is refused and
/// nothing is stored.
#[test]
fn escrow_is_refused_when_miner_fees_would_eat_the_order() {
    let dir = tempfile::tempdir().expect("temp dir");
    let keys =
        |n: u8| Keychain::from_mnemonic(&Mnemonic::from_entropy(&[n; 16]).expect("entropy"), "");
    let (buyer, seller, moderator) = (keys(31), keys(32), keys(33));
    let at = now();
    let ctx = ValidationContext::at(at);
    let mut profile = samples::profile(at - 5);
    profile.inbox_servers = vec!["https://inbox.example".into()];
    if let Some(offer) = &mut profile.moderator {
        offer.escrow_xpub = moderator
            .moderation_xpub(Network::Regtest)
            .expect("xpub")
            .to_string();
    }
    let moderator_profile = moderator
        .identity()
        .seal(&Object::Profile(profile), &ctx)
        .expect("profile")
        .envelope()
        .bytes()
        .to_vec();
    let listing = seller
        .identity()
        .seal(
            &Object::Listing(samples::listing(
                at - 5,
                "blue-mug",
                Some(&moderator.identity().public_key()),
            )),
            &ctx,
        )
        .expect("listing")
        .envelope()
        .bytes()
        .to_vec();
    let orders = Orders::open(&dir.path().join("orders.db"), buyer, "regtest").expect("db");
    let calm = orders
        .escrow_fee_estimate(
            PRICE,
            &moderator_profile,
            FeeRate::from_sat_per_vb_u32(2),
            at,
        )
        .expect("estimate");
    assert!(calm.fee_sats > 300 && calm.fee_sats < 1_000, "{calm:?}");
    assert!(!calm.warn && !calm.refused, "{calm:?}");
    assert_eq!(calm.cap_sats, 7_500);
    let busy = orders
        .escrow_fee_estimate(
            PRICE,
            &moderator_profile,
            FeeRate::from_sat_per_vb_u32(20),
            at,
        )
        .expect("estimate");
    assert!(busy.warn && !busy.refused, "{busy:?}");
    // A small order: the cap is the 1,000-sat floor.
    let small = orders
        .escrow_fee_estimate(
            12_000,
            &moderator_profile,
            FeeRate::from_sat_per_vb_u32(10),
            at,
        )
        .expect("estimate");
    assert_eq!(small.cap_sats, 1_000);
    assert!(small.refused, "{small:?}");

    let order = |fee_rate| PlaceOrder {
        listing: listing.clone(),
        items: vec![(0, 1)],
        shipping_option: String::new(),
        shipping_service: String::new(),
        shipping_address: String::new(),
        moderator_profile: Some(moderator_profile.clone()),
        amount_sats: PRICE,
        seller_inbox: vec!["https://seller.example".into()],
        reply_inbox: vec!["https://buyer.example".into()],
        memo: String::new(),
        fee_rate,
    };
    let error = orders
        .place_order(order(Some(FeeRate::from_sat_per_vb_u32(100))), at)
        .expect_err("fees would eat the escrow");
    assert_eq!(error.code(), "fee_too_high");
    assert!(error.to_string().contains("7500 sats"), "{error}");
    assert!(orders.list().expect("list").is_empty(), "nothing stored");
    assert!(orders.outbox().expect("outbox").is_empty(), "nothing sent");
    orders
        .place_order(order(Some(FeeRate::from_sat_per_vb_u32(2))), at)
        .expect("at a calm fee rate escrow is fine");
}
