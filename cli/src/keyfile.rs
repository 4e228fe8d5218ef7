//! The encrypted key file, `<home>/key.json`.
//!
//! The file holds the recovery phrase (and the BIP 39 passphrase, if one was used) encrypted
//! with a key derived from the person's passphrase, plus what can be shown without it: the
//! store's address and public key.
//!
//! - Key derivation: Argon2id (version 0x13) over the passphrase and a random 16-byte salt,
//!   32 bytes out; the parameters (64 MiB, 3 passes, 1 lane by default) are stored in the
//!   file, so they can be raised later without breaking old files.
//! - Encryption: XChaCha20-Poly1305 with a random 24-byte nonce. The associated data binds the
//!   format version, the address and the public key (see [`associated_data`]), so editing
//!   any of them makes decryption fail.
//! - Plaintext: the phrase (words separated by single spaces), then, only if a BIP 39
//!   passphrase is used, a line feed and that passphrase.
//!
//! The file is written to a temporary file in the same directory and renamed over the old one,
//! with mode 0600 on Unix. `cli/README.md` documents the format for other implementations.

use std::fs;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use argon2::{Algorithm, Argon2, Params, Version};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// The format version this code writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Name of the key file inside the home directory.
pub const FILE_NAME: &str = "key.json";

const KDF_NAME: &str = "argon2id";
const CIPHER_NAME: &str = "xchacha20poly1305";
const SALT_BYTES: usize = 16;
const NONCE_BYTES: usize = 24;
const KEY_BYTES: usize = 32;
const TAG_BYTES: usize = 16;

/// Largest parameters accepted from a file, so a hostile file cannot make us allocate
/// gigabytes or spin for long (1 GiB × 16 passes is the worst case).
const MAX_MEMORY_KIB: u32 = 1024 * 1024;
const MAX_ITERATIONS: u32 = 16;
const MAX_PARALLELISM: u32 = 16;
/// Largest ciphertext accepted (a 24-word phrase and a long BIP 39 passphrase fit easily).
const MAX_CIPHERTEXT_BYTES: usize = 4096;

/// What can go wrong with the key file.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// There is no key file.
    #[error("no key in {}: run `souk key new` or `souk key restore`", .home.display())]
    NoKey {
        /// The home directory searched.
        home: PathBuf,
    },
    /// A key file exists and overwriting was not asked for.
    #[error("{} already holds the key of {address}; pass --force to replace it", .path.display())]
    Exists {
        /// The key file.
        path: PathBuf,
        /// Its address (or a note that it cannot be read).
        address: String,
    },
    /// Authenticated decryption failed.
    #[error("wrong passphrase, or the key file is damaged")]
    WrongPassphrase,
    /// The file is of a format version this code does not know.
    #[error("{} is key file format version {found}; this souk reads version {FORMAT_VERSION}", .path.display())]
    UnsupportedVersion {
        /// The key file.
        path: PathBuf,
        /// The version it declares.
        found: u64,
    },
    /// The file is not a key file.
    #[error("{} is not a souk key file: {reason}", .path.display())]
    Malformed {
        /// The key file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Reading or writing failed.
    #[error("{what} {}: {source}", .path.display())]
    Io {
        /// What was being done, e.g. "cannot read".
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The system's error.
        source: std::io::Error,
    },
    /// The system random number generator failed.
    #[error("the system random number generator failed: {0}")]
    Randomness(String),
    /// Argon2 refused its parameters.
    #[error("cannot derive the encryption key: {0}")]
    Kdf(String),
}

impl KeyFileError {
    /// A stable code for `--json` error output.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NoKey { .. } => "no_key",
            Self::Exists { .. } => "key_exists",
            Self::WrongPassphrase => "wrong_passphrase",
            Self::UnsupportedVersion { .. } => "unsupported_key_version",
            Self::Malformed { .. } => "malformed_key_file",
            Self::Io { .. } => "io",
            Self::Randomness(_) => "randomness",
            Self::Kdf(_) => "kdf",
        }
    }

    /// What to do next, if there is something useful to say.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            Self::NoKey { .. } => Some(
                "`souk key new` makes a new store key; `souk key restore` brings back one from its recovery phrase",
            ),
            Self::Exists { .. } => Some(
                "replacing a key loses it unless its recovery phrase is written down: check with `souk key show --mnemonic` first",
            ),
            Self::WrongPassphrase => Some(
                "try again; if the passphrase is lost, `souk key restore --force` sets a new one from the recovery phrase",
            ),
            Self::UnsupportedVersion { .. } => {
                Some("update souk, or restore the key from its recovery phrase")
            }
            Self::Malformed { .. } => {
                Some("restore the key from its recovery phrase with `souk key restore --force`")
            }
            _ => None,
        }
    }
}

/// Argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory, in KiB.
    pub memory_kib: u32,
    /// Passes over the memory.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl KdfParams {
    /// What new files use: 64 MiB, 3 passes, 1 lane.
    pub const DEFAULT: Self = Self {
        memory_kib: 64 * 1024,
        iterations: 3,
        parallelism: 1,
    };
}

/// The secrets a key file protects.
pub struct Secret {
    /// The BIP 39 recovery phrase, words separated by single spaces.
    pub mnemonic: Zeroizing<String>,
    /// The BIP 39 passphrase; empty for none.
    pub bip39_passphrase: Zeroizing<String>,
}

impl Secret {
    fn encode(&self) -> Zeroizing<Vec<u8>> {
        let mut bytes = Zeroizing::new(Vec::with_capacity(
            self.mnemonic.len() + 1 + self.bip39_passphrase.len(),
        ));
        bytes.extend_from_slice(self.mnemonic.as_bytes());
        if !self.bip39_passphrase.is_empty() {
            bytes.push(b'\n');
            bytes.extend_from_slice(self.bip39_passphrase.as_bytes());
        }
        bytes
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(bytes).ok()?;
        let (mnemonic, passphrase) = text.split_once('\n').unwrap_or((text, ""));
        Some(Self {
            mnemonic: Zeroizing::new(mnemonic.to_owned()),
            bip39_passphrase: Zeroizing::new(passphrase.to_owned()),
        })
    }
}

/// The key file's JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyFile {
    /// Format version, [`FORMAT_VERSION`].
    pub version: u32,
    /// The store's address (`souk1…`).
    pub address: String,
    /// The identity public key, 64 hex digits.
    pub public_key: String,
    /// How the encryption key is derived from the passphrase.
    pub kdf: KdfJson,
    /// How the secret is encrypted.
    pub cipher: CipherJson,
    /// The encrypted secret with its 16-byte tag, hex.
    pub ciphertext: String,
}

/// The `kdf` object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KdfJson {
    /// Always `argon2id`.
    pub algorithm: String,
    /// Argon2 version, 19 (0x13).
    pub version: u32,
    /// Memory, in KiB.
    pub memory_kib: u32,
    /// Passes.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
    /// 16 random bytes, hex.
    pub salt: String,
}

/// The `cipher` object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CipherJson {
    /// Always `xchacha20poly1305`.
    pub algorithm: String,
    /// 24 random bytes, hex.
    pub nonce: String,
}

/// Only the version, read before the rest so that a newer format gets a clear message.
#[derive(Deserialize)]
struct VersionProbe {
    version: u64,
}

/// The AEAD associated data: `souk-key-v<version>\n<address>\n<public key hex>`.
pub fn associated_data(version: u32, address: &str, public_key: &str) -> Vec<u8> {
    format!("souk-key-v{version}\n{address}\n{public_key}").into_bytes()
}

fn random<const N: usize>() -> Result<[u8; N], KeyFileError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| KeyFileError::Randomness(e.to_string()))?;
    Ok(bytes)
}

fn derive_key(
    passphrase: &[u8],
    salt: &[u8],
    params: KdfParams,
) -> Result<Zeroizing<[u8; KEY_BYTES]>, KeyFileError> {
    let params = Params::new(
        params.memory_kib,
        params.iterations,
        params.parallelism,
        Some(KEY_BYTES),
    )
    .map_err(|e| KeyFileError::Kdf(e.to_string()))?;
    let mut key = Zeroizing::new([0u8; KEY_BYTES]);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(passphrase, salt, key.as_mut())
        .map_err(|e| KeyFileError::Kdf(e.to_string()))?;
    Ok(key)
}

fn cipher(key: &[u8; KEY_BYTES]) -> Result<XChaCha20Poly1305, KeyFileError> {
    XChaCha20Poly1305::new_from_slice(key).map_err(|e| KeyFileError::Kdf(e.to_string()))
}

/// Encrypts `secret` under `passphrase` into a new key file for `address` / `public_key`.
///
/// # Errors
/// [`KeyFileError::Randomness`] or [`KeyFileError::Kdf`].
pub fn seal(
    secret: &Secret,
    address: &str,
    public_key: &str,
    passphrase: &[u8],
    params: KdfParams,
) -> Result<KeyFile, KeyFileError> {
    let salt = random::<SALT_BYTES>()?;
    let nonce = random::<NONCE_BYTES>()?;
    let key = derive_key(passphrase, &salt, params)?;
    let plaintext = secret.encode();
    let aad = associated_data(FORMAT_VERSION, address, public_key);
    let ciphertext = cipher(&key)?
        .encrypt(
            &XNonce::from(nonce),
            Payload {
                msg: &plaintext,
                aad: &aad,
            },
        )
        .map_err(|_| KeyFileError::Kdf("encryption failed".into()))?;
    Ok(KeyFile {
        version: FORMAT_VERSION,
        address: address.to_owned(),
        public_key: public_key.to_owned(),
        kdf: KdfJson {
            algorithm: KDF_NAME.into(),
            version: 0x13,
            memory_kib: params.memory_kib,
            iterations: params.iterations,
            parallelism: params.parallelism,
            salt: hex::encode(salt),
        },
        cipher: CipherJson {
            algorithm: CIPHER_NAME.into(),
            nonce: hex::encode(nonce),
        },
        ciphertext: hex::encode(ciphertext),
    })
}

impl KeyFile {
    /// Parses a key file's text; `path` is for messages.
    ///
    /// # Errors
    /// [`KeyFileError::UnsupportedVersion`] or [`KeyFileError::Malformed`].
    pub fn parse(text: &str, path: &Path) -> Result<Self, KeyFileError> {
        let malformed = |reason: String| KeyFileError::Malformed {
            path: path.to_owned(),
            reason,
        };
        let probe: VersionProbe =
            serde_json::from_str(text).map_err(|e| malformed(e.to_string()))?;
        if probe.version != u64::from(FORMAT_VERSION) {
            return Err(KeyFileError::UnsupportedVersion {
                path: path.to_owned(),
                found: probe.version,
            });
        }
        let file: Self = serde_json::from_str(text).map_err(|e| malformed(e.to_string()))?;
        file.check().map_err(malformed)?;
        Ok(file)
    }

    /// Structural checks that need no passphrase.
    fn check(&self) -> Result<(), String> {
        if !self.address.starts_with("souk1") {
            return Err("`address` is not a souk1… address".into());
        }
        if self.public_key.len() != 64 || hex::decode(&self.public_key).is_err() {
            return Err("`public_key` is not 64 hex digits".into());
        }
        if self.kdf.algorithm != KDF_NAME || self.kdf.version != 0x13 {
            return Err(format!(
                "unknown key derivation {} version {}",
                self.kdf.algorithm, self.kdf.version
            ));
        }
        if self.kdf.memory_kib > MAX_MEMORY_KIB
            || self.kdf.iterations == 0
            || self.kdf.iterations > MAX_ITERATIONS
            || self.kdf.parallelism == 0
            || self.kdf.parallelism > MAX_PARALLELISM
        {
            return Err("the key derivation parameters are out of range".into());
        }
        if hex::decode(&self.kdf.salt).map(|s| s.len()) != Ok(SALT_BYTES) {
            return Err(format!("`kdf.salt` is not {SALT_BYTES} bytes of hex"));
        }
        if self.cipher.algorithm != CIPHER_NAME {
            return Err(format!("unknown cipher {}", self.cipher.algorithm));
        }
        if hex::decode(&self.cipher.nonce).map(|n| n.len()) != Ok(NONCE_BYTES) {
            return Err(format!("`cipher.nonce` is not {NONCE_BYTES} bytes of hex"));
        }
        match hex::decode(&self.ciphertext) {
            Ok(c) if c.len() > TAG_BYTES && c.len() <= MAX_CIPHERTEXT_BYTES => Ok(()),
            _ => Err("`ciphertext` is not hex of a plausible length".into()),
        }
    }

    /// Decrypts the secret.
    ///
    /// # Errors
    /// [`KeyFileError::WrongPassphrase`] when authentication fails (wrong passphrase, or any
    /// bound field edited); [`KeyFileError::Kdf`] for parameters Argon2 refuses.
    pub fn open(&self, passphrase: &[u8]) -> Result<Secret, KeyFileError> {
        // `parse` checked these; a file built in memory may not have been parsed.
        let damaged = |_| KeyFileError::WrongPassphrase;
        let salt = hex::decode(&self.kdf.salt).map_err(damaged)?;
        let nonce = hex::decode(&self.cipher.nonce).map_err(damaged)?;
        let ciphertext = hex::decode(&self.ciphertext).map_err(damaged)?;
        let nonce: [u8; NONCE_BYTES] = nonce
            .try_into()
            .map_err(|_| KeyFileError::WrongPassphrase)?;
        if self.version != FORMAT_VERSION {
            return Err(KeyFileError::WrongPassphrase);
        }
        let key = derive_key(
            passphrase,
            &salt,
            KdfParams {
                memory_kib: self.kdf.memory_kib,
                iterations: self.kdf.iterations,
                parallelism: self.kdf.parallelism,
            },
        )?;
        let aad = associated_data(self.version, &self.address, &self.public_key);
        let plaintext = Zeroizing::new(
            cipher(&key)?
                .decrypt(
                    &XNonce::from(nonce),
                    Payload {
                        msg: &ciphertext,
                        aad: &aad,
                    },
                )
                .map_err(|_| KeyFileError::WrongPassphrase)?,
        );
        Secret::decode(&plaintext).ok_or(KeyFileError::WrongPassphrase)
    }

    /// The file's text.
    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(self)
            .unwrap_or_else(|e| unreachable!("a key file always serialises: {e}"));
        text.push('\n');
        text
    }
}

/// The key file's path in `home`.
pub fn path(home: &Path) -> PathBuf {
    home.join(FILE_NAME)
}

/// Reads the key file in `home`.
///
/// # Errors
/// [`KeyFileError::NoKey`] when there is none; the errors of [`KeyFile::parse`].
pub fn load(home: &Path) -> Result<KeyFile, KeyFileError> {
    let path = path(home);
    match fs::read_to_string(&path) {
        Ok(text) => KeyFile::parse(&text, &path),
        Err(e) if e.kind() == ErrorKind::NotFound => Err(KeyFileError::NoKey {
            home: home.to_owned(),
        }),
        Err(source) => Err(KeyFileError::Io {
            what: "cannot read",
            path,
            source,
        }),
    }
}

/// Fails with [`KeyFileError::Exists`] if `home` holds a key file.
///
/// # Errors
/// As said.
pub fn refuse_existing(home: &Path) -> Result<(), KeyFileError> {
    let path = path(home);
    if !path.exists() {
        return Ok(());
    }
    let address = match load(home) {
        Ok(file) => file.address,
        Err(_) => "an unreadable key".into(),
    };
    Err(KeyFileError::Exists { path, address })
}

fn create_home(home: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(home)
    }
    #[cfg(not(unix))]
    {
        fs::create_dir_all(home)
    }
}

/// Writes `file` into `home` atomically (temporary file, then rename), mode 0600 on Unix.
/// Without `overwrite`, an existing key file is left alone and [`KeyFileError::Exists`]
/// returned.
///
/// # Errors
/// [`KeyFileError::Exists`] or [`KeyFileError::Io`].
pub fn save(home: &Path, file: &KeyFile, overwrite: bool) -> Result<PathBuf, KeyFileError> {
    let target = path(home);
    let io = |what: &'static str, path: &Path| {
        let path = path.to_owned();
        move |source| KeyFileError::Io { what, path, source }
    };
    create_home(home).map_err(io("cannot create", home))?;
    // tempfile creates the file with mode 0600 on Unix.
    let mut tmp = tempfile::Builder::new()
        .prefix(".key.json.")
        .suffix(".tmp")
        .tempfile_in(home)
        .map_err(io("cannot create a temporary file in", home))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o600))
            .map_err(io("cannot set permissions of", tmp.path()))?;
    }
    tmp.write_all(file.to_json().as_bytes())
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(io("cannot write", tmp.path()))?;
    let persisted = if overwrite {
        tmp.persist(&target)
    } else {
        tmp.persist_noclobber(&target)
    };
    match persisted {
        Ok(_) => {}
        Err(e) if !overwrite && e.error.kind() == ErrorKind::AlreadyExists => {
            refuse_existing(home)?;
            return Err(io("cannot write", &target)(e.error));
        }
        Err(e) => return Err(io("cannot write", &target)(e.error)),
    }
    // Make the rename itself durable where the platform allows it.
    #[cfg(unix)]
    if let Ok(dir) = fs::File::open(home) {
        let _ = dir.sync_all();
    }
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cheap parameters: the tests check the format, not the cost.
    const FAST: KdfParams = KdfParams {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    };
    const ADDRESS: &str = "souk1xr8st0v6lmlfl8t56ryaz7ajws7du4d9mzhjg2zkjgg4v5wap5vqp5jwel";
    const PUBLIC_KEY: &str = "30cf05bd9afefe9f9d74d0c9d17bb2743cde55a5d8af24285692115651dd0d18";
    const PHRASE: &str = "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about";

    fn secret(bip39: &str) -> Secret {
        Secret {
            mnemonic: Zeroizing::new(PHRASE.into()),
            bip39_passphrase: Zeroizing::new(bip39.into()),
        }
    }

    fn sealed(bip39: &str) -> KeyFile {
        seal(&secret(bip39), ADDRESS, PUBLIC_KEY, b"correct horse", FAST).unwrap()
    }

    fn reparse(file: &KeyFile) -> Result<KeyFile, KeyFileError> {
        KeyFile::parse(&file.to_json(), Path::new("key.json"))
    }

    #[test]
    fn round_trip() {
        for bip39 in ["", "extra words\nwith a line feed"] {
            let file = reparse(&sealed(bip39)).unwrap();
            assert_eq!(file.version, FORMAT_VERSION);
            assert_eq!(file.address, ADDRESS);
            let opened = file.open(b"correct horse").unwrap();
            assert_eq!(opened.mnemonic.as_str(), PHRASE);
            assert_eq!(opened.bip39_passphrase.as_str(), bip39);
        }
    }

    #[test]
    fn default_parameters_are_stored() {
        let file = seal(&secret(""), ADDRESS, PUBLIC_KEY, b"pw", KdfParams::DEFAULT).unwrap();
        assert_eq!(file.kdf.algorithm, "argon2id");
        assert_eq!(file.kdf.version, 0x13);
        assert_eq!(
            (
                file.kdf.memory_kib,
                file.kdf.iterations,
                file.kdf.parallelism
            ),
            (65536, 3, 1)
        );
        assert_eq!(hex::decode(&file.kdf.salt).unwrap().len(), 16);
        assert_eq!(hex::decode(&file.cipher.nonce).unwrap().len(), 24);
        assert_eq!(file.open(b"pw").unwrap().mnemonic.as_str(), PHRASE);
    }

    #[test]
    fn fresh_salt_and_nonce_each_time() {
        let (a, b) = (sealed(""), sealed(""));
        assert_ne!(a.kdf.salt, b.kdf.salt);
        assert_ne!(a.cipher.nonce, b.cipher.nonce);
        assert_ne!(a.ciphertext, b.ciphertext);
    }

    #[test]
    fn wrong_passphrase() {
        let err = sealed("").open(b"correct horsf").err().unwrap();
        assert!(matches!(err, KeyFileError::WrongPassphrase));
        assert_eq!(
            err.to_string(),
            "wrong passphrase, or the key file is damaged"
        );
    }

    #[test]
    fn tampered_file() {
        let good = sealed("");
        let mut flipped = good.clone();
        let mut bytes = hex::decode(&flipped.ciphertext).unwrap();
        bytes[3] ^= 1;
        flipped.ciphertext = hex::encode(bytes);
        let mut other_address = good.clone();
        other_address.address =
            "souk1qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq".into();
        let mut other_key = good.clone();
        other_key.public_key = "00".repeat(32);
        let mut other_salt = good.clone();
        other_salt.kdf.salt = "11".repeat(16);
        let mut other_cost = good.clone();
        other_cost.kdf.iterations = 2;
        let mut truncated = good;
        truncated
            .ciphertext
            .truncate(truncated.ciphertext.len() - 2);
        for file in [
            flipped,
            other_address,
            other_key,
            other_salt,
            other_cost,
            truncated,
        ] {
            let file = reparse(&file).unwrap();
            assert!(matches!(
                file.open(b"correct horse"),
                Err(KeyFileError::WrongPassphrase)
            ));
        }
    }

    #[test]
    fn wrong_version() {
        let mut file = sealed("");
        file.version = 2;
        let err = reparse(&file).unwrap_err();
        assert!(
            matches!(err, KeyFileError::UnsupportedVersion { found: 2, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("version 2"), "{err}");
        // Opened without parsing, the version still counts.
        assert!(matches!(
            file.open(b"correct horse"),
            Err(KeyFileError::WrongPassphrase)
        ));
    }

    #[test]
    fn malformed_files() {
        let path = Path::new("key.json");
        for text in [
            "",
            "{}",
            "not json",
            r#"{"version": 1}"#,
            r#"{"version": "1"}"#,
        ] {
            let err = KeyFile::parse(text, path).unwrap_err();
            assert!(
                matches!(err, KeyFileError::Malformed { .. }),
                "{text}: {err}"
            );
        }
        let mut huge = sealed("");
        huge.kdf.memory_kib = u32::MAX;
        assert!(matches!(
            reparse(&huge),
            Err(KeyFileError::Malformed { .. })
        ));
        let mut short_salt = sealed("");
        short_salt.kdf.salt = "00".into();
        assert!(matches!(
            reparse(&short_salt),
            Err(KeyFileError::Malformed { .. })
        ));
        let mut extra = serde_json::to_value(sealed("")).unwrap();
        extra["surprise"] = true.into();
        assert!(matches!(
            KeyFile::parse(&extra.to_string(), path),
            Err(KeyFileError::Malformed { .. })
        ));
    }

    #[test]
    fn save_load_and_overwrite() {
        let home = tempfile::tempdir().unwrap();
        let home = home.path().join("nested").join("souk");
        assert!(matches!(load(&home), Err(KeyFileError::NoKey { .. })));
        let first = sealed("");
        let path = save(&home, &first, false).unwrap();
        assert_eq!(path, home.join("key.json"));
        assert_eq!(load(&home).unwrap(), first);

        let second = sealed("other");
        let err = save(&home, &second, false).unwrap_err();
        assert!(matches!(err, KeyFileError::Exists { .. }), "{err}");
        assert!(err.to_string().contains(ADDRESS), "{err}");
        assert_eq!(load(&home).unwrap(), first, "left alone");
        assert!(refuse_existing(&home).is_err());

        save(&home, &second, true).unwrap();
        assert_eq!(load(&home).unwrap(), second);
        // No temporary files left behind.
        let names: Vec<_> = fs::read_dir(&home)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("key.json")]);

        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            let mode = fs::metadata(&home).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700);
        }
    }
}
