//! Choosing a moderator: the moderators a listing accepts, each with its signed offer (fee,
//! languages, terms) and its ratings, every rating verified on the device.
//!
//! Index servers count ratings for us, but a count is not signed by anyone. What is signed is
//! each rating: by the order's rating key, with the rated party's permit. So the core fetches
//! the ratings themselves and aggregates only those that open here (signature, id, validation,
//! and the permit — `souk_protocol::open` checks it), one per order; the server's own count is
//! kept beside it, so an app can show when the two differ.

use std::collections::HashMap;

use base64::Engine as _;
use serde::Deserialize;
use souk_protocol::{Object, PublicKey, ValidationContext, pb};

use crate::client::{Client, on_runtime, parse_server};
use crate::drafts::ModeratorOffer;
use crate::error::ClientError;
use crate::verify::VerifiedListing;

/// A person's ratings in one role, aggregated on the device from ratings it verified.
#[derive(Debug, Clone, PartialEq, serde::Serialize, uniffi::Record)]
pub struct VerifiedRatings {
    /// Ratings that verified here (one per order, the newest kept).
    pub count: u64,
    /// Their average overall score (0 without ratings).
    pub overall: f64,
    /// Their average service score.
    pub service: f64,
    /// How many ratings the server says it holds (unverified: a server may hold more than it
    /// sends, up to 100 are sent).
    pub server_count: u64,
    /// Ratings the server sent that did not verify, or were not of this person.
    pub refused: u64,
    /// The newest reviews' texts (up to 5), from verified ratings.
    pub reviews: Vec<String>,
}

/// A moderator a buyer can choose for a listing.
#[derive(Debug, Clone, PartialEq, serde::Serialize, uniffi::Record)]
pub struct ModeratorChoice {
    /// The moderator's address.
    pub address: String,
    /// Its store name.
    pub name: String,
    /// Its offer as it signed it (fee, languages, terms, escrow xpub).
    pub offer: ModeratorOffer,
    /// Its ratings as a moderator, verified here.
    pub ratings: VerifiedRatings,
    /// Its signed profile: the `moderator_profile` of an `OrderDraft`.
    #[serde(serialize_with = "crate::base64_bytes")]
    pub profile: Vec<u8>,
}

#[derive(Debug, Deserialize)]
struct RatingsJson {
    moderator: CountJson,
    seller: CountJson,
    ratings: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct CountJson {
    count: i64,
}

/// Aggregates the ratings of `subject` in `role` from envelopes a server sent, keeping those
/// that verify (one per order, the newest).
fn aggregate(
    envelopes: &[String],
    subject: &PublicKey,
    role: pb::RatingRole,
    server_count: u64,
    ctx: &ValidationContext,
) -> VerifiedRatings {
    let mut by_order: HashMap<Vec<u8>, pb::Rating> = HashMap::new();
    let mut refused = 0;
    for text in envelopes {
        let rating = base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .ok()
            .and_then(|bytes| souk_protocol::open(&bytes, ctx).ok())
            .and_then(|opened| match opened.object() {
                Object::Rating(r) if r.subject.as_slice() == subject.as_bytes() => Some(r.clone()),
                _ => None,
            });
        match rating {
            // The same person's ratings in its other role come in the same answer: not ours
            // to count, and nothing wrong with them.
            Some(r) if r.role != role as i32 => {}
            Some(r) => {
                let keep = by_order
                    .get(&r.order_id)
                    .is_none_or(|old| old.created_at < r.created_at);
                if keep {
                    by_order.insert(r.order_id.clone(), r);
                }
            }
            None => refused += 1,
        }
    }
    let mut ratings: Vec<pb::Rating> = by_order.into_values().collect();
    ratings.sort_by_key(|r| std::cmp::Reverse(r.created_at));
    let count = ratings.len() as u64;
    let average = |score: fn(&pb::Rating) -> u32| {
        if ratings.is_empty() {
            0.0
        } else {
            ratings.iter().map(|r| f64::from(score(r))).sum::<f64>() / ratings.len() as f64
        }
    };
    VerifiedRatings {
        count,
        overall: average(|r| r.overall),
        service: average(|r| r.service),
        server_count,
        refused,
        reviews: ratings
            .iter()
            .filter(|r| !r.review.is_empty())
            .take(5)
            .map(|r| r.review.clone())
            .collect(),
    }
}

#[uniffi::export]
impl Client {
    /// The ratings of `person` as a moderator (`moderator` true) or as a seller, from the first
    /// configured server that answers, each rating verified here (see the module docs).
    ///
    /// # Errors
    /// [`ClientError::InvalidArgument`] for a bad address; [`ClientError`] when no server
    /// answers.
    pub async fn verified_ratings(
        &self,
        person: String,
        moderator: bool,
    ) -> Result<VerifiedRatings, ClientError> {
        let client = self.handle();
        on_runtime(async move { client.verified_ratings_here(&person, moderator).await }).await
    }

    /// The moderators `listing` accepts that a buyer can choose: each one's signed profile with
    /// a moderator offer that can take escrow (it has an escrow xpub), and its verified ratings
    /// as a moderator; best rated first, then cheapest percentage. Accepted moderators without
    /// a profile on the servers, or without such an offer, are left out.
    ///
    /// # Errors
    /// [`ClientError`] when the servers cannot be asked.
    pub async fn moderators_for_listing(
        &self,
        listing: VerifiedListing,
    ) -> Result<Vec<ModeratorChoice>, ClientError> {
        let mut choices = Vec::new();
        for address in &listing.listing.accepted_moderators {
            let store = match self.get_store(address.clone()).await {
                Ok(store) => store,
                Err(ClientError::NotFound { .. }) => continue,
                Err(other) => return Err(other),
            };
            let Some(offer) = store.profile.moderator.clone() else {
                continue;
            };
            // A seller moderating its own sale would hold two of the three escrow keys.
            if offer.escrow_xpub.is_empty() || store.seller == listing.seller {
                continue;
            }
            let ratings = self.verified_ratings(store.seller.clone(), true).await?;
            choices.push(ModeratorChoice {
                address: store.seller,
                name: store.profile.store_name,
                offer,
                ratings,
                profile: store.envelope,
            });
        }
        choices.sort_by(|a, b| {
            b.ratings
                .overall
                .total_cmp(&a.ratings.overall)
                .then(a.offer.fee_percentage_bp.cmp(&b.offer.fee_percentage_bp))
        });
        Ok(choices)
    }
}

impl Client {
    async fn verified_ratings_here(
        &self,
        person: &str,
        moderator: bool,
    ) -> Result<VerifiedRatings, ClientError> {
        let key = person
            .trim()
            .parse::<PublicKey>()
            .map_err(|_| ClientError::InvalidArgument {
                name: "person".into(),
                reason: "must be a souk1… address or 64 hex digits".into(),
            })?;
        let role = if moderator {
            pb::RatingRole::Moderator
        } else {
            pb::RatingRole::Seller
        };
        let mut last = None;
        for server in self.servers() {
            let url = parse_server(&server)?;
            let endpoint = Self::url(&url, &format!("api/v1/ratings/{}", key.to_hex()))?;
            match self
                .call::<RatingsJson>(&url, self.http().get(endpoint))
                .await
            {
                Ok(body) => {
                    let claimed = if moderator {
                        body.moderator.count
                    } else {
                        body.seller.count
                    };
                    return Ok(aggregate(
                        &body.ratings,
                        &key,
                        role,
                        u64::try_from(claimed).unwrap_or(0),
                        &ValidationContext::now(),
                    ));
                }
                Err(error) if error.is_server_fault() => last = Some(error),
                Err(error) => return Err(error),
            }
        }
        Err(last.unwrap_or(ClientError::NoServers))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use souk_protocol::{IdentityKey, samples};

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    /// A moderator rating of `subject` for order `[order; 32]`, signed by that order's rating
    /// key with the subject's permit.
    fn rating(subject: &IdentityKey, order: u8, at: u64, overall: u32) -> String {
        let rater = IdentityKey::from_secret_bytes(&[order.wrapping_add(100); 32]);
        let order_id = [order; 32];
        let mut r = samples::rating(at, order_id, subject, &rater.public_key());
        r.role = pb::RatingRole::Moderator as i32;
        r.proof = Some(subject.sign_rating_permit(
            &order_id,
            &rater.public_key(),
            pb::RatingRole::Moderator,
        ));
        r.overall = overall;
        r.service = overall;
        r.quality = 0;
        r.description = 0;
        r.delivery = 0;
        let ctx = ValidationContext::at(at);
        let sealed = rater.seal(&Object::Rating(r), &ctx).expect("valid rating");
        b64(sealed.envelope().bytes())
    }

    #[test]
    fn only_ratings_that_verify_count_and_each_order_counts_once() {
        let moderator = IdentityKey::from_secret_bytes(&[1; 32]);
        let other = IdentityKey::from_secret_bytes(&[2; 32]);
        let t = samples::SAMPLE_TIME;
        let mut tampered = rating(&moderator, 4, t, 5);
        // Flip a character in the middle of the base64: the signature no longer verifies.
        let middle = tampered.len() / 2;
        let flipped = if tampered.as_bytes()[middle] == b'A' {
            "B"
        } else {
            "A"
        };
        tampered.replace_range(middle..=middle, flipped);
        let envelopes = vec![
            rating(&moderator, 1, t, 5),
            rating(&moderator, 2, t, 2),
            // The same order rated again later: the newer rating replaces the older.
            rating(&moderator, 2, t + 60, 4),
            // Someone else's rating, and one that was altered.
            rating(&other, 3, t, 1),
            tampered,
            "not base64 at all".into(),
        ];
        let got = aggregate(
            &envelopes,
            &moderator.public_key(),
            pb::RatingRole::Moderator,
            9,
            &ValidationContext::at(t + 100),
        );
        assert_eq!(got.count, 2);
        assert!((got.overall - 4.5).abs() < 1e-9, "{got:?}");
        assert_eq!(got.refused, 3);
        assert_eq!(got.server_count, 9);
        // As a seller the same ratings count for nothing.
        let as_seller = aggregate(
            &envelopes,
            &moderator.public_key(),
            pb::RatingRole::Seller,
            0,
            &ValidationContext::at(t + 100),
        );
        assert_eq!(as_seller.count, 0);
        assert_eq!(
            as_seller.refused, 3,
            "other-role ratings are skipped, not refused"
        );
    }
}
