//! The store: every query the server makes, written once in SQL both SQLite and PostgreSQL
//! accept (`$N` parameters, `ON CONFLICT`), run through sqlx's `Any` driver. SQLite (a file
//! in the state directory, WAL, `synchronous=FULL`) is the default; PostgreSQL serves a fleet
//! from several stateless instances. Nothing lives in process memory that another instance
//! would need: single-use tokens, request nonces, sessions and login failures are rows.
//! The dialects differ only in the schema's DDL (`store/migrations.rs`). The device API's writes
//! (enrollment, nonces, escrows, check-ins) do not come here but go through the writer
//! (`writer.rs`, `writer/batch.rs`), on connections of their own; this pool serves everything else.

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Executor, Row};

mod migrations;

/// Which database the URL named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Dialect {
    /// `sqlite://…`
    Sqlite,
    /// `postgres://…`
    Postgres,
}

/// A store error: a message for the log, never shown to a client.
#[derive(Debug, Clone, thiserror::Error)]
#[error("database: {0}")]
pub struct StoreError(String);

impl StoreError {
    /// An error of the server's own making, not the database's.
    pub fn other(msg: impl Into<String>) -> Self {
        StoreError(msg.into())
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError(e.to_string())
    }
}

impl From<StoreError> for String {
    fn from(e: StoreError) -> Self {
        e.to_string()
    }
}

type Result<T> = std::result::Result<T, StoreError>;

/// The database.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    url: String,
    dialect: Dialect,
    /// `[notify]` is set: reveal steps queue a webhook event (`notify_queue.rs`).
    notify: bool,
}

/// An escrowed ciphertext.
#[derive(Debug, Clone)]
pub struct Escrow {
    /// The server's id.
    pub id: String,
    /// The age ciphertext.
    pub ciphertext: Vec<u8>,
    /// When it arrived (RFC 3339).
    pub created: String,
    /// An admin has seen it.
    pub rotate_after_use: bool,
}

/// A device.
#[derive(Debug, Clone)]
pub struct Device {
    /// Its id.
    pub id: String,
    /// When it enrolled.
    pub created: String,
    /// Its last check-in: when, and the report (JSON as stored).
    pub checkin: Option<(String, String)>,
    /// Its revocation, if it is revoked.
    pub revoked: Option<Revocation>,
}

impl Device {
    /// Its latest report, parsed: (when, report), if it has checked in.
    pub fn report(&self) -> Option<(String, keyward_core::schedule::CheckIn)> {
        let (at, text) = self.checkin.as_ref()?;
        serde_json::from_str(text).ok().map(|r| (at.clone(), r))
    }
}

/// When and by whom a device was revoked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// When (RFC 3339).
    pub at: String,
    /// Who.
    pub by: String,
}

/// What `revoke_device` did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Revoked {
    /// Revoked now, and audited.
    Now,
    /// It was revoked before (nothing changed, nothing audited).
    Already(Revocation),
    /// No device has that id.
    Unknown,
}

/// One audit record.
#[derive(Debug, Clone)]
pub struct AuditRecord {
    /// When.
    pub at: String,
    /// Who.
    pub who: String,
    /// What.
    pub action: String,
    /// Which device.
    pub device: Option<String>,
    /// Which volume.
    pub volume: Option<String>,
    /// Why.
    pub reason: Option<String>,
}

fn escrow(r: &AnyRow) -> Result<Escrow> {
    Ok(Escrow {
        id: r.try_get("id")?,
        ciphertext: r.try_get("ciphertext")?,
        created: r.try_get("created")?,
        rotate_after_use: r.try_get::<i64, _>("rotate_after_use")? != 0,
    })
}

const ESCROW_COLUMNS: &str = "id, ciphertext, created, rotate_after_use";

/// A pool of at most `max` connections; SQLite's in WAL mode, every commit synced to disk
/// (`synchronous = FULL`: a receipt promises the escrow survives a power cut), waiting up to
/// 5 s for the write lock.
async fn connect(url: &str, dialect: Dialect, max: u32) -> Result<AnyPool> {
    let mut options = AnyPoolOptions::new().max_connections(max);
    if dialect == Dialect::Sqlite {
        options = options.after_connect(|conn, _| {
            Box::pin(async move {
                conn.execute(
                    "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 5000;",
                )
                .await
                .map(drop)
            })
        });
    }
    Ok(options.connect(url).await?)
}

impl Store {
    /// Connect (creating a SQLite file if needed) and bring the schema up to date.
    pub async fn open(url: &str) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let dialect = if url.starts_with("sqlite:") {
            Dialect::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Dialect::Postgres
        } else {
            return Err(StoreError(
                "the database URL must start with sqlite: or postgres:".into(),
            ));
        };
        let url = match dialect {
            Dialect::Sqlite if !url.contains('?') => format!("{url}?mode=rwc"),
            _ => url.to_owned(),
        };
        let max = match dialect {
            Dialect::Sqlite => 4,
            Dialect::Postgres => 16,
        };
        let pool = connect(&url, dialect, max).await?;
        let store = Store {
            pool,
            url,
            dialect,
            notify: false,
        };
        migrations::run(&store.pool, dialect).await?;
        Ok(store)
    }

    /// A second pool on the same database with at most `max` connections, for the writer.
    pub async fn writer_pool(&self, max: u32) -> Result<AnyPool> {
        connect(&self.url, self.dialect, max).await
    }

    /// Queue a webhook event with every reveal step from now on (`[notify]` is set).
    pub fn with_notify(mut self, on: bool) -> Self {
        self.notify = on;
        self
    }

    /// Whether reveal steps queue webhook events.
    pub fn notifying(&self) -> bool {
        self.notify
    }

    /// Which database this is.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Store enrollment tokens (their SHA-256 only), made at `created` and valid until
    /// `expires` (Unix seconds), all or none; `audit` is recorded with them.
    pub async fn add_tokens(
        &self,
        hashes: &[String],
        created: i64,
        expires: i64,
        audit: Option<&AuditRecord>,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        // Many rows a statement: a fleet's 100,000 tokens are a few hundred round trips.
        for chunk in hashes.chunks(500) {
            let sql = format!(
                "INSERT INTO tokens (hash, created, expires, used) VALUES {}",
                crate::sql::placeholders(chunk.len(), 3, ", 0")
            );
            let mut q = sqlx::query(&sql);
            for h in chunk {
                q = q.bind(h).bind(created).bind(expires);
            }
            q.execute(&mut *tx).await?;
        }
        if let Some(record) = audit {
            insert_audit(&mut *tx, record).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// A device's public key (base64), if it is enrolled.
    pub async fn device_key(&self, device: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT key FROM devices WHERE id = $1")
            .bind(device)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("key")).transpose()?)
    }

    /// Up to `limit` devices' (id, key) with ids after `after`, in id order (for warming the
    /// key cache page by page).
    pub async fn device_keys_after(
        &self,
        after: &str,
        limit: i64,
    ) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query("SELECT id, key FROM devices WHERE id > $1 ORDER BY id LIMIT $2")
            .bind(after)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("id")?, r.try_get("key")?)))
            .collect()
    }

    /// The latest escrow of a device's volume, or the one named.
    pub async fn escrow(
        &self,
        device: &str,
        volume: &str,
        id: Option<&str>,
    ) -> Result<Option<Escrow>> {
        let sql = format!(
            "SELECT {ESCROW_COLUMNS} FROM escrows WHERE device = $1 AND volume = $2 \
             AND ($3 = '' OR id = $3) ORDER BY created DESC, id DESC LIMIT 1"
        );
        let row = sqlx::query(&sql)
            .bind(device)
            .bind(volume)
            .bind(id.unwrap_or(""))
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(escrow).transpose()
    }

    /// Every escrow of a device, newest first.
    pub async fn escrows(&self, device: &str) -> Result<Vec<(String, Escrow)>> {
        let sql = format!(
            "SELECT volume, {ESCROW_COLUMNS} FROM escrows WHERE device = $1 ORDER BY created DESC, id DESC"
        );
        let rows = sqlx::query(&sql).bind(device).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| Ok((r.try_get("volume")?, escrow(r)?)))
            .collect()
    }

    /// Whether an admin has seen this escrow (false if it is not the device's).
    pub async fn seen(&self, device: &str, volume: &str, id: &str) -> Result<bool> {
        let row = sqlx::query(
            "SELECT rotate_after_use FROM escrows WHERE id = $1 AND device = $2 AND volume = $3",
        )
        .bind(id)
        .bind(device)
        .bind(volume)
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            Some(r) => r.try_get::<i64, _>("rotate_after_use")? != 0,
            None => false,
        })
    }

    /// Append an audit record.
    pub async fn audit(&self, record: &AuditRecord) -> Result<()> {
        insert_audit(&self.pool, record).await
    }

    /// The audit trail, oldest first, at most `limit` of the newest records.
    pub async fn audit_trail(&self, limit: i64) -> Result<Vec<AuditRecord>> {
        let rows = sqlx::query(
            "SELECT at, who, action, device, volume, reason FROM \
             (SELECT * FROM audit ORDER BY seq DESC LIMIT $1) AS newest ORDER BY seq",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditRecord {
                    at: r.try_get("at")?,
                    who: r.try_get("who")?,
                    action: r.try_get("action")?,
                    device: r.try_get("device")?,
                    volume: r.try_get("volume")?,
                    reason: r.try_get("reason")?,
                })
            })
            .collect()
    }

    /// Devices whose id contains `search` (all if empty), with their last check-in.
    pub async fn devices(&self, search: &str, limit: i64) -> Result<Vec<Device>> {
        let rows = sqlx::query(
            "SELECT d.id, d.created, d.revoked, d.revoked_by, c.at, c.report FROM devices d \
             LEFT JOIN checkins c ON c.device = d.id \
             WHERE $1 = '' OR d.id LIKE $2 ESCAPE '\\' ORDER BY d.created, d.id LIMIT $3",
        )
        .bind(search)
        .bind(format!("%{}%", like_escape(search)))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(device).collect()
    }

    /// Up to `limit` devices with ids after `after`, in id order, with their last check-in
    /// (for walking the whole fleet a page at a time).
    pub async fn devices_after(&self, after: &str, limit: i64) -> Result<Vec<Device>> {
        let rows = sqlx::query(
            "SELECT d.id, d.created, d.revoked, d.revoked_by, c.at, c.report FROM devices d \
             LEFT JOIN checkins c ON c.device = d.id WHERE d.id > $1 ORDER BY d.id LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(device).collect()
    }

    /// A device's latest report, if it is enrolled and has checked in.
    pub async fn latest_report(
        &self,
        device: &str,
    ) -> Result<Option<(String, keyward_core::schedule::CheckIn)>> {
        Ok(self.device(device).await?.as_ref().and_then(Device::report))
    }

    /// One device.
    pub async fn device(&self, id: &str) -> Result<Option<Device>> {
        let row = sqlx::query(
            "SELECT d.id, d.created, d.revoked, d.revoked_by, c.at, c.report FROM devices d \
             LEFT JOIN checkins c ON c.device = d.id WHERE d.id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(device).transpose()
    }

    /// Revoke a device and audit it, together (`record` names who and why). A revoked device
    /// keeps its escrows; the writer refuses every request it signs from the commit on.
    pub async fn revoke_device(&self, record: &AuditRecord) -> Result<Revoked> {
        let device = record.device.as_deref().unwrap_or("");
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE devices SET revoked = $2, revoked_by = $3 WHERE id = $1 AND revoked IS NULL",
        )
        .bind(device)
        .bind(&record.at)
        .bind(&record.who)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 1 {
            insert_audit(&mut *tx, record).await?;
            tx.commit().await?;
            return Ok(Revoked::Now);
        }
        let row = sqlx::query("SELECT revoked, revoked_by FROM devices WHERE id = $1")
            .bind(device)
            .fetch_optional(&mut *tx)
            .await?;
        Ok(match row {
            None => Revoked::Unknown,
            Some(r) => Revoked::Already(Revocation {
                at: r
                    .try_get::<Option<String>, _>("revoked")?
                    .unwrap_or_default(),
                by: r
                    .try_get::<Option<String>, _>("revoked_by")?
                    .unwrap_or_default(),
            }),
        })
    }

    /// Counts for metrics: (devices, escrows, escrows waiting for rotation after use).
    pub async fn counts(&self) -> Result<(i64, i64, i64)> {
        let r = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM devices) AS d, (SELECT COUNT(*) FROM escrows) AS e, \
             (SELECT COUNT(*) FROM escrows WHERE rotate_after_use = 1) AS s",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok((r.try_get("d")?, r.try_get("e")?, r.try_get("s")?))
    }

    /// The pool, for the modules that own their own tables (admin accounts, sessions).
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }
}

/// One audit row, on the pool or inside a transaction.
pub(crate) async fn insert_audit<'e, E>(executor: E, record: &AuditRecord) -> Result<()>
where
    E: Executor<'e, Database = sqlx::Any>,
{
    sqlx::query(
        "INSERT INTO audit (at, who, action, device, volume, reason) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&record.at)
    .bind(&record.who)
    .bind(&record.action)
    .bind(&record.device)
    .bind(&record.volume)
    .bind(&record.reason)
    .execute(executor)
    .await?;
    Ok(())
}

fn device(r: &AnyRow) -> Result<Device> {
    let at: Option<String> = r.try_get("at")?;
    let report: Option<String> = r.try_get("report")?;
    let revoked: Option<String> = r.try_get("revoked")?;
    let revoked_by: Option<String> = r.try_get("revoked_by")?;
    Ok(Device {
        id: r.try_get("id")?,
        created: r.try_get("created")?,
        checkin: at.zip(report),
        revoked: revoked.map(|at| Revocation {
            at,
            by: revoked_by.unwrap_or_default(),
        }),
    })
}

/// Escape `%`, `_` and `\` for a LIKE pattern.
fn like_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
