//! # souk-testkit
//!
//! Stand-ins for parts this machine cannot run, used by the end-to-end tests only.
//!
//! [`Esplora`] is an HTTP server with the shape of the Esplora REST API (the API of
//! mempool.space and Blockstream's explorer) over a small in-memory chain. It is **not** a
//! Bitcoin node: there is no proof of work, no peer network and no block validation beyond what
//! is listed here. What it does check, for every transaction broadcast to `POST /tx`, is what
//! decides whether an escrow spend is valid:
//!
//! - every input spends a known, unspent output (confirmed, or created in the mempool);
//! - no input is spent twice (in the transaction, or against the mempool);
//! - relative time locks (BIP 68, block-based) and absolute lock times are satisfied for
//!   inclusion in the next block;
//! - outputs do not exceed inputs;
//! - every input script and witness passes **Bitcoin Core's script interpreter**
//!   (`bitcoinconsensus`, `VERIFY_ALL`: P2SH, witness, CLTV, CSV, NULLDUMMY, …).
//!
//! Refusals answer 400 with a Core-like reason (`missing-inputs`, `txn-mempool-conflict`,
//! `non-BIP68-final`, `bad-txns-in-belowout`, `mandatory-script-verify-flag-failed (…)`).
//!
//! Test control lives under `/regtest/`: `POST /regtest/pay {"address", "sats"}` creates a
//! payment from nowhere (a wallet outside Souk paying an address), `POST /regtest/mine
//! {"blocks"}` mines the mempool into the next block and then empty blocks.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bitcoin::consensus::{deserialize, serialize};
use bitcoin::hashes::{Hash, sha256d};
use bitcoin::{
    Address, Amount, Network, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Txid,
    Witness, absolute, transaction,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Re-exported so that tests name the same `bitcoin` types.
pub use bitcoin;

/// One unspent (or mempool-spent) output and where it was created.
#[derive(Debug, Clone)]
struct Coin {
    output: TxOut,
    /// Height of the block that confirmed it; `None` while in the mempool.
    height: Option<u32>,
}

/// The chain: blocks (as heights and hashes), confirmed and mempool transactions, the UTXO set.
#[derive(Debug)]
struct Chain {
    network: Network,
    block_hashes: Vec<[u8; 32]>,
    txs: HashMap<Txid, (Transaction, Option<u32>)>,
    mempool: Vec<Txid>,
    utxos: HashMap<OutPoint, Coin>,
    /// Which transaction spent each spent output, and at which input.
    spends: HashMap<OutPoint, (Txid, u32)>,
    faucet_counter: u64,
}

impl Chain {
    fn new(network: Network) -> Self {
        let mut chain = Self {
            network,
            block_hashes: Vec::new(),
            txs: HashMap::new(),
            mempool: Vec::new(),
            utxos: HashMap::new(),
            spends: HashMap::new(),
            faucet_counter: 0,
        };
        chain.mine_block(); // genesis, height 0
        chain
    }

    fn tip(&self) -> u32 {
        u32::try_from(self.block_hashes.len().saturating_sub(1)).unwrap_or(u32::MAX)
    }

    fn mine_block(&mut self) {
        let height = u32::try_from(self.block_hashes.len()).unwrap_or(u32::MAX);
        let mut data = height.to_be_bytes().to_vec();
        for txid in &self.mempool {
            data.extend_from_slice(txid.as_byte_array());
        }
        self.block_hashes
            .push(sha256d::Hash::hash(&data).to_byte_array());
        for txid in std::mem::take(&mut self.mempool) {
            if let Some((tx, confirmed)) = self.txs.get_mut(&txid) {
                *confirmed = Some(height);
                for vout in 0..tx.output.len() {
                    let outpoint = OutPoint {
                        txid,
                        vout: u32::try_from(vout).unwrap_or(u32::MAX),
                    };
                    if let Some(coin) = self.utxos.get_mut(&outpoint) {
                        coin.height = Some(height);
                    }
                }
            }
        }
    }

    /// Adds a transaction to the mempool after every check; the reason if it is refused.
    fn accept(&mut self, tx: Transaction) -> Result<Txid, String> {
        let txid = tx.compute_txid();
        if self.txs.contains_key(&txid) {
            return Ok(txid);
        }
        if tx.input.is_empty() || tx.output.is_empty() {
            return Err("bad-txns-vin-empty or bad-txns-vout-empty".into());
        }
        let mut seen = HashSet::new();
        let mut spent = Vec::new();
        let next_height = self.tip() + 1;
        for input in &tx.input {
            if !seen.insert(input.previous_output) {
                return Err("bad-txns-inputs-duplicate".into());
            }
            if self.spends.contains_key(&input.previous_output) {
                return Err("txn-mempool-conflict".into());
            }
            let coin = self
                .utxos
                .get(&input.previous_output)
                .ok_or_else(|| "missing-inputs".to_string())?;
            if let Some(required) = relative_lock_blocks(&tx, input) {
                let age = coin.height.map_or(0, |h| next_height - h);
                if coin.height.is_none() || age < required {
                    return Err(format!(
                        "non-BIP68-final (input needs {required} confirmations, has {age} at the next block)"
                    ));
                }
            }
            spent.push(coin.output.clone());
        }
        if !absolute_lock_satisfied(&tx, next_height) {
            return Err("non-final (lock time not reached)".into());
        }
        let inputs: u64 = spent.iter().map(|o| o.value.to_sat()).sum();
        let outputs: u64 = tx.output.iter().map(|o| o.value.to_sat()).sum();
        if outputs > inputs {
            return Err(format!("bad-txns-in-belowout ({inputs} in, {outputs} out)"));
        }
        let lookup: HashMap<OutPoint, TxOut> = tx
            .input
            .iter()
            .map(|i| i.previous_output)
            .zip(spent.iter().cloned())
            .collect();
        tx.verify(|outpoint| lookup.get(outpoint).cloned())
            .map_err(|e| format!("mandatory-script-verify-flag-failed ({e})"))?;
        for (index, input) in tx.input.iter().enumerate() {
            self.utxos.remove(&input.previous_output);
            self.spends.insert(
                input.previous_output,
                (txid, u32::try_from(index).unwrap_or(u32::MAX)),
            );
        }
        self.add_outputs(&tx, txid);
        self.txs.insert(txid, (tx, None));
        self.mempool.push(txid);
        Ok(txid)
    }

    fn add_outputs(&mut self, tx: &Transaction, txid: Txid) {
        for (vout, output) in tx.output.iter().enumerate() {
            self.utxos.insert(
                OutPoint {
                    txid,
                    vout: u32::try_from(vout).unwrap_or(u32::MAX),
                },
                Coin {
                    output: output.clone(),
                    height: None,
                },
            );
        }
    }

    /// A payment to `script` from outside (its input is not checked: a stand-in for a wallet).
    fn pay(&mut self, script: ScriptBuf, sats: u64) -> Txid {
        self.faucet_counter += 1;
        let mut marker = [0u8; 32];
        marker[..8].copy_from_slice(&self.faucet_counter.to_be_bytes());
        let tx = Transaction {
            version: transaction::Version::TWO,
            lock_time: absolute::LockTime::ZERO,
            input: vec![TxIn {
                previous_output: OutPoint {
                    txid: Txid::from_byte_array(marker),
                    vout: u32::MAX,
                },
                script_sig: ScriptBuf::new(),
                sequence: Sequence::MAX,
                witness: Witness::new(),
            }],
            output: vec![TxOut {
                value: Amount::from_sat(sats),
                script_pubkey: script,
            }],
        };
        let txid = tx.compute_txid();
        self.add_outputs(&tx, txid);
        self.txs.insert(txid, (tx, None));
        self.mempool.push(txid);
        txid
    }

    fn status(&self, height: Option<u32>) -> Value {
        match height {
            Some(h) => json!({
                "confirmed": true,
                "block_height": h,
                "block_hash": hex(&self.block_hashes[h as usize]),
            }),
            None => json!({ "confirmed": false }),
        }
    }

    fn tx_json(&self, txid: &Txid) -> Option<Value> {
        let (tx, height) = self.txs.get(txid)?;
        let vout: Vec<Value> = tx
            .output
            .iter()
            .map(|o| {
                json!({
                    "scriptpubkey": hex(o.script_pubkey.as_bytes()),
                    "scriptpubkey_address": Address::from_script(&o.script_pubkey, self.network)
                        .map(|a| a.to_string())
                        .ok(),
                    "value": o.value.to_sat(),
                })
            })
            .collect();
        let vin: Vec<Value> = tx
            .input
            .iter()
            .map(|i| json!({ "txid": i.previous_output.txid.to_string(), "vout": i.previous_output.vout }))
            .collect();
        Some(json!({
            "txid": txid.to_string(),
            "version": tx.version.0,
            "locktime": tx.lock_time.to_consensus_u32(),
            "vin": vin,
            "vout": vout,
            "status": self.status(*height),
        }))
    }
}

/// BIP 68: the number of blocks an input must wait, if it asks for a block-based relative lock.
fn relative_lock_blocks(tx: &Transaction, input: &TxIn) -> Option<u32> {
    if tx.version.0 < 2 {
        return None;
    }
    let sequence = input.sequence.0;
    if sequence & (1 << 31) != 0 {
        return None; // disable flag
    }
    if sequence & (1 << 22) != 0 {
        return None; // time-based locks are not used by Souk; not enforced by this stand-in
    }
    Some(sequence & 0xffff)
}

fn absolute_lock_satisfied(tx: &Transaction, next_height: u32) -> bool {
    let lock = tx.lock_time.to_consensus_u32();
    if lock == 0 || tx.input.iter().all(|i| i.sequence == Sequence::MAX) {
        return true;
    }
    if lock < 500_000_000 {
        lock < next_height
    } else {
        true // time-based: not used by Souk
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    let text = text.trim();
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

type Shared = Arc<Mutex<Chain>>;

fn lock(chain: &Shared) -> std::sync::MutexGuard<'_, Chain> {
    chain
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn bad_request(reason: impl Into<String>) -> Response {
    let reason = reason.into();
    let body = format!(
        "sendrawtransaction RPC error: {}",
        json!({ "code": -26, "message": reason })
    );
    (StatusCode::BAD_REQUEST, body).into_response()
}

async fn tip_height(State(chain): State<Shared>) -> String {
    lock(&chain).tip().to_string()
}

async fn tip_hash(State(chain): State<Shared>) -> String {
    let chain = lock(&chain);
    hex(&chain.block_hashes[chain.tip() as usize])
}

async fn broadcast(State(chain): State<Shared>, body: String) -> Response {
    let Some(bytes) = unhex(&body) else {
        return bad_request("TX decode failed (not hex)");
    };
    let Ok(tx) = deserialize::<Transaction>(&bytes) else {
        return bad_request("TX decode failed");
    };
    let result = lock(&chain).accept(tx);
    match result {
        Ok(txid) => txid.to_string().into_response(),
        Err(reason) => {
            tracing::info!(%reason, "transaction refused");
            bad_request(reason)
        }
    }
}

type Refusal = (StatusCode, &'static str);

fn parse_txid(text: &str) -> Result<Txid, Refusal> {
    Txid::from_str(text).map_err(|_| (StatusCode::BAD_REQUEST, "Invalid hex string"))
}

async fn tx(State(chain): State<Shared>, Path(txid): Path<String>) -> Response {
    let txid = match parse_txid(&txid) {
        Ok(txid) => txid,
        Err(refusal) => return refusal.into_response(),
    };
    match lock(&chain).tx_json(&txid) {
        Some(value) => Json(value).into_response(),
        None => (StatusCode::NOT_FOUND, "Transaction not found").into_response(),
    }
}

async fn tx_status(State(chain): State<Shared>, Path(txid): Path<String>) -> Response {
    let txid = match parse_txid(&txid) {
        Ok(txid) => txid,
        Err(refusal) => return refusal.into_response(),
    };
    let chain = lock(&chain);
    match chain.txs.get(&txid) {
        Some((_, height)) => Json(chain.status(*height)).into_response(),
        None => (StatusCode::NOT_FOUND, "Transaction not found").into_response(),
    }
}

async fn tx_hex(State(chain): State<Shared>, Path(txid): Path<String>) -> Response {
    let txid = match parse_txid(&txid) {
        Ok(txid) => txid,
        Err(refusal) => return refusal.into_response(),
    };
    match lock(&chain).txs.get(&txid) {
        Some((tx, _)) => hex(&serialize(tx)).into_response(),
        None => (StatusCode::NOT_FOUND, "Transaction not found").into_response(),
    }
}

async fn outspend(
    State(chain): State<Shared>,
    Path((txid, vout)): Path<(String, u32)>,
) -> Response {
    let txid = match parse_txid(&txid) {
        Ok(txid) => txid,
        Err(refusal) => return refusal.into_response(),
    };
    let chain = lock(&chain);
    let outpoint = OutPoint { txid, vout };
    match chain.spends.get(&outpoint) {
        Some((spender, vin)) => {
            let height = chain.txs.get(spender).and_then(|(_, h)| *h);
            Json(json!({
                "spent": true,
                "txid": spender.to_string(),
                "vin": vin,
                "status": chain.status(height),
            }))
            .into_response()
        }
        None => Json(json!({ "spent": false })).into_response(),
    }
}

fn parse_address(chain: &Chain, text: &str) -> Result<Address, Refusal> {
    Address::from_str(text)
        .ok()
        .and_then(|a| a.require_network(chain.network).ok())
        .ok_or((StatusCode::BAD_REQUEST, "Invalid Bitcoin address"))
}

async fn address_utxo(State(chain): State<Shared>, Path(address): Path<String>) -> Response {
    let chain = lock(&chain);
    let address = match parse_address(&chain, &address) {
        Ok(address) => address,
        Err(refusal) => return refusal.into_response(),
    };
    let script = address.script_pubkey();
    let mut utxos: Vec<(OutPoint, &Coin)> = chain
        .utxos
        .iter()
        .filter(|(_, coin)| coin.output.script_pubkey == script)
        .map(|(o, c)| (*o, c))
        .collect();
    utxos.sort_by_key(|(o, _)| (o.txid.to_string(), o.vout));
    let list: Vec<Value> = utxos
        .into_iter()
        .map(|(outpoint, coin)| {
            json!({
                "txid": outpoint.txid.to_string(),
                "vout": outpoint.vout,
                "value": coin.output.value.to_sat(),
                "status": chain.status(coin.height),
            })
        })
        .collect();
    Json(list).into_response()
}

async fn address_txs(State(chain): State<Shared>, Path(address): Path<String>) -> Response {
    let chain = lock(&chain);
    let address = match parse_address(&chain, &address) {
        Ok(address) => address,
        Err(refusal) => return refusal.into_response(),
    };
    let script = address.script_pubkey();
    let mut found: Vec<(Option<u32>, Txid)> = chain
        .txs
        .iter()
        .filter(|(_, (tx, _))| {
            tx.output.iter().any(|o| o.script_pubkey == script)
                || tx.input.iter().any(|i| {
                    chain
                        .txs
                        .get(&i.previous_output.txid)
                        .and_then(|(prev, _)| prev.output.get(i.previous_output.vout as usize))
                        .is_some_and(|o| o.script_pubkey == script)
                })
        })
        .map(|(txid, (_, height))| (*height, *txid))
        .collect();
    // Mempool first, then newest confirmed first, as Esplora lists them.
    found.sort_by_key(|(height, txid)| {
        (
            height.map_or(0, |h| u64::from(u32::MAX - h) + 1),
            txid.to_string(),
        )
    });
    let list: Vec<Value> = found
        .iter()
        .filter_map(|(_, txid)| chain.tx_json(txid))
        .collect();
    Json(list).into_response()
}

async fn fee_estimates() -> Json<Value> {
    Json(json!({ "1": 5.0, "2": 4.0, "3": 3.0, "6": 2.0, "144": 1.0 }))
}

#[derive(Debug, Deserialize)]
struct PayRequest {
    address: String,
    sats: u64,
}

#[derive(Debug, Serialize)]
struct PayResponse {
    txid: String,
    vout: u32,
}

async fn pay(State(chain): State<Shared>, Json(request): Json<PayRequest>) -> Response {
    let mut chain = lock(&chain);
    let address = match parse_address(&chain, &request.address) {
        Ok(address) => address,
        Err(refusal) => return refusal.into_response(),
    };
    let txid = chain.pay(address.script_pubkey(), request.sats);
    Json(PayResponse {
        txid: txid.to_string(),
        vout: 0,
    })
    .into_response()
}

#[derive(Debug, Deserialize)]
struct MineRequest {
    blocks: u32,
}

async fn mine(State(chain): State<Shared>, Json(request): Json<MineRequest>) -> Response {
    let mut chain = lock(&chain);
    for _ in 0..request.blocks.min(10_000) {
        chain.mine_block();
    }
    Json(json!({ "height": chain.tip() })).into_response()
}

/// A running Esplora-shaped chain server on loopback.
#[derive(Debug)]
pub struct Esplora {
    /// Base URL, for example `http://127.0.0.1:40123` (no trailing slash).
    pub url: String,
    chain: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl Esplora {
    /// Starts a server for `network` on a free loopback port.
    ///
    /// # Errors
    /// If no loopback port can be bound.
    pub async fn start(network: Network) -> std::io::Result<Self> {
        let chain: Shared = Arc::new(Mutex::new(Chain::new(network)));
        let app = Router::new()
            .route("/blocks/tip/height", get(tip_height))
            .route("/blocks/tip/hash", get(tip_hash))
            .route("/tx", post(broadcast))
            .route("/tx/{txid}", get(tx))
            .route("/tx/{txid}/status", get(tx_status))
            .route("/tx/{txid}/hex", get(tx_hex))
            .route("/tx/{txid}/outspend/{vout}", get(outspend))
            .route("/address/{address}/utxo", get(address_utxo))
            .route("/address/{address}/txs", get(address_txs))
            .route("/fee-estimates", get(fee_estimates))
            .route("/regtest/pay", post(pay))
            .route("/regtest/mine", post(mine))
            .with_state(Arc::clone(&chain));
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let url = format!("http://{}", listener.local_addr()?);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { url, chain, task })
    }

    /// The current tip height.
    #[must_use]
    pub fn height(&self) -> u32 {
        lock(&self.chain).tip()
    }

    /// Mines `blocks` blocks (the first takes the mempool).
    pub fn mine(&self, blocks: u32) {
        let mut chain = lock(&self.chain);
        for _ in 0..blocks {
            chain.mine_block();
        }
    }

    /// Pays `sats` to `address` from outside (a stand-in for the buyer's own wallet); returns
    /// the outpoint.
    ///
    /// # Errors
    /// If the address is not valid on this chain's network.
    pub fn pay(&self, address: &str, sats: u64) -> Result<OutPoint, String> {
        let mut chain = lock(&self.chain);
        let address = Address::from_str(address)
            .ok()
            .and_then(|a| a.require_network(chain.network).ok())
            .ok_or_else(|| format!("not an address on {}: {address}", chain.network))?;
        let txid = chain.pay(address.script_pubkey(), sats);
        Ok(OutPoint { txid, vout: 0 })
    }

    /// What the chain holds at `address`: the value of its unspent outputs (mempool included).
    #[must_use]
    pub fn balance(&self, script: &ScriptBuf) -> u64 {
        lock(&self.chain)
            .utxos
            .values()
            .filter(|c| &c.output.script_pubkey == script)
            .map(|c| c.output.value.to_sat())
            .sum()
    }

    /// The transaction with this id, if known (mempool or confirmed).
    #[must_use]
    pub fn transaction(&self, txid: &Txid) -> Option<Transaction> {
        lock(&self.chain).txs.get(txid).map(|(tx, _)| tx.clone())
    }
}

impl Drop for Esplora {
    fn drop(&mut self) {
        self.task.abort();
    }
}
