// A real OpenID Connect provider for the single sign-on test: the npm package oidc-provider
// (panva's, OpenID Certified), on loopback, with its development login pages (any password).
// Started by crates/keyward-cli/tests/web_ui_sso.rs, which passes in:
//   KEYWARD_SSO_CLIENT_ID, KEYWARD_SSO_CLIENT_SECRET, KEYWARD_SSO_REDIRECT   the one client
//   KEYWARD_SSO_USERINFO_ONLY=1 (optional)   the ID token carries no profile, email or groups
//                                   claims: they are only at the userinfo endpoint
//   KEYWARD_SSO_ID_TOKEN_ALG (optional)   how ID tokens are signed (e.g. HS256, with the client
//                                   secret: keyward must refuse it); RS256 by default
//   KEYWARD_SSO_TLS_CERT, KEYWARD_SSO_TLS_KEY (optional)   serve HTTPS with this certificate for
//                                   127.0.0.1 (the issuer is then https://127.0.0.1:PORT)
// It prints one JSON line, {"issuer": URL}, once it listens (the issuer names `localhost`, so
// the provider is another site than the escrow server at 127.0.0.1, as in real life), and
// serves until killed. People and their groups:
//   alice   keyward-admins            → admin
//   hank    it-helpdesk, everyone     → helpdesk
//   mallory sales                     → no role
// The ID token carries the profile, email and groups claims (conformIdTokenClaims off), is
// signed RS256 with a key made at start, and PKCE is required.
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { createServer as createTlsServer } from 'node:https';
import { generateKeyPairSync } from 'node:crypto';
import Provider from 'oidc-provider';

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} must be set`);
  return v;
};

const GROUPS = {
  alice: ['keyward-admins'],
  hank: ['it-helpdesk', 'everyone'],
  mallory: ['sales'],
};

const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const jwk = { ...privateKey.export({ format: 'jwk' }), kid: 'test-1', use: 'sig', alg: 'RS256' };

const tls = process.env.KEYWARD_SSO_TLS_CERT
  ? { cert: readFileSync(process.env.KEYWARD_SSO_TLS_CERT), key: readFileSync(env('KEYWARD_SSO_TLS_KEY')) }
  : null;
const server = tls ? createTlsServer(tls) : createServer();
server.listen(0, '127.0.0.1', () => {
  const port = server.address().port;
  const issuer = tls ? `https://127.0.0.1:${port}` : `http://localhost:${port}`;
  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: env('KEYWARD_SSO_CLIENT_ID'),
        client_secret: env('KEYWARD_SSO_CLIENT_SECRET'),
        redirect_uris: [env('KEYWARD_SSO_REDIRECT')],
        grant_types: ['authorization_code'],
        response_types: ['code'],
        token_endpoint_auth_method: 'client_secret_basic',
        id_token_signed_response_alg: process.env.KEYWARD_SSO_ID_TOKEN_ALG || 'RS256',
      },
    ],
    jwks: { keys: [jwk] },
    enabledJWA: { idTokenSigningAlgValues: ['RS256', 'HS256'] },
    cookies: { keys: ['keyward-test-cookie-key-not-a-secret'] },
    scopes: ['openid', 'profile', 'email', 'groups'],
    claims: {
      openid: ['sub'],
      profile: ['preferred_username', 'name'],
      email: ['email'],
      groups: ['groups'],
    },
    conformIdTokenClaims: process.env.KEYWARD_SSO_USERINFO_ONLY === '1',
    pkce: { required: () => true },
    findAccount: async (_ctx, sub) => ({
      accountId: sub,
      claims: async () => ({
        sub,
        preferred_username: sub,
        name: sub[0].toUpperCase() + sub.slice(1),
        email: `${sub}@example.com`,
        groups: GROUPS[sub] ?? [],
      }),
    }),
  });
  server.on('request', provider.callback());
  process.stdout.write(`${JSON.stringify({ issuer })}\n`);
});
