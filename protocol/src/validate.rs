//! The validation rules of SPEC.md, one function per kind.
//!
//! Validation is pure: the only outside input is the verifier's clock, passed in a
//! [`ValidationContext`]. Rules run in field order and the first broken rule is reported.

use std::collections::HashSet;
use std::hash::Hash;

use crate::ValidationError as E;
use crate::identity::PublicKey;
use crate::limits::*;
use crate::pb;

/// What validation needs from the outside world.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValidationContext {
    /// The verifier's current Unix time in seconds.
    pub now: u64,
}

impl ValidationContext {
    /// A context at the given Unix time.
    #[must_use]
    pub fn at(now: u64) -> Self {
        Self { now }
    }

    /// A context at the system clock's current time.
    #[must_use]
    pub fn now() -> Self {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Self { now }
    }
}

type Result<T = ()> = core::result::Result<T, E>;

pub(crate) fn profile(p: &pb::Profile, ctx: &ValidationContext) -> Result {
    created_at(p.created_at, ctx)?;
    required(&p.store_name, "profile.store_name")?;
    line(&p.store_name, "profile.store_name", MAX_NAME_BYTES)?;
    if !p.handle.is_empty() {
        identifier(&p.handle, "profile.handle", MAX_HANDLE_BYTES)?;
    }
    paragraph(&p.about, "profile.about", MAX_ABOUT_BYTES)?;
    if let Some(image) = &p.avatar {
        image_ref(image, "profile.avatar")?;
    }
    if let Some(image) = &p.header {
        image_ref(image, "profile.header")?;
    }
    if let Some(location) = &p.location {
        if !location.country.is_empty() {
            country(&location.country, "profile.location.country")?;
        }
        line(
            &location.region,
            "profile.location.region",
            MAX_SHORT_TEXT_BYTES,
        )?;
        line(
            &location.city,
            "profile.location.city",
            MAX_SHORT_TEXT_BYTES,
        )?;
    }
    at_most(p.contacts.len(), "profile.contacts", MAX_CONTACTS)?;
    for contact in &p.contacts {
        identifier(&contact.kind, "profile.contacts.kind", MAX_SHORT_TEXT_BYTES)?;
        required(&contact.value, "profile.contacts.value")?;
        line(&contact.value, "profile.contacts.value", MAX_URL_BYTES)?;
    }
    currencies(&p.accepted_currencies, "profile.accepted_currencies")?;
    at_most(
        p.inbox_servers.len(),
        "profile.inbox_servers",
        MAX_INBOX_SERVERS,
    )?;
    for server in &p.inbox_servers {
        url(server, "profile.inbox_servers", &["https://", "http://"])?;
    }
    distinct(&p.inbox_servers, "profile.inbox_servers")?;
    if let Some(offer) = &p.moderator {
        moderator_offer(offer)?;
    }
    Ok(())
}

fn moderator_offer(offer: &pb::ModeratorOffer) -> Result {
    use pb::moderator_fee::FeeType;
    let fee = offer.fee.as_ref().ok_or(E::Missing {
        field: "profile.moderator.fee",
    })?;
    let fee_type = FeeType::try_from(fee.r#type).map_err(|_| E::BadFormat {
        field: "profile.moderator.fee.type",
        expected: "a known fee type",
    })?;
    let (wants_fixed, wants_percentage) = match fee_type {
        FeeType::Unspecified => {
            return Err(E::Missing {
                field: "profile.moderator.fee.type",
            });
        }
        FeeType::Fixed => (true, false),
        FeeType::Percentage => (false, true),
        FeeType::FixedPlusPercentage => (true, true),
    };
    match (&fee.fixed, wants_fixed) {
        (Some(fixed), true) => price(fixed, "profile.moderator.fee.fixed")?,
        (None, true) => {
            return Err(E::Missing {
                field: "profile.moderator.fee.fixed",
            });
        }
        (Some(_), false) => {
            return Err(E::Inconsistent {
                field: "profile.moderator.fee.fixed",
                reason: "a percentage fee has no fixed part",
            });
        }
        (None, false) => {}
    }
    if wants_percentage {
        range(
            u64::from(fee.percentage_bp),
            "profile.moderator.fee.percentage_bp",
            1,
            u64::from(MAX_BASIS_POINTS),
        )?;
    } else if fee.percentage_bp != 0 {
        return Err(E::Inconsistent {
            field: "profile.moderator.fee.percentage_bp",
            reason: "a fixed fee has no percentage",
        });
    }
    if offer.languages.is_empty() {
        return Err(E::Missing {
            field: "profile.moderator.languages",
        });
    }
    at_most(
        offer.languages.len(),
        "profile.moderator.languages",
        MAX_LANGUAGES,
    )?;
    for tag in &offer.languages {
        language(tag, "profile.moderator.languages")?;
    }
    distinct(&offer.languages, "profile.moderator.languages")?;
    paragraph(&offer.terms, "profile.moderator.terms", MAX_TERMS_BYTES)?;
    if offer.accepted_currencies.is_empty() {
        return Err(E::Missing {
            field: "profile.moderator.accepted_currencies",
        });
    }
    currencies(
        &offer.accepted_currencies,
        "profile.moderator.accepted_currencies",
    )?;
    paragraph(
        &offer.description,
        "profile.moderator.description",
        MAX_ABOUT_BYTES,
    )?;
    if !offer.escrow_xpub.is_empty() {
        line(&offer.escrow_xpub, "profile.moderator.escrow_xpub", 120)?;
        offer
            .escrow_xpub
            .parse::<bitcoin::bip32::Xpub>()
            .map_err(|_| E::BadFormat {
                field: "profile.moderator.escrow_xpub",
                expected: "a BIP 32 extended public key (xpub or tpub)",
            })?;
    }
    Ok(())
}

pub(crate) fn listing(l: &pb::Listing, ctx: &ValidationContext) -> Result {
    use pb::{Condition, ListingType};
    created_at(l.created_at, ctx)?;
    slug(&l.slug, "listing.slug")?;
    let listing_type = match ListingType::try_from(l.r#type) {
        Ok(ListingType::Unspecified) => {
            return Err(E::Missing {
                field: "listing.type",
            });
        }
        Ok(t) => t,
        Err(_) => {
            return Err(E::BadFormat {
                field: "listing.type",
                expected: "a known listing type",
            });
        }
    };
    required(&l.title, "listing.title")?;
    line(&l.title, "listing.title", MAX_TITLE_BYTES)?;
    paragraph(&l.description, "listing.description", MAX_DESCRIPTION_BYTES)?;
    at_most(l.images.len(), "listing.images", MAX_IMAGES)?;
    for image in &l.images {
        image_ref(image, "listing.images")?;
    }
    let base = l.price.as_ref().ok_or(E::Missing {
        field: "listing.price",
    })?;
    price(base, "listing.price")?;
    options_and_skus(l, base)?;
    shipping(l, listing_type)?;
    at_most(l.taxes.len(), "listing.taxes", MAX_TAXES)?;
    for tax in &l.taxes {
        required(&tax.name, "listing.taxes.name")?;
        line(&tax.name, "listing.taxes.name", MAX_NAME_BYTES)?;
        regions(&tax.regions, "listing.taxes.regions")?;
        range(
            u64::from(tax.rate_bp),
            "listing.taxes.rate_bp",
            1,
            u64::from(MAX_BASIS_POINTS),
        )?;
    }
    coupons(&l.coupons)?;
    at_most(l.tags.len(), "listing.tags", MAX_TAGS)?;
    for tag in &l.tags {
        required(tag, "listing.tags")?;
        line(tag, "listing.tags", MAX_TAG_BYTES)?;
        if tag.chars().any(char::is_uppercase) {
            return Err(E::BadFormat {
                field: "listing.tags",
                expected: "lower case",
            });
        }
    }
    distinct(&l.tags, "listing.tags")?;
    if !l.category.is_empty() {
        category(&l.category)?;
    }
    let condition = Condition::try_from(l.condition).map_err(|_| E::BadFormat {
        field: "listing.condition",
        expected: "a known condition",
    })?;
    match (listing_type, condition) {
        (ListingType::Physical, Condition::Unspecified) => {
            return Err(E::Missing {
                field: "listing.condition",
            });
        }
        (ListingType::Digital | ListingType::Service, c) if c != Condition::Unspecified => {
            return Err(E::Inconsistent {
                field: "listing.condition",
                reason: "only physical goods have a condition",
            });
        }
        _ => {}
    }
    at_most(
        l.accepted_moderators.len(),
        "listing.accepted_moderators",
        MAX_ACCEPTED_MODERATORS,
    )?;
    for key in &l.accepted_moderators {
        public_key(key, "listing.accepted_moderators")?;
    }
    distinct(&l.accepted_moderators, "listing.accepted_moderators")?;
    if l.escrow_timeout_blocks != 0 {
        range(
            u64::from(l.escrow_timeout_blocks),
            "listing.escrow_timeout_blocks",
            u64::from(MIN_ESCROW_TIMEOUT_BLOCKS),
            u64::from(MAX_ESCROW_TIMEOUT_BLOCKS),
        )?;
    }
    paragraph(&l.refund_policy, "listing.refund_policy", MAX_TERMS_BYTES)?;
    paragraph(&l.terms, "listing.terms", MAX_TERMS_BYTES)?;
    if !l.language.is_empty() {
        language(&l.language, "listing.language")?;
    }
    if l.expires_at != 0 {
        range(
            l.expires_at,
            "listing.expires_at",
            l.created_at.saturating_add(1),
            l.created_at.saturating_add(MAX_LISTING_LIFETIME_SECS),
        )?;
        if l.expires_at <= ctx.now {
            return Err(E::Expired {
                expires_at: l.expires_at,
                now: ctx.now,
            });
        }
    }
    Ok(())
}

fn options_and_skus(l: &pb::Listing, base: &pb::Price) -> Result {
    at_most(l.options.len(), "listing.options", MAX_OPTIONS)?;
    for option in &l.options {
        required(&option.name, "listing.options.name")?;
        line(&option.name, "listing.options.name", MAX_NAME_BYTES)?;
        if option.values.is_empty() {
            return Err(E::Missing {
                field: "listing.options.values",
            });
        }
        at_most(
            option.values.len(),
            "listing.options.values",
            MAX_OPTION_VALUES,
        )?;
        for value in &option.values {
            required(value, "listing.options.values")?;
            line(value, "listing.options.values", MAX_NAME_BYTES)?;
        }
        distinct(&option.values, "listing.options.values")?;
    }
    distinct(l.options.iter().map(|o| &o.name), "listing.options.name")?;
    at_most(l.skus.len(), "listing.skus", MAX_SKUS)?;
    for sku in &l.skus {
        if sku.selection.len() != l.options.len() {
            return Err(E::Inconsistent {
                field: "listing.skus.selection",
                reason: "one value index per option is required",
            });
        }
        for (index, option) in sku.selection.iter().zip(&l.options) {
            if usize::try_from(*index).map_or(true, |i| i >= option.values.len()) {
                return Err(E::Inconsistent {
                    field: "listing.skus.selection",
                    reason: "a value index points past its option's values",
                });
            }
        }
        line(&sku.code, "listing.skus.code", MAX_NAME_BYTES)?;
        let total = i128::from(base.amount) + i128::from(sku.surcharge);
        if total < 1 || total > i128::from(MAX_AMOUNT) {
            return Err(E::OutOfRange {
                field: "listing.skus.surcharge",
                min: 1,
                max: MAX_AMOUNT,
                actual: u64::try_from(total).unwrap_or(0),
            });
        }
        if let Some(quantity) = sku.quantity {
            range(quantity, "listing.skus.quantity", 0, MAX_AMOUNT)?;
        }
    }
    distinct(
        l.skus.iter().map(|s| &s.selection),
        "listing.skus.selection",
    )
}

fn shipping(l: &pb::Listing, listing_type: pb::ListingType) -> Result {
    match listing_type {
        pb::ListingType::Physical if l.shipping.is_empty() => {
            return Err(E::Missing {
                field: "listing.shipping",
            });
        }
        pb::ListingType::Digital | pb::ListingType::Service if !l.shipping.is_empty() => {
            return Err(E::Inconsistent {
                field: "listing.shipping",
                reason: "only physical goods are shipped",
            });
        }
        _ => {}
    }
    at_most(l.shipping.len(), "listing.shipping", MAX_SHIPPING_OPTIONS)?;
    for option in &l.shipping {
        required(&option.name, "listing.shipping.name")?;
        line(&option.name, "listing.shipping.name", MAX_NAME_BYTES)?;
        regions(&option.regions, "listing.shipping.regions")?;
        if option.services.is_empty() {
            return Err(E::Missing {
                field: "listing.shipping.services",
            });
        }
        at_most(
            option.services.len(),
            "listing.shipping.services",
            MAX_SHIPPING_SERVICES,
        )?;
        for service in &option.services {
            required(&service.name, "listing.shipping.services.name")?;
            line(
                &service.name,
                "listing.shipping.services.name",
                MAX_NAME_BYTES,
            )?;
            range(
                service.price,
                "listing.shipping.services.price",
                0,
                MAX_AMOUNT,
            )?;
            range(
                service.additional_item_price,
                "listing.shipping.services.additional_item_price",
                0,
                MAX_AMOUNT,
            )?;
            line(
                &service.estimated_delivery,
                "listing.shipping.services.estimated_delivery",
                MAX_SHORT_TEXT_BYTES,
            )?;
        }
        distinct(
            option.services.iter().map(|s| &s.name),
            "listing.shipping.services.name",
        )?;
    }
    Ok(())
}

fn coupons(coupons: &[pb::Coupon]) -> Result {
    use pb::coupon::Discount;
    at_most(coupons.len(), "listing.coupons", MAX_COUPONS)?;
    for coupon in coupons {
        required(&coupon.title, "listing.coupons.title")?;
        line(&coupon.title, "listing.coupons.title", MAX_NAME_BYTES)?;
        if coupon.code_hash.len() != 32 {
            return Err(E::BadFormat {
                field: "listing.coupons.code_hash",
                expected: "32 bytes (SHA-256)",
            });
        }
        match coupon.discount {
            None => {
                return Err(E::Missing {
                    field: "listing.coupons.discount",
                });
            }
            Some(Discount::PercentOffBp(bp)) => range(
                u64::from(bp),
                "listing.coupons.percent_off_bp",
                1,
                u64::from(MAX_BASIS_POINTS),
            )?,
            Some(Discount::AmountOff(amount)) => {
                range(amount, "listing.coupons.amount_off", 1, MAX_AMOUNT)?;
            }
        }
    }
    distinct(
        coupons.iter().map(|c| &c.code_hash),
        "listing.coupons.code_hash",
    )
}

pub(crate) fn rating(r: &pb::Rating, ctx: &ValidationContext) -> Result {
    use pb::RatingRole;
    created_at(r.created_at, ctx)?;
    if r.order_id.len() != 32 {
        return Err(E::BadFormat {
            field: "rating.order_id",
            expected: "32 bytes",
        });
    }
    public_key(&r.subject, "rating.subject")?;
    let role = match RatingRole::try_from(r.role) {
        Ok(RatingRole::Unspecified) => {
            return Err(E::Missing {
                field: "rating.role",
            });
        }
        Ok(role) => role,
        Err(_) => {
            return Err(E::BadFormat {
                field: "rating.role",
                expected: "a known role",
            });
        }
    };
    let proof = r.proof.as_ref().ok_or(E::Missing {
        field: "rating.proof",
    })?;
    public_key(&proof.permit_signer, "rating.proof.permit_signer")?;
    if proof.permit_signature.len() != 64 {
        return Err(E::BadFormat {
            field: "rating.proof.permit_signature",
            expected: "64 bytes",
        });
    }
    score(r.overall, "rating.overall")?;
    score(r.service, "rating.service")?;
    let item_scores = [
        (r.quality, "rating.quality"),
        (r.description, "rating.description"),
        (r.delivery, "rating.delivery"),
    ];
    for (value, field) in item_scores {
        match role {
            RatingRole::Seller => score(value, field)?,
            _ if value != 0 => {
                return Err(E::Inconsistent {
                    field,
                    reason: "a moderator is rated on overall and service only",
                });
            }
            _ => {}
        }
    }
    paragraph(&r.review, "rating.review", MAX_REVIEW_BYTES)
}

pub(crate) fn tombstone(t: &pb::Tombstone, ctx: &ValidationContext) -> Result {
    created_at(t.created_at, ctx)?;
    slug(&t.slug, "tombstone.slug")?;
    paragraph(&t.reason, "tombstone.reason", MAX_REASON_BYTES)
}

// ---- private messages ------------------------------------------------------------------------

/// The rules of SPEC.md, "Private messages": one message's own fields. Whether a message fits
/// the order it is about (amounts, keys, who may send it now) is the order state machine's
/// business ([`crate::order`]).
pub(crate) fn message(m: &pb::Message, ctx: &ValidationContext) -> Result {
    use pb::message::Body;
    created_at(m.created_at, ctx)?;
    public_key(&m.recipient, "message.recipient")?;
    let Some(body) = &m.body else {
        return Err(E::Missing {
            field: "message.body",
        });
    };
    match body {
        Body::Order(_) => {
            if !m.order_id.is_empty() {
                return Err(E::Inconsistent {
                    field: "message.order_id",
                    reason: "an order request defines its own id and carries none",
                });
            }
        }
        Body::Chat(_) => {
            if !m.order_id.is_empty() {
                fixed_len(&m.order_id, "message.order_id", 32, "empty or 32 bytes")?;
            }
        }
        _ => fixed_len(&m.order_id, "message.order_id", 32, "32 bytes")?,
    }
    match body {
        Body::Order(o) => order_request(o),
        Body::Confirmation(c) => {
            if !c.seller_escrow_key.is_empty() {
                escrow_key(&c.seller_escrow_key, "confirmation.seller_escrow_key")?;
            }
            bitcoin_address(&c.payment_address, "confirmation.payment_address")?;
            range(c.amount_sats, "confirmation.amount_sats", 1, MAX_AMOUNT)?;
            if c.escrow_timeout_blocks != 0 {
                range(
                    u64::from(c.escrow_timeout_blocks),
                    "confirmation.escrow_timeout_blocks",
                    u64::from(MIN_ESCROW_TIMEOUT_BLOCKS),
                    u64::from(MAX_ESCROW_TIMEOUT_BLOCKS),
                )?;
            }
            bitcoin_address(&c.payout_address, "confirmation.payout_address")?;
            fixed_len(
                &c.rating_permit,
                "confirmation.rating_permit",
                64,
                "64 bytes",
            )
        }
        Body::Decline(d) => paragraph(&d.reason, "decline.reason", MAX_REASON_BYTES),
        Body::Payment(p) => {
            fixed_len(&p.txid, "payment.txid", 32, "32 bytes")?;
            range(p.amount_sats, "payment.amount_sats", 1, MAX_AMOUNT)
        }
        Body::Fulfillment(f) => {
            paragraph(&f.note, "fulfillment.note", MAX_MESSAGE_TEXT_BYTES)?;
            line(&f.carrier, "fulfillment.carrier", MAX_SHORT_TEXT_BYTES)?;
            line(&f.tracking, "fulfillment.tracking", MAX_SHORT_TEXT_BYTES)?;
            max_bytes(&f.release_psbt, "fulfillment.release_psbt", MAX_PSBT_BYTES)
        }
        Body::Completion(c) => {
            if !c.txid.is_empty() {
                fixed_len(&c.txid, "completion.txid", 32, "empty or 32 bytes")?;
            }
            paragraph(&c.note, "completion.note", MAX_MESSAGE_TEXT_BYTES)
        }
        Body::Cancel(c) => {
            paragraph(&c.reason, "cancel.reason", MAX_REASON_BYTES)?;
            max_bytes(&c.refund_psbt, "cancel.refund_psbt", MAX_PSBT_BYTES)?;
            if !c.refund_txid.is_empty() {
                fixed_len(
                    &c.refund_txid,
                    "cancel.refund_txid",
                    32,
                    "empty or 32 bytes",
                )?;
            }
            Ok(())
        }
        Body::Dispute(d) => {
            required(&d.reason, "dispute.reason")?;
            paragraph(&d.reason, "dispute.reason", MAX_MESSAGE_TEXT_BYTES)?;
            quoted(&d.order, "dispute.order")?;
            quoted(&d.confirmation, "dispute.confirmation")?;
            fixed_len(&d.funding_txid, "dispute.funding_txid", 32, "32 bytes")?;
            range(d.funding_sats, "dispute.funding_sats", 1, MAX_AMOUNT)
        }
        Body::Evidence(e) => {
            paragraph(&e.text, "evidence.text", MAX_MESSAGE_TEXT_BYTES)?;
            at_most(e.messages.len(), "evidence.messages", MAX_EVIDENCE_MESSAGES)?;
            for quote in &e.messages {
                quoted(quote, "evidence.messages")?;
            }
            at_most(
                e.attachments.len(),
                "evidence.attachments",
                MAX_EVIDENCE_ATTACHMENTS,
            )?;
            for attachment in &e.attachments {
                image_ref(attachment, "evidence.attachments")?;
            }
            Ok(())
        }
        Body::Decision(d) => {
            range(
                u64::from(d.buyer_share_bps),
                "decision.buyer_share_bps",
                0,
                u64::from(MAX_BASIS_POINTS),
            )?;
            range(
                d.moderator_fee_sats,
                "decision.moderator_fee_sats",
                0,
                MAX_AMOUNT,
            )?;
            if d.payout_psbt.is_empty() {
                return Err(E::Missing {
                    field: "decision.payout_psbt",
                });
            }
            max_bytes(&d.payout_psbt, "decision.payout_psbt", MAX_PSBT_BYTES)?;
            fixed_len(&d.rating_permit, "decision.rating_permit", 64, "64 bytes")?;
            paragraph(&d.reason, "decision.reason", MAX_MESSAGE_TEXT_BYTES)?;
            if d.moderator_fee_sats > 0 {
                bitcoin_address(&d.fee_address, "decision.fee_address")?;
            } else if !d.fee_address.is_empty() {
                return Err(E::Inconsistent {
                    field: "decision.fee_address",
                    reason: "a fee address without a fee",
                });
            }
            Ok(())
        }
        Body::Psbt(p) => {
            if pb::PsbtPurpose::try_from(p.purpose)
                .map_or(true, |purpose| purpose == pb::PsbtPurpose::Unspecified)
            {
                return Err(E::BadFormat {
                    field: "psbt.purpose",
                    expected: "a known PSBT purpose",
                });
            }
            if p.psbt.is_empty() {
                return Err(E::Missing { field: "psbt.psbt" });
            }
            max_bytes(&p.psbt, "psbt.psbt", MAX_PSBT_BYTES)
        }
        Body::Chat(c) => {
            required(&c.text, "chat.text")?;
            paragraph(&c.text, "chat.text", MAX_MESSAGE_TEXT_BYTES)
        }
    }
}

fn order_request(o: &pb::OrderRequest) -> Result {
    if o.listing.is_empty() {
        return Err(E::Missing {
            field: "order.listing",
        });
    }
    max_bytes(&o.listing, "order.listing", MAX_ENVELOPE_BYTES)?;
    if o.items.is_empty() {
        return Err(E::Missing {
            field: "order.items",
        });
    }
    at_most(o.items.len(), "order.items", MAX_ORDER_ITEMS)?;
    distinct(o.items.iter().map(|item| item.sku), "order.items")?;
    for item in &o.items {
        range(
            u64::from(item.quantity),
            "order.items.quantity",
            1,
            u64::from(MAX_ORDER_QUANTITY),
        )?;
    }
    line(
        &o.shipping_option,
        "order.shipping_option",
        MAX_SHORT_TEXT_BYTES,
    )?;
    line(
        &o.shipping_service,
        "order.shipping_service",
        MAX_SHORT_TEXT_BYTES,
    )?;
    paragraph(
        &o.shipping_address,
        "order.shipping_address",
        MAX_ADDRESS_BYTES,
    )?;
    match pb::PaymentMethod::try_from(o.payment) {
        Ok(pb::PaymentMethod::Direct) => {
            if !o.moderator.is_empty()
                || !o.buyer_escrow_key.is_empty()
                || !o.moderator_profile.is_empty()
            {
                return Err(E::Inconsistent {
                    field: "order.payment",
                    reason: "a direct payment names no moderator and no escrow key",
                });
            }
        }
        Ok(pb::PaymentMethod::Moderated) => {
            public_key(&o.moderator, "order.moderator")?;
            escrow_key(&o.buyer_escrow_key, "order.buyer_escrow_key")?;
            if o.moderator_profile.is_empty() {
                return Err(E::Missing {
                    field: "order.moderator_profile",
                });
            }
            max_bytes(
                &o.moderator_profile,
                "order.moderator_profile",
                MAX_ENVELOPE_BYTES,
            )?;
        }
        _ => {
            return Err(E::BadFormat {
                field: "order.payment",
                expected: "direct or moderated",
            });
        }
    }
    bitcoin_address(&o.refund_address, "order.refund_address")?;
    range(o.amount_sats, "order.amount_sats", 1, MAX_AMOUNT)?;
    public_key(&o.rating_key, "order.rating_key")?;
    if o.reply_inbox_servers.is_empty() {
        return Err(E::Missing {
            field: "order.reply_inbox_servers",
        });
    }
    at_most(
        o.reply_inbox_servers.len(),
        "order.reply_inbox_servers",
        MAX_INBOX_SERVERS,
    )?;
    for server in &o.reply_inbox_servers {
        url(
            server,
            "order.reply_inbox_servers",
            &["https://", "http://"],
        )?;
    }
    distinct(o.reply_inbox_servers.iter(), "order.reply_inbox_servers")?;
    if crate::order::parse_network(&o.network).is_none() {
        return Err(E::BadFormat {
            field: "order.network",
            expected: "bitcoin, testnet, signet or regtest",
        });
    }
    paragraph(&o.memo, "order.memo", MAX_MESSAGE_TEXT_BYTES)
}

fn fixed_len(bytes: &[u8], field: &'static str, len: usize, expected: &'static str) -> Result {
    if bytes.len() == len {
        Ok(())
    } else {
        Err(E::BadFormat { field, expected })
    }
}

fn max_bytes(bytes: &[u8], field: &'static str, max: usize) -> Result {
    if bytes.len() > max {
        Err(E::TooLong {
            field,
            max,
            actual: bytes.len(),
        })
    } else {
        Ok(())
    }
}

fn quoted(bytes: &[u8], field: &'static str) -> Result {
    if bytes.is_empty() {
        return Err(E::Missing { field });
    }
    max_bytes(bytes, field, MAX_QUOTED_MESSAGE_BYTES)
}

fn escrow_key(bytes: &[u8], field: &'static str) -> Result {
    bitcoin::secp256k1::PublicKey::from_slice(bytes)
        .ok()
        .filter(|_| bytes.len() == 33)
        .map(|_| ())
        .ok_or(E::BadFormat {
            field,
            expected: "a 33-byte compressed secp256k1 public key",
        })
}

fn bitcoin_address(value: &str, field: &'static str) -> Result {
    required(value, field)?;
    line(value, field, MAX_BITCOIN_ADDRESS_BYTES)?;
    value
        .parse::<bitcoin::Address<bitcoin::address::NetworkUnchecked>>()
        .map(|_| ())
        .map_err(|_| E::BadFormat {
            field,
            expected: "a Bitcoin address",
        })
}

// ---- building blocks -------------------------------------------------------------------------

fn created_at(t: u64, ctx: &ValidationContext) -> Result {
    if t < PROTOCOL_EPOCH {
        return Err(E::BeforeEpoch {
            created_at: t,
            epoch: PROTOCOL_EPOCH,
        });
    }
    if t > ctx.now.saturating_add(MAX_FUTURE_SKEW_SECS) {
        return Err(E::InFuture {
            created_at: t,
            now: ctx.now,
            max_skew: MAX_FUTURE_SKEW_SECS,
        });
    }
    Ok(())
}

fn required(value: &str, field: &'static str) -> Result {
    if value.trim().is_empty() {
        Err(E::Missing { field })
    } else {
        Ok(())
    }
}

fn max_len(value: &str, field: &'static str, max: usize) -> Result {
    if value.len() > max {
        Err(E::TooLong {
            field,
            max,
            actual: value.len(),
        })
    } else {
        Ok(())
    }
}

/// Single-line text: no control characters at all.
fn line(value: &str, field: &'static str, max: usize) -> Result {
    max_len(value, field, max)?;
    if value.chars().any(char::is_control) {
        return Err(E::ControlCharacter { field });
    }
    Ok(())
}

/// Multi-line text: tab, line feed and carriage return allowed; other control characters not.
fn paragraph(value: &str, field: &'static str, max: usize) -> Result {
    max_len(value, field, max)?;
    if value
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
    {
        return Err(E::ControlCharacter { field });
    }
    Ok(())
}

fn at_most(count: usize, field: &'static str, max: usize) -> Result {
    if count > max {
        Err(E::TooMany {
            field,
            max,
            actual: count,
        })
    } else {
        Ok(())
    }
}

fn range(value: u64, field: &'static str, min: u64, max: u64) -> Result {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(E::OutOfRange {
            field,
            min,
            max,
            actual: value,
        })
    }
}

fn distinct<T: Hash + Eq>(items: impl IntoIterator<Item = T>, field: &'static str) -> Result {
    let mut seen = HashSet::new();
    for item in items {
        if !seen.insert(item) {
            return Err(E::Duplicate { field });
        }
    }
    Ok(())
}

/// `[a-z0-9-]`, not starting or ending with '-', 1 to `max` bytes.
fn identifier(value: &str, field: &'static str, max: usize) -> Result {
    required(value, field)?;
    max_len(value, field, max)?;
    let ok = value
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(E::BadFormat {
            field,
            expected: "lower-case letters, digits and inner '-'",
        })
    }
}

fn slug(value: &str, field: &'static str) -> Result {
    identifier(value, field, MAX_SLUG_BYTES)
}

fn category(value: &str) -> Result {
    const FIELD: &str = "listing.category";
    max_len(value, FIELD, MAX_CATEGORY_BYTES)?;
    let segments: Vec<&str> = value.split('/').collect();
    at_most(segments.len(), FIELD, MAX_CATEGORY_DEPTH)?;
    for segment in segments {
        identifier(segment, FIELD, MAX_CATEGORY_BYTES).map_err(|_| E::BadFormat {
            field: FIELD,
            expected: "'/'-separated segments of lower-case letters, digits and '-'",
        })?;
    }
    Ok(())
}

fn currency(value: &str, field: &'static str) -> Result {
    if value.len() == 3 && value.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(())
    } else {
        Err(E::BadFormat {
            field,
            expected: "\"BTC\" or an upper-case ISO 4217 code",
        })
    }
}

fn currencies(values: &[String], field: &'static str) -> Result {
    at_most(values.len(), field, MAX_CURRENCIES)?;
    for value in values {
        currency(value, field)?;
    }
    distinct(values, field)
}

fn price(p: &pb::Price, field: &'static str) -> Result {
    currency(&p.currency, field)?;
    if p.currency == "BTC" {
        if p.divisibility != BTC_DIVISIBILITY {
            return Err(E::Inconsistent {
                field,
                reason: "BTC prices are in satoshis, divisibility 8",
            });
        }
    } else if p.divisibility > MAX_FIAT_DIVISIBILITY {
        return Err(E::OutOfRange {
            field,
            min: 0,
            max: u64::from(MAX_FIAT_DIVISIBILITY),
            actual: u64::from(p.divisibility),
        });
    }
    range(p.amount, field, 1, MAX_AMOUNT)
}

fn country(value: &str, field: &'static str) -> Result {
    if value.len() == 2 && value.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(())
    } else {
        Err(E::BadFormat {
            field,
            expected: "an upper-case ISO 3166-1 alpha-2 code",
        })
    }
}

fn regions(values: &[String], field: &'static str) -> Result {
    if values.is_empty() {
        return Err(E::Missing { field });
    }
    at_most(values.len(), field, MAX_REGIONS)?;
    for value in values {
        if value != "ALL" {
            country(value, field).map_err(|_| E::BadFormat {
                field,
                expected: "an upper-case ISO 3166-1 alpha-2 code or \"ALL\"",
            })?;
        }
    }
    distinct(values, field)
}

/// A BCP 47 tag in the simple shape `xx`, `xxx` or `xx-YY[-…]`: alphanumeric subtags of 1 to 8
/// characters separated by '-', the first one 2 to 8 letters.
fn language(value: &str, field: &'static str) -> Result {
    max_len(value, field, MAX_LANGUAGE_TAG_BYTES)?;
    let mut subtags = value.split('-');
    let first_ok = subtags
        .next()
        .is_some_and(|s| (2..=8).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphabetic()));
    let rest_ok =
        subtags.all(|s| (1..=8).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric()));
    if first_ok && rest_ok {
        Ok(())
    } else {
        Err(E::BadFormat {
            field,
            expected: "a BCP 47 language tag",
        })
    }
}

fn url(value: &str, field: &'static str, schemes: &[&str]) -> Result {
    required(value, field)?;
    line(value, field, MAX_URL_BYTES)?;
    let lower = value.to_ascii_lowercase();
    let ok = schemes
        .iter()
        .any(|scheme| lower.starts_with(scheme) && lower.len() > scheme.len())
        && !value.contains(char::is_whitespace);
    if ok {
        Ok(())
    } else {
        Err(E::BadFormat {
            field,
            expected: "a URL with an allowed scheme and no spaces",
        })
    }
}

fn image_ref(image: &pb::ImageRef, field: &'static str) -> Result {
    if image.sha256.len() != 32 {
        return Err(E::BadFormat {
            field,
            expected: "an image with a 32-byte SHA-256",
        });
    }
    url(&image.url, field, &["https://", "http://", "ipfs://"])?;
    line(&image.media_type, field, MAX_SHORT_TEXT_BYTES)?;
    line(&image.alt, field, MAX_SHORT_TEXT_BYTES)
}

fn public_key(bytes: &[u8], field: &'static str) -> Result {
    PublicKey::from_slice(bytes)
        .map(|_| ())
        .map_err(|_| E::BadFormat {
            field,
            expected: "a 32-byte ed25519 public key",
        })
}

fn score(value: u32, field: &'static str) -> Result {
    range(
        u64::from(value),
        field,
        u64::from(*RATING_SCORES.start()),
        u64::from(*RATING_SCORES.end()),
    )
}
