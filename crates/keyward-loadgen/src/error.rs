//! Why a load run could not start: the failures of setup (reading tokens, enrolling devices,
//! reading or writing the devices and receipts files). Failures of single requests during the
//! run are not errors here; they are counted as outcomes by `run` and reported in the summary.

/// A setup failure; the run does not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// Standard input could not be read.
    #[error("reading enrollment tokens from standard input: {0}")]
    Stdin(#[source] std::io::Error),
    /// Standard input held no token.
    #[error("no enrollment token on standard input (one a line, from `keyward-server token create --count N`)")]
    NoTokens,
    /// More tokens than the run accepts.
    #[error("more than {0} enrollment tokens on standard input")]
    TooManyTokens(usize),
    /// The server URL is not `http://HOST:PORT` on loopback.
    #[error("server URL {0:?} is not plain http:// on a loopback address")]
    BadUrl(String),
    /// `--volume` is not a volume name.
    #[error("--volume {0:?} is not a volume name")]
    BadVolume(String),
    /// The operating system's random source failed.
    #[error("random source: {0}")]
    Random(getrandom::Error),
    /// The server could not be reached.
    #[error("enrolling device {index}: {source}")]
    Transport {
        /// Which token (0-based line of the non-empty ones).
        index: usize,
        /// What the connection reported.
        #[source]
        source: std::io::Error,
    },
    /// The server refused an enrollment.
    #[error("enrolling device {index}: the server answered {status}: {body}")]
    Refused {
        /// Which token (0-based line of the non-empty ones).
        index: usize,
        /// The HTTP status.
        status: u16,
        /// The start of the answer's body.
        body: String,
    },
    /// The server's enrollment answer had no device id.
    #[error("enrolling device {0}: the answer has no device_id")]
    NoDeviceId(usize),
    /// The age encryption of a key failed.
    #[error("sealing a key to the recipient: {0}")]
    Seal(#[source] age::EncryptError),
    /// A request body could not be serialised.
    #[error("building a request: {0}")]
    Json(String),
    /// `--recipient` is not an age X25519 recipient.
    #[error("--recipient is not an age X25519 recipient (age1…)")]
    BadRecipient,
    /// `--server-key` is not a base64 Ed25519 public key.
    #[error("--server-key is not a base64 Ed25519 public key")]
    BadServerKey,
    /// The mixed mode verifies every receipt, so it needs the server's key.
    #[error("--mode mixed verifies receipts: give --server-key (server_signing_key from `keyward-server init`)")]
    NoServerKey,
    /// A devices or receipts file could not be read or written.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: String,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// A line of a devices file is not `DEVICE_ID SECRET_KEY_BASE64`.
    #[error("{path}:{line}: not a device line (DEVICE_ID SECRET_KEY_BASE64)")]
    BadDeviceLine {
        /// The file.
        path: String,
        /// 1-based line number.
        line: usize,
    },
    /// A devices file longer than the run accepts.
    #[error("a devices file holds more than {0} devices")]
    TooManyDevices(usize),
}
