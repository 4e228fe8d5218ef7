//! One error enum per area: [`WalletError`] for keys and signing, [`ClientError`] for talking
//! to index servers. Each variant's message is written for the person holding the phone; each
//! has a stable [`code`](ClientError::code) for programs.

/// What went wrong with keys or signing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, uniffi::Error)]
pub enum WalletError {
    /// The recovery phrase is not a valid BIP 39 mnemonic.
    #[error("this recovery phrase is not valid: {reason}. Check each word and the word order")]
    InvalidMnemonic {
        /// What is wrong with it.
        reason: String,
    },
    /// A seed handed in by the app is not 64 bytes.
    #[error("the seed must be 64 bytes, got {length}")]
    InvalidSeed {
        /// Bytes received.
        length: u32,
    },
    /// The wallet was made from a seed, so it has no phrase to export.
    #[error(
        "this wallet was opened from a seed, not a recovery phrase, so it has no phrase to show"
    )]
    NoMnemonic,
    /// The draft breaks a protocol rule; nothing was signed.
    #[error("cannot sign: {field}: {detail} ({code})")]
    InvalidDraft {
        /// Stable code of the protocol rule (`too_long`, `missing`, `bad_format`, …).
        code: String,
        /// The field at fault, e.g. `title` or `coupons[0]`.
        field: String,
        /// What to change. (Not `message`: Kotlin exceptions have one already.)
        detail: String,
    },
    /// The operating system's random number generator failed.
    #[error("the system random number generator failed: {reason}")]
    Randomness {
        /// The system's message.
        reason: String,
    },
}

impl WalletError {
    /// A stable code for programs.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidMnemonic { .. } => "invalid_mnemonic",
            Self::InvalidSeed { .. } => "invalid_seed",
            Self::NoMnemonic => "no_mnemonic",
            Self::InvalidDraft { .. } => "invalid_draft",
            Self::Randomness { .. } => "randomness",
        }
    }
}

impl From<souk_protocol::ValidationError> for WalletError {
    fn from(e: souk_protocol::ValidationError) -> Self {
        Self::InvalidDraft {
            code: e.code().into(),
            field: e.field().unwrap_or("").into(),
            detail: e.to_string(),
        }
    }
}

/// One server's failure, as kept in [`ClientError::AllServersFailed`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, uniffi::Record)]
pub struct ServerFailure {
    /// The server's base URL.
    pub server: String,
    /// Stable code of the failure (as [`ClientError::code`]).
    pub code: String,
    /// What happened.
    pub message: String,
}

/// What went wrong talking to index servers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, uniffi::Error)]
pub enum ClientError {
    /// No server URL was configured.
    #[error(
        "no index server is configured; add one in the settings (e.g. https://index.example.org)"
    )]
    NoServers,
    /// A configured server URL cannot be used.
    #[error("`{url}` is not a usable server address: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// Why.
        reason: String,
    },
    /// An argument is not acceptable (a bad id, address or filter value).
    #[error("{name}: {reason}")]
    InvalidArgument {
        /// Argument name.
        name: String,
        /// What is acceptable.
        reason: String,
    },
    /// The server could not be reached.
    #[error("cannot reach {server}: {reason}. Check the connection or try another server")]
    Unreachable {
        /// Server base URL.
        server: String,
        /// The network's message.
        reason: String,
    },
    /// The server did not answer in time.
    #[error("{server} did not answer within {seconds} s")]
    Timeout {
        /// Server base URL.
        server: String,
        /// The time allowed.
        seconds: u64,
    },
    /// The server answered with an error of its own.
    #[error("{server} answered {status} {code}: {detail}")]
    Server {
        /// Server base URL.
        server: String,
        /// HTTP status.
        status: u16,
        /// The server's error code.
        code: String,
        /// The server's message.
        detail: String,
    },
    /// The server's answer is not what the API promises.
    #[error("{server} sent an answer that is not valid: {reason}")]
    BadResponse {
        /// Server base URL.
        server: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The server's answer is larger than any valid answer can be.
    #[error("{server} sent more than {limit} bytes; the answer was cut off and ignored")]
    TooLarge {
        /// Server base URL.
        server: String,
        /// The limit, in bytes.
        limit: u64,
    },
    /// The server sent an object whose signature or summary does not check out.
    #[error("{server} sent a listing that failed verification ({id}): {reason}. It is not shown")]
    Tampered {
        /// Server base URL.
        server: String,
        /// Object id claimed.
        id: String,
        /// What did not match.
        reason: String,
    },
    /// No configured server has it.
    #[error("not found: {what}")]
    NotFound {
        /// What was asked for.
        what: String,
    },
    /// The servers refused an envelope by the protocol's rules.
    #[error("the server refused it: {detail} ({code})")]
    Rejected {
        /// Stable protocol code, e.g. `bad_signature`.
        code: String,
        /// The server's message.
        detail: String,
    },
    /// Every server failed; each failure is listed.
    #[error("no server could answer: {}", summarize(.failures))]
    AllServersFailed {
        /// One entry per server tried, in order.
        failures: Vec<ServerFailure>,
    },
}

fn summarize(failures: &[ServerFailure]) -> String {
    failures
        .iter()
        .map(|f| format!("{} ({})", f.server, f.message))
        .collect::<Vec<_>>()
        .join("; ")
}

impl ClientError {
    /// A stable code for programs.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::NoServers => "no_servers",
            Self::InvalidUrl { .. } => "invalid_url",
            Self::InvalidArgument { .. } => "invalid_argument",
            Self::Unreachable { .. } => "unreachable",
            Self::Timeout { .. } => "timeout",
            Self::Server { .. } => "server_error",
            Self::BadResponse { .. } => "bad_response",
            Self::TooLarge { .. } => "too_large",
            Self::Tampered { .. } => "tampered",
            Self::NotFound { .. } => "not_found",
            Self::Rejected { .. } => "rejected",
            Self::AllServersFailed { .. } => "all_servers_failed",
        }
    }

    /// Whether trying another server may help (network and server faults, bad or forged
    /// answers); `false` for answers every honest server would give (not found, refused).
    #[must_use]
    pub fn is_server_fault(&self) -> bool {
        matches!(
            self,
            Self::Unreachable { .. }
                | Self::Timeout { .. }
                | Self::BadResponse { .. }
                | Self::TooLarge { .. }
                | Self::Tampered { .. }
        ) || matches!(self, Self::Server { status, .. } if *status >= 500 || *status == 429)
    }

    pub(crate) fn as_failure(&self, server: &str) -> ServerFailure {
        ServerFailure {
            server: server.into(),
            code: self.code().into(),
            message: self.to_string(),
        }
    }
}
