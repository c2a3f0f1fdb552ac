//! Single sign-on to the web UI: the relying-party half of OpenID Connect's authorization code
//! flow with PKCE (`[oidc]` in server.toml). The protocol is the `openidconnect` crate's —
//! discovery, the authorization URL, the code exchange, and the ID token's signature (against
//! the provider's JWKS), issuer, audience, expiry and nonce — and this file only wires it to the
//! config, to an HTTP client and to the person keyward signs in: a name, the groups and the
//! role they map to. Where the flow's state lives (a cookie and a table) and what a sign-in
//! does are `ui/sso.rs`'s.
//!
//! The provider's metadata and keys are fetched when first needed, not at start (a provider
//! that is down must not keep password logins from working), kept for ten minutes, and fetched
//! again once when an ID token does not verify against them (the provider rotated its keys).

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use openidconnect::core::{
    CoreClient, CoreGenderClaim, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm,
    CoreProviderMetadata, CoreResponseType,
};
use openidconnect::{
    AdditionalClaims, AuthenticationFlow, AuthorizationCode, ClientId, ClientSecret, CsrfToken,
    IdToken, IssuerUrl, Nonce, OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier,
    RedirectUrl, Scope, TokenResponse, UserInfoClaims,
};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use zeroize::Zeroizing;

use crate::config::{secure_url, OidcConfig};
use crate::roles::Role;

/// How long the provider's metadata and keys are trusted before they are fetched again.
const METADATA_TTL: Duration = Duration::from_secs(600);
/// A key refresh after a failed verification happens at most this often.
const REFRESH_MIN: Duration = Duration::from_secs(30);
/// Every request to the provider ends within this.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest answer read from the provider.
const MAX_BODY: u64 = 1 << 20;
/// The longest name kept from a provider (the UI and the audit show it).
const MAX_NAME: usize = 128;
/// The ID token signatures accepted: the provider's public keys only. Not `none`, and not
/// HS256/384/512 (keyed with the client secret, which would make anyone holding a copy of
/// the secret able to mint ID tokens).
const ID_TOKEN_ALGS: [CoreJwsSigningAlgorithm; 9] = [
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha384,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha512,
    CoreJwsSigningAlgorithm::RsaSsaPssSha256,
    CoreJwsSigningAlgorithm::RsaSsaPssSha384,
    CoreJwsSigningAlgorithm::RsaSsaPssSha512,
    CoreJwsSigningAlgorithm::EcdsaP256Sha256,
    CoreJwsSigningAlgorithm::EcdsaP384Sha384,
    CoreJwsSigningAlgorithm::EdDsa,
];

/// Why single sign-on did not work.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SsoError {
    /// The config or the client secret file is unusable (at start).
    #[error("{0}")]
    Setup(String),
    /// The provider could not be reached or answered nonsense.
    #[error("the identity provider: {0}")]
    Provider(String),
    /// The ID token did not verify (signature, issuer, audience, expiry or nonce).
    #[error("the ID token was refused: {0}")]
    Token(String),
}

/// Claims beyond the standard ones, kept whole: the groups claim is named in the config.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct OtherClaims {
    #[serde(flatten)]
    all: serde_json::Map<String, serde_json::Value>,
}

impl AdditionalClaims for OtherClaims {}

type GroupsIdToken = IdToken<
    OtherClaims,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;

/// The client as discovery makes it: an authorization endpoint; a token and a userinfo
/// endpoint if the provider has them.
type Client = CoreClient<
    openidconnect::EndpointSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointMaybeSet,
    openidconnect::EndpointMaybeSet,
>;

/// A sign-in begun: where to send the browser, and what the callback must match.
#[derive(Debug)]
pub struct Begun {
    /// The provider's authorization URL.
    pub url: String,
    /// The `state` parameter (the browser keeps it in a cookie too).
    pub state: String,
    /// The nonce the ID token must carry.
    pub nonce: String,
    /// The PKCE verifier the code exchange proves.
    pub verifier: Zeroizing<String>,
}

/// A person the provider vouched for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    /// How the provider names them (`name_claim`, else `email`, else the subject).
    pub name: String,
    /// The provider's stable id for them.
    pub subject: String,
    /// Their groups, as the provider listed them.
    pub groups: Vec<String>,
    /// The role their groups map to, if any.
    pub role: Option<Role>,
}

/// `[oidc]` at work.
#[derive(Debug)]
pub struct Sso {
    config: OidcConfig,
    roles: BTreeMap<String, Role>,
    issuer: IssuerUrl,
    redirect: RedirectUrl,
    secret: ClientSecret,
    http: ureq::Agent,
    metadata: Mutex<Option<(Instant, CoreProviderMetadata)>>,
}

impl Sso {
    /// Ready the config: read the client secret (a file only its owner may read).
    pub fn new(config: &OidcConfig) -> Result<Self, SsoError> {
        let secret = read_secret(&config.client_secret_file)?;
        let issuer = IssuerUrl::new(config.issuer.clone())
            .map_err(|e| SsoError::Setup(format!("[oidc] issuer: {e}")))?;
        let redirect = RedirectUrl::new(config.redirect_url.clone())
            .map_err(|e| SsoError::Setup(format!("[oidc] redirect_url: {e}")))?;
        let roles = config
            .roles
            .iter()
            .map(|(g, r)| {
                r.parse()
                    .map(|role| (g.clone(), role))
                    .map_err(|e: crate::roles::UnknownRole| SsoError::Setup(e.to_string()))
            })
            .collect::<Result<_, _>>()?;
        let roots =
            crate::ca_roots::roots("[oidc]", config.ca_file.as_deref()).map_err(SsoError::Setup)?;
        let http = ureq::Agent::config_builder()
            .timeout_global(Some(HTTP_TIMEOUT))
            .max_redirects(0)
            .http_status_as_error(false)
            .https_only(false)
            .tls_config(ureq::tls::TlsConfig::builder().root_certs(roots).build())
            .build()
            .into();
        Ok(Sso {
            config: config.clone(),
            roles,
            issuer,
            redirect,
            secret: ClientSecret::new(secret.to_string()),
            http,
            metadata: Mutex::new(None),
        })
    }

    /// The issuer, for the log.
    pub fn issuer(&self) -> &str {
        &self.config.issuer
    }

    /// The provider's metadata and keys: cached, or fetched (`fresh`: fetched now, unless they
    /// were fetched moments ago).
    async fn metadata(&self, fresh: bool) -> Result<CoreProviderMetadata, SsoError> {
        let mut cached = self.metadata.lock().await;
        if let Some((at, m)) = cached.as_ref() {
            let age = at.elapsed();
            if age < METADATA_TTL && (!fresh || age < REFRESH_MIN) {
                return Ok(m.clone());
            }
        }
        let http = self.client();
        let m = CoreProviderMetadata::discover_async(self.issuer.clone(), &http)
            .await
            .map_err(|e| SsoError::Provider(chain(&e)))?;
        *cached = Some((Instant::now(), m.clone()));
        Ok(m)
    }

    fn oauth_client(&self, m: CoreProviderMetadata) -> Client {
        CoreClient::from_provider_metadata(
            m,
            ClientId::new(self.config.client_id.clone()),
            Some(self.secret.clone()),
        )
        .set_redirect_uri(self.redirect.clone())
    }

    /// Begin a sign-in: fresh state, nonce and PKCE verifier, and the URL that asks the
    /// provider for a code.
    pub async fn begin(&self) -> Result<Begun, SsoError> {
        let client = self.oauth_client(self.metadata(false).await?);
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = client
            .authorize_url(
                AuthenticationFlow::<CoreResponseType>::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .set_pkce_challenge(challenge);
        for scope in &self.config.scopes {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        let (url, state, nonce) = request.url();
        Ok(Begun {
            url: url.to_string(),
            state: state.secret().clone(),
            nonce: nonce.secret().clone(),
            verifier: Zeroizing::new(verifier.secret().clone()),
        })
    }

    /// Finish a sign-in: exchange the code (proving the PKCE verifier), verify the ID token
    /// against the provider's keys and this nonce, and say who it names.
    pub async fn finish(
        &self,
        code: &str,
        verifier: &str,
        nonce: &str,
    ) -> Result<Person, SsoError> {
        let client = self.oauth_client(self.metadata(false).await?);
        let http = self.client();
        let tokens = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|e| SsoError::Provider(chain(&e)))?
            .set_pkce_verifier(PkceCodeVerifier::new(verifier.to_owned()))
            .request_async(&http)
            .await
            .map_err(|e| SsoError::Provider(chain(&e)))?;
        let raw = tokens
            .id_token()
            .ok_or_else(|| SsoError::Token("the provider returned no ID token".to_owned()))?
            .to_string();
        let token: GroupsIdToken = raw
            .parse()
            .map_err(|e: serde_json::Error| SsoError::Token(e.to_string()))?;
        let nonce = Nonce::new(nonce.to_owned());
        let claims = match token.claims(&id_token_verifier(&client), &nonce) {
            Ok(c) => c.clone(),
            Err(first) => {
                // Perhaps the provider rotated its keys: fetch them again, once.
                let client = self.oauth_client(self.metadata(true).await?);
                let again = token.claims(&id_token_verifier(&client), &nonce).cloned();
                again.map_err(|e| {
                    SsoError::Token(format!(
                        "{}; after a key refresh: {}",
                        chain(&first),
                        chain(&e)
                    ))
                })?
            }
        };
        let mut all = as_map(&claims)?;
        if !all.contains_key(&self.config.groups_claim) {
            // Providers that keep the ID token small (or follow the spec's letter for the
            // code flow) give profile claims only at the userinfo endpoint: ask there, for
            // this subject only, with the access token this sign-in got.
            if let Ok(request) = client.user_info(
                tokens.access_token().clone(),
                Some(claims.subject().clone()),
            ) {
                let info: UserInfoClaims<OtherClaims, CoreGenderClaim> = request
                    .request_async(&http)
                    .await
                    .map_err(|e| SsoError::Provider(format!("userinfo: {}", chain(&e))))?;
                for (k, v) in as_map(&info)? {
                    all.entry(k).or_insert(v);
                }
            }
        }
        Ok(self.person(claims.subject().as_str(), &all))
    }

    /// Who `claims` (the ID token's, completed from userinfo) name, and their role.
    fn person(&self, subject: &str, claims: &serde_json::Map<String, serde_json::Value>) -> Person {
        let claim = |name: &str| {
            claims
                .get(name)
                .and_then(|v| v.as_str().map(str::to_owned))
                .filter(|v| !v.is_empty())
        };
        let subject = clean(subject);
        let name = claim(&self.config.name_claim)
            .or_else(|| claim("email"))
            .map_or_else(|| subject.clone(), |n| clean(&n));
        let groups = groups_of(claims.get(&self.config.groups_claim));
        let role = role_for(&groups, &self.roles);
        Person {
            name,
            subject,
            groups,
            role,
        }
    }

    /// The HTTP client the protocol runs over: ureq on the blocking pool, no redirects, a
    /// deadline, at most [`MAX_BODY`] read, and only https (or http on loopback) URLs.
    fn client(
        &self,
    ) -> impl Fn(
        openidconnect::HttpRequest,
    ) -> std::pin::Pin<
        Box<dyn Future<Output = Result<openidconnect::HttpResponse, HttpError>> + Send>,
    > {
        let agent = self.http.clone();
        move |request| {
            let agent = agent.clone();
            Box::pin(async move {
                tokio::task::spawn_blocking(move || send(&agent, request))
                    .await
                    .map_err(|e| HttpError(e.to_string()))?
            })
        }
    }
}

/// The ID token verifier of `client`, accepting only [`ID_TOKEN_ALGS`].
fn id_token_verifier(client: &Client) -> openidconnect::core::CoreIdTokenVerifier<'_> {
    client.id_token_verifier().set_allowed_algs(ID_TOKEN_ALGS)
}

/// Why an HTTP request to the provider failed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HttpError(String);

fn send(
    agent: &ureq::Agent,
    request: openidconnect::HttpRequest,
) -> Result<openidconnect::HttpResponse, HttpError> {
    let url = request.uri().to_string();
    if !secure_url(&url) {
        return Err(HttpError(format!(
            "refused to fetch {url}: not https (http only on loopback)"
        )));
    }
    let response = agent
        .run(request)
        .map_err(|e| HttpError(format!("{url}: {e}")))?;
    let (parts, mut body) = response.into_parts();
    let bytes = body
        .with_config()
        .limit(MAX_BODY)
        .read_to_vec()
        .map_err(|e| HttpError(format!("{url}: {e}")))?;
    Ok(openidconnect::HttpResponse::from_parts(parts, bytes))
}

/// Claims as one JSON object (standard ones by their names, the others as the provider sent
/// them).
fn as_map<T: Serialize>(
    claims: &T,
) -> Result<serde_json::Map<String, serde_json::Value>, SsoError> {
    match serde_json::to_value(claims) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        Ok(_) => Err(SsoError::Token("the claims are not an object".to_owned())),
        Err(e) => Err(SsoError::Token(e.to_string())),
    }
}

/// An error and its causes, on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

/// A provider's string as keyward shows it: printable, at most [`MAX_NAME`] characters.
fn clean(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control())
        .take(MAX_NAME)
        .collect()
}

/// The groups claim: an array of strings (or one string); anything else is no groups.
fn groups_of(claim: Option<&serde_json::Value>) -> Vec<String> {
    match claim {
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        Some(serde_json::Value::String(one)) => vec![one.clone()],
        _ => Vec::new(),
    }
}

/// The highest role any of `groups` maps to (viewer < helpdesk < approver < admin).
pub fn role_for(groups: &[String], map: &BTreeMap<String, Role>) -> Option<Role> {
    groups.iter().filter_map(|g| map.get(g)).copied().max()
}

/// The client secret: the file's first line, from a file no one but its owner may read.
fn read_secret(path: &Path) -> Result<Zeroizing<String>, SsoError> {
    use std::os::unix::fs::MetadataExt;
    let shown = path.display();
    let meta = std::fs::metadata(path)
        .map_err(|e| SsoError::Setup(format!("[oidc] client_secret_file {shown}: {e}")))?;
    if meta.mode() & 0o077 != 0 {
        return Err(SsoError::Setup(format!(
            "[oidc] client_secret_file {shown}: group or others may read it (chmod 600)"
        )));
    }
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .map_err(|e| SsoError::Setup(format!("[oidc] client_secret_file {shown}: {e}")))?,
    );
    let line = text.lines().next().unwrap_or("").trim();
    if line.is_empty() {
        return Err(SsoError::Setup(format!(
            "[oidc] client_secret_file {shown}: empty"
        )));
    }
    Ok(Zeroizing::new(line.to_owned()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn map(pairs: &[(&str, Role)]) -> BTreeMap<String, Role> {
        pairs.iter().map(|(g, r)| ((*g).to_owned(), *r)).collect()
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    /// ID tokens made here, signed with Ed25519 keys (one the provider publishes, one it does
    /// not), checked by [`id_token_verifier`] over a client made from provider metadata as
    /// `Sso::oauth_client` makes it: only a token for this client, from this issuer, unexpired,
    /// for this sign-in's nonce and signed with a published key passes; `none` never does.
    #[test]
    fn only_an_id_token_for_this_client_issuer_and_nonce_signed_with_a_published_key_passes() {
        use base64::Engine;
        use ed25519_dalek::Signer;
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        const ISSUER: &str = "https://sso.example.com";
        const CLIENT: &str = "keyward-escrow";
        let published = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
        let unpublished = ed25519_dalek::SigningKey::from_bytes(&[8u8; 32]);
        let jwk: openidconnect::core::CoreJsonWebKey = serde_json::from_value(json!({
            "kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": "EdDSA", "kid": "k1",
            "x": b64(published.verifying_key().as_bytes()),
        }))
        .unwrap();
        let metadata: CoreProviderMetadata = serde_json::from_value(json!({
            "issuer": ISSUER,
            "authorization_endpoint": format!("{ISSUER}/auth"),
            "jwks_uri": format!("{ISSUER}/jwks"),
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["EdDSA"],
        }))
        .unwrap();
        let metadata = metadata.set_jwks(openidconnect::core::CoreJsonWebKeySet::new(vec![jwk]));
        let client: Client = CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(CLIENT.to_owned()),
            Some(ClientSecret::new("the client secret".to_owned())),
        );
        let now = i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs(),
        )
        .unwrap();
        let good = json!({
            "iss": ISSUER, "aud": [CLIENT], "sub": "alice", "nonce": "n-1",
            "iat": now, "exp": now + 300,
        });
        // A compact JWS of `claims` with `alg`, signed by `key` (none: no signature).
        let token = |claims: &serde_json::Value,
                     alg: &str,
                     key: Option<&ed25519_dalek::SigningKey>| {
            let head = b64(json!({ "alg": alg, "kid": "k1" }).to_string().as_bytes());
            let body = b64(claims.to_string().as_bytes());
            let input = format!("{head}.{body}");
            let sig = key.map_or_else(String::new, |k| b64(&k.sign(input.as_bytes()).to_bytes()));
            format!("{input}.{sig}")
        };
        let passes = |raw: String, nonce: &str| {
            let parsed: GroupsIdToken = raw.parse().unwrap();
            parsed
                .claims(&id_token_verifier(&client), &Nonce::new(nonce.to_owned()))
                .is_ok()
        };
        let with = |field: &str, value: serde_json::Value| {
            let mut c = good.clone();
            c[field] = value;
            c
        };
        assert!(
            passes(token(&good, "EdDSA", Some(&published)), "n-1"),
            "the control"
        );
        for (what, claims) in [
            ("another client", with("aud", json!(["another-client"]))),
            (
                "another issuer",
                with("iss", json!("https://evil.example.com")),
            ),
            ("expired", with("exp", json!(now - 600))),
        ] {
            assert!(
                !passes(token(&claims, "EdDSA", Some(&published)), "n-1"),
                "{what}"
            );
        }
        assert!(
            !passes(token(&good, "EdDSA", Some(&published)), "n-2"),
            "another nonce"
        );
        assert!(
            !passes(token(&good, "EdDSA", Some(&unpublished)), "n-1"),
            "a key the provider did not publish"
        );
        assert!(!passes(token(&good, "none", None), "n-1"), "alg none");
    }

    #[test]
    fn the_highest_mapped_role_wins_and_unmapped_groups_give_none() {
        let m = map(&[
            ("it-helpdesk", Role::Helpdesk),
            ("sec-approvers", Role::Approver),
            ("keyward-admins", Role::Admin),
            ("everyone", Role::Viewer),
        ]);
        assert_eq!(
            role_for(&strings(&["everyone", "sec-approvers", "it-helpdesk"]), &m),
            Some(Role::Approver)
        );
        assert_eq!(
            role_for(&strings(&["keyward-admins", "everyone"]), &m),
            Some(Role::Admin)
        );
        assert_eq!(role_for(&strings(&["sales", "Keyward-Admins"]), &m), None);
        assert_eq!(role_for(&[], &m), None);
    }

    #[test]
    fn groups_are_an_array_of_strings_or_one_string() {
        assert_eq!(
            groups_of(Some(&json!(["a", 3, "b", null]))),
            strings(&["a", "b"])
        );
        assert_eq!(groups_of(Some(&json!("solo"))), strings(&["solo"]));
        assert!(groups_of(Some(&json!({"a": 1}))).is_empty());
        assert!(groups_of(None).is_empty());
    }

    #[test]
    fn names_lose_control_characters_and_length() {
        assert_eq!(clean("ali\nce\u{1b}[31m"), "alice[31m");
        assert_eq!(clean(&"x".repeat(500)).len(), MAX_NAME);
    }

    #[test]
    fn only_https_or_loopback_http_is_fetched() {
        for ok in [
            "https://idp.example.com/.well-known/openid-configuration",
            "http://127.0.0.1:4000/token",
            "http://localhost/jwks",
            "http://[::1]:8080/x",
        ] {
            assert!(secure_url(ok), "{ok}");
        }
        for bad in [
            "http://idp.example.com/token",
            "http://127.0.0.1.evil.example/x",
            "http://127.0.0.1@evil.example/x",
            "ftp://127.0.0.1/x",
            "file:///etc/passwd",
        ] {
            assert!(!secure_url(bad), "{bad}");
        }
    }

    #[test]
    fn the_secret_file_must_be_private_and_not_empty() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("secret");
        std::fs::write(&f, "s3cret\nignored\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = read_secret(&f).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_secret(&f).unwrap().as_str(), "s3cret");
        std::fs::write(&f, "\n").unwrap();
        assert!(read_secret(&f).unwrap_err().to_string().contains("empty"));
        assert!(read_secret(&dir.path().join("none")).is_err());
    }
}
