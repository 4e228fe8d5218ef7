//! Every limit the protocol enforces, by name.
//!
//! Sizes are in bytes of UTF-8 (not characters), counts are list lengths, times are Unix seconds.
//! A change to any of these is a protocol change: it goes into SPEC.md and the test vectors in the
//! same commit.

/// Largest encoded envelope accepted, checked before anything is decoded.
pub const MAX_ENVELOPE_BYTES: usize = 64 * 1024;

/// How far in the future a `created_at` may lie, to tolerate clocks that run fast.
pub const MAX_FUTURE_SKEW_SECS: u64 = 15 * 60;

/// No object may claim to be older than this: 2025-01-01T00:00:00Z.
pub const PROTOCOL_EPOCH: u64 = 1_735_689_600;

/// Longest a listing may stay offered: `expires_at - created_at` at most two years.
pub const MAX_LISTING_LIFETIME_SECS: u64 = 2 * 365 * 24 * 60 * 60;

/// Largest amount of any price, in base units: 21 million BTC in satoshis.
pub const MAX_AMOUNT: u64 = 21_000_000 * 100_000_000;

/// The divisibility of every BTC amount: prices in BTC are in satoshis.
pub const BTC_DIVISIBILITY: u32 = 8;

/// Most decimal places of a fiat currency's minor unit (ISO 4217 has none above 4).
pub const MAX_FIAT_DIVISIBILITY: u32 = 4;

/// 100 % in basis points; the upper bound of every rate.
pub const MAX_BASIS_POINTS: u32 = 10_000;

/// Shortest escrow timeout a listing may ask for: about one day of blocks.
pub const MIN_ESCROW_TIMEOUT_BLOCKS: u32 = 144;

/// Longest escrow timeout: the largest relative lock time in blocks that BIP 68 can express.
pub const MAX_ESCROW_TIMEOUT_BLOCKS: u32 = 65_535;

/// The timeout used when a listing leaves `escrow_timeout_blocks` at 0: about 30 days.
pub const DEFAULT_ESCROW_TIMEOUT_BLOCKS: u32 = 4_320;

/// Slugs: `[a-z0-9-]`, 1 to this many bytes.
pub const MAX_SLUG_BYTES: usize = 100;
/// Handles: `[a-z0-9-]`, up to this many bytes.
pub const MAX_HANDLE_BYTES: usize = 40;
/// Store names, option names, SKU codes, titles of coupons, names of shipping options and taxes.
pub const MAX_NAME_BYTES: usize = 100;
/// Listing titles.
pub const MAX_TITLE_BYTES: usize = 200;
/// Listing descriptions.
pub const MAX_DESCRIPTION_BYTES: usize = 32 * 1024;
/// A profile's `about` and a moderator's description.
pub const MAX_ABOUT_BYTES: usize = 8 * 1024;
/// Terms, refund policies and moderator terms.
pub const MAX_TERMS_BYTES: usize = 16 * 1024;
/// A rating's review text.
pub const MAX_REVIEW_BYTES: usize = 4 * 1024;
/// A tombstone's reason.
pub const MAX_REASON_BYTES: usize = 1024;
/// URLs (images, inbox servers, contact links' values).
pub const MAX_URL_BYTES: usize = 512;
/// Short free-text fields: region, city, media type, alt text, delivery estimate, contact kind.
pub const MAX_SHORT_TEXT_BYTES: usize = 200;
/// Category paths.
pub const MAX_CATEGORY_BYTES: usize = 128;
/// Segments of a category path.
pub const MAX_CATEGORY_DEPTH: usize = 6;
/// One tag.
pub const MAX_TAG_BYTES: usize = 40;
/// BCP 47 language tags.
pub const MAX_LANGUAGE_TAG_BYTES: usize = 35;

/// Images of a listing.
pub const MAX_IMAGES: usize = 30;
/// Tags of a listing.
pub const MAX_TAGS: usize = 20;
/// Variant options of a listing.
pub const MAX_OPTIONS: usize = 5;
/// Values of one variant option.
pub const MAX_OPTION_VALUES: usize = 50;
/// SKUs of a listing.
pub const MAX_SKUS: usize = 256;
/// Shipping options of a listing.
pub const MAX_SHIPPING_OPTIONS: usize = 30;
/// Services of one shipping option.
pub const MAX_SHIPPING_SERVICES: usize = 10;
/// Regions of one shipping option or tax.
pub const MAX_REGIONS: usize = 250;
/// Taxes of a listing.
pub const MAX_TAXES: usize = 20;
/// Coupons of a listing.
pub const MAX_COUPONS: usize = 50;
/// Accepted moderators of a listing.
pub const MAX_ACCEPTED_MODERATORS: usize = 20;
/// Contact links of a profile.
pub const MAX_CONTACTS: usize = 10;
/// Accepted currencies of a profile or moderator offer.
pub const MAX_CURRENCIES: usize = 20;
/// Inbox servers of a profile.
pub const MAX_INBOX_SERVERS: usize = 5;
/// Languages of a moderator offer.
pub const MAX_LANGUAGES: usize = 10;

/// Lowest and highest rating score.
pub const RATING_SCORES: core::ops::RangeInclusive<u32> = 1..=5;

// ---- private messages (SPEC.md, "Private messages" and "Orders") -----------------------------

/// Largest `SealedMessage` accepted, in bytes. Room for a dispute that quotes the order (which
/// carries the listing envelope, up to [`MAX_ENVELOPE_BYTES`]) and the confirmation.
pub const MAX_SEALED_MESSAGE_BYTES: usize = 192 * 1024;
/// Largest PSBT carried in a message, in bytes.
pub const MAX_PSBT_BYTES: usize = 32 * 1024;
/// Largest free text of a message (chat, notes, evidence, decisions), in bytes.
pub const MAX_MESSAGE_TEXT_BYTES: usize = 8 * 1024;
/// Largest shipping address, in bytes.
pub const MAX_ADDRESS_BYTES: usize = 1024;
/// Largest Bitcoin address string, in bytes (a bech32m address is at most 90 characters).
pub const MAX_BITCOIN_ADDRESS_BYTES: usize = 100;
/// Most lines in one order.
pub const MAX_ORDER_ITEMS: usize = 20;
/// Largest quantity of one order line.
pub const MAX_ORDER_QUANTITY: u32 = 1_000_000;
/// Most earlier messages quoted in one piece of evidence.
pub const MAX_EVIDENCE_MESSAGES: usize = 20;
/// Largest quoted message (a `SignedMessage` encoding) in a dispute or evidence, in bytes.
pub const MAX_QUOTED_MESSAGE_BYTES: usize = 80 * 1024;
/// Most attachments in one piece of evidence.
pub const MAX_EVIDENCE_ATTACHMENTS: usize = 10;
