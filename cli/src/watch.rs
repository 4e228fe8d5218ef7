//! `souk watch`: follows an index server's live feed over gRPC (`souk.v1.FeedService`) and
//! prints one JSON line per object, each verified here first. After a dropped connection, a
//! restarted server or a "too slow" ending it resubscribes from the last cursor it printed, so
//! nothing is printed twice and nothing is skipped.

use std::time::Duration;

use anyhow::{Context, Result};
use base64::Engine;
use clap::{Args, ValueEnum};
use serde::Serialize;
use souk_protocol::pb::feed_service_client::FeedServiceClient;
use souk_protocol::{Kind, Object, PublicKey, RawEnvelope, pb};
use tonic::Code;

use crate::{Ctx, emit, fail, warn};

const DEFAULT_GRPC: &str = "http://127.0.0.1:8081";
/// Longest pause between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Options of `souk watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// gRPC address of the index server (`http://` plaintext, `https://` TLS)
    #[arg(long, value_name = "URL", env = "SOUK_GRPC", default_value = DEFAULT_GRPC)]
    grpc: String,
    /// Only these kinds (repeat, or comma-separated)
    #[arg(long, value_enum, value_delimiter = ',')]
    kind: Vec<KindArg>,
    /// Only objects signed by this address (repeat for several)
    #[arg(long, value_name = "ADDR")]
    seller: Vec<String>,
    /// Only listings in this category or below it (repeat for several; other kinds pass)
    #[arg(long, value_name = "PATH")]
    category: Vec<String>,
    /// Only listings matching this text, as search matches it (other kinds pass)
    #[arg(long, value_name = "TEXT")]
    query: Option<String>,
    /// Start after this cursor (printed with every object); without it, from the first object
    /// the server holds
    #[arg(long, value_name = "CURSOR")]
    since: Option<String>,
    /// Stop after printing this many objects (default: follow until interrupted)
    #[arg(long, value_name = "N")]
    limit: Option<u64>,
    /// Give up after this many failed reconnections in a row (default: never)
    #[arg(long, value_name = "N")]
    max_retries: Option<u32>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum KindArg {
    Profile,
    Listing,
    Rating,
    Tombstone,
}

impl KindArg {
    fn kind(self) -> Kind {
        match self {
            KindArg::Profile => Kind::Profile,
            KindArg::Listing => Kind::Listing,
            KindArg::Rating => Kind::Rating,
            KindArg::Tombstone => Kind::Tombstone,
        }
    }
}

/// One printed line.
#[derive(Serialize)]
struct Line {
    /// Pass as `--since` to resume after this object.
    cursor: String,
    kind: &'static str,
    id: String,
    signer: String,
    /// The first object stored after the subscription was made.
    live: bool,
    /// What the object says, briefly.
    #[serde(flatten)]
    about: About,
    /// The signed envelope, base64.
    envelope: String,
}

#[derive(Serialize)]
#[serde(untagged)]
enum About {
    Listing {
        slug: String,
        title: String,
        category: String,
        price: String,
        currency: String,
    },
    Profile {
        store_name: String,
        moderator: bool,
    },
    Rating {
        subject: String,
        role: &'static str,
        overall: u32,
    },
    Tombstone {
        slug: String,
        reason: String,
    },
}

fn describe(object: &Object) -> About {
    match object {
        Object::Listing(l) => {
            let price = l.price.clone().unwrap_or_default();
            About::Listing {
                slug: l.slug.clone(),
                title: l.title.clone(),
                category: l.category.clone(),
                price: price.amount.to_string(),
                currency: price.currency,
            }
        }
        Object::Profile(p) => About::Profile {
            store_name: p.store_name.clone(),
            moderator: p.moderator.is_some(),
        },
        Object::Rating(r) => About::Rating {
            subject: PublicKey::from_bytes(&r.subject)
                .map(|k| k.to_address())
                .unwrap_or_default(),
            role: if r.role == pb::RatingRole::Moderator as i32 {
                "moderator"
            } else {
                "seller"
            },
            overall: r.overall,
        },
        Object::Tombstone(t) => About::Tombstone {
            slug: t.slug.clone(),
            reason: t.reason.clone(),
        },
    }
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Profile => "profile",
        Kind::Listing => "listing",
        Kind::Rating => "rating",
        Kind::Tombstone => "tombstone",
        Kind::Unspecified => "unspecified",
    }
}

/// Checks an event's envelope here: its signature, its id, and that it decodes as its kind.
/// (No clock checks: the feed replays history, and old listings may have expired since.)
fn verify(event: &pb::FeedEvent) -> Result<(RawEnvelope, Object), String> {
    let envelope = RawEnvelope::decode(&event.envelope).map_err(|e| e.code().to_string())?;
    envelope
        .verify_signature()
        .map_err(|e| e.code().to_string())?;
    if envelope.id().as_bytes().as_slice() != event.id.as_slice() {
        return Err("id_mismatch".into());
    }
    let object =
        Object::decode(envelope.kind(), envelope.payload()).map_err(|e| e.code().to_string())?;
    Ok((envelope, object))
}

pub fn watch(ctx: &Ctx, args: &WatchArgs) -> Result<()> {
    if !(args.grpc.starts_with("http://") || args.grpc.starts_with("https://")) {
        return Err(fail(
            "invalid_url",
            format!("{} is not an http:// or https:// URL", args.grpc),
            "give the server's gRPC address as --grpc http://host:8081 or in SOUK_GRPC",
        ));
    }
    let signers = args
        .seller
        .iter()
        .map(|s| {
            s.parse::<PublicKey>()
                .map(|k| k.as_bytes().to_vec())
                .map_err(|_| {
                    fail(
                        "invalid_address",
                        format!("{s} is not a store address"),
                        "give a souk1… address or 64 hex digits",
                    )
                })
        })
        .collect::<Result<Vec<_>>>()?;
    let request = pb::SubscribeRequest {
        kinds: args.kind.iter().map(|k| k.kind() as i32).collect(),
        signers,
        categories: args.category.clone(),
        q: args.query.clone().unwrap_or_default(),
        since: args.since.clone().unwrap_or_default(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(follow(ctx, args, request))
}

async fn follow(ctx: &Ctx, args: &WatchArgs, mut request: pb::SubscribeRequest) -> Result<()> {
    let endpoint = tonic::transport::Endpoint::from_shared(args.grpc.clone())
        .map_err(|e| fail("invalid_url", format!("{}: {e}", args.grpc), ""))?
        .connect_timeout(Duration::from_secs(ctx.timeout))
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20));
    let endpoint = if args.grpc.starts_with("https://") {
        endpoint
            .tls_config(tonic::transport::ClientTlsConfig::new().with_webpki_roots())
            .context("cannot set up TLS")?
    } else {
        endpoint
    };
    let mut printed: u64 = 0;
    let mut failures: u32 = 0;
    loop {
        if args.limit.is_some_and(|limit| printed >= limit) {
            return Ok(());
        }
        let outcome = async {
            let channel = endpoint.connect().await.map_err(|e| {
                tonic::Status::unavailable(format!("cannot connect to {}: {e}", args.grpc))
            })?;
            let mut stream = FeedServiceClient::new(channel)
                .subscribe(request.clone())
                .await?
                .into_inner();
            while let Some(event) = stream.message().await? {
                failures = 0;
                request.since.clone_from(&event.cursor);
                match verify(&event) {
                    Ok((envelope, object)) => {
                        let line = Line {
                            cursor: event.cursor.clone(),
                            kind: kind_name(object.kind()),
                            id: envelope.id().to_string(),
                            signer: envelope.signer().to_address(),
                            live: event.live,
                            about: describe(&object),
                            envelope: base64::engine::general_purpose::STANDARD
                                .encode(&event.envelope),
                        };
                        let text = serde_json::to_string(&line).map_err(|e| {
                            tonic::Status::internal(format!("cannot print an object: {e}"))
                        })?;
                        emit(&format!("{text}\n"));
                        printed += 1;
                        if args.limit.is_some_and(|limit| printed >= limit) {
                            return Ok(());
                        }
                    }
                    Err(code) => warn(&format!(
                        "object {} at cursor {} failed verification ({code}) and is skipped",
                        hex::encode(&event.id),
                        event.cursor
                    )),
                }
            }
            Err(tonic::Status::unavailable("the server ended the feed"))
        }
        .await;
        let status = match outcome {
            Ok(()) => return Ok(()),
            Err(status) => status,
        };
        match status.code() {
            Code::InvalidArgument | Code::NotFound | Code::FailedPrecondition => {
                let code = status
                    .metadata()
                    .get("souk-error-code")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("invalid_parameter")
                    .to_string();
                let message = status
                    .message()
                    .strip_prefix(&format!("{code}: "))
                    .unwrap_or(status.message());
                return Err(fail(
                    "feed_refused",
                    format!("the server refused the subscription ({code}): {message}"),
                    "check the filters (--kind, --seller, --category, --query, --since)",
                ));
            }
            Code::Unimplemented => {
                return Err(fail(
                    "no_feed",
                    format!("{} does not serve the feed", args.grpc),
                    "point --grpc at a souk-server's gRPC address (default port 8081)",
                ));
            }
            _ => {}
        }
        failures += 1;
        if args.max_retries.is_some_and(|max| failures > max) {
            return Err(fail(
                "feed_lost",
                format!(
                    "gave up after {failures} failed attempts in a row: {}",
                    status.message()
                ),
                format!(
                    "resume later with --since {}",
                    if request.since.is_empty() {
                        "\"\""
                    } else {
                        &request.since
                    }
                ),
            ));
        }
        let pause = Duration::from_secs(1u64 << failures.min(5).saturating_sub(1)).min(MAX_BACKOFF);
        warn(&format!(
            "feed interrupted ({}); resubscribing after cursor {} in {} s",
            status.message(),
            if request.since.is_empty() {
                "(start)"
            } else {
                &request.since
            },
            pause.as_secs()
        ));
        tokio::time::sleep(pause).await;
    }
}
