//! Why a load run could not start: the failures of setup (reading tokens, enrolling devices).
//! Failures of single escrow requests during the run are not errors here; they are counted
//! as outcomes by `run` and reported in the summary.

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
    /// The operating system's random source failed.
    #[error("random source: {0}")]
    Random(getrandom::Error),
    /// The server could not be reached.
    #[error("enrolling device {index}: {source}")]
    Transport {
        /// Which token (0-based line of the non-empty ones).
        index: usize,
        /// What the HTTP client reported.
        #[source]
        source: ureq::Error,
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
}
