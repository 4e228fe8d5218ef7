//! The gRPC API, against a real server on a loopback port with a tonic client: every RPC, the
//! same answers as REST (the committed search query mix through both), the right status for
//! bad input with nothing stored, the feed's resume contract, slow subscribers, limits, TLS.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use souk_protocol::pb::feed_service_client::FeedServiceClient;
use souk_protocol::pb::index_service_client::IndexServiceClient;
use souk_protocol::pb::ingest_service_client::IngestServiceClient;
use souk_protocol::{Object, ObjectId, pb, samples};
use souk_server::config::Config;
use souk_server::service::SearchParams;
use tonic::Code;
use tonic::transport::Channel;

/// The stable code a failed call carries in its metadata (and at the start of its message).
fn stable_code(status: &tonic::Status) -> String {
    let code = status
        .metadata()
        .get("souk-error-code")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    assert!(
        status.message().starts_with(&format!("{code}: ")),
        "the message starts with the code: {status:?}"
    );
    code
}

fn assert_status(result: Result<impl std::fmt::Debug, tonic::Status>, code: Code, stable: &str) {
    match result {
        Ok(value) => panic!("expected {code:?} {stable}, got {value:?}"),
        Err(status) => {
            assert_eq!(status.code(), code, "{status:?}");
            assert_eq!(stable_code(&status), stable, "{status:?}");
        }
    }
}

/// Publishes `envelopes` over one `Publish` stream and returns the results, in order.
async fn publish(channel: &Channel, envelopes: Vec<Vec<u8>>) -> Vec<pb::PublishResult> {
    let requests = futures::stream::iter(
        envelopes
            .into_iter()
            .map(|envelope| pb::PublishRequest { envelope }),
    );
    let mut results = IngestServiceClient::new(channel.clone())
        .publish(requests)
        .await
        .expect("publish")
        .into_inner();
    let mut out = Vec::new();
    while let Some(result) = results.message().await.expect("publish result") {
        out.push(result);
    }
    out
}

fn status_of(result: &pb::PublishResult) -> pb::PublishStatus {
    pb::PublishStatus::try_from(result.status).expect("known status")
}

/// Each result's status and code, in order.
fn outcomes(results: &[pb::PublishResult]) -> Vec<(pb::PublishStatus, &str)> {
    results
        .iter()
        .map(|r| (status_of(r), r.code.as_str()))
        .collect()
}

both!(every_index_rpc_answers, |s: TestServer| async move {
    let grpc = s.grpc().await;
    let channel = grpc.channel().await;
    let mut index = IndexServiceClient::new(channel.clone());
    let store_key = seller(10);
    let moderators: Vec<_> = (20..23).map(seller).collect();
    let rating_key = seller(12);
    let vase = listing(&store_key, "vase", "Glass vase", 60);
    let mut envelopes = vec![
        profile(&store_key, |p| {
            p.store_name = "Plain shop".into();
            p.moderator = None;
        }),
        vase.clone(),
        listing(&store_key, "bowl", "Glass bowl", 50),
        seal(
            &rating_key,
            Object::Rating(samples::rating(
                now() - 5,
                [4; 32],
                &store_key,
                &rating_key.public_key(),
            )),
        ),
    ];
    for (i, key) in moderators.iter().enumerate() {
        envelopes.push(profile(key, |p| {
            p.store_name = format!("Judge {i}");
            if let Some(offer) = p.moderator.as_mut()
                && let Some(fee) = offer.fee.as_mut()
            {
                fee.percentage_bp = 100 + u32::try_from(i).expect("small");
            }
        }));
    }
    let results = publish(
        &channel,
        envelopes
            .iter()
            .map(|o| o.envelope().bytes().to_vec())
            .collect(),
    )
    .await;
    assert!(
        results
            .iter()
            .all(|r| status_of(r) == pb::PublishStatus::Accepted),
        "{results:?}"
    );

    // Search: hits carry the signed envelope and a summary derived from it.
    let page = index
        .search(pb::SearchRequest {
            q: "glass".into(),
            sort: pb::SearchSort::PriceAsc as i32,
            limit: 1,
            ..Default::default()
        })
        .await
        .expect("search")
        .into_inner();
    assert_eq!(page.total, 2);
    assert_eq!(page.hits.len(), 1);
    assert!(!page.next_cursor.is_empty());
    let hit = &page.hits[0];
    let opened = souk_protocol::open(&hit.envelope, &souk_protocol::ValidationContext::now())
        .expect("a hit's envelope verifies");
    assert_eq!(hit.id, opened.id().as_bytes().to_vec());
    let summary = hit.summary.as_ref().expect("summary");
    assert_eq!(summary.seller, store_key.public_key().as_bytes().to_vec());
    assert!(summary.title.starts_with("Glass"));
    let facets: BTreeMap<_, _> = page.facets.iter().map(|f| (f.name.as_str(), f)).collect();
    assert_eq!(
        facets.keys().copied().collect::<Vec<_>>(),
        ["category", "condition", "currency", "type"]
    );
    let second = index
        .search(pb::SearchRequest {
            q: "glass".into(),
            sort: pb::SearchSort::PriceAsc as i32,
            limit: 1,
            cursor: page.next_cursor.clone(),
            ..Default::default()
        })
        .await
        .expect("second page")
        .into_inner();
    assert_eq!(second.hits.len(), 1);
    assert_ne!(second.hits[0].id, hit.id);
    assert!(second.next_cursor.is_empty(), "the last page has no cursor");

    // GetListing.
    let got = index
        .get_listing(pb::GetListingRequest {
            id: vase.id().as_bytes().to_vec(),
        })
        .await
        .expect("get listing")
        .into_inner();
    assert!(got.current);
    assert_eq!(
        got.listing.expect("listing").envelope,
        vase.envelope().bytes()
    );

    // GetProfile.
    let got = index
        .get_profile(pb::GetProfileRequest {
            person: store_key.public_key().as_bytes().to_vec(),
        })
        .await
        .expect("get profile")
        .into_inner();
    assert_eq!(got.envelope, envelopes[0].envelope().bytes());

    // ListModerators, cheapest first, paged.
    let first = index
        .list_moderators(pb::ListModeratorsRequest {
            language: "de".into(),
            limit: 2,
            ..Default::default()
        })
        .await
        .expect("moderators")
        .into_inner();
    assert_eq!(first.profiles.len(), 2);
    assert!(!first.next_cursor.is_empty());
    let rest = index
        .list_moderators(pb::ListModeratorsRequest {
            language: "de".into(),
            limit: 2,
            cursor: first.next_cursor.clone(),
            ..Default::default()
        })
        .await
        .expect("moderators, page 2")
        .into_inner();
    assert_eq!(rest.profiles.len(), 1);
    assert!(rest.next_cursor.is_empty());
    let order: Vec<Vec<u8>> = first.profiles.into_iter().chain(rest.profiles).collect();
    let expected: Vec<Vec<u8>> = envelopes[4..]
        .iter()
        .map(|o| o.envelope().bytes().to_vec())
        .collect();
    assert_eq!(order, expected, "cheapest first, every moderator once");
    let cheap = index
        .list_moderators(pb::ListModeratorsRequest {
            max_fee_bp: Some(100),
            ..Default::default()
        })
        .await
        .expect("moderators under 1 %")
        .into_inner();
    assert_eq!(cheap.profiles.len(), 1);

    // GetRatings.
    let ratings = index
        .get_ratings(pb::GetRatingsRequest {
            subject: store_key.public_key().as_bytes().to_vec(),
            ..Default::default()
        })
        .await
        .expect("ratings")
        .into_inner();
    let seller_aggregate = ratings.seller.expect("seller aggregate");
    assert_eq!(seller_aggregate.count, 1);
    assert!((seller_aggregate.overall - 5.0).abs() < f64::EPSILON);
    assert_eq!(ratings.moderator.expect("moderator aggregate").count, 0);
    assert_eq!(
        ratings.ratings,
        vec![envelopes[3].envelope().bytes().to_vec()]
    );
    assert_eq!(ratings.roles, vec![pb::RatingRole::Seller as i32]);

    // The same objects over REST.
    let body = s.ratings(&store_key.public_key()).await;
    assert_eq!(body["ratings"][0], b64(envelopes[3].envelope().bytes()));
    grpc.stop().await.expect("clean stop");
});

/// `SearchParams` (as parsed from a query line) → the gRPC request a client would send. The
/// proto enums' names are the REST values upper-cased under a prefix.
fn request_for(p: &SearchParams) -> pb::SearchRequest {
    let name = |prefix: &str, value: Option<&str>| {
        value.map(|v| format!("{prefix}_{}", v.to_ascii_uppercase()))
    };
    let sort = p.sort.map(|s| serde_json::to_value(s).expect("sort"));
    pb::SearchRequest {
        q: p.q.clone().unwrap_or_default(),
        category: p.category.clone().unwrap_or_default(),
        r#type: name("LISTING_TYPE", p.kind.as_deref())
            .map(|n| pb::ListingType::from_str_name(&n).expect("a type of the schema"))
            .unwrap_or_default() as i32,
        condition: name("CONDITION", p.condition.as_deref())
            .map(|n| pb::Condition::from_str_name(&n).expect("a condition of the schema"))
            .unwrap_or_default() as i32,
        currency: p.currency.clone().unwrap_or_default(),
        price_min: p.price_min,
        price_max: p.price_max,
        ships_to: p.ships_to.clone().unwrap_or_default(),
        seller: Vec::new(),
        min_rating: p.min_rating,
        moderated: p.moderated,
        nsfw: p.nsfw.unwrap_or(false),
        sort: name("SEARCH_SORT", sort.as_ref().and_then(|v| v.as_str()))
            .map(|n| pb::SearchSort::from_str_name(&n).expect("a sort of the schema"))
            .unwrap_or_default() as i32,
        limit: p
            .limit
            .map_or(0, |l| u32::try_from(l).expect("small limit")),
        cursor: p.cursor.clone().unwrap_or_default(),
    }
}

both!(
    the_query_mix_finds_the_same_over_rest_and_grpc,
    |s: TestServer| async move {
        let args = souk_server::config::DemoArgs {
            listings: 400,
            stores: 12,
            seed: 3,
        };
        let now = now();
        let mut envelopes: Vec<Vec<u8>> = souk_server::demo::profiles(&args, now)
            .iter()
            .map(|o| o.envelope().bytes().to_vec())
            .collect();
        envelopes.extend(
            souk_server::demo::listings(&args, now, 0..args.listings)
                .iter()
                .map(|o| o.envelope().bytes().to_vec()),
        );
        let results = s.state.ingestor.ingest(envelopes).await.expect("ingest");
        assert!(
            results
                .iter()
                .all(|r| matches!(r, souk_server::ingest::IngestResult::Accepted { .. }))
        );
        let grpc = s.grpc().await;
        let mut index = IndexServiceClient::new(grpc.channel().await);
        let lines = include_str!("../benches/queries.txt")
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'));
        let mut compared = 0;
        let mut found = 0;
        for line in lines {
            let params: SearchParams = serde_urlencoded::from_str(line).expect("query line");
            let pairs: Vec<(String, String)> =
                serde_urlencoded::from_str(line).expect("query pairs");
            let rest = s
                .search(&serde_urlencoded::to_string(&pairs).expect("encoded query"))
                .await;
            let grpc_page = index
                .search(request_for(&params))
                .await
                .unwrap_or_else(|e| panic!("{line}: {e:?}"))
                .into_inner();
            let rest_ids: Vec<String> = rest["hits"]
                .as_array()
                .expect("hits")
                .iter()
                .map(|h| h["id"].as_str().expect("id").to_string())
                .collect();
            let grpc_ids: Vec<String> = grpc_page
                .hits
                .iter()
                .map(|h| {
                    ObjectId(<[u8; 32]>::try_from(h.id.as_slice()).expect("32 bytes")).to_string()
                })
                .collect();
            assert_eq!(
                grpc_ids, rest_ids,
                "{line}: the same hits in the same order"
            );
            assert_eq!(
                Some(grpc_page.total),
                rest["total"].as_u64(),
                "{line}: the same total"
            );
            let rest_facets: BTreeMap<String, BTreeMap<String, u64>> =
                serde_json::from_value(rest["facets"].clone()).expect("facets");
            let grpc_facets: BTreeMap<String, BTreeMap<String, u64>> = grpc_page
                .facets
                .iter()
                .map(|f| (f.name.clone(), f.counts.clone().into_iter().collect()))
                .collect();
            assert_eq!(grpc_facets, rest_facets, "{line}: the same facets");
            assert_eq!(
                Some(grpc_page.next_cursor.as_str()),
                rest["next_cursor"].as_str().or(Some("")),
                "{line}: the same cursor"
            );
            compared += 1;
            found += usize::from(grpc_page.total > 0);
        }
        assert!(compared >= 20, "the whole mix ran ({compared} queries)");
        assert!(
            found >= compared / 2,
            "most queries find something ({found} of {compared})"
        );
    }
);

both!(
    publishing_reports_each_envelope_and_stores_nothing_invalid,
    |s: TestServer| async move {
        let grpc = s.grpc().await;
        let channel = grpc.channel().await;
        let key = seller(30);
        let old = listing(&key, "lamp", "Desk lamp", 120);
        let new = listing(&key, "lamp", "Desk lamp, brass", 60);
        let mut forged = listing(&key, "chair", "Chair", 30)
            .envelope()
            .bytes()
            .to_vec();
        let last = forged.len() - 1;
        forged[last] ^= 1;
        let envelopes = vec![
            new.envelope().bytes().to_vec(),
            new.envelope().bytes().to_vec(),
            old.envelope().bytes().to_vec(),
            b"not an envelope".to_vec(),
            forged.clone(),
            vec![7u8; souk_protocol::limits::MAX_ENVELOPE_BYTES + 1],
        ];
        let results = publish(&channel, envelopes.clone()).await;
        let got = outcomes(&results);
        assert_eq!(
            got,
            [
                (pb::PublishStatus::Accepted, ""),
                (pb::PublishStatus::Duplicate, ""),
                (pb::PublishStatus::Stale, ""),
                (pb::PublishStatus::Rejected, "envelope_malformed"),
                (pb::PublishStatus::Rejected, "bad_signature"),
                (pb::PublishStatus::Rejected, "envelope_too_large"),
            ]
        );
        for (result, envelope) in results.iter().zip(&envelopes) {
            assert_eq!(result.id, ObjectId::of(envelope).as_bytes().to_vec());
        }
        assert!(results[0].seq > 0);
        assert_eq!(
            results[2].message,
            new.id().to_string(),
            "stale names the current"
        );
        let counts = s.state.store.counts().await.expect("counts");
        assert_eq!(counts.envelopes, 1, "only the valid envelope is stored");
        let mut index = IndexServiceClient::new(channel.clone());
        assert_status(
            index
                .get_listing(pb::GetListingRequest {
                    id: ObjectId::of(&forged).as_bytes().to_vec(),
                })
                .await,
            Code::NotFound,
            "not_found",
        );
    }
);

both!(
    ratings_need_the_rated_partys_permit_and_count_per_role,
    |s: TestServer| async move {
        let grpc = s.grpc().await;
        let channel = grpc.channel().await;
        let judge = seller(60);
        let buyer = seller(61);
        let stranger = seller(62);
        let as_seller = seller_rating(&judge, &buyer, 60, 5, 60);
        let as_moderator = moderator_rating(&judge, &buyer, 61, 2, 4);
        // The judge's permit for `buyer`, used by another key.
        let borrowed = unchecked_rating(
            &stranger,
            &samples::rating(now() - 30, [62; 32], &judge, &buyer.public_key()),
        );
        let results = publish(
            &channel,
            vec![
                as_seller.envelope().bytes().to_vec(),
                as_moderator.envelope().bytes().to_vec(),
                borrowed,
            ],
        )
        .await;
        let got = outcomes(&results);
        assert_eq!(
            got,
            [
                (pb::PublishStatus::Accepted, ""),
                (pb::PublishStatus::Accepted, ""),
                (pb::PublishStatus::Rejected, "bad_rating_proof"),
            ]
        );
        let ratings = IndexServiceClient::new(channel.clone())
            .get_ratings(pb::GetRatingsRequest {
                subject: judge.public_key().as_bytes().to_vec(),
                ..Default::default()
            })
            .await
            .expect("ratings")
            .into_inner();
        let seller_aggregate = ratings.seller.expect("seller aggregate");
        let moderator_aggregate = ratings.moderator.expect("moderator aggregate");
        assert_eq!(
            (seller_aggregate.count, seller_aggregate.overall),
            (1, 5.0),
            "the moderator's rating is not counted as a sale"
        );
        assert_eq!(
            (
                moderator_aggregate.count,
                moderator_aggregate.overall,
                moderator_aggregate.service
            ),
            (1, 2.0, 4.0)
        );
        assert_eq!(
            ratings.roles,
            [
                pb::RatingRole::Moderator as i32,
                pb::RatingRole::Seller as i32
            ],
            "newest first"
        );
        assert!(ratings.next_cursor.is_empty(), "one page holds both");
        // The same ratings a page of one at a time, through the cursor.
        let page = |cursor: String| {
            let mut index = IndexServiceClient::new(channel.clone());
            let subject = judge.public_key().as_bytes().to_vec();
            async move {
                index
                    .get_ratings(pb::GetRatingsRequest {
                        subject,
                        limit: 1,
                        cursor,
                    })
                    .await
                    .expect("a page of ratings")
                    .into_inner()
            }
        };
        let first = page(String::new()).await;
        assert_eq!(first.ratings, ratings.ratings[..1]);
        assert_eq!(first.roles, ratings.roles[..1]);
        assert!(!first.next_cursor.is_empty());
        let second = page(first.next_cursor).await;
        assert_eq!(second.ratings, ratings.ratings[1..]);
        assert_eq!(second.roles, ratings.roles[1..]);
        assert!(second.next_cursor.is_empty(), "the last page");
        assert_status(
            IndexServiceClient::new(channel.clone())
                .get_ratings(pb::GetRatingsRequest {
                    subject: judge.public_key().as_bytes().to_vec(),
                    limit: 1,
                    cursor: "not-a-cursor".into(),
                })
                .await,
            Code::InvalidArgument,
            "invalid_parameter",
        );
        // ListModerators carries each moderator's ratings as a moderator beside its profile.
        let mut profile = samples::profile(now() - 5);
        assert!(
            profile.moderator.is_some(),
            "the sample profile offers moderation"
        );
        profile.store_name = "Judge".into();
        let profile = seal(&judge, Object::Profile(profile));
        let results = publish(&channel, vec![profile.envelope().bytes().to_vec()]).await;
        assert_eq!(status_of(&results[0]), pb::PublishStatus::Accepted);
        let listed = IndexServiceClient::new(channel.clone())
            .list_moderators(pb::ListModeratorsRequest::default())
            .await
            .expect("moderators")
            .into_inner();
        assert_eq!(listed.profiles, [profile.envelope().bytes().to_vec()]);
        let judged: Vec<(u64, f64)> = listed
            .ratings
            .iter()
            .map(|r| (r.count, r.overall))
            .collect();
        assert_eq!(judged, [(1, 2.0)], "as a moderator, not as a seller");
        grpc.stop().await.expect("clean stop");
    }
);

both!(
    bad_input_gets_the_right_status,
    |s: TestServer| async move {
        let grpc = s.grpc().await;
        let channel = grpc.channel().await;
        let mut index = IndexServiceClient::new(channel.clone());
        let mut feed = FeedServiceClient::new(channel.clone());
        assert_status(
            index
                .get_listing(pb::GetListingRequest { id: vec![1; 5] })
                .await,
            Code::InvalidArgument,
            "invalid_parameter",
        );
        assert_status(
            index
                .get_listing(pb::GetListingRequest { id: vec![1; 32] })
                .await,
            Code::NotFound,
            "not_found",
        );
        assert_status(
            index
                .get_profile(pb::GetProfileRequest {
                    person: seller(40).public_key().as_bytes().to_vec(),
                })
                .await,
            Code::NotFound,
            "not_found",
        );
        assert_status(
            index
                .get_ratings(pb::GetRatingsRequest {
                    subject: vec![9; 3],
                    ..Default::default()
                })
                .await,
            Code::InvalidArgument,
            "invalid_parameter",
        );
        for request in [
            pb::SearchRequest {
                currency: "EURO".into(),
                ..Default::default()
            },
            pb::SearchRequest {
                min_rating: Some(6.0),
                ..Default::default()
            },
            pb::SearchRequest {
                limit: 101,
                ..Default::default()
            },
            pb::SearchRequest {
                cursor: "nope".into(),
                ..Default::default()
            },
            pb::SearchRequest {
                r#type: 99,
                ..Default::default()
            },
            pb::SearchRequest {
                seller: vec![1; 31],
                ..Default::default()
            },
            pb::SearchRequest {
                q: "x".repeat(501),
                ..Default::default()
            },
        ] {
            assert_status(
                index.search(request).await,
                Code::InvalidArgument,
                "invalid_parameter",
            );
        }
        assert_status(
            index
                .list_moderators(pb::ListModeratorsRequest {
                    language: "no spaces".into(),
                    ..Default::default()
                })
                .await,
            Code::InvalidArgument,
            "invalid_parameter",
        );
        for request in [
            pb::SubscribeRequest {
                kinds: vec![0],
                ..Default::default()
            },
            pb::SubscribeRequest {
                kinds: vec![42],
                ..Default::default()
            },
            pb::SubscribeRequest {
                signers: vec![vec![0; 12]],
                ..Default::default()
            },
            pb::SubscribeRequest {
                categories: vec!["Not A Path!".into()],
                ..Default::default()
            },
            pb::SubscribeRequest {
                since: "yesterday".into(),
                ..Default::default()
            },
            pb::SubscribeRequest {
                q: "y".repeat(600),
                ..Default::default()
            },
        ] {
            assert_status(
                feed.subscribe(request).await,
                Code::InvalidArgument,
                "invalid_parameter",
            );
        }
    }
);

/// A listing of `key` in `category`.
fn in_category(key: &souk_protocol::IdentityKey, slug: &str, category: &str) -> Vec<u8> {
    listing_with(key, slug, |l| {
        l.title = format!("Item {slug}");
        l.category = category.into();
    })
    .envelope()
    .bytes()
    .to_vec()
}

/// Reads `count` events (or up to the end of the stream) from a subscription.
async fn take(stream: &mut tonic::Streaming<pb::FeedEvent>, count: usize) -> Vec<pb::FeedEvent> {
    let mut out = Vec::new();
    while out.len() < count {
        match tokio::time::timeout(Duration::from_secs(60), stream.message()).await {
            Ok(Ok(Some(event))) => out.push(event),
            Ok(Ok(None)) => break,
            Ok(Err(status)) => panic!("feed failed: {status:?}"),
            Err(_) => panic!("no feed event within 60 s ({} so far)", out.len()),
        }
    }
    out
}

both!(
    a_feed_resumed_from_its_last_cursor_delivers_each_envelope_once_in_order,
    |s: TestServer| async move {
        let grpc = s.grpc().await;
        let channel = grpc.channel().await;
        let kitchen = seller(50);
        let garden = seller(51);
        // Stored before the subscriber connects: part of its backlog.
        let early: Vec<Vec<u8>> = (0..20)
            .map(|i| in_category(&kitchen, &format!("early-{i}"), "home/kitchen"))
            .collect();
        publish(&channel, early).await;

        let filter = pb::SubscribeRequest {
            kinds: vec![pb::Kind::Listing as i32],
            categories: vec!["home/kitchen".into()],
            ..Default::default()
        };
        let mut feed = FeedServiceClient::new(channel.clone());
        let mut stream = feed
            .subscribe(filter.clone())
            .await
            .expect("subscribe")
            .into_inner();
        let backlog = take(&mut stream, 20).await;
        assert!(backlog.iter().all(|e| !e.live), "the backlog is not live");

        // Another client publishes 1,000 envelopes while the subscriber is connected: listings
        // in the followed category and outside it, and profiles (another kind).
        let mut batch = Vec::new();
        for i in 0..1_000 {
            batch.push(match i % 4 {
                0 | 1 => in_category(&kitchen, &format!("pot-{i}"), "home/kitchen/pots"),
                2 => in_category(&garden, &format!("rake-{i}"), "garden"),
                _ => profile(&seller(u8::try_from(60 + i % 150).expect("small")), |p| {
                    p.created_at = now() - 1_000 + i;
                })
                .envelope()
                .bytes()
                .to_vec(),
            });
        }
        let publisher = {
            let channel = channel.clone();
            tokio::spawn(async move { publish(&channel, batch).await })
        };

        // Cut the subscriber off half-way.
        let mut received: Vec<pb::FeedEvent> = backlog;
        received.extend(take(&mut stream, 250).await);
        drop(stream);
        let last = received.last().expect("events").cursor.clone();

        let results = publisher.await.expect("publisher");
        assert_eq!(results.len(), 1_000);

        // Resume from the last cursor received.
        let mut resumed = feed
            .subscribe(pb::SubscribeRequest {
                since: last,
                ..filter
            })
            .await
            .expect("resume")
            .into_inner();
        let expected_total = 20 + 500;
        let more = take(&mut resumed, expected_total - received.len()).await;
        received.extend(more);

        // What the filter should let through, in ingest order, from the store itself.
        let mut expected = Vec::new();
        let mut after = 0;
        loop {
            let page = s.state.store.since(after, 1_000).await.expect("since");
            let Some((seq, _)) = page.last() else { break };
            after = *seq;
            for (seq, bytes) in page {
                let (envelope, object) = souk_server::store::decode_stored(&bytes).expect("stored");
                if let Object::Listing(l) = object
                    && l.category.starts_with("home/kitchen")
                {
                    expected.push((seq.to_string(), envelope.id().as_bytes().to_vec()));
                }
            }
        }
        assert_eq!(expected.len(), expected_total);
        let got: Vec<(String, Vec<u8>)> = received
            .iter()
            .map(|e| (e.cursor.clone(), e.id.clone()))
            .collect();
        assert_eq!(
            got, expected,
            "each matching envelope exactly once, in ingest order, nothing else"
        );
        assert!(
            received.iter().all(|e| e.kind == pb::Kind::Listing as i32
                && ObjectId::of(&e.envelope).as_bytes().as_slice() == e.id),
            "every event carries its envelope"
        );
        // Nothing more is pending for the resumed subscriber.
        assert!(
            tokio::time::timeout(Duration::from_millis(300), resumed.message())
                .await
                .is_err(),
            "no extra event"
        );
    }
);

both!(
    live_events_follow_the_backlog_and_shutdown_ends_the_feed,
    |s: TestServer| async move {
        let grpc = s.grpc().await;
        let channel = grpc.channel().await;
        let key = seller(70);
        publish(
            &channel,
            vec![
                listing(&key, "first", "First", 30)
                    .envelope()
                    .bytes()
                    .to_vec(),
            ],
        )
        .await;
        let mut stream = FeedServiceClient::new(channel.clone())
            .subscribe(pb::SubscribeRequest {
                signers: vec![key.public_key().as_bytes().to_vec()],
                q: "brass lam".into(),
                ..Default::default()
            })
            .await
            .expect("subscribe")
            .into_inner();
        // "First" does not match the text; these do (the last word as a prefix) or do not.
        let matching = listing(&key, "lamp", "Brass lamp", 20);
        publish(
            &channel,
            vec![
                listing(&key, "vase", "Brass vase", 20)
                    .envelope()
                    .bytes()
                    .to_vec(),
                matching.envelope().bytes().to_vec(),
                listing(&seller(71), "lamp", "Brass lamp", 20)
                    .envelope()
                    .bytes()
                    .to_vec(),
            ],
        )
        .await;
        let events = take(&mut stream, 1).await;
        assert_eq!(events[0].id, matching.id().as_bytes().to_vec());
        assert!(events[0].live, "the first event after the backlog is live");

        grpc.stop()
            .await
            .expect("the server stops with a feed open");
        match stream.message().await {
            Err(status) => {
                assert_eq!(status.code(), Code::Unavailable);
                assert_eq!(stable_code(&status), "shutting_down");
                assert!(
                    status.message().contains(&events[0].cursor),
                    "names the cursor to resume from: {status:?}"
                );
            }
            other => panic!("expected UNAVAILABLE, got {other:?}"),
        }
    }
);

fn slow_feeds(config: &mut Config) {
    config.grpc.feed_stall = Duration::from_secs(1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_too_slow_to_keep_up_is_ended_with_resource_exhausted() {
    let s = TestServer::start_with(Backend::Sqlite, slow_feeds).await;
    let grpc = s.grpc().await;
    let key = seller(80);
    let envelopes: Vec<Vec<u8>> = (0..1_500)
        .map(|i| {
            listing_with(&key, &format!("bulky-{i}"), |l| {
                l.description = "A long description. ".repeat(40);
            })
            .envelope()
            .bytes()
            .to_vec()
        })
        .collect();
    let results = s.state.ingestor.ingest(envelopes).await.expect("ingest");
    assert_eq!(results.len(), 1_500);
    // A client with small HTTP/2 windows that does not read for a while.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", grpc.addr))
        .expect("endpoint")
        .initial_stream_window_size(Some(16 * 1024))
        .initial_connection_window_size(Some(16 * 1024))
        .connect()
        .await
        .expect("connect");
    let mut stream = FeedServiceClient::new(channel)
        .subscribe(pb::SubscribeRequest::default())
        .await
        .expect("subscribe")
        .into_inner();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut received = Vec::new();
    let ended = loop {
        match tokio::time::timeout(Duration::from_secs(30), stream.message()).await {
            Ok(Ok(Some(event))) => received.push(event),
            Ok(Ok(None)) => panic!("the stream ended without a status"),
            Ok(Err(status)) => break status,
            Err(_) => panic!("stuck after {} events", received.len()),
        }
    };
    assert_eq!(ended.code(), Code::ResourceExhausted, "{ended:?}");
    assert_eq!(stable_code(&ended), "subscriber_too_slow");
    let last = received.last().expect("some events came first");
    assert!(
        ended
            .message()
            .contains(&format!("since = \"{}\"", last.cursor)),
        "the status names the last cursor delivered: {ended:?}"
    );
    assert!(received.len() < 1_500, "ended before the end");
    // Resuming from there delivers the rest, none twice.
    let mut resumed = FeedServiceClient::new(grpc.channel().await)
        .subscribe(pb::SubscribeRequest {
            since: last.cursor.clone(),
            ..Default::default()
        })
        .await
        .expect("resume")
        .into_inner();
    let rest = take(&mut resumed, 1_500 - received.len()).await;
    let mut seen: Vec<String> = received
        .iter()
        .chain(&rest)
        .map(|e| e.cursor.clone())
        .collect();
    let total = seen.len();
    seen.dedup();
    assert_eq!((total, seen.len()), (1_500, 1_500));
}

fn small_limits(config: &mut Config) {
    config.max_body_bytes = 256 * 1024;
    config.rate_limit_per_second = 1;
    config.rate_limit_burst = 3;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_messages_and_floods_are_refused() {
    let s = TestServer::start_with(Backend::Sqlite, small_limits).await;
    let grpc = s.grpc().await;
    let channel = grpc.channel().await;
    let mut index = IndexServiceClient::new(channel.clone());
    // A unary request over the message limit.
    assert_status(
        index
            .search(pb::SearchRequest {
                q: "z".repeat(300 * 1024),
                ..Default::default()
            })
            .await,
        Code::ResourceExhausted,
        "message_too_large",
    );
    // A streamed envelope over the message limit ends the stream; nothing is stored.
    let huge = pb::PublishRequest {
        envelope: vec![1; 300 * 1024],
    };
    let mut results = IngestServiceClient::new(channel.clone())
        .publish(futures::stream::iter([huge]))
        .await
        .expect("publish")
        .into_inner();
    let ended = match results.message().await {
        Ok(Some(result)) => panic!("no result expected: {result:?}"),
        Ok(None) => panic!("expected RESOURCE_EXHAUSTED"),
        Err(status) => status,
    };
    assert_eq!(ended.code(), Code::ResourceExhausted, "{ended:?}");
    assert_eq!(stable_code(&ended), "message_too_large");
    assert_eq!(s.state.store.counts().await.expect("counts").envelopes, 0);
    // The fourth call within a second from one address is refused (burst 3, 1 a second).
    let mut refused = None;
    for _ in 0..6 {
        if let Err(status) = index
            .get_ratings(pb::GetRatingsRequest {
                subject: seller(1).public_key().as_bytes().to_vec(),
                ..Default::default()
            })
            .await
        {
            refused = Some(status);
            break;
        }
    }
    let refused = refused.expect("a flood is refused");
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert_eq!(stable_code(&refused), "rate_limited");
}

fn with_tls(config: &mut Config) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tls");
    config.grpc.tls = Some((dir.join("server.pem"), dir.join("server.key")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_over_tls_with_health_checks() {
    let s = TestServer::start_with(Backend::Sqlite, with_tls).await;
    let grpc = s.grpc().await;
    let ca = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tls/ca.pem"),
    )
    .expect("test CA");
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(ca))
        .domain_name("localhost");
    let channel = tonic::transport::Endpoint::from_shared(format!("https://{}", grpc.addr))
        .expect("endpoint")
        .tls_config(tls)
        .expect("tls config")
        .connect()
        .await
        .expect("a TLS connection");
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    for service in [
        "souk.v1.IndexService",
        "souk.v1.IngestService",
        "souk.v1.FeedService",
    ] {
        let answer = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health check")
            .into_inner();
        assert_eq!(
            answer.status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
            "{service}"
        );
    }
    let page = IndexServiceClient::new(channel)
        .search(pb::SearchRequest::default())
        .await
        .expect("search over TLS")
        .into_inner();
    assert_eq!(page.total, 0);
    // Plaintext to a TLS port fails.
    let plain = tonic::transport::Endpoint::from_shared(format!("http://{}", grpc.addr))
        .expect("endpoint")
        .connect()
        .await;
    if let Ok(plain) = plain {
        assert!(
            IndexServiceClient::new(plain)
                .search(pb::SearchRequest::default())
                .await
                .is_err()
        );
    }
}
