//! The server's config file, `server.toml` (`serve --config FILE`; by default
//! `/etc/keyward/server.toml` when it exists; no file means every default). TOML, parsed
//! strictly: an unknown table or key is an error, so a typo never silently means the default.
//! One table per concern: `[reveal]`, `[oidc]` (single sign-on to the web UI), `[notify]`
//! (webhooks). Pure: the caller reads the file (and `oidc.rs` and `notify.rs` the secret files
//! they name).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The file `serve` reads when `--config` is not given, if it exists.
pub const DEFAULT_PATH: &str = "/etc/keyward/server.toml";

/// The longest approval window (30 days): an approval is a short-lived permission.
pub const MAX_APPROVAL_HOURS: u32 = 720;

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct ServerConfig {
    /// `[reveal]`: how a recovery key is revealed to a person.
    pub reveal: RevealConfig,
    /// `[oidc]`: sign in to the web UI through the company's OpenID Connect provider.
    pub oidc: Option<OidcConfig>,
    /// `[notify]`: the webhook told of every reveal request, decision and reveal; absent, none.
    pub notify: Option<NotifyConfig>,
}

/// `[oidc]`. Every field but the lists has no default: a half-written table is an error.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct OidcConfig {
    /// The provider's issuer URL (its discovery document is `ISSUER/.well-known/openid-configuration`).
    pub issuer: String,
    /// This server's client id at the provider.
    pub client_id: String,
    /// A file holding the client secret (one line; owner-only permissions).
    pub client_secret_file: PathBuf,
    /// Where the provider sends the browser back: this server's `…/ui/sso/callback`, as the
    /// browser reaches it (registered at the provider).
    pub redirect_url: String,
    /// Scopes asked for besides `openid`.
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// The ID token claim that lists the person's groups (an array of strings).
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// The ID token claim that names the person in the UI and the audit trail (then `email`,
    /// then the subject).
    #[serde(default = "default_name_claim")]
    pub name_claim: String,
    /// Trust only the CA certificates in this PEM file for the provider (default: Mozilla's
    /// roots), for a provider behind a company CA.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// `[oidc.roles]`: group → role. A person gets the highest role of their groups' (viewer <
    /// helpdesk < approver < admin); no mapped group, no sign-in.
    pub roles: BTreeMap<String, String>,
}

fn default_scopes() -> Vec<String> {
    vec!["profile".to_owned(), "email".to_owned()]
}

fn default_groups_claim() -> String {
    "groups".to_owned()
}

fn default_name_claim() -> String {
    "preferred_username".to_owned()
}

/// Whether `url` is https, or http to a loopback address (a provider on the same host, or a
/// test): the only URLs keyward talks OpenID Connect to.
pub fn secure_url(url: &str) -> bool {
    if url.starts_with("https://") {
        return true;
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    if authority.contains('@') {
        return false;
    }
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl OidcConfig {
    /// The problems with this table, if any (the caller adds the file's name).
    fn check(&self) -> Result<(), String> {
        if !secure_url(&self.issuer) {
            return Err(format!(
                "[oidc] issuer must be an https:// URL (http:// only on loopback), not {:?}",
                self.issuer
            ));
        }
        if !secure_url(&self.redirect_url) {
            return Err(format!(
                "[oidc] redirect_url must be an https:// URL (http:// only on loopback), not {:?}",
                self.redirect_url
            ));
        }
        let path_ok = self
            .redirect_url
            .split_once("://")
            .and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..]))
            .is_some_and(|path| path == "/ui/sso/callback");
        if !path_ok {
            return Err(format!(
                "[oidc] redirect_url must end in /ui/sso/callback (this server's callback), not {:?}",
                self.redirect_url
            ));
        }
        if self.client_id.trim().is_empty() {
            return Err("[oidc] client_id is empty".to_owned());
        }
        if self.groups_claim.is_empty() || self.name_claim.is_empty() {
            return Err("[oidc] groups_claim and name_claim must name a claim".to_owned());
        }
        if self.roles.is_empty() {
            return Err(
                "[oidc.roles] maps no group to a role: nobody could sign in (e.g. \"keyward-admins\" = \"admin\")"
                    .to_owned(),
            );
        }
        for (group, role) in &self.roles {
            if role.parse::<crate::roles::Role>().is_err() {
                return Err(format!(
                    "[oidc.roles] {group:?} = {role:?}: a role is viewer, helpdesk, approver or admin"
                ));
            }
        }
        Ok(())
    }
}

/// `[reveal]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct RevealConfig {
    /// A reveal needs a request approved by a second person (approver or admin).
    pub require_approval: bool,
    /// How long an approval (and a request waiting for one) lasts, in hours.
    pub approval_hours: u32,
}

impl Default for RevealConfig {
    fn default() -> Self {
        RevealConfig {
            require_approval: true,
            approval_hours: 24,
        }
    }
}

impl RevealConfig {
    /// The approval window in seconds.
    pub fn approval_secs(&self) -> i64 {
        i64::from(self.approval_hours) * 3600
    }
}

/// The longest `[notify] timeout_secs`: a receiver slower than this is down.
pub const MAX_NOTIFY_TIMEOUT_SECS: u32 = 300;

/// The longest `[notify] give_up_secs` (30 days).
pub const MAX_NOTIFY_GIVE_UP_SECS: u32 = 30 * 24 * 3600;

/// `[notify]`: where the webhook goes and how it is signed.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct NotifyConfig {
    /// The receiver: `https://…`; `http://` only to a loopback address.
    pub url: String,
    /// The HMAC-SHA256 key: the file's one line (at least 32 bytes), readable only by the
    /// server's user; read at start.
    pub secret_file: PathBuf,
    /// How long one delivery attempt may take (connect, send, answer), in seconds.
    #[serde(default = "default_notify_timeout")]
    pub timeout_secs: u32,
    /// Retries stop this long after the event (and a `notify-failed` record is audited).
    #[serde(default = "default_notify_give_up")]
    pub give_up_secs: u32,
    /// Trust only the CA certificates in this PEM file for the receiver (default: Mozilla's
    /// roots), for a receiver behind a company CA.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

fn default_notify_timeout() -> u32 {
    10
}

fn default_notify_give_up() -> u32 {
    24 * 3600
}

impl NotifyConfig {
    /// What is wrong with the table's values, if anything.
    fn check(&self) -> Result<(), String> {
        check_webhook_url(&self.url)?;
        if !(1..=MAX_NOTIFY_TIMEOUT_SECS).contains(&self.timeout_secs) {
            return Err(format!(
                "[notify] timeout_secs must be 1 to {MAX_NOTIFY_TIMEOUT_SECS}, not {}",
                self.timeout_secs
            ));
        }
        if !(1..=MAX_NOTIFY_GIVE_UP_SECS).contains(&self.give_up_secs) {
            return Err(format!(
                "[notify] give_up_secs must be 1 to {MAX_NOTIFY_GIVE_UP_SECS}, not {}",
                self.give_up_secs
            ));
        }
        if !self.secret_file.is_absolute() {
            return Err(format!(
                "[notify] secret_file must be an absolute path, not {:?}",
                self.secret_file
            ));
        }
        Ok(())
    }
}

/// A webhook URL is `https://HOST…`, or `http://` to a loopback address (a receiver on this
/// host); no user or password in it (it would land in logs), parsed as the HTTP client will.
fn check_webhook_url(url: &str) -> Result<(), String> {
    let refuse = |why: &str| Err(format!("[notify] url {url:?}: {why}"));
    let Ok(uri) = url.parse::<axum::http::Uri>() else {
        return refuse("not a URL");
    };
    let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
        return refuse("not an absolute http(s) URL");
    };
    if authority.as_str().contains('@') {
        return refuse("a user or password in the URL is not allowed");
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match scheme {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        "http" => refuse("plain http:// only to a loopback address; use https://"),
        _ => refuse("the scheme must be https://"),
    }
}

/// Why the config file was not used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// Which file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not TOML, an unknown key, or a value of the wrong type.
    #[error("{path}: {message}")]
    Parse {
        /// Which file.
        path: PathBuf,
        /// The parser's words (with the line).
        message: String,
    },
    /// A value out of its range.
    #[error("{path}: {message}")]
    Invalid {
        /// Which file.
        path: PathBuf,
        /// What is wrong and what is allowed.
        message: String,
    },
}

impl ServerConfig {
    /// Parse the text of `path`.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let config: ServerConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        if let Some(Err(message)) = config.oidc.as_ref().map(OidcConfig::check) {
            return Err(ConfigError::Invalid {
                path: path.to_owned(),
                message,
            });
        }
        let hours = config.reveal.approval_hours;
        if !(1..=MAX_APPROVAL_HOURS).contains(&hours) {
            return Err(ConfigError::Invalid {
                path: path.to_owned(),
                message: format!(
                    "[reveal] approval_hours must be 1 to {MAX_APPROVAL_HOURS}, not {hours}"
                ),
            });
        }
        if let Some(notify) = &config.notify {
            notify.check().map_err(|message| ConfigError::Invalid {
                path: path.to_owned(),
                message,
            })?;
        }
        Ok(config)
    }

    /// `--config FILE` (which must exist), else [`DEFAULT_PATH`] if it exists, else every
    /// default. Also says which file was read, for the log.
    pub fn load(explicit: Option<&Path>) -> Result<(Self, Option<PathBuf>), ConfigError> {
        let path = match explicit {
            Some(p) => p.to_owned(),
            None if Path::new(DEFAULT_PATH).exists() => PathBuf::from(DEFAULT_PATH),
            None => return Ok((ServerConfig::default(), None)),
        };
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        Ok((Self::parse(&text, &path)?, Some(path)))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The file the Debian package installs as /etc/keyward/server.toml.
    const SHIPPED: &str = include_str!("../../../dist/debian/server.toml");

    fn parse(text: &str) -> Result<ServerConfig, ConfigError> {
        ServerConfig::parse(text, Path::new("server.toml"))
    }

    /// The shipped file with every option line (`#key = value`, `#"key" = value`, `#[table]`)
    /// uncommented.
    fn uncommented() -> String {
        SHIPPED
            .lines()
            .map(|l| match l.strip_prefix('#') {
                Some(rest)
                    if rest.starts_with(['[', '"'])
                        || rest.starts_with(|c: char| c.is_ascii_lowercase()) =>
                {
                    rest
                }
                _ => l,
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn no_file_and_the_shipped_file_mean_the_defaults() {
        let defaults = ServerConfig::default();
        assert!(defaults.reveal.require_approval);
        assert_eq!(defaults.reveal.approval_hours, 24);
        assert_eq!(parse("").unwrap(), defaults);
        assert_eq!(
            parse(SHIPPED).unwrap(),
            defaults,
            "as shipped, all commented"
        );
    }

    #[test]
    fn every_option_in_the_shipped_file_parses_and_shows_its_default() {
        let text = uncommented();
        let parsed = parse(&text).unwrap();
        assert_eq!(parsed.reveal, RevealConfig::default(), "{text}");
        // `[oidc]` has no defaults: its lines are an example, and each list shows its default.
        let oidc = parsed.oidc.expect("the [oidc] example");
        assert_eq!(oidc.scopes, default_scopes());
        assert_eq!(oidc.groups_claim, default_groups_claim());
        assert_eq!(oidc.name_claim, default_name_claim());
        assert_eq!(oidc.roles.len(), 4);
        assert_eq!(oidc.ca_file, Some("/etc/keyward/company-ca.pem".into()));
        // `[notify]` has no default (absent: no webhook): its url and secret file are examples,
        // its other options show their defaults.
        let example = NotifyConfig {
            url: "https://hooks.example.com/keyward".into(),
            secret_file: "/etc/keyward/notify.key".into(),
            timeout_secs: 10,
            give_up_secs: 86400,
            ca_file: Some("/etc/keyward/company-ca.pem".into()),
        };
        assert_eq!(parsed.notify, Some(example), "{text}");
        for option in [
            "[reveal]",
            "require_approval = true",
            "approval_hours = 24",
            "[oidc]",
            "[oidc.roles]",
            "[notify]",
            "url = \"https://hooks.example.com/keyward\"",
            "secret_file = \"/etc/keyward/notify.key\"",
            "timeout_secs = 10",
            "give_up_secs = 86400",
        ] {
            assert!(
                text.lines().any(|l| l.trim() == option),
                "{option} is not in the shipped file"
            );
        }
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        for bad in [
            "[reveal]\nrequire_aproval = false\n",
            "[revael]\n",
            "typo = 1\n",
            "[reveal]\nrequire_approval = \"no\"\n",
            "[reveal]\napproval_hours = -1\n",
            "[reveal]\napproval_hours = 0\n",
            "[reveal]\napproval_hours = 721\n",
            "not toml",
        ] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.starts_with("server.toml: "), "{bad}: {e}");
        }
        let c = parse("[reveal]\nrequire_approval = false\napproval_hours = 2\n").unwrap();
        assert!(!c.reveal.require_approval);
        assert_eq!(c.reveal.approval_secs(), 7200);
    }

    const OIDC: &str = "[oidc]\nissuer = \"https://idp.example.com\"\nclient_id = \"kw\"\n\
                        client_secret_file = \"/etc/keyward/s\"\n\
                        redirect_url = \"https://escrow.example.com/ui/sso/callback\"\n";

    #[test]
    fn an_oidc_table_is_whole_and_safe() {
        let c = parse(&format!("{OIDC}[oidc.roles]\nops = \"admin\"\n")).unwrap();
        let oidc = c.oidc.unwrap();
        assert_eq!(oidc.roles.get("ops").map(String::as_str), Some("admin"));
        assert_eq!(oidc.scopes, ["profile", "email"]);
        for (bad, says) in [
            (OIDC.to_owned(), "missing field `roles`"),
            (format!("{OIDC}[oidc.roles]\n"), "maps no group"),
            (format!("{OIDC}[oidc.roles]\nops = \"root\"\n"), "a role is"),
            (
                OIDC.replace("https://idp.example.com", "http://idp.example.com")
                    + "[oidc.roles]\nops = \"admin\"\n",
                "issuer must be an https://",
            ),
            (
                OIDC.replace("/ui/sso/callback", "/callback") + "[oidc.roles]\nops = \"admin\"\n",
                "must end in /ui/sso/callback",
            ),
            (
                OIDC.replace("client_id = \"kw\"\n", "") + "[oidc.roles]\nops = \"admin\"\n",
                "missing field `client_id`",
            ),
            (
                format!("{OIDC}secret = \"x\"\n[oidc.roles]\nops = \"admin\"\n"),
                "unknown field",
            ),
        ] {
            let e = parse(&bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
        let loopback = OIDC
            .replace("https://idp.example.com", "http://127.0.0.1:4000")
            .replace("https://escrow.example.com", "http://localhost:8080");
        assert!(parse(&format!("{loopback}[oidc.roles]\nops = \"admin\"\n")).is_ok());
    }

    #[test]
    fn notify_needs_a_url_and_a_secret_file_and_refuses_plain_http_off_loopback() {
        let table = |url: &str, rest: &str| {
            format!("[notify]\nurl = \"{url}\"\nsecret_file = \"/etc/keyward/notify.key\"\n{rest}")
        };
        let c = parse(&table("https://hooks.example.com/k?team=1", "")).unwrap();
        let n = c.notify.unwrap();
        assert_eq!((n.timeout_secs, n.give_up_secs), (10, 86400));
        for ok in [
            "http://127.0.0.1:8080/hook",
            "http://localhost/hook",
            "http://[::1]:9/x",
            "https://10.0.0.1/hook",
        ] {
            assert!(parse(&table(ok, "")).is_ok(), "{ok}");
        }
        let c = parse(&table(
            "https://h.example/",
            "timeout_secs = 3\ngive_up_secs = 60",
        ))
        .unwrap();
        let n = c.notify.unwrap();
        assert_eq!((n.timeout_secs, n.give_up_secs), (3, 60));
        for (bad, why) in [
            (table("http://hooks.example.com/k", ""), "loopback"),
            (table("http://10.0.0.1/k", ""), "loopback"),
            (
                table("http://localhost:1@hooks.example.com/", ""),
                "user or password",
            ),
            (
                table("https://user:pw@hooks.example.com/", ""),
                "user or password",
            ),
            (table("ftp://hooks.example.com/", ""), "scheme"),
            (table("hooks.example.com/k", ""), "not a URL"),
            (table("/hook", ""), "absolute"),
            (table("", ""), "URL"),
            (
                table("https://h.example/", "timeout_secs = 0"),
                "timeout_secs",
            ),
            (
                table("https://h.example/", "timeout_secs = 301"),
                "timeout_secs",
            ),
            (
                table("https://h.example/", "give_up_secs = 0"),
                "give_up_secs",
            ),
            (
                table("https://h.example/", "give_up_secs = 2592001"),
                "give_up_secs",
            ),
            (table("https://h.example/", "retries = 3"), "unknown field"),
            (
                "[notify]\nurl = \"https://h.example/\"\n".into(),
                "secret_file",
            ),
            ("[notify]\nsecret_file = \"/k\"\n".into(), "url"),
            (
                "[notify]\nurl = \"https://h.example/\"\nsecret_file = \"notify.key\"\n".into(),
                "absolute path",
            ),
        ] {
            let e = parse(&bad).unwrap_err().to_string();
            assert!(
                e.starts_with("server.toml: ") && e.contains(why),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn an_explicit_file_must_exist() {
        let e = ServerConfig::load(Some(Path::new("/nonexistent/server.toml"))).unwrap_err();
        assert!(matches!(e, ConfigError::Read { .. }), "{e}");
    }
}
