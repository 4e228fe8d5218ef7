//! The gRPC API (tonic): `souk.v1.IndexService`, `IngestService` and `FeedService` from
//! `protocol/proto/souk/v1/api.proto`, plus `grpc.health.v1.Health` and server reflection.
//!
//! Every handler is a thin adapter over [`crate::service`] (and the one ingest path), exactly
//! like the REST handlers, so both APIs check parameters the same way and fail with the same
//! stable codes: an [`ApiError`] becomes a [`Status`] whose code follows the HTTP status, whose
//! message starts with the stable code, and whose `souk-error-code` metadata carries it alone.
//!
//! Limits are REST's: the largest message is `max_body_bytes`, each client address gets the same
//! request rate, and a connection holds at most `grpc_max_streams` calls at once.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::http;
use futures::{Stream, StreamExt};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use souk_protocol::pb::feed_service_server::{FeedService, FeedServiceServer};
use souk_protocol::pb::index_service_server::{IndexService, IndexServiceServer};
use souk_protocol::pb::ingest_service_server::{IngestService, IngestServiceServer};
use souk_protocol::pb::{self};
use souk_protocol::{ObjectId, summary};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity, ServerTlsConfig};
use tonic::{Code, Request, Response, Status, Streaming};

use crate::api::{ApiError, SharedState};
use crate::ingest::IngestResult;
use crate::search::Sort;
use crate::service::{
    self, FeedFilter, ModeratorQuery, SearchParams, StoredListing, feed_cursor, parse_feed_cursor,
};
use crate::store::RatingSummary;

/// Metadata key carrying the stable error code of a failed call.
pub const ERROR_CODE_KEY: &str = "souk-error-code";
/// Events buffered per feed subscriber; when they are all unread for the configured stall
/// time, the subscriber is ended.
pub const FEED_BUFFER: usize = 256;
/// Stored envelopes a feed reads from the store at a time.
const FEED_SCAN: i64 = 512;
/// Publish results buffered before the server stops reading a publisher's stream.
const PUBLISH_BUFFER: usize = 256;
/// Envelopes a publish stream hands to the ingest path in one batch (those already received).
const PUBLISH_CHUNK: usize = 256;

/// The [`Status`] for an API error: INVALID_ARGUMENT for 400/415/422, NOT_FOUND for 404,
/// FAILED_PRECONDITION for 409, ALREADY_EXISTS never from a read, RESOURCE_EXHAUSTED for
/// 413/429/507, UNAVAILABLE for 503, UNAUTHENTICATED for 401, INTERNAL otherwise. The message is
/// `"<code>: <message>"`; the code alone is in the `souk-error-code` metadata.
#[must_use]
pub fn status(error: ApiError) -> Status {
    let code = match error.status.as_u16() {
        400 | 415 | 422 => Code::InvalidArgument,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::NotFound,
        409 => Code::FailedPrecondition,
        413 | 429 | 507 => Code::ResourceExhausted,
        503 => Code::Unavailable,
        _ => Code::Internal,
    };
    coded(code, error.code, &error.message)
}

/// A status with a stable code in its message and metadata.
fn coded(code: Code, stable: &'static str, message: &str) -> Status {
    let mut status = Status::new(code, format!("{stable}: {message}"));
    status
        .metadata_mut()
        .insert(ERROR_CODE_KEY, MetadataValue::from_static(stable));
    status
}

/// The services over one server's state.
#[derive(Debug, Clone)]
pub struct GrpcApi {
    state: SharedState,
    /// Turns true when the server shuts down; open feeds end with UNAVAILABLE then.
    shutdown: watch::Receiver<bool>,
}

impl GrpcApi {
    /// The services over `state`; `shutdown` ends open feeds when it turns true.
    #[must_use]
    pub fn new(state: SharedState, shutdown: watch::Receiver<bool>) -> Self {
        Self { state, shutdown }
    }
}

fn some(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}

/// `SearchRequest` → the REST parameters, so that [`service::parse_search`] checks both.
fn search_params(r: pb::SearchRequest) -> Result<SearchParams, ApiError> {
    let kind = match pb::ListingType::try_from(r.r#type) {
        Ok(pb::ListingType::Unspecified) => None,
        Ok(_) => Some(summary::listing_type_name(r.r#type).to_string()),
        Err(_) => return Err(service::invalid("type", "unknown listing type")),
    };
    let condition = match pb::Condition::try_from(r.condition) {
        Ok(pb::Condition::Unspecified) => None,
        Ok(_) => Some(summary::condition_name(r.condition).to_string()),
        Err(_) => return Err(service::invalid("condition", "unknown condition")),
    };
    let sort = match pb::SearchSort::try_from(r.sort) {
        Ok(pb::SearchSort::Unspecified) => None,
        Ok(pb::SearchSort::Relevance) => Some(Sort::Relevance),
        Ok(pb::SearchSort::PriceAsc) => Some(Sort::PriceAsc),
        Ok(pb::SearchSort::PriceDesc) => Some(Sort::PriceDesc),
        Ok(pb::SearchSort::Newest) => Some(Sort::Newest),
        Ok(pb::SearchSort::Rating) => Some(Sort::Rating),
        Err(_) => return Err(service::invalid("sort", "unknown sort")),
    };
    let seller = if r.seller.is_empty() {
        None
    } else {
        Some(service::key_from_bytes(&r.seller, "seller")?.to_hex())
    };
    Ok(SearchParams {
        q: some(r.q),
        category: some(r.category),
        kind,
        condition,
        currency: some(r.currency),
        price_min: r.price_min,
        price_max: r.price_max,
        ships_to: some(r.ships_to),
        seller,
        min_rating: r.min_rating,
        moderated: r.moderated,
        nsfw: Some(r.nsfw),
        sort,
        limit: (r.limit != 0).then(|| usize::try_from(r.limit).unwrap_or(usize::MAX)),
        cursor: some(r.cursor),
    })
}

fn listing_hit(l: &StoredListing) -> pb::ListingHit {
    let s = l.summary();
    pb::ListingHit {
        id: l.id.as_bytes().to_vec(),
        summary: Some(pb::ListingSummary {
            seller: l.seller.to_vec(),
            slug: s.slug,
            title: s.title,
            r#type: l.listing.r#type,
            condition: l.listing.condition,
            price_amount: s.price_amount,
            price_currency: s.price_currency,
            price_divisibility: s.price_divisibility,
            category: s.category,
            tags: s.tags,
            ships_to: s.ships_to,
            moderated: s.moderated,
            nsfw: s.nsfw,
            created_at: s.created_at,
            expires_at: s.expires_at,
        }),
        envelope: l.bytes.clone(),
    }
}

fn aggregate(r: RatingSummary) -> pb::RatingAggregate {
    pb::RatingAggregate {
        count: u64::try_from(r.count).unwrap_or(0),
        overall: r.overall,
        quality: r.quality,
        description: r.description,
        delivery: r.delivery,
        service: r.service,
    }
}

#[tonic::async_trait]
impl IndexService for GrpcApi {
    async fn search(
        &self,
        request: Request<pb::SearchRequest>,
    ) -> Result<Response<pb::SearchResponse>, Status> {
        let params = search_params(request.into_inner()).map_err(status)?;
        let query = service::parse_search(params, souk_protocol::ValidationContext::now().now)
            .map_err(status)?;
        let page = service::search(&self.state, query).await.map_err(status)?;
        Ok(Response::new(pb::SearchResponse {
            total: page.total as u64,
            hits: page.hits.iter().map(listing_hit).collect(),
            facets: page
                .facets
                .into_iter()
                .map(|(name, counts)| pb::Facet {
                    name,
                    counts: counts.into_iter().collect(),
                })
                .collect(),
            next_cursor: page.next_cursor.unwrap_or_default(),
        }))
    }

    async fn get_listing(
        &self,
        request: Request<pb::GetListingRequest>,
    ) -> Result<Response<pb::ListingResponse>, Status> {
        let id = service::id_from_bytes(&request.into_inner().id).map_err(status)?;
        let (listing, current) = service::listing(&self.state, &id).await.map_err(status)?;
        Ok(Response::new(pb::ListingResponse {
            listing: Some(listing_hit(&listing)),
            current,
        }))
    }

    async fn get_profile(
        &self,
        request: Request<pb::GetProfileRequest>,
    ) -> Result<Response<pb::ProfileResponse>, Status> {
        let person =
            service::key_from_bytes(&request.into_inner().person, "person").map_err(status)?;
        let profile = service::profile(&self.state, &person)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ProfileResponse {
            envelope: profile.bytes,
        }))
    }

    async fn list_moderators(
        &self,
        request: Request<pb::ListModeratorsRequest>,
    ) -> Result<Response<pb::ListModeratorsResponse>, Status> {
        let r = request.into_inner();
        let page = service::moderators(
            &self.state,
            ModeratorQuery {
                language: some(r.language),
                max_fee_bp: r.max_fee_bp,
                limit: (r.limit != 0).then(|| usize::try_from(r.limit).unwrap_or(usize::MAX)),
                cursor: some(r.cursor),
            },
        )
        .await
        .map_err(status)?;
        let mut ratings = Vec::with_capacity(page.profiles.len());
        for profile in &page.profiles {
            let summary = self
                .state
                .store
                .rating_summary(&profile.person, pb::RatingRole::Moderator)
                .await
                .map_err(|e| status(e.into()))?;
            ratings.push(aggregate(summary));
        }
        Ok(Response::new(pb::ListModeratorsResponse {
            profiles: page.profiles.into_iter().map(|p| p.bytes).collect(),
            next_cursor: page.next_cursor.unwrap_or_default(),
            ratings,
        }))
    }

    async fn get_ratings(
        &self,
        request: Request<pb::GetRatingsRequest>,
    ) -> Result<Response<pb::RatingsResponse>, Status> {
        let r = request.into_inner();
        let subject = service::key_from_bytes(&r.subject, "subject").map_err(status)?;
        let limit = (r.limit != 0).then(|| usize::try_from(r.limit).unwrap_or(usize::MAX));
        let ratings = service::ratings(&self.state, &subject, limit, some(r.cursor).as_deref())
            .await
            .map_err(status)?;
        let (envelopes, roles) = ratings
            .ratings
            .into_iter()
            .map(|(bytes, role)| (bytes, role as i32))
            .unzip();
        Ok(Response::new(pb::RatingsResponse {
            seller: Some(aggregate(ratings.seller)),
            moderator: Some(aggregate(ratings.moderator)),
            ratings: envelopes,
            roles,
            next_cursor: ratings.next_cursor.unwrap_or_default(),
        }))
    }
}

fn publish_result(id: ObjectId, result: IngestResult) -> pb::PublishResult {
    let mut out = pb::PublishResult {
        id: id.as_bytes().to_vec(),
        ..pb::PublishResult::default()
    };
    match result {
        IngestResult::Accepted { seq, .. } => {
            out.status = pb::PublishStatus::Accepted as i32;
            out.seq = u64::try_from(seq).unwrap_or(0);
        }
        IngestResult::Duplicate { .. } => out.status = pb::PublishStatus::Duplicate as i32,
        IngestResult::Stale { current, .. } => {
            out.status = pb::PublishStatus::Stale as i32;
            out.message = current.to_string();
        }
        IngestResult::Rejected { code, message } => {
            out.status = pb::PublishStatus::Rejected as i32;
            out.code = code.to_string();
            out.message = message;
        }
    }
    out
}

/// A message over the size limit, as RESOURCE_EXHAUSTED with a stable code (tonic reports it
/// as OUT_OF_RANGE).
fn message_status(status: Status) -> Status {
    if status.code() == Code::OutOfRange && status.message().contains("message length too large") {
        coded(
            Code::ResourceExhausted,
            "message_too_large",
            "a message is over this server's size limit (max-body-bytes)",
        )
    } else {
        status
    }
}

/// The stream a server-streaming call answers with: the events of a bounded channel, then at
/// most one final status (sent after the events already buffered, so a client that reads them
/// all knows exactly where the stream ended).
pub type EventStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

fn event_stream<T: Send + 'static>(
    events: mpsc::Receiver<Result<T, Status>>,
    end: oneshot::Receiver<Status>,
) -> EventStream<T> {
    let end = futures::stream::once(end).filter_map(|r| std::future::ready(r.ok().map(Err)));
    Box::pin(ReceiverStream::new(events).chain(end))
}

#[tonic::async_trait]
impl IngestService for GrpcApi {
    type PublishStream = EventStream<pb::PublishResult>;

    async fn publish(
        &self,
        request: Request<Streaming<pb::PublishRequest>>,
    ) -> Result<Response<Self::PublishStream>, Status> {
        let input = request.into_inner();
        let (results, events) = mpsc::channel(PUBLISH_BUFFER);
        let (end_tx, end) = oneshot::channel();
        let state = Arc::clone(&self.state);
        tokio::spawn(async move {
            if let Err(status) = publish_loop(&state, input, &results).await {
                let _ = end_tx.send(status);
            }
        });
        Ok(Response::new(event_stream(events, end)))
    }
}

/// Reads envelopes as they come, in chunks of what has already arrived, runs each chunk through
/// the ingest path and sends one result per envelope, in order. It reads on only when the
/// results have been taken (flow control is the back-pressure).
async fn publish_loop(
    state: &SharedState,
    input: Streaming<pb::PublishRequest>,
    results: &mpsc::Sender<Result<pb::PublishResult, Status>>,
) -> Result<(), Status> {
    let mut chunks = input.ready_chunks(PUBLISH_CHUNK);
    while let Some(chunk) = chunks.next().await {
        let mut envelopes = Vec::with_capacity(chunk.len());
        let mut failure = None;
        for message in chunk {
            match message {
                Ok(request) => envelopes.push(request.envelope),
                Err(error) => {
                    failure = Some(message_status(error));
                    break;
                }
            }
        }
        if !envelopes.is_empty() {
            let ids: Vec<ObjectId> = envelopes.iter().map(|e| ObjectId::of(e)).collect();
            let outcomes = state
                .ingestor
                .ingest(envelopes)
                .await
                .map_err(|e| status(ApiError::from(e)))?;
            for (id, outcome) in ids.into_iter().zip(outcomes) {
                if results.send(Ok(publish_result(id, outcome))).await.is_err() {
                    return Ok(());
                }
            }
        }
        if let Some(failure) = failure {
            return Err(failure);
        }
    }
    Ok(())
}

#[tonic::async_trait]
impl FeedService for GrpcApi {
    type SubscribeStream = EventStream<pb::FeedEvent>;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let r = request.into_inner();
        let filter = FeedFilter::new(&r.kinds, &r.signers, &r.categories, &r.q).map_err(status)?;
        let since = parse_feed_cursor(&r.since).map_err(status)?;
        // Read before the answer goes out: whatever the client publishes after its call
        // returns is stored after this, so it is live.
        let head = self
            .state
            .store
            .max_seq()
            .await
            .map_err(|e| status(ApiError::from(e)))?;
        let (events, rx) = mpsc::channel(FEED_BUFFER);
        let (end_tx, end) = oneshot::channel();
        let feed = Feed::new(
            Arc::clone(&self.state),
            filter,
            since,
            head,
            self.shutdown.clone(),
        );
        metrics::gauge!("souk_feed_subscribers").increment(1.0);
        tokio::spawn(async move {
            let ended = feed.run(&events).await;
            metrics::gauge!("souk_feed_subscribers").decrement(1.0);
            if let Some(status) = ended {
                let _ = end_tx.send(status);
            }
        });
        Ok(Response::new(event_stream(rx, end)))
    }
}

/// One subscriber's feed. It reads the store from its position until it has caught up, then
/// takes new commits from the ingest writer's broadcast (decoded once for all subscribers),
/// and goes back to the store whenever it falls too far behind for the broadcast to hold what
/// it missed. Positions are ingest sequences, so switching never skips or repeats an envelope.
struct Feed {
    state: SharedState,
    filter: FeedFilter,
    /// The sequence of the last stored envelope examined (sent or filtered out).
    position: i64,
    shutdown: watch::Receiver<bool>,
    stall: Duration,
    /// The cursor the subscription started from.
    since: String,
    /// The sequence of the last event handed to the stream: where a client resumes.
    last_sent: Option<i64>,
    /// The newest ingest sequence when the subscription was made: later envelopes are live.
    head: i64,
    /// Whether the first live event has been sent.
    live_sent: bool,
}

/// Why a feed ends: the subscriber left (`None`), or with this status.
type Ended = Option<Status>;

impl Feed {
    fn new(
        state: SharedState,
        filter: FeedFilter,
        position: i64,
        head: i64,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        let stall = state.config.grpc.feed_stall;
        Self {
            state,
            filter,
            position,
            shutdown,
            stall,
            since: feed_cursor(position),
            last_sent: None,
            head,
            live_sent: false,
        }
    }

    fn resume(&self) -> String {
        match self.last_sent {
            Some(seq) => format!("resume with since = \"{}\"", feed_cursor(seq)),
            None => format!("resume with since = \"{}\"", self.since),
        }
    }

    fn shutting_down(&self) -> Status {
        coded(
            Code::Unavailable,
            "shutting_down",
            &format!("the server is shutting down; {}", self.resume()),
        )
    }

    /// Hands one envelope to the stream, waiting at most the stall time for room.
    async fn deliver(
        &mut self,
        events: &mpsc::Sender<Result<pb::FeedEvent, Status>>,
        seq: i64,
        kind: souk_protocol::Kind,
        id: &ObjectId,
        envelope: Vec<u8>,
    ) -> Result<(), Ended> {
        let live = seq > self.head && !self.live_sent;
        self.live_sent |= live;
        let event = pb::FeedEvent {
            cursor: feed_cursor(seq),
            kind: kind as i32,
            id: id.as_bytes().to_vec(),
            envelope,
            live,
        };
        match events.send_timeout(Ok(event), self.stall).await {
            Ok(()) => {
                self.last_sent = Some(seq);
                Ok(())
            }
            Err(mpsc::error::SendTimeoutError::Closed(_)) => Err(None),
            Err(mpsc::error::SendTimeoutError::Timeout(_)) => {
                metrics::counter!("souk_feed_ended_total", "reason" => "slow").increment(1);
                Err(Some(coded(
                    Code::ResourceExhausted,
                    "subscriber_too_slow",
                    &format!(
                        "this subscriber left {FEED_BUFFER} events unread for {} s and was ended; {}",
                        self.stall.as_secs(),
                        self.resume()
                    ),
                )))
            }
        }
    }

    /// Runs until the subscriber goes away (`None`) or the feed has to end (the final status).
    async fn run(mut self, events: &mpsc::Sender<Result<pb::FeedEvent, Status>>) -> Ended {
        // Subscribed before the first store read: every commit after this point arrives here,
        // every one before it is in the store.
        let mut live = self.state.ingestor.subscribe_committed();
        let mut from_store = true;
        loop {
            if *self.shutdown.borrow() {
                return Some(self.shutting_down());
            }
            if from_store {
                let (items, position) =
                    match service::feed_page(&self.state, &self.filter, self.position, FEED_SCAN)
                        .await
                    {
                        Ok(page) => page,
                        Err(error) => return Some(status(error)),
                    };
                let read_nothing = position == self.position;
                self.position = position;
                for item in items {
                    if let Err(ended) = self
                        .deliver(events, item.seq, item.kind, &item.id, item.bytes)
                        .await
                    {
                        return ended;
                    }
                }
                if read_nothing {
                    from_store = false;
                }
                continue;
            }
            tokio::select! {
                received = live.recv() => match received {
                    Ok(commit) => {
                        for c in commit.iter() {
                            if c.seq <= self.position {
                                continue; // already read from the store
                            }
                            self.position = c.seq;
                            if self.filter.matches(&c.signer, &c.object)
                                && let Err(ended) = self
                                    .deliver(events, c.seq, c.object.kind(), &c.id, c.bytes.clone())
                                    .await
                            {
                                return ended;
                            }
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => from_store = true,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                        return Some(self.shutting_down());
                    }
                },
                changed = self.shutdown.changed() => {
                    if changed.is_err() {
                        return Some(self.shutting_down());
                    }
                }
                () = events.closed() => return None,
            }
        }
    }
}

/// Rate limiting per client address, with REST's numbers; a refused call fails with
/// RESOURCE_EXHAUSTED `rate_limited`.
#[derive(Clone)]
pub struct RateLimit {
    limiter: Arc<DefaultKeyedRateLimiter<IpAddr>>,
}

impl std::fmt::Debug for RateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimit").finish_non_exhaustive()
    }
}

impl RateLimit {
    /// `per_second` calls a second on average, `burst` at once, per address.
    #[must_use]
    pub fn new(per_second: u32, burst: u32) -> Self {
        let per_second = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        let limiter = Arc::new(RateLimiter::keyed(
            Quota::per_second(per_second).allow_burst(burst),
        ));
        let sweeper = Arc::downgrade(&limiter);
        std::thread::spawn(move || {
            while let Some(limiter) = sweeper.upgrade() {
                limiter.retain_recent();
                drop(limiter);
                std::thread::sleep(Duration::from_secs(60));
            }
        });
        Self { limiter }
    }
}

impl Interceptor for RateLimit {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let ip = request
            .remote_addr()
            .map_or(IpAddr::from([0, 0, 0, 0]), |a| a.ip());
        match self.limiter.check_key(&ip) {
            Ok(()) => Ok(request),
            Err(_) => {
                metrics::counter!("souk_grpc_rate_limited_total").increment(1);
                Err(coded(
                    Code::ResourceExhausted,
                    "rate_limited",
                    "too many requests from this address; retry in a second",
                ))
            }
        }
    }
}

/// Rewrites tonic's OUT_OF_RANGE answer to an oversize request message (unary calls decode it
/// before any handler runs) into RESOURCE_EXHAUSTED `message_too_large`, as REST answers 413.
#[derive(Debug, Clone, Copy)]
struct OversizeLayer;

impl<S> tower::Layer<S> for OversizeLayer {
    type Service = Oversize<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Oversize { inner }
    }
}

#[derive(Debug, Clone)]
struct Oversize<S> {
    inner: S,
}

impl<S, B, R> tower::Service<http::Request<R>> for Oversize<S>
where
    S: tower::Service<http::Request<R>, Response = http::Response<B>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<B>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<R>) -> Self::Future {
        let future = self.inner.call(request);
        Box::pin(async move {
            let mut response = future.await?;
            let headers = response.headers_mut();
            let out_of_range = headers
                .get("grpc-status")
                .is_some_and(|v| v.as_bytes() == b"11");
            let too_large = headers
                .get("grpc-message")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|m| m.contains("message%20length%20too%20large"));
            if out_of_range && too_large {
                let status = message_status(Status::out_of_range("message length too large"));
                headers.remove("grpc-message");
                headers.remove("grpc-status");
                let _ = status.add_header(headers);
            }
            Ok(response)
        })
    }
}

/// The running gRPC server's address.
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Whether it speaks TLS.
    pub tls: bool,
}

/// Serves the gRPC API on `listener` until `shutdown` turns true; open feeds end with
/// UNAVAILABLE then, and calls in flight finish.
///
/// # Errors
/// If the TLS files cannot be read or used, or serving fails.
pub async fn serve(
    state: SharedState,
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let config = state.config.clone();
    let max_message = config.max_body_bytes;
    let api = GrpcApi::new(Arc::clone(&state), shutdown.clone());
    let limit = RateLimit::new(config.rate_limit_per_second, config.rate_limit_burst);

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<IndexServiceServer<GrpcApi>>().await;
    health.set_serving::<IngestServiceServer<GrpcApi>>().await;
    health.set_serving::<FeedServiceServer<GrpcApi>>().await;
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(souk_protocol::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection()
        .build_v1()
        .context("cannot build the reflection service")?;
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .context("cannot build the reflection service")?;

    let index = IndexServiceServer::new(api.clone()).max_decoding_message_size(max_message);
    let ingest = IngestServiceServer::new(api.clone()).max_decoding_message_size(max_message);
    let feed = FeedServiceServer::new(api).max_decoding_message_size(max_message);

    let mut builder = tonic::transport::Server::builder()
        .max_concurrent_streams(config.grpc.max_streams)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)));
    if let Some((cert, key)) = &config.grpc.tls {
        let cert = std::fs::read(cert)
            .with_context(|| format!("cannot read the gRPC TLS certificate {}", cert.display()))?;
        let key = std::fs::read(key)
            .with_context(|| format!("cannot read the gRPC TLS key {}", key.display()))?;
        builder = builder
            .tls_config(ServerTlsConfig::new().identity(Identity::from_pem(cert, key)))
            .context("invalid gRPC TLS certificate or key")?;
    }
    let router = builder
        .layer(OversizeLayer)
        .add_service(tonic::service::interceptor::InterceptedService::new(
            index,
            limit.clone(),
        ))
        .add_service(tonic::service::interceptor::InterceptedService::new(
            ingest,
            limit.clone(),
        ))
        .add_service(tonic::service::interceptor::InterceptedService::new(
            feed, limit,
        ))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);
    let signal_health = health.clone();
    let signal = async move {
        while !*shutdown.borrow_and_update() {
            if shutdown.changed().await.is_err() {
                break;
            }
        }
        signal_health
            .set_not_serving::<IndexServiceServer<GrpcApi>>()
            .await;
        signal_health
            .set_not_serving::<IngestServiceServer<GrpcApi>>()
            .await;
        signal_health
            .set_not_serving::<FeedServiceServer<GrpcApi>>()
            .await;
    };
    router
        .serve_with_incoming_shutdown(TcpIncoming::from(listener).with_nodelay(Some(true)), signal)
        .await
        .context("gRPC server failed")
}

/// The fuzz target `grpc_requests`: any bytes as a gRPC request the server parses without a
/// store — the first byte picks `SearchRequest` (turned into a search) or `SubscribeRequest`
/// (turned into a feed filter and cursor, then matched against a sample listing). Must never
/// panic; bad input is an error.
#[doc(hidden)]
pub fn fuzz_one(data: &[u8]) {
    use prost::Message;
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    if selector % 2 == 0 {
        if let Ok(request) = pb::SearchRequest::decode(rest)
            && let Ok(params) = search_params(request)
        {
            let _ = service::parse_search(params, 1_767_225_600);
        }
    } else if let Ok(request) = pb::SubscribeRequest::decode(rest)
        && let Ok(filter) = FeedFilter::new(
            &request.kinds,
            &request.signers,
            &request.categories,
            &request.q,
        )
    {
        let _ = parse_feed_cursor(&request.since);
        let seller = souk_protocol::IdentityKey::from_secret_bytes(&[3; 32]).public_key();
        let listing = souk_protocol::samples::listing(1_767_225_600, "fuzz", None);
        let _ = filter.matches(&seller, &souk_protocol::Object::Listing(listing));
    }
}
