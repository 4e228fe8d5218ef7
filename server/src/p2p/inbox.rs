//! Inbox records in Kademlia: where a person's encrypted inbox is held.
//!
//! The record is the person's own signed `Profile` envelope (its `inbox_servers` field), stored
//! under the key `/souk/inbox/1/` + the person's 32-byte public key. Nothing new is signed: a
//! record is exactly as trustworthy as the profile, and every node checks it — signature,
//! validation, kind, and that the signer is the person the key names — before storing or using it.
//! Of several valid records the newest (`compare_versions`) wins.

use souk_protocol::{Object, PublicKey, ValidationContext, compare_versions, open, pb};

/// Prefix of every inbox record key.
pub const KEY_PREFIX: &[u8] = b"/souk/inbox/1/";

/// The Kademlia key of `person`'s inbox record.
#[must_use]
pub fn record_key(person: &PublicKey) -> Vec<u8> {
    let mut key = KEY_PREFIX.to_vec();
    key.extend_from_slice(person.as_bytes());
    key
}

/// A checked inbox record.
#[derive(Debug, Clone, PartialEq)]
pub struct InboxRecord {
    /// Whose inbox.
    pub person: PublicKey,
    /// The inbox servers, in the person's order of preference.
    pub servers: Vec<String>,
    /// The profile's `created_at`.
    pub created_at: u64,
    /// The signed profile envelope.
    pub envelope: Vec<u8>,
    /// Its version, to pick the newest of several.
    version: souk_protocol::Version,
}

/// Why a record is refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum InboxRecordError {
    /// The key is not an inbox record key.
    #[error("not an inbox record key")]
    BadKey,
    /// The value is not a valid signed envelope.
    #[error("invalid envelope: {0}")]
    Envelope(String),
    /// The envelope is valid but not a profile.
    #[error("the record is not a profile")]
    NotAProfile,
    /// The profile is signed by someone other than the key names.
    #[error("the profile is signed by another key than the record names")]
    WrongSigner,
    /// The profile names no inbox server.
    #[error("the profile names no inbox server")]
    NoInbox,
}

impl InboxRecordError {
    /// Stable error code.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadKey => "bad_key",
            Self::Envelope(_) => "invalid_envelope",
            Self::NotAProfile => "not_a_profile",
            Self::WrongSigner => "wrong_signer",
            Self::NoInbox => "no_inbox",
        }
    }
}

/// Checks a record found under `key`.
///
/// # Errors
/// [`InboxRecordError`].
pub fn check_record(
    key: &[u8],
    value: &[u8],
    ctx: &ValidationContext,
) -> Result<InboxRecord, InboxRecordError> {
    let person = key
        .strip_prefix(KEY_PREFIX)
        .and_then(|rest| PublicKey::from_bytes(rest).ok())
        .ok_or(InboxRecordError::BadKey)?;
    let object = open(value, ctx).map_err(|e| InboxRecordError::Envelope(e.to_string()))?;
    if object.signer() != person {
        return Err(InboxRecordError::WrongSigner);
    }
    let Object::Profile(profile) = object.object() else {
        return Err(InboxRecordError::NotAProfile);
    };
    if profile.inbox_servers.is_empty() {
        return Err(InboxRecordError::NoInbox);
    }
    Ok(InboxRecord {
        person,
        servers: profile.inbox_servers.clone(),
        created_at: profile.created_at,
        envelope: value.to_vec(),
        version: object.version(),
    })
}

/// Whether `object` should be published as an inbox record (a profile naming inbox servers).
#[must_use]
pub fn is_inbox_profile(object: &Object) -> bool {
    matches!(object, Object::Profile(pb::Profile { inbox_servers, .. }) if !inbox_servers.is_empty())
}

/// The newest of several checked records (None for none).
#[must_use]
pub fn newest(records: impl IntoIterator<Item = InboxRecord>) -> Option<InboxRecord> {
    records.into_iter().reduce(|a, b| {
        if compare_versions(&b.version, &a.version) == std::cmp::Ordering::Greater {
            b
        } else {
            a
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use souk_protocol::{IdentityKey, samples};

    fn profile(seed: u8, created_at: u64, inbox: &[&str]) -> (PublicKey, Vec<u8>) {
        let key = IdentityKey::from_secret_bytes(&[seed; 32]);
        let mut profile = samples::profile(created_at);
        profile.inbox_servers = inbox.iter().map(|s| (*s).to_string()).collect();
        let signed = key
            .seal(&Object::Profile(profile), &ValidationContext::at(NOW))
            .expect("valid profile");
        (key.public_key(), signed.envelope().bytes().to_vec())
    }

    const NOW: u64 = 1_800_000_000;

    #[test]
    fn a_profile_naming_inbox_servers_is_a_record_of_its_signer() {
        let (person, bytes) = profile(1, NOW - 10, &["https://a.example", "https://b.example"]);
        let record =
            check_record(&record_key(&person), &bytes, &ValidationContext::at(NOW)).expect("valid");
        assert_eq!(record.servers, ["https://a.example", "https://b.example"]);
        assert_eq!(record.person, person);
    }

    #[test]
    fn a_record_under_someone_elses_key_is_refused() {
        let (_, bytes) = profile(1, NOW - 10, &["https://a.example"]);
        let (other, _) = profile(2, NOW - 10, &["https://a.example"]);
        assert_eq!(
            check_record(&record_key(&other), &bytes, &ValidationContext::at(NOW)),
            Err(InboxRecordError::WrongSigner)
        );
    }

    #[test]
    fn tampered_bytes_bad_keys_and_empty_inboxes_are_refused() {
        let (person, mut bytes) = profile(1, NOW - 10, &["https://a.example"]);
        let ctx = ValidationContext::at(NOW);
        assert_eq!(
            check_record(b"/other/key", &bytes, &ctx),
            Err(InboxRecordError::BadKey)
        );
        let (empty_person, empty) = profile(3, NOW - 10, &[]);
        assert_eq!(
            check_record(&record_key(&empty_person), &empty, &ctx),
            Err(InboxRecordError::NoInbox)
        );
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert!(matches!(
            check_record(&record_key(&person), &bytes, &ctx),
            Err(InboxRecordError::Envelope(_))
        ));
    }

    #[test]
    fn the_newest_record_wins() {
        let ctx = ValidationContext::at(NOW);
        let (person, old) = profile(1, NOW - 100, &["https://old.example"]);
        let (_, new) = profile(1, NOW - 10, &["https://new.example"]);
        let key = record_key(&person);
        let records = [&new, &old].map(|v| check_record(&key, v, &ctx).expect("valid"));
        let newest = newest(records).expect("one");
        assert_eq!(newest.servers, ["https://new.example"]);
    }
}
