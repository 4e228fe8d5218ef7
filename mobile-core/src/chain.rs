//! Reading the chain through an Esplora-compatible REST API (mempool.space, Blockstream's
//! explorer, or one's own `electrs`/`esplora`), at a URL the user chooses.
//!
//! Only what the order flow needs: the tip height, payments to an address, whether an output was
//! spent and by what, fee estimates, and broadcasting a transaction. Responses are size-limited and parsed
//! strictly; a server that answers nonsense is an error, never a payment.

use std::time::Duration;

use serde::Deserialize;
use souk_protocol::bitcoin::consensus::serialize;
use souk_protocol::bitcoin::{OutPoint, Transaction, Txid};

/// Largest response read from the chain API.
pub const MAX_CHAIN_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// Why a chain request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChainError {
    /// The URL is unusable.
    #[error("chain API URL {url} is not usable: {reason}")]
    InvalidUrl {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The API could not be reached or timed out.
    #[error("chain API unreachable: {reason}")]
    Unreachable {
        /// What failed.
        reason: String,
    },
    /// The API answered with an error status.
    #[error("chain API answered {status}: {body}")]
    Status {
        /// HTTP status.
        status: u16,
        /// The start of the body (the node's reason for a refused broadcast).
        body: String,
    },
    /// The answer is not what the Esplora API returns.
    #[error("chain API answer is malformed: {reason}")]
    Malformed {
        /// What is wrong.
        reason: String,
    },
}

impl ChainError {
    /// The stable machine-readable code.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidUrl { .. } => "invalid_url",
            Self::Unreachable { .. } => "chain_unreachable",
            Self::Status { .. } => "chain_refused",
            Self::Malformed { .. } => "chain_malformed",
        }
    }
}

/// Where an output or transaction stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct TxStatus {
    /// Whether it is in a block.
    pub confirmed: bool,
    /// The block height, when confirmed.
    #[serde(default)]
    pub block_height: Option<u32>,
}

/// An unspent output paying an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Utxo {
    /// The output.
    pub outpoint: OutPoint,
    /// Its value in satoshis.
    pub value: u64,
    /// Its status.
    pub status: TxStatus,
}

/// What spent an output, if anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outspend {
    /// The spending transaction.
    pub txid: Txid,
    /// Its status.
    pub status: TxStatus,
}

#[derive(Deserialize)]
struct RawUtxo {
    txid: String,
    vout: u32,
    value: u64,
    status: TxStatus,
}

#[derive(Deserialize)]
struct RawOutspend {
    spent: bool,
    #[serde(default)]
    txid: Option<String>,
    #[serde(default)]
    status: Option<TxStatus>,
}

/// A client of one Esplora API.
#[derive(Debug, Clone)]
pub struct Chain {
    base: String,
    http: reqwest::Client,
}

fn parse_txid(text: &str) -> Result<Txid, ChainError> {
    text.trim().parse().map_err(|_| ChainError::Malformed {
        reason: format!("not a transaction id: {text:.80}"),
    })
}

impl Chain {
    /// A client for the API at `base` (for example `https://mempool.space/api`).
    ///
    /// # Errors
    /// [`ChainError::InvalidUrl`] for a URL that is not http(s), or plain http to a host other
    /// than loopback.
    pub fn new(base: &str, timeout: Duration) -> Result<Self, ChainError> {
        let url = url::Url::parse(base).map_err(|e| ChainError::InvalidUrl {
            url: base.into(),
            reason: e.to_string(),
        })?;
        let loopback = match url.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            Some(url::Host::Domain(d)) => d == "localhost",
            None => false,
        };
        match url.scheme() {
            "https" => {}
            "http" if loopback => {}
            _ => {
                return Err(ChainError::InvalidUrl {
                    url: base.into(),
                    reason: "use https (plain http only to this device)".into(),
                });
            }
        }
        let http =
            crate::client::http_client(timeout).map_err(|reason| ChainError::InvalidUrl {
                url: base.into(),
                reason,
            })?;
        Ok(Self {
            base: base.trim_end_matches('/').to_string(),
            http,
        })
    }

    async fn get_text(&self, path: &str) -> Result<String, ChainError> {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .map_err(|e| ChainError::Unreachable {
                reason: e.to_string(),
            })?;
        read(response).await
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, ChainError> {
        let text = self.get_text(path).await?;
        serde_json::from_str(&text).map_err(|e| ChainError::Malformed {
            reason: e.to_string(),
        })
    }

    /// The height of the chain tip.
    ///
    /// # Errors
    /// [`ChainError`].
    pub async fn tip_height(&self) -> Result<u32, ChainError> {
        let text = self.get_text("/blocks/tip/height").await?;
        text.trim().parse().map_err(|_| ChainError::Malformed {
            reason: format!("tip height is not a number: {text:.40}"),
        })
    }

    /// Unspent outputs paying `address` (confirmed and in the mempool).
    ///
    /// # Errors
    /// [`ChainError`].
    pub async fn utxos(&self, address: &str) -> Result<Vec<Utxo>, ChainError> {
        let raw: Vec<RawUtxo> = self.get_json(&format!("/address/{address}/utxo")).await?;
        raw.into_iter()
            .map(|u| {
                Ok(Utxo {
                    outpoint: OutPoint {
                        txid: parse_txid(&u.txid)?,
                        vout: u.vout,
                    },
                    value: u.value,
                    status: u.status,
                })
            })
            .collect()
    }

    /// What spent `outpoint`, or `None` while it is unspent.
    ///
    /// # Errors
    /// [`ChainError`].
    pub async fn outspend(&self, outpoint: &OutPoint) -> Result<Option<Outspend>, ChainError> {
        let raw: RawOutspend = self
            .get_json(&format!("/tx/{}/outspend/{}", outpoint.txid, outpoint.vout))
            .await?;
        if !raw.spent {
            return Ok(None);
        }
        let txid = raw.txid.as_deref().ok_or_else(|| ChainError::Malformed {
            reason: "spent without a txid".into(),
        })?;
        Ok(Some(Outspend {
            txid: parse_txid(txid)?,
            status: raw.status.unwrap_or(TxStatus {
                confirmed: false,
                block_height: None,
            }),
        }))
    }

    /// The fee rate (sat/vB, rounded up, at least 1) the API estimates for confirmation within
    /// `target_blocks`: the estimate of the largest target it offers that is not above
    /// `target_blocks` (or its smallest target, if all are above).
    ///
    /// # Errors
    /// [`ChainError`]; [`ChainError::Malformed`] for an answer without usable estimates.
    pub async fn fee_rate(&self, target_blocks: u16) -> Result<u32, ChainError> {
        let estimates: std::collections::HashMap<String, f64> =
            self.get_json("/fee-estimates").await?;
        let mut usable: Vec<(u32, f64)> = estimates
            .iter()
            .filter_map(|(k, v)| Some((k.parse::<u32>().ok()?, *v)))
            .filter(|(_, v)| v.is_finite() && *v > 0.0)
            .collect();
        usable.sort_by_key(|(k, _)| *k);
        let chosen = usable
            .iter()
            .rev()
            .find(|(k, _)| *k <= u32::from(target_blocks))
            .or_else(|| usable.first())
            .ok_or_else(|| ChainError::Malformed {
                reason: "no fee estimates".into(),
            })?;
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "clamped to 1..=100000 first"
        )]
        Ok(chosen.1.ceil().clamp(1.0, 100_000.0) as u32)
    }

    /// Broadcasts `tx`; the node's reason when it is refused.
    ///
    /// # Errors
    /// [`ChainError::Status`] with the node's reason, or another [`ChainError`].
    pub async fn broadcast(&self, tx: &Transaction) -> Result<Txid, ChainError> {
        let hex: String = serialize(tx).iter().map(|b| format!("{b:02x}")).collect();
        let response = self
            .http
            .post(format!("{}/tx", self.base))
            .header(reqwest::header::CONTENT_TYPE, "text/plain")
            .body(hex)
            .send()
            .await
            .map_err(|e| ChainError::Unreachable {
                reason: e.to_string(),
            })?;
        let txid = parse_txid(&read(response).await?)?;
        if txid != tx.compute_txid() {
            return Err(ChainError::Malformed {
                reason: "the API answered with another transaction id".into(),
            });
        }
        Ok(txid)
    }
}

async fn read(response: reqwest::Response) -> Result<String, ChainError> {
    let status = response.status();
    if response
        .content_length()
        .is_some_and(|n| n > MAX_CHAIN_RESPONSE_BYTES as u64)
    {
        return Err(ChainError::Malformed {
            reason: "response too large".into(),
        });
    }
    let bytes = response
        .bytes()
        .await
        .map_err(|e| ChainError::Unreachable {
            reason: e.to_string(),
        })?;
    if bytes.len() > MAX_CHAIN_RESPONSE_BYTES {
        return Err(ChainError::Malformed {
            reason: "response too large".into(),
        });
    }
    let text = String::from_utf8_lossy(&bytes).into_owned();
    if status.is_success() {
        Ok(text)
    } else {
        Err(ChainError::Status {
            status: status.as_u16(),
            body: text.chars().take(500).collect(),
        })
    }
}
