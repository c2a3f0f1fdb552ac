//! The schema, as one ordered list of migrations applied to SQLite and PostgreSQL alike. Each
//! migration is the same tables in each dialect's DDL (they differ in auto-increment and blob
//! types only); queries are written once in `store.rs`. Applied versions are recorded in
//! `schema_version`, each migration in its own transaction; migrations only ever append.

use sqlx::{AnyPool, Row};

use crate::store::{Dialect, StoreError};

/// One migration: its version and statements per dialect.
struct Migration {
    version: i64,
    sqlite: &'static [&'static str],
    postgres: &'static [&'static str],
}

const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    sqlite: &[
        "CREATE TABLE devices (id TEXT PRIMARY KEY, key TEXT NOT NULL, created TEXT NOT NULL)",
        "CREATE TABLE tokens (hash TEXT PRIMARY KEY, used INTEGER NOT NULL DEFAULT 0)",
        "CREATE TABLE nonces (device TEXT NOT NULL, nonce TEXT NOT NULL, ts INTEGER NOT NULL, \
         PRIMARY KEY (device, nonce))",
        "CREATE INDEX nonces_ts ON nonces (ts)",
        "CREATE TABLE escrows (id TEXT PRIMARY KEY, device TEXT NOT NULL, volume TEXT NOT NULL, \
         rotation_id TEXT NOT NULL, sha256 TEXT NOT NULL, ciphertext BLOB NOT NULL, created TEXT NOT NULL, \
         rotate_after_use INTEGER NOT NULL DEFAULT 0, UNIQUE (device, volume, rotation_id))",
        "CREATE INDEX escrows_latest ON escrows (device, volume, created)",
        "CREATE TABLE audit (seq INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, who TEXT NOT NULL, \
         action TEXT NOT NULL, device TEXT, volume TEXT, reason TEXT)",
        "CREATE TABLE checkins (device TEXT PRIMARY KEY, at TEXT NOT NULL, report TEXT NOT NULL)",
    ],
    postgres: &[
        "CREATE TABLE devices (id TEXT PRIMARY KEY, key TEXT NOT NULL, created TEXT NOT NULL)",
        "CREATE TABLE tokens (hash TEXT PRIMARY KEY, used BIGINT NOT NULL DEFAULT 0)",
        "CREATE TABLE nonces (device TEXT NOT NULL, nonce TEXT NOT NULL, ts BIGINT NOT NULL, \
         PRIMARY KEY (device, nonce))",
        "CREATE INDEX nonces_ts ON nonces (ts)",
        "CREATE TABLE escrows (id TEXT PRIMARY KEY, device TEXT NOT NULL, volume TEXT NOT NULL, \
         rotation_id TEXT NOT NULL, sha256 TEXT NOT NULL, ciphertext BYTEA NOT NULL, created TEXT NOT NULL, \
         rotate_after_use BIGINT NOT NULL DEFAULT 0, UNIQUE (device, volume, rotation_id))",
        "CREATE INDEX escrows_latest ON escrows (device, volume, created)",
        "CREATE TABLE audit (seq BIGSERIAL PRIMARY KEY, at TEXT NOT NULL, who TEXT NOT NULL, \
         action TEXT NOT NULL, device TEXT, volume TEXT, reason TEXT)",
        "CREATE TABLE checkins (device TEXT PRIMARY KEY, at TEXT NOT NULL, report TEXT NOT NULL)",
    ],
},
// The admin web UI (`ui/db.rs`): accounts (argon2id PHC strings), sessions (SHA-256 of the
// cookie's id, so a database dump opens no session), and failed logins by name for the
// lock-out. Times are Unix seconds, so expiry is an integer comparison in SQL.
Migration {
    version: 2,
    sqlite: &[
        "CREATE TABLE admins (name TEXT PRIMARY KEY, hash TEXT NOT NULL, created TEXT NOT NULL)",
        "CREATE TABLE sessions (id_hash TEXT PRIMARY KEY, admin TEXT NOT NULL, csrf TEXT NOT NULL, \
         created INTEGER NOT NULL, seen INTEGER NOT NULL)",
        "CREATE INDEX sessions_admin ON sessions (admin)",
        "CREATE TABLE login_failures (seq INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, \
         at INTEGER NOT NULL)",
        "CREATE INDEX login_failures_name ON login_failures (name, at)",
    ],
    postgres: &[
        "CREATE TABLE admins (name TEXT PRIMARY KEY, hash TEXT NOT NULL, created TEXT NOT NULL)",
        "CREATE TABLE sessions (id_hash TEXT PRIMARY KEY, admin TEXT NOT NULL, csrf TEXT NOT NULL, \
         created BIGINT NOT NULL, seen BIGINT NOT NULL)",
        "CREATE INDEX sessions_admin ON sessions (admin)",
        "CREATE TABLE login_failures (seq BIGSERIAL PRIMARY KEY, name TEXT NOT NULL, \
         at BIGINT NOT NULL)",
        "CREATE INDEX login_failures_name ON login_failures (name, at)",
    ],
},
// Signed device commands (`commands.rs`): the signed JSON as delivered, and what the device
// reported back. Times are Unix seconds.
Migration {
    version: 3,
    sqlite: &[
        "CREATE TABLE commands (id TEXT PRIMARY KEY, device TEXT NOT NULL, issued INTEGER NOT NULL,          expires INTEGER NOT NULL, kind TEXT NOT NULL, signed TEXT NOT NULL, who TEXT NOT NULL,          status TEXT NOT NULL, detail TEXT, reported TEXT)",
        "CREATE INDEX commands_device ON commands (device, status, expires)",
    ],
    postgres: &[
        "CREATE TABLE commands (id TEXT PRIMARY KEY, device TEXT NOT NULL, issued BIGINT NOT NULL,          expires BIGINT NOT NULL, kind TEXT NOT NULL, signed TEXT NOT NULL, who TEXT NOT NULL,          status TEXT NOT NULL, detail TEXT, reported TEXT)",
        "CREATE INDEX commands_device ON commands (device, status, expires)",
    ],
},
// Write volume for the batched writer (`writer.rs`): every B-tree a request touches at a
// random place costs a page in the write-ahead log of each commit, so
// * nonces are keyed by (ts, device, nonce), in time order: a batch's nonces land on the
//   last page or two instead of one random page each, and pruning is a range at the front.
//   Refusing a (ts, device, nonce) seen before refuses every replay as (device, nonce) did: the
//   signature covers the timestamp, so a replay carries the same one, and changing it needs the
//   device's key. (SQLite: WITHOUT ROWID, so the key is the table.)
// * escrows_latest goes: the unique (device, volume, rotation_id) index finds a volume's few
//   escrows for "latest" just as well, and it was the second random page per escrow.
Migration {
    version: 4,
    sqlite: &[
        "CREATE TABLE nonces_by_time (ts INTEGER NOT NULL, device TEXT NOT NULL, nonce TEXT NOT NULL, \
         PRIMARY KEY (ts, device, nonce)) WITHOUT ROWID",
        "INSERT INTO nonces_by_time (ts, device, nonce) SELECT ts, device, nonce FROM nonces",
        "DROP TABLE nonces",
        "ALTER TABLE nonces_by_time RENAME TO nonces",
        "DROP INDEX escrows_latest",
    ],
    postgres: &[
        "CREATE TABLE nonces_by_time (ts BIGINT NOT NULL, device TEXT NOT NULL, nonce TEXT NOT NULL, \
         PRIMARY KEY (ts, device, nonce))",
        "INSERT INTO nonces_by_time (ts, device, nonce) SELECT ts, device, nonce FROM nonces",
        "DROP TABLE nonces",
        "ALTER TABLE nonces_by_time RENAME TO nonces",
        "DROP INDEX escrows_latest",
    ],
},
// Revoked devices (`keyward-server device revoke`, issue 14): when and by whom. A revoked
// device is kept (its escrows and audit trail stay); the writer refuses its requests.
Migration {
    version: 5,
    sqlite: &[
        "ALTER TABLE devices ADD COLUMN revoked TEXT",
        "ALTER TABLE devices ADD COLUMN revoked_by TEXT",
    ],
    postgres: &[
        "ALTER TABLE devices ADD COLUMN revoked TEXT",
        "ALTER TABLE devices ADD COLUMN revoked_by TEXT",
    ],
},
// Enrollment tokens expire and can be revoked (`tokens.rs`, issue 14). Times are Unix seconds;
// `created` 0 means "made before this migration", `revoked` 0 "not revoked". Tokens unspent at
// upgrade get the default lifetime from the upgrade on, so a token leaked before it stops
// working a day later rather than never.
Migration {
    version: 6,
    sqlite: &[
        "ALTER TABLE tokens ADD COLUMN created INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE tokens ADD COLUMN expires INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE tokens ADD COLUMN revoked INTEGER NOT NULL DEFAULT 0",
        "UPDATE tokens SET expires = CAST(strftime('%s', 'now') AS INTEGER) + 86400 WHERE used = 0",
    ],
    postgres: &[
        "ALTER TABLE tokens ADD COLUMN created BIGINT NOT NULL DEFAULT 0",
        "ALTER TABLE tokens ADD COLUMN expires BIGINT NOT NULL DEFAULT 0",
        "ALTER TABLE tokens ADD COLUMN revoked BIGINT NOT NULL DEFAULT 0",
        "UPDATE tokens SET expires = CAST(EXTRACT(EPOCH FROM now()) AS BIGINT) + 86400 WHERE used = 0",
    ],
},
// Failed web UI logins remember the client's address (`ui/throttle.rs`, issue 14): lock-outs
// are per address and per name from that address, so nobody can lock an admin out from afar.
// Rows from before it have source '' and count for no address.
Migration {
    version: 7,
    sqlite: &[
        "ALTER TABLE login_failures ADD COLUMN source TEXT NOT NULL DEFAULT ''",
        "CREATE INDEX login_failures_source ON login_failures (source, at)",
    ],
    postgres: &[
        "ALTER TABLE login_failures ADD COLUMN source TEXT NOT NULL DEFAULT ''",
        "CREATE INDEX login_failures_source ON login_failures (source, at)",
    ],
},
// Teams (issue 20): every account has a role (`roles.rs`; accounts from before are admins, as
// they could do everything); two-person reveal requests (`reveal_requests.rs`); API tokens for
// automation, stored as SHA-256 only (`api_tokens.rs`). Times are Unix seconds. A request's
// `expires` is when it lapses: a pending one `approval_hours` after it was made, an approved
// one `approval_hours` after the approval.
Migration {
    version: 8,
    sqlite: &[
        "ALTER TABLE admins ADD COLUMN role TEXT NOT NULL DEFAULT 'admin'",
        "CREATE TABLE reveal_requests (id TEXT PRIMARY KEY, device TEXT NOT NULL, volume TEXT NOT NULL, \
         reason TEXT NOT NULL, requester TEXT NOT NULL, created INTEGER NOT NULL, state TEXT NOT NULL, \
         decided_by TEXT, decided INTEGER, expires INTEGER NOT NULL, revealed INTEGER)",
        "CREATE INDEX reveal_requests_state ON reveal_requests (state, expires)",
        "CREATE INDEX reveal_requests_requester ON reveal_requests (requester, created)",
        "CREATE TABLE api_tokens (name TEXT PRIMARY KEY, hash TEXT NOT NULL UNIQUE, role TEXT NOT NULL, \
         created INTEGER NOT NULL)",
    ],
    postgres: &[
        "ALTER TABLE admins ADD COLUMN role TEXT NOT NULL DEFAULT 'admin'",
        "CREATE TABLE reveal_requests (id TEXT PRIMARY KEY, device TEXT NOT NULL, volume TEXT NOT NULL, \
         reason TEXT NOT NULL, requester TEXT NOT NULL, created BIGINT NOT NULL, state TEXT NOT NULL, \
         decided_by TEXT, decided BIGINT, expires BIGINT NOT NULL, revealed BIGINT)",
        "CREATE INDEX reveal_requests_state ON reveal_requests (state, expires)",
        "CREATE INDEX reveal_requests_requester ON reveal_requests (requester, created)",
        "CREATE TABLE api_tokens (name TEXT PRIMARY KEY, hash TEXT NOT NULL UNIQUE, role TEXT NOT NULL, \
         created BIGINT NOT NULL)",
    ],
},
// Single sign-on (`[oidc]`, `ui/sso.rs`): a session of a person the identity provider vouched
// for carries the role their groups mapped to at sign-in (`sso_role`; NULL for password
// accounts, whose role is read from `admins`); a sign-in under way is a row keyed by the hash
// of its `state`, holding the nonce and PKCE verifier its callback needs, used once.
Migration {
    version: 9,
    sqlite: &[
        "ALTER TABLE sessions ADD COLUMN sso_role TEXT",
        "CREATE TABLE sso_logins (state_hash TEXT PRIMARY KEY, nonce TEXT NOT NULL, \
         verifier TEXT NOT NULL, created INTEGER NOT NULL)",
    ],
    postgres: &[
        "ALTER TABLE sessions ADD COLUMN sso_role TEXT",
        "CREATE TABLE sso_logins (state_hash TEXT PRIMARY KEY, nonce TEXT NOT NULL, \
         verifier TEXT NOT NULL, created BIGINT NOT NULL)",
    ],
},
// Webhooks (issue 20, `[notify]`): the outbox (`notify_queue.rs`). A row is written in the
// transaction of the step it tells of and deleted once delivered or given up; `seq` is the
// order of creation, `lease_until` the claim of the instance sending it. Times are Unix seconds.
Migration {
    version: 10,
    sqlite: &[
        "CREATE TABLE notify_outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, \
         event TEXT NOT NULL, device TEXT NOT NULL, volume TEXT NOT NULL, body TEXT NOT NULL, \
         created INTEGER NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, next_attempt INTEGER NOT NULL, \
         lease_until INTEGER NOT NULL DEFAULT 0, last_error TEXT)",
        "CREATE INDEX notify_outbox_due ON notify_outbox (next_attempt, seq)",
    ],
    postgres: &[
        "CREATE TABLE notify_outbox (seq BIGSERIAL PRIMARY KEY, id TEXT NOT NULL UNIQUE, \
         event TEXT NOT NULL, device TEXT NOT NULL, volume TEXT NOT NULL, body TEXT NOT NULL, \
         created BIGINT NOT NULL, attempts BIGINT NOT NULL DEFAULT 0, next_attempt BIGINT NOT NULL, \
         lease_until BIGINT NOT NULL DEFAULT 0, last_error TEXT)",
        "CREATE INDEX notify_outbox_due ON notify_outbox (next_attempt, seq)",
    ],
},
// A TOTP second factor for web UI accounts (issue 20; `ui/totp.rs`): the secret sealed (age)
// to the server's identity, NULL for an account without one, and the last step whose code
// the account accepted (0: none), so a code is accepted once across instances.
Migration {
    version: 11,
    sqlite: &[
        "ALTER TABLE admins ADD COLUMN totp TEXT",
        "ALTER TABLE admins ADD COLUMN totp_step INTEGER NOT NULL DEFAULT 0",
    ],
    postgres: &[
        "ALTER TABLE admins ADD COLUMN totp TEXT",
        "ALTER TABLE admins ADD COLUMN totp_step BIGINT NOT NULL DEFAULT 0",
    ],
},
// Where each SSO sign-in under way began (`ui/sso.rs`): `GET /ui/sso` needs no session, so
// the rows one address (or one IPv6 /64) may hold at once are capped, as are all of them.
Migration {
    version: 12,
    sqlite: &[
        "ALTER TABLE sso_logins ADD COLUMN source TEXT NOT NULL DEFAULT ''",
        "CREATE INDEX sso_logins_source ON sso_logins (source)",
    ],
    postgres: &[
        "ALTER TABLE sso_logins ADD COLUMN source TEXT NOT NULL DEFAULT ''",
        "CREATE INDEX sso_logins_source ON sso_logins (source)",
    ],
},
// SSO sign-ins under way live in the browser's sealed cookie (`ui/sso_cookie.rs`), not here:
// `GET /ui/sso` stores nothing, so nobody can fill a table by beginning sign-ins. What is kept
// is the hash of each sign-in's `state` once the provider has vouched, for ten minutes, so a
// callback is used once across instances.
Migration {
    version: 13,
    sqlite: &[
        "DROP TABLE sso_logins",
        "CREATE TABLE sso_used (state_hash TEXT PRIMARY KEY, created INTEGER NOT NULL)",
        "CREATE INDEX sso_used_created ON sso_used (created)",
    ],
    postgres: &[
        "DROP TABLE sso_logins",
        "CREATE TABLE sso_used (state_hash TEXT PRIMARY KEY, created BIGINT NOT NULL)",
        "CREATE INDEX sso_used_created ON sso_used (created)",
    ],
}];

/// Apply every migration the database has not seen. Several instances starting at once are
/// safe: each migration's version row is inserted in the migration's own transaction, so a
/// second instance's attempt fails and it re-reads.
pub async fn run(pool: &AnyPool, dialect: Dialect) -> Result<(), StoreError> {
    sqlx::query("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT PRIMARY KEY)")
        .execute(pool)
        .await?;
    for m in MIGRATIONS {
        let applied = sqlx::query("SELECT version FROM schema_version WHERE version = $1")
            .bind(m.version)
            .fetch_optional(pool)
            .await?
            .map(|r| r.try_get::<i64, _>("version"))
            .transpose()?
            .is_some();
        if applied {
            continue;
        }
        let statements = match dialect {
            Dialect::Sqlite => m.sqlite,
            Dialect::Postgres => m.postgres,
        };
        let attempt = async {
            let mut tx = pool.begin().await?;
            sqlx::query("INSERT INTO schema_version (version) VALUES ($1)")
                .bind(m.version)
                .execute(&mut *tx)
                .await?;
            for s in statements {
                sqlx::query(s).execute(&mut *tx).await?;
            }
            tx.commit().await
        };
        if let Err(e) = attempt.await {
            // Another instance may have applied it first.
            let applied = sqlx::query("SELECT version FROM schema_version WHERE version = $1")
                .bind(m.version)
                .fetch_optional(pool)
                .await?
                .is_some();
            if !applied {
                return Err(e.into());
            }
        }
    }
    Ok(())
}
