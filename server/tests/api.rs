//! The REST API as a specification, against SQLite and PostgreSQL alike.

mod common;

use axum::http::StatusCode;
use common::*;
use prost::Message;
use souk_protocol::{IdentityKey, Kind, Object, RawEnvelope, pb, samples};

both!(
    a_published_listing_is_stored_searchable_and_readable,
    |s: TestServer| async move {
        let key = seller(1);
        let mug = listing(&key, "blue-mug", "Blue stoneware mug", 60);
        let (status, body) = s.publish(&mug).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body["results"][0]["status"], "accepted");
        assert_eq!(body["results"][0]["id"], mug.id().to_string());

        assert_eq!(s.titles("q=stoneware").await, ["Blue stoneware mug"]);
        let (status, body) = s.get(&format!("/api/v1/listings/{}", mug.id())).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["current"], true);
        assert_eq!(
            body["envelope"],
            b64(mug.envelope().bytes()),
            "the exact signed bytes come back"
        );
        let (status, body) = s
            .get(&format!(
                "/api/v1/stores/{}/listings/blue-mug",
                key.public_key()
            ))
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["summary"]["title"], "Blue stoneware mug");
        assert_eq!(body["summary"]["seller"], key.public_key().to_address());
    }
);

both!(
    the_same_envelope_twice_is_stored_once,
    |s: TestServer| async move {
        let mug = listing(&seller(1), "mug", "Mug", 60);
        assert_eq!(s.publish(&mug).await.0, StatusCode::CREATED);
        let (status, body) = s.publish(&mug).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["results"][0]["status"], "duplicate");
        assert_eq!(s.state.store.counts().await.expect("counts").envelopes, 1);
    }
);

both!(
    envelopes_are_found_by_id_before_and_after_their_ids_are_merged,
    |s: TestServer| async move {
        // A new envelope's id goes to a small table of recent ids; every `ID_MERGE_INTERVAL`
        // envelopes (or when `merge_recent_ids` is called) the recent ids move into the large
        // table. Every read by id looks in both: duplicates, a listing by id, search hits,
        // ratings and moderators.
        let shop = seller(21);
        let old = listing(&shop, "old-lamp", "Old brass lamp", 60);
        let old_rating = seller_rating(&shop, &seller(23), 1, 5, 50);
        let judge = profile(&seller(22), |p| p.store_name = "Merged judge".into());
        for object in [&old, &old_rating, &judge] {
            assert_eq!(s.publish(object).await.0, StatusCode::CREATED);
        }
        assert_eq!(s.state.store.merge_recent_ids().await.expect("merge"), 3);
        let new = listing(&shop, "new-lamp", "New brass lamp", 30);
        let new_rating = seller_rating(&shop, &seller(24), 2, 3, 20);
        for object in [&new, &new_rating] {
            assert_eq!(s.publish(object).await.0, StatusCode::CREATED);
        }
        for (round, moves) in [("three merged, two recent", 2), ("all merged", 0)] {
            for object in [&old, &old_rating, &judge, &new, &new_rating] {
                let (status, body) = s.publish(object).await;
                assert_eq!(status, StatusCode::OK, "{round}: {body}");
                assert_eq!(body["results"][0]["status"], "duplicate", "{round}");
            }
            for lamp in [&old, &new] {
                let (status, body) = s.get(&format!("/api/v1/listings/{}", lamp.id())).await;
                assert_eq!(status, StatusCode::OK, "{round}: {body}");
                assert_eq!(body["envelope"], b64(lamp.envelope().bytes()), "{round}");
            }
            let hits = s.search("q=brass&sort=newest").await;
            let envelopes: Vec<&str> = hits["hits"]
                .as_array()
                .expect("hits")
                .iter()
                .filter_map(|hit| hit["envelope"].as_str())
                .collect();
            let expected = [b64(new.envelope().bytes()), b64(old.envelope().bytes())];
            assert_eq!(envelopes, expected, "{round}");
            let ratings = s.ratings(&shop.public_key()).await;
            assert_eq!(ratings["seller"]["count"], 2, "{round}");
            assert_eq!(
                ratings["ratings"].as_array().map(Vec::len),
                Some(2),
                "{round}"
            );
            let (_, moderators) = s.get("/api/v1/moderators").await;
            assert_eq!(
                moderators["moderators"][0]["name"], "Merged judge",
                "{round}"
            );
            assert_eq!(
                s.state.store.merge_recent_ids().await.expect("merge"),
                moves,
                "{round}"
            );
        }
        assert_eq!(s.state.store.counts().await.expect("counts").envelopes, 5);
    }
);

both!(
    protobuf_bodies_are_accepted_single_and_batched,
    |s: TestServer| async move {
        let key = seller(2);
        let one = listing(&key, "one", "First", 60);
        let (status, _) = s
            .post("application/x-protobuf", one.envelope().bytes().to_vec())
            .await;
        assert_eq!(status, StatusCode::CREATED);
        let batch = souk_server::api::envelopes::EnvelopeBatch {
            envelopes: vec![
                listing(&key, "two", "Second", 60)
                    .envelope()
                    .bytes()
                    .to_vec(),
                b"garbage".to_vec(),
                one.envelope().bytes().to_vec(),
            ],
        };
        let (status, body) = s
            .post(
                souk_server::api::envelopes::BATCH_CONTENT_TYPE,
                batch.encode_to_vec(),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let statuses: Vec<&str> = body["results"]
            .as_array()
            .expect("results")
            .iter()
            .map(|r| r["status"].as_str().expect("s"))
            .collect();
        assert_eq!(statuses, ["accepted", "rejected", "duplicate"]);
        assert_eq!(body["results"][1]["error"]["code"], "envelope_malformed");
        assert_eq!(
            (
                body["accepted"].as_u64(),
                body["rejected"].as_u64(),
                body["duplicates"].as_u64()
            ),
            (Some(1), Some(1), Some(1))
        );
    }
);

both!(
    bad_input_gets_a_clear_error_and_stores_nothing,
    |s: TestServer| async move {
        let key = seller(3);
        let good = listing(&key, "good", "Good", 60);
        let mut forged = pb::Envelope::decode(good.envelope().bytes()).expect("decodes");
        forged.signature[3] ^= 1;
        let mut long_title = samples::listing(now() - 60, "long", None);
        long_title.title = "x".repeat(201);
        let invalid =
            RawEnvelope::sign_unchecked(&key, Kind::Listing as i32, long_title.encode_to_vec());
        let mut unknown_kind = pb::Envelope::decode(good.envelope().bytes()).expect("decodes");
        unknown_kind.kind = 42;
        // The signature left as it was, the listing under it changed: the price lowered.
        let mut altered = pb::Envelope::decode(good.envelope().bytes()).expect("decodes");
        let mut cheaper = pb::Listing::decode(altered.payload.as_slice()).expect("a listing");
        cheaper.title = "Good, and cheap".into();
        altered.payload = cheaper.encode_to_vec();
        let cases: Vec<(Vec<u8>, StatusCode, &str)> = vec![
            (
                b"\xff\xfe garbage".to_vec(),
                StatusCode::BAD_REQUEST,
                "envelope_malformed",
            ),
            (
                forged.encode_to_vec(),
                StatusCode::UNPROCESSABLE_ENTITY,
                "bad_signature",
            ),
            (
                altered.encode_to_vec(),
                StatusCode::UNPROCESSABLE_ENTITY,
                "bad_signature",
            ),
            (invalid, StatusCode::UNPROCESSABLE_ENTITY, "too_long"),
            (
                unknown_kind.encode_to_vec(),
                StatusCode::BAD_REQUEST,
                "unknown_kind",
            ),
            (
                vec![0u8; 70_000],
                StatusCode::PAYLOAD_TOO_LARGE,
                "envelope_too_large",
            ),
        ];
        for (bytes, status, code) in cases {
            let (got, body) = s.publish_bytes(&bytes).await;
            assert_eq!(
                (got, body["error"]["code"].as_str()),
                (status, Some(code)),
                "{body}"
            );
        }
        let (status, body) = s
            .post("application/json", b"{\"envelope\": \"***\"}".to_vec())
            .await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_base64"))
        );
        let (status, body) = s.post("application/json", b"{\"nope\": 1}".to_vec()).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_json"))
        );
        let (status, body) = s.post("text/plain", b"hello".to_vec()).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                Some("unsupported_media_type")
            )
        );
        let too_many: Vec<Vec<u8>> = (0..1_001)
            .map(|_| good.envelope().bytes().to_vec())
            .collect();
        let (status, body) = s.publish_batch(&too_many).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::PAYLOAD_TOO_LARGE, Some("batch_too_large"))
        );
        let over = s.state.config.max_body_bytes + 1;
        let (status, body) = s.post("application/x-protobuf", vec![0u8; over]).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::PAYLOAD_TOO_LARGE, Some("body_too_large")),
            "{body}"
        );
        assert_eq!(
            s.state.store.counts().await.expect("counts").envelopes,
            0,
            "nothing was stored"
        );
        assert_eq!(s.search("").await["total"], 0);

        // Refused input never touches what was accepted: a forged newer version of a stored
        // listing leaves the stored one current and searchable, unchanged.
        let (status, body) = s.publish(&good).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let newer = listing(&key, "good", "Good, and cheap", 5);
        let mut forged_newer = pb::Envelope::decode(newer.envelope().bytes()).expect("decodes");
        forged_newer.signature[0] ^= 0x80;
        let (status, body) = s.publish_bytes(&forged_newer.encode_to_vec()).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("bad_signature"))
        );
        let (status, body) = s.get(&format!("/api/v1/listings/{}", good.id())).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["current"], true);
        let found = s.search("q=good").await;
        assert_eq!(found["total"], 1);
        assert_eq!(found["hits"][0]["id"], good.id().to_string());
        assert_eq!(found["hits"][0]["summary"]["title"], "Good");
        assert_eq!(s.search("q=cheap").await["total"], 0);
        assert_eq!(
            s.state.store.counts().await.expect("counts").envelopes,
            1,
            "only the genuine listing is stored"
        );

        // In a batch, an envelope whose base64 cannot be read is refused alone, in its place.
        let other = listing(&key, "other", "Other", 50);
        let batch = serde_json::json!({ "envelopes": ["***", b64(other.envelope().bytes())] });
        let (status, body) = s
            .post("application/json", batch.to_string().into_bytes())
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(
            (
                body["results"][0]["status"].as_str(),
                body["results"][0]["error"]["code"].as_str(),
                body["results"][1]["status"].as_str(),
                body["rejected"].as_u64(),
                body["accepted"].as_u64(),
            ),
            (
                Some("rejected"),
                Some("invalid_base64"),
                Some("accepted"),
                Some(1),
                Some(1)
            ),
            "{body}"
        );

        // A path or method no route serves gets the same JSON error shape.
        let (status, body) = s.get("/api/v1/no-such-thing").await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::NOT_FOUND, Some("not_found")),
            "{body}"
        );
        let (status, body) = s.get("/api/v1/envelopes").await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::METHOD_NOT_ALLOWED, Some("method_not_allowed")),
            "{body}"
        );
    }
);

both!(
    a_newer_version_replaces_and_an_older_one_is_stale,
    |s: TestServer| async move {
        let key = seller(4);
        let old = listing(&key, "lamp", "Brass lamp", 600);
        let new = listing(&key, "lamp", "Brass lamp, rewired", 300);
        assert_eq!(s.publish(&new).await.0, StatusCode::CREATED);
        let (status, body) = s.publish(&old).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::CONFLICT, Some("stale"))
        );
        assert_eq!(
            body["error"]["current"],
            new.id().to_string(),
            "the 409 names the version that stays current in a field of its own: {body}"
        );
        assert_eq!(s.titles("q=lamp").await, ["Brass lamp, rewired"]);
        let newest = listing(&key, "lamp", "Brass lamp, polished", 100);
        assert_eq!(s.publish(&newest).await.0, StatusCode::CREATED);
        assert_eq!(s.titles("q=lamp").await, ["Brass lamp, polished"]);
        let (_, body) = s.get(&format!("/api/v1/listings/{}", new.id())).await;
        assert_eq!(
            body["current"], false,
            "replaced versions stay readable by id but are not current"
        );
    }
);

both!(
    a_tombstone_withdraws_and_blocks_older_republication,
    |s: TestServer| async move {
        let key = seller(5);
        let chair = listing(&key, "chair", "Oak chair", 600);
        assert_eq!(s.publish(&chair).await.0, StatusCode::CREATED);
        assert_eq!(
            s.publish(&tombstone(&key, "chair", 300)).await.0,
            StatusCode::CREATED
        );
        assert_eq!(s.search("q=chair").await["total"], 0);
        let (status, _) = s
            .get(&format!(
                "/api/v1/stores/{}/listings/chair",
                key.public_key()
            ))
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        // Re-publishing the old version (or any version from before the withdrawal) is refused.
        assert_eq!(
            s.publish(&listing(&key, "chair", "Oak chair again", 400))
                .await
                .0,
            StatusCode::CONFLICT
        );
        // A listing made after the withdrawal puts it back.
        assert_eq!(
            s.publish(&listing(&key, "chair", "Oak chair, restored", 100))
                .await
                .0,
            StatusCode::CREATED
        );
        assert_eq!(s.titles("q=chair").await, ["Oak chair, restored"]);
    }
);

both!(
    search_filters_sorts_and_facets,
    |s: TestServer| async move {
        let (a, b) = (seller(6), seller(7));
        let moderator = seller(8).public_key();
        let items = [
            listing_with(&a, "mug", |l| {
                l.title = "Blue mug".into();
                l.price = Some(pb::Price {
                    amount: 1_500,
                    currency: "EUR".into(),
                    divisibility: 2,
                });
            }),
            listing_with(&a, "teapot", |l| {
                l.title = "Green teapot".into();
                l.category = "home/kitchen/teaware".into();
                l.price = Some(pb::Price {
                    amount: 4_000,
                    currency: "EUR".into(),
                    divisibility: 2,
                });
                l.accepted_moderators = vec![moderator.as_bytes().to_vec()];
            }),
            listing_with(&b, "phone", |l| {
                l.title = "Used phone".into();
                l.category = "electronics/phones".into();
                l.condition = pb::Condition::UsedGood as i32;
                l.price = Some(pb::Price {
                    amount: 200_000,
                    currency: "BTC".into(),
                    divisibility: 8,
                });
                l.shipping[0].regions = vec!["US".into()];
                l.shipping.truncate(1);
            }),
            listing_with(&b, "song", |l| {
                *l = samples::digital_listing(now() - 5, "song");
                l.title = "Song download".into();
            }),
            listing_with(&b, "secret", |l| {
                l.title = "Adult mug".into();
                l.nsfw = true;
            }),
        ];
        let bytes: Vec<Vec<u8>> = items
            .iter()
            .map(|o| o.envelope().bytes().to_vec())
            .collect();
        let (status, body) = s.publish_batch(&bytes).await;
        assert_eq!(
            (status, body["accepted"].as_u64()),
            (StatusCode::OK, Some(5)),
            "{body}"
        );

        assert_eq!(
            s.search("").await["total"],
            4,
            "browsing hides NSFW by default"
        );
        assert_eq!(s.search("nsfw=true").await["total"], 5);
        assert_eq!(s.titles("q=mug").await, ["Blue mug"]);
        assert_eq!(
            s.titles("q=te").await,
            ["Green teapot"],
            "the last word matches as a prefix"
        );
        assert_eq!(
            s.titles("category=home/kitchen&sort=price_asc").await,
            ["Blue mug", "Green teapot"]
        );
        assert_eq!(
            s.titles("category=home&sort=price_desc").await,
            ["Green teapot", "Blue mug"]
        );
        assert_eq!(s.titles("type=digital").await, ["Song download"]);
        assert_eq!(s.titles("condition=used_good").await, ["Used phone"]);
        assert_eq!(s.titles("currency=btc&type=physical").await, ["Used phone"]);
        assert_eq!(
            s.titles("currency=EUR&price_min=20&price_max=50").await,
            ["Green teapot"]
        );
        // Prices sort by their normalised value (0.002 BTC < 15 EUR): compare within one currency.
        assert_eq!(
            s.titles("ships_to=US&type=physical&sort=price_asc").await,
            ["Used phone", "Blue mug", "Green teapot"],
            "ALL ships everywhere"
        );
        assert_eq!(
            s.titles("ships_to=FR&type=physical&sort=price_asc").await,
            ["Blue mug", "Green teapot"]
        );
        assert_eq!(s.titles("moderated=true").await, ["Green teapot"]);
        assert_eq!(
            s.titles(&format!("seller={}&sort=newest", a.public_key()))
                .await
                .len(),
            2
        );
        let facets = &s.search("").await["facets"];
        assert_eq!(facets["type"]["physical"], 3);
        assert_eq!(facets["type"]["digital"], 1);
        assert_eq!(facets["category"]["home"], 2);
        assert_eq!(facets["currency"]["EUR"], 2);
        assert_eq!(
            s.search("category=home").await["facets"]["category"]["home/kitchen"],
            2,
            "category facets go one level down"
        );
    }
);

both!(
    cursors_page_through_every_hit_exactly_once,
    |s: TestServer| async move {
        let key = seller(9);
        let bytes: Vec<Vec<u8>> = (0..23)
            .map(|i| {
                listing(&key, &format!("item-{i}"), &format!("Item {i}"), 100 + i)
                    .envelope()
                    .bytes()
                    .to_vec()
            })
            .collect();
        assert_eq!(s.publish_batch(&bytes).await.1["accepted"], 23);
        let mut seen = Vec::new();
        let mut query = "limit=5&sort=newest".to_string();
        for _ in 0..10 {
            let page = s.search(&query).await;
            assert_eq!(page["total"], 23);
            seen.extend(
                page["hits"]
                    .as_array()
                    .expect("hits")
                    .iter()
                    .map(|h| h["id"].as_str().expect("id").to_string()),
            );
            match page["next_cursor"].as_str() {
                Some(cursor) => query = format!("limit=5&sort=newest&cursor={cursor}"),
                None => break,
            }
        }
        let mut unique = seen.clone();
        unique.sort();
        unique.dedup();
        assert_eq!((seen.len(), unique.len()), (23, 23));
    }
);

both!(
    bad_search_parameters_are_refused_not_ignored,
    |s: TestServer| async move {
        let cases = [
            ("colour=blue", "unknown_parameter"),
            ("facets=brand", "unknown_parameter"),
            ("type=car", "invalid_parameter"),
            ("condition=mint", "invalid_parameter"),
            ("currency=EURO", "invalid_parameter"),
            ("ships_to=Germany", "invalid_parameter"),
            ("price_min=-1", "invalid_parameter"),
            ("price_min=9&price_max=1", "invalid_parameter"),
            ("min_rating=6", "invalid_parameter"),
            ("seller=alice", "invalid_parameter"),
            ("limit=0", "invalid_parameter"),
            ("sort=cheapest", "invalid_parameter"),
            ("cursor=zzz", "invalid_parameter"),
            ("moderated=maybe", "invalid_parameter"),
        ];
        for (query, code) in cases {
            let (status, body) = s.get(&format!("/api/v1/listings/search?{query}")).await;
            assert_eq!(
                (status, body["error"]["code"].as_str()),
                (StatusCode::BAD_REQUEST, Some(code)),
                "{query}: {body}"
            );
        }
    }
);

both!(
    stores_moderators_and_ratings_are_readable,
    |s: TestServer| async move {
        let store_key = seller(10);
        let moderator_key = seller(11);
        let buyer_rating_key = seller(12);
        assert_eq!(
            s.publish(&profile(&store_key, |p| {
                p.store_name = "Plain shop".into();
                p.moderator = None;
            }))
            .await
            .0,
            StatusCode::CREATED
        );
        assert_eq!(
            s.publish(&profile(&moderator_key, |p| p.store_name = "Fair judge".into()))
                .await
                .0,
            StatusCode::CREATED
        );
        assert_eq!(
            s.publish(&listing(&store_key, "vase", "Glass vase", 60))
                .await
                .0,
            StatusCode::CREATED
        );

        let (status, body) = s
            .get(&format!("/api/v1/stores/{}", store_key.public_key()))
            .await;
        assert_eq!(
            (status, body["store_name"].as_str()),
            (StatusCode::OK, Some("Plain shop"))
        );
        let (_, body) = s
            .get(&format!(
                "/api/v1/stores/{}/listings",
                store_key.public_key()
            ))
            .await;
        assert_eq!(body["hits"].as_array().map(Vec::len), Some(1));

        // A language range matches its tag and the tag's subtags (RFC 4647), no other.
        let regional = seller(15);
        assert_eq!(
            s.publish(&profile(&regional, |p| {
                p.store_name = "Vienna judge".into();
                if let Some(offer) = p.moderator.as_mut() {
                    offer.languages = vec!["de-AT".into()];
                    if let Some(fee) = offer.fee.as_mut() {
                        fee.percentage_bp = 900;
                    }
                }
            }))
            .await
            .0,
            StatusCode::CREATED
        );
        let names = |body: &serde_json::Value| -> Vec<String> {
            body["moderators"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|m| m["name"].as_str().map(String::from))
                .collect()
        };
        let (_, body) = s.get("/api/v1/moderators?language=de").await;
        assert_eq!(names(&body), ["Fair judge", "Vienna judge"]);
        let (_, body) = s.get("/api/v1/moderators?language=de-at").await;
        assert_eq!(names(&body), ["Vienna judge"]);
        let (_, body) = s.get("/api/v1/moderators?language=d").await;
        assert_eq!(
            names(&body),
            Vec::<String>::new(),
            "no match on a bare prefix"
        );
        let (_, body) = s.get("/api/v1/moderators?language=de&max_fee_bp=500").await;
        assert_eq!(body["moderators"].as_array().map(Vec::len), Some(1));
        assert_eq!(body["moderators"][0]["name"], "Fair judge");
        assert_eq!(body["moderators"][0]["fee_percentage_bp"], 150);
        assert!(body["next_cursor"].is_null(), "one page: {body}");
        assert_eq!(
            s.get("/api/v1/moderators?language=fr").await.1["moderators"]
                .as_array()
                .map(Vec::len),
            Some(0)
        );
        assert_eq!(
            s.get("/api/v1/moderators?max_fee_bp=100").await.1["moderators"]
                .as_array()
                .map(Vec::len),
            Some(0)
        );

        let rating = samples::rating(
            now() - 5,
            [4; 32],
            &store_key,
            &buyer_rating_key.public_key(),
        );
        assert_eq!(
            s.publish(&seal(&buyer_rating_key, Object::Rating(rating)))
                .await
                .0,
            StatusCode::CREATED
        );
        let body = s.ratings(&store_key.public_key()).await;
        assert_eq!(body["seller"]["count"], 1);
        assert_eq!(body["seller"]["overall"], 5.0);
        assert_eq!(body["ratings"].as_array().map(Vec::len), Some(1));
        assert_eq!(
            s.titles("min_rating=4.5").await,
            ["Glass vase"],
            "the seller's new rating reaches the index"
        );
        assert_eq!(
            s.get(&format!("/api/v1/stores/{}", seller(99).public_key()))
                .await
                .0,
            StatusCode::NOT_FOUND
        );
    }
);

both!(
    a_rating_without_the_rated_partys_permit_is_refused_and_not_counted,
    |s: TestServer| async move {
        let shop = seller(20);
        let impostor = seller(21);
        let buyer = seller(22);
        let stranger = seller(23);
        assert_eq!(
            s.publish(&seller_rating(&shop, &buyer, 20, 4, 60)).await.0,
            StatusCode::CREATED,
            "one honest rating, so that the count to keep is not zero"
        );
        let rating = |order: u8, permit: &IdentityKey| {
            samples::rating(now() - 30, [order; 32], permit, &buyer.public_key())
        };
        let about_the_shop = |mut r: pb::Rating| {
            r.subject = shop.public_key().as_bytes().to_vec();
            r
        };
        let signed_by_someone_else = about_the_shop(rating(21, &impostor));
        let mut someone_elses_signature_under_the_shops_name = rating(22, &impostor);
        if let Some(proof) = someone_elses_signature_under_the_shops_name.proof.as_mut() {
            proof.permit_signer = shop.public_key().as_bytes().to_vec();
        }
        let someone_elses_signature_under_the_shops_name =
            about_the_shop(someone_elses_signature_under_the_shops_name);
        let mut moderator_permit_on_a_seller_rating = rating(24, &shop);
        moderator_permit_on_a_seller_rating.proof = Some(shop.sign_rating_permit(
            &[24; 32],
            &buyer.public_key(),
            pb::RatingRole::Moderator,
        ));
        let mut seller_permit_on_a_moderator_rating = rating(25, &shop);
        seller_permit_on_a_moderator_rating.role = pb::RatingRole::Moderator as i32;
        seller_permit_on_a_moderator_rating.quality = 0;
        seller_permit_on_a_moderator_rating.description = 0;
        seller_permit_on_a_moderator_rating.delivery = 0;
        let mut permit_for_another_order = rating(26, &shop);
        permit_for_another_order.order_id = [27; 32].to_vec();
        let mut not_a_signature = rating(28, &shop);
        if let Some(proof) = not_a_signature.proof.as_mut() {
            proof.permit_signature = vec![7; 64];
        }
        let mut no_permit = rating(29, &shop);
        no_permit.proof = None;

        let cases = [
            (
                "a permit signed by someone other than the rated seller",
                &buyer,
                signed_by_someone_else,
                "bad_rating_proof",
            ),
            (
                "someone else's signature under the seller's key",
                &buyer,
                someone_elses_signature_under_the_shops_name,
                "bad_rating_proof",
            ),
            (
                "the seller's permit names another rating key",
                &stranger,
                rating(23, &shop),
                "bad_rating_proof",
            ),
            (
                "a moderator permit on a seller rating",
                &buyer,
                moderator_permit_on_a_seller_rating,
                "bad_rating_proof",
            ),
            (
                "a seller permit on a moderator rating",
                &buyer,
                seller_permit_on_a_moderator_rating,
                "bad_rating_proof",
            ),
            (
                "a permit for another order",
                &buyer,
                permit_for_another_order,
                "bad_rating_proof",
            ),
            (
                "64 bytes that are no signature",
                &buyer,
                not_a_signature,
                "bad_rating_proof",
            ),
            // Validation runs before the permit check: an absent permit is a missing field.
            ("no permit at all", &buyer, no_permit, "missing_field"),
        ];
        for (what, key, rating, code) in cases {
            let (status, body) = s.publish_bytes(&unchecked_rating(key, &rating)).await;
            assert_eq!(
                (status, body["error"]["code"].as_str()),
                (StatusCode::UNPROCESSABLE_ENTITY, Some(code)),
                "{what}: {body}"
            );
        }

        let body = s.ratings(&shop.public_key()).await;
        assert_eq!(
            (
                body["seller"]["count"].as_i64(),
                body["seller"]["overall"].as_f64(),
                body["moderator"]["count"].as_i64(),
                body["ratings"].as_array().map(Vec::len),
            ),
            (Some(1), Some(4.0), Some(0), Some(1)),
            "only the honest rating counts: {body}"
        );
        assert_eq!(s.state.store.counts().await.expect("counts").ratings, 1);
    }
);

both!(
    search_sorts_and_filters_by_each_sellers_average_rating,
    |s: TestServer| async move {
        let (good, middling, poor, unrated) = (seller(30), seller(31), seller(32), seller(33));
        for (key, title) in [
            (&good, "Alpha lamp"),
            (&middling, "Beta lamp"),
            (&unrated, "Delta lamp"),
        ] {
            assert_eq!(
                s.publish(&listing(key, "lamp", title, 60)).await.0,
                StatusCode::CREATED
            );
        }
        // Ratings re-rank the listings already indexed; a listing published after its seller's
        // ratings (Gamma) is indexed with them.
        let ratings = [
            (&good, 5),
            (&good, 5),
            (&middling, 4),
            (&middling, 3),
            (&poor, 2),
        ];
        for (n, (shop, overall)) in (0u8..).zip(ratings) {
            assert_eq!(
                s.publish(&seller_rating(shop, &seller(40 + n), 30 + n, overall, 30))
                    .await
                    .0,
                StatusCode::CREATED
            );
        }
        assert_eq!(
            s.publish(&listing(&poor, "lamp", "Gamma lamp", 20)).await.0,
            StatusCode::CREATED
        );

        assert_eq!(
            s.titles("sort=rating").await,
            ["Alpha lamp", "Beta lamp", "Gamma lamp", "Delta lamp"],
            "averages 5, 3.5, 2, and none"
        );
        assert_eq!(
            s.titles("sort=rating&min_rating=3.5").await,
            ["Alpha lamp", "Beta lamp"],
            "the threshold is inclusive"
        );
        assert_eq!(s.titles("sort=rating&min_rating=3.6").await, ["Alpha lamp"]);
        assert_eq!(
            s.titles("sort=rating&min_rating=1").await,
            ["Alpha lamp", "Beta lamp", "Gamma lamp"],
            "a seller nobody rated is below every threshold"
        );

        // A buyer revises a review: the new version replaces the old one in the average
        // (Beta: 4 and 1, 2.5).
        assert_eq!(
            s.publish(&seller_rating(&middling, &seller(43), 33, 1, 10))
                .await
                .0,
            StatusCode::CREATED
        );
        let body = s.ratings(&middling.public_key()).await;
        assert_eq!(
            (
                body["seller"]["count"].as_i64(),
                body["seller"]["overall"].as_f64()
            ),
            (Some(2), Some(2.5))
        );
        assert_eq!(
            s.titles("sort=rating").await,
            ["Alpha lamp", "Beta lamp", "Gamma lamp", "Delta lamp"]
        );
        assert_eq!(s.titles("sort=rating&min_rating=3").await, ["Alpha lamp"]);
        assert_eq!(
            s.titles("sort=rating&min_rating=2.5").await,
            ["Alpha lamp", "Beta lamp"]
        );
    }
);

both!(
    moderators_are_rated_on_their_decisions_apart_from_their_sales,
    |s: TestServer| async move {
        let judge = seller(50);
        assert_eq!(
            s.publish(&profile(&judge, |p| p.store_name = "Fair judge".into()))
                .await
                .0,
            StatusCode::CREATED
        );
        assert_eq!(
            s.publish(&listing(&judge, "gavel", "Oak gavel", 60))
                .await
                .0,
            StatusCode::CREATED
        );
        let (_, body) = s.get("/api/v1/moderators").await;
        assert_eq!(
            (
                body["moderators"][0]["name"].as_str(),
                body["moderators"][0]["ratings"]["count"].as_i64()
            ),
            (Some("Fair judge"), Some(0))
        );

        // Two buyers rate the disputes it decided, under the permits of its decisions.
        for (n, overall, service) in [(51, 4, 3), (52, 2, 5)] {
            assert_eq!(
                s.publish(&moderator_rating(&judge, &seller(n), n, overall, service))
                    .await
                    .0,
                StatusCode::CREATED
            );
        }
        let (_, body) = s.get("/api/v1/moderators").await;
        let ratings = &body["moderators"][0]["ratings"];
        assert_eq!(
            (
                ratings["count"].as_i64(),
                ratings["overall"].as_f64(),
                ratings["service"].as_f64(),
                ratings["quality"].as_f64(),
            ),
            (Some(2), Some(3.0), Some(4.0), Some(0.0)),
            "count and averages; a moderator has no item scores: {body}"
        );
        assert_eq!(
            s.titles("min_rating=1").await,
            Vec::<String>::new(),
            "ratings as moderator do not make a seller rating"
        );

        // One buyer rates it as a seller: each role keeps its own aggregate.
        assert_eq!(
            s.publish(&seller_rating(&judge, &seller(53), 53, 5, 20))
                .await
                .0,
            StatusCode::CREATED
        );
        let body = s.ratings(&judge.public_key()).await;
        assert_eq!(
            (
                body["seller"]["count"].as_i64(),
                body["seller"]["overall"].as_f64(),
                body["moderator"]["count"].as_i64(),
                body["moderator"]["overall"].as_f64(),
                body["ratings"].as_array().map(Vec::len),
            ),
            (Some(1), Some(5.0), Some(2), Some(3.0), Some(3)),
            "{body}"
        );
        assert!(body["next_cursor"].is_null(), "one page: {body}");
        // Pages of two: the same three ratings, newest first, each once.
        let path = format!("/api/v1/ratings/{}", judge.public_key());
        let (_, first) = s.get(&format!("{path}?limit=2")).await;
        let cursor = first["next_cursor"].as_str().expect("a next page");
        let (_, second) = s.get(&format!("{path}?limit=2&cursor={cursor}")).await;
        assert!(second["next_cursor"].is_null(), "{second}");
        let paged: Vec<&serde_json::Value> = [&first, &second]
            .iter()
            .flat_map(|page| page["ratings"].as_array().into_iter().flatten())
            .collect();
        let whole: Vec<&serde_json::Value> =
            body["ratings"].as_array().into_iter().flatten().collect();
        assert_eq!(paged, whole);
        let (status, refused) = s.get(&format!("{path}?page=2")).await;
        assert_eq!(
            (status, refused["error"]["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("unknown_parameter"))
        );
        let (_, body) = s.get("/api/v1/moderators").await;
        assert_eq!(
            (
                body["moderators"][0]["ratings"]["count"].as_i64(),
                body["moderators"][0]["ratings"]["overall"].as_f64()
            ),
            (Some(2), Some(3.0))
        );
        let (_, body) = s
            .get(&format!("/api/v1/stores/{}", judge.public_key()))
            .await;
        assert_eq!(body["seller_ratings"]["count"], 1);
        assert_eq!(
            s.titles("min_rating=4.5").await,
            ["Oak gavel"],
            "the seller average is 5, not diluted by the moderator's 3"
        );

        // Pages: two moderators one at a time, each once.
        assert_eq!(
            s.publish(&profile(&seller(54), |p| p.store_name = "Second judge".into()))
                .await
                .0,
            StatusCode::CREATED
        );
        let (_, first) = s.get("/api/v1/moderators?limit=1").await;
        let cursor = first["next_cursor"].as_str().expect("a next page");
        let (_, second) = s
            .get(&format!("/api/v1/moderators?limit=1&cursor={cursor}"))
            .await;
        assert!(second["next_cursor"].is_null(), "{second}");
        let mut names: Vec<&str> = [&first, &second]
            .iter()
            .flat_map(|page| page["moderators"].as_array().into_iter().flatten())
            .filter_map(|m| m["name"].as_str())
            .collect();
        names.sort_unstable();
        assert_eq!(names, ["Fair judge", "Second judge"]);
    }
);

both!(
    the_index_is_rebuilt_when_missing_and_catches_up_when_behind,
    |s: TestServer| async move {
        let key = seller(13);
        assert_eq!(
            s.publish(&listing(&key, "first", "First lantern", 60))
                .await
                .0,
            StatusCode::CREATED
        );
        let saved = tempfile::tempdir().expect("tmp");
        let s = s
            .restart_with(|dir| copy_dir(&dir.join("search"), saved.path()))
            .await;
        assert_eq!(
            s.publish(&listing(&key, "second", "Second lantern", 50))
                .await
                .0,
            StatusCode::CREATED
        );
        // Put back the index from before the second listing: it is behind the store.
        let s = s
            .restart_with(|dir| {
                let _ = std::fs::remove_dir_all(dir.join("search"));
                copy_dir(saved.path(), &dir.join("search"));
            })
            .await;
        assert_eq!(
            s.search("q=lantern").await["total"],
            2,
            "the lagging index replayed the store"
        );
        // Delete the index entirely: rebuilt from the store on start.
        let s = s
            .restart_with(|dir| {
                let _ = std::fs::remove_dir_all(dir.join("search"));
            })
            .await;
        assert_eq!(
            s.search("q=lantern").await["total"],
            2,
            "rebuilt from the store"
        );
        // Damage it: also rebuilt.
        let s = s
            .restart_with(|dir| {
                std::fs::write(dir.join("search/meta.json"), b"{ not json").expect("damage")
            })
            .await;
        assert_eq!(
            s.search("q=lantern").await["total"],
            2,
            "rebuilt after damage"
        );
    }
);

/// SQLite only: the test replaces the database file under a kept index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_ahead_of_the_store_is_emptied_and_rebuilt() {
    let s = TestServer::start(Backend::Sqlite).await;
    let key = seller(14);
    for (slug, title) in [("one", "Brass lamp"), ("two", "Brass bell")] {
        assert_eq!(
            s.publish(&listing(&key, slug, title, 60)).await.0,
            StatusCode::CREATED
        );
    }
    // A database with none of them (as after restoring a backup older than the index).
    let s = s
        .restart_with(|dir| {
            for file in ["souk.db", "souk.db-wal", "souk.db-shm"] {
                let _ = std::fs::remove_file(dir.join(file));
            }
        })
        .await;
    assert_eq!(
        s.search("q=brass").await["total"],
        0,
        "no listing the store does not hold is found"
    );
    assert_eq!(s.state.search.num_docs(), 0);
    assert_eq!(
        s.publish(&listing(&key, "three", "Brass tray", 30)).await.0,
        StatusCode::CREATED
    );
    assert_eq!(s.titles("q=brass").await, ["Brass tray"]);
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir").flatten() {
        if entry.file_name() == ".tantivy-writer.lock" {
            continue;
        }
        std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
    }
}

#[tokio::test]
async fn every_route_is_in_the_openapi_document() {
    let s = TestServer::start(Backend::Sqlite).await;
    let (status, doc) = s.get("/api/v1/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.1.0");
    let mut documented: Vec<String> = doc["paths"]
        .as_object()
        .expect("paths")
        .keys()
        .cloned()
        .collect();
    documented.sort();
    let mut routes = vec![
        "/api/v1/envelopes",
        "/api/v1/inbox",
        "/api/v1/inbox/{person}/ack",
        "/api/v1/inbox/{person}/challenge",
        "/api/v1/inbox/{person}/messages",
        "/api/v1/inbox/{person}/session",
        "/api/v1/listings/search",
        "/api/v1/listings/{id}",
        "/api/v1/moderators",
        "/api/v1/network",
        "/api/v1/network/inbox/{person}",
        "/api/v1/openapi.json",
        "/api/v1/ratings/{subject}",
        "/api/v1/status",
        "/api/v1/stores/{seller}",
        "/api/v1/stores/{seller}/listings",
        "/api/v1/stores/{seller}/listings/{slug}",
        "/healthz",
        "/metrics",
        "/ob/listings/search",
        "/ob/logo.svg",
        "/readyz",
    ];
    routes.sort_unstable();
    assert_eq!(documented, routes);
    // And every documented GET path answers (is routed), with its parameters filled in.
    let key = seller(1).public_key();
    for path in &documented {
        let concrete = path
            .replace("{id}", &"0".repeat(64))
            .replace("{seller}", &key.to_string())
            .replace("{subject}", &key.to_string())
            .replace("{person}", &key.to_string())
            .replace("{slug}", "x");
        if path == "/api/v1/envelopes" {
            let (status, _) = s.post("application/json", b"{}".to_vec()).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "POST is routed");
        } else if path.starts_with("/api/v1/inbox") {
            // Inbox routes are POSTs, or need a session; tests/inbox.rs covers them.
            let (status, _) = if path.ends_with("/messages") {
                s.get(&concrete).await
            } else {
                s.request(
                    axum::http::Request::post(concrete.as_str())
                        .header("content-type", "application/json")
                        .body(axum::body::Body::from("{}"))
                        .expect("request"),
                )
                .await
            };
            assert_ne!(status, StatusCode::NOT_FOUND, "{path} is routed");
            assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{path} is routed");
        } else {
            let (status, body) = s.get(&concrete).await;
            if path.starts_with("/api/v1/network") {
                // The test servers stay off the peer-to-peer network.
                if path.contains('{') {
                    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{path}");
                    assert_eq!(body["error"]["code"], "p2p_disabled");
                } else {
                    assert_eq!(status, StatusCode::OK);
                    assert_eq!(body["enabled"], false);
                }
                continue;
            }
            assert!(
                status == StatusCode::OK || status == StatusCode::NOT_FOUND && path.contains('{'),
                "{path}: {status}"
            );
        }
    }
}

#[tokio::test]
async fn health_readiness_metrics_and_status_answer() {
    let s = TestServer::start(Backend::Sqlite).await;
    assert_eq!(
        s.get("/healthz").await,
        (StatusCode::OK, serde_json::Value::String("ok".into()))
    );
    assert_eq!(s.get("/readyz").await.0, StatusCode::OK);
    assert_eq!(
        s.publish(&listing(&seller(1), "x", "Thing", 30)).await.0,
        StatusCode::CREATED
    );
    let (status, body) = s.get("/api/v1/status").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["counts"]["listings"], 1);
    assert_eq!(body["database"], "sqlite");
    let (status, metrics) = s.get("/metrics").await;
    assert_eq!(status, StatusCode::OK);
    let text = metrics.as_str().unwrap_or_default();
    assert!(text.contains("souk_ingest_total"), "{text}");
    assert!(text.contains("souk_store_listings"), "{text}");
    assert!(text.contains("souk_store_bytes"), "{text}");
    assert!(text.contains("souk_search_queue"), "{text}");
    assert!(
        text.contains("souk_search_seconds") || text.contains("souk_ingest_commit_seconds"),
        "{text}"
    );
}

both!(openbazaar_clients_can_search, |s: TestServer| async move {
    let key = seller(20);
    let (status, body) = s
        .publish(&profile(&key, |p| p.store_name = "Bazaar shop".into()))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let items = [
        listing_with(&key, "kettle", |l| l.title = "Copper kettle".into()),
        listing_with(&key, "song", |l| {
            *l = samples::digital_listing(now() - 5, "song");
            l.title = "Kettle song".into();
        }),
    ];
    let bytes: Vec<Vec<u8>> = items
        .iter()
        .map(|o| o.envelope().bytes().to_vec())
        .collect();
    let (status, body) = s.publish_batch(&bytes).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = s.get("/ob/listings/search?q=kettle&p=0&ps=1&sortBy=price-asc&acceptedCurrencies=BCH&acceptedCurrencies=BTC&network=mainnet").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["results"]["total"], 2);
    assert_eq!(body["results"]["morePages"], true);
    let first = &body["results"]["results"][0];
    assert_eq!(first["type"], "listing");
    assert_eq!(
        first["relationships"]["vendor"]["data"]["name"],
        "Bazaar shop"
    );
    assert_eq!(
        first["relationships"]["vendor"]["data"]["peerID"],
        key.public_key().to_address()
    );
    assert!(
        first["data"]["price"]["amount"].is_string(),
        "v5 price shape: amount as a string"
    );
    assert!(first["data"]["price"]["currency"]["divisibility"].is_u64());
    assert_eq!(body["sortBy"]["price-asc"]["selected"], true);
    assert!(body["options"]["type"]["options"].is_array());
    // Without a public URL the server cannot name itself: links are paths, and no logo.
    assert_eq!(body["links"]["listings"], "/ob/listings/search");
    assert_eq!(body["logo"], "");
    let (_, body) = s
        .get("/ob/listings/search?q=kettle&type=digital_good")
        .await;
    assert_eq!(
        body["results"]["results"][0]["data"]["contractType"],
        "DIGITAL_GOOD"
    );
    let (_, body) = s
        .get("/ob/listings/search?q=kettle&acceptedCurrencies=ZEC")
        .await;
    assert_eq!(body["results"]["total"], 0, "Souk takes BTC only");
    let (status, body) = s.get("/ob/listings/search?sortBy=cheapest").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["reason"]
            .as_str()
            .is_some_and(|r| r.contains("sortBy"))
    );
    let (status, body) = s.get("/ob/listings/search?colour=red").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["reason"].is_string());
    // Errors that no OpenBazaar handler answers (a path no route serves, a method the route
    // does not take) carry `reason` under /ob/ too, and the API's own shape elsewhere.
    let (status, body) = s.get("/ob/listings/searchh").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        body["reason"]
            .as_str()
            .is_some_and(|r| r.contains("/ob/listings/searchh")),
        "{body}"
    );
    assert!(body.get("error").is_none(), "{body}");
    let (status, body) = s
        .request(
            axum::http::Request::post("/ob/listings/search")
                .body(axum::body::Body::empty())
                .expect("request"),
        )
        .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(body["reason"].is_string(), "{body}");
    let (status, body) = s.get("/obx").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
});

/// With `--public-url`, the reply's links are URLs (OpenBazaar clients keep a provider's links
/// only when they are) and its logo is the server's own, which it serves.
#[tokio::test]
async fn openbazaar_clients_get_absolute_links_and_a_logo_with_a_public_url() {
    let s = TestServer::start_with(Backend::Sqlite, |config| {
        config.inbox.public_url = Some("https://souk.example.org".into());
        config.ob_logo_url = Some("https://souk.example.org/ob/logo.svg".into());
    })
    .await;
    let (status, body) = s.get("/ob/listings/search?q=kettle").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for link in ["self", "listings", "search"] {
        assert_eq!(
            body["links"][link], "https://souk.example.org/ob/listings/search",
            "{body}"
        );
    }
    assert_eq!(body["logo"], "https://souk.example.org/ob/logo.svg");
    let response = s
        .raw(
            axum::http::Request::get("/ob/logo.svg")
                .body(axum::body::Body::empty())
                .expect("request"),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers().get("content-type").map(|v| v.as_bytes()),
        Some(b"image/svg+xml".as_slice())
    );
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("body");
    let svg = String::from_utf8(bytes.to_vec()).expect("utf-8");
    assert!(
        svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
        "{svg}"
    );
}

both!(
    one_batch_is_decided_as_if_its_envelopes_came_one_by_one,
    |s: TestServer| async move {
        let key = seller(21);
        let old = listing(&key, "desk", "Desk", 600);
        let new = listing(&key, "desk", "Desk, sanded", 300);
        let withdrawn = tombstone(&key, "desk", 100);
        let batch: Vec<Vec<u8>> = [
            &old,
            &new,
            &old,
            &new,
            &withdrawn,
            &listing(&key, "desk", "Desk, too late", 200),
        ]
        .iter()
        .map(|o| o.envelope().bytes().to_vec())
        .collect();
        let (status, body) = s.publish_batch(&batch).await;
        assert_eq!(status, StatusCode::OK);
        let statuses: Vec<&str> = body["results"]
            .as_array()
            .expect("results")
            .iter()
            .map(|r| r["status"].as_str().expect("s"))
            .collect();
        assert_eq!(
            statuses,
            [
                "accepted",
                "accepted",
                "duplicate",
                "duplicate",
                "accepted",
                "stale"
            ]
        );
        let seqs: Vec<i64> = body["results"]
            .as_array()
            .expect("results")
            .iter()
            .filter_map(|r| r["seq"].as_i64())
            .collect();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "sequences grow: {seqs:?}"
        );
        assert_eq!(
            s.search("q=desk").await["total"],
            0,
            "the batch's last word was the withdrawal"
        );
        let counts = s.state.store.counts().await.expect("counts");
        assert_eq!(
            (counts.envelopes, counts.tombstones, counts.listings),
            (3, 1, 0)
        );
    }
);

both!(
    the_result_cache_never_hides_what_was_acknowledged,
    |s: TestServer| async move {
        let key = seller(9);
        // The same query before and after each change: the second answer must show the change
        // although the first one was cached.
        assert!(s.titles("q=quince").await.is_empty());
        let (status, _) = s
            .publish(&listing(&key, "quince-jam", "Quince jam", 60))
            .await;
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(s.titles("q=quince").await, vec!["Quince jam".to_string()]);
        let (status, _) = s
            .publish(&listing(&key, "quince-jam", "Quince jelly", 30))
            .await;
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(s.titles("q=quince").await, vec!["Quince jelly".to_string()]);
        let (status, _) = s.publish(&tombstone(&key, "quince-jam", 10)).await;
        assert_eq!(status, StatusCode::CREATED);
        assert!(s.titles("q=quince").await.is_empty());
    }
);

both!(
    concurrent_publishers_are_answered_only_once_their_listings_are_searchable,
    |s: TestServer| async move {
        // Six publishers, eight batches each, all in flight together: the ingest pipeline stores
        // one group while it indexes another and shares index commits between groups, yet every
        // publisher finds its listings the moment it is answered.
        let publisher = |p: u8| {
            let s = &s;
            async move {
                let key = seller(100 + p);
                for batch in 0..8u8 {
                    let envelopes: Vec<Vec<u8>> = (0..5u8)
                        .map(|i| {
                            let mut listing =
                                samples::listing(now() - 60, &format!("p{p}-b{batch}-i{i}"), None);
                            listing.title = format!("Kiln token zq{p}x{batch}y{i}");
                            seal(&key, Object::Listing(listing))
                                .envelope()
                                .bytes()
                                .to_vec()
                        })
                        .collect();
                    let (status, body) = s.publish_batch(&envelopes).await;
                    assert_eq!(status, StatusCode::OK, "{body}");
                    for i in 0..5u8 {
                        assert_eq!(
                            s.titles(&format!("q=zq{p}x{batch}y{i}")).await,
                            [format!("Kiln token zq{p}x{batch}y{i}")],
                            "acknowledged, so searchable"
                        );
                    }
                }
            }
        };
        futures::future::join_all((0..6).map(publisher)).await;
        assert_eq!(s.search("q=kiln&limit=1").await["total"], 240);
    }
);

both!(
    identical_searches_at_once_are_computed_once,
    |s: TestServer| async move {
        // Sixteen callers ask the same question at the same moment, as when a popular query's
        // cached second runs out: one computes, the others take its answer (no stampede).
        let key = seller(12);
        let envelopes: Vec<Vec<u8>> = (0..200)
            .map(|i| {
                listing(&key, &format!("mug-{i}"), &format!("Stoneware mug {i}"), 60)
                    .envelope()
                    .bytes()
                    .to_vec()
            })
            .collect();
        let (status, body) = s.publish_batch(&envelopes).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let query = souk_server::service::parse_search(
            serde_urlencoded::from_str("q=mug&sort=price_asc").expect("params"),
            now(),
        )
        .expect("query");
        let search = std::sync::Arc::clone(&s.state.search);
        let before = search.computations();
        let start = std::sync::Barrier::new(16);
        let answers: Vec<Vec<String>> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..16)
                .map(|_| {
                    scope.spawn(|| {
                        start.wait();
                        let found = search.search(&query).expect("search");
                        found.ids.iter().map(ToString::to_string).collect()
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().expect("no panic"))
                .collect()
        });
        assert_eq!(search.computations() - before, 1, "computed once");
        assert!(answers.iter().all(|a| a == &answers[0] && !a.is_empty()));
    }
);
