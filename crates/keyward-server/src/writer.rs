//! The writer: every write of the device API (enrollment, request nonces, escrows, check-ins,
//! nonce pruning) goes through a queue to one writer per instance, which takes whatever has
//! queued up while it last committed (at most [`MAX_BATCH`]) and applies it in one transaction
//! with one commit (`writer/batch.rs`), then answers each request. On SQLite the write lock is then
//! never fought over and one fsync (`synchronous = FULL`, still) covers a whole batch; on
//! PostgreSQL the instances' writers commit side by side. One writer, not several: the
//! databases spend their time per statement more than per row, so fewer, fuller batches win
//! (measured on PostgreSQL: one writer per instance ~9,700 check-ins/s, two ~7,000). A batch
//! that fails is retried unit by unit, so one bad write fails alone. A request is answered only
//! after its batch is committed: a receipt still means the escrow is on disk.
//!
//! The writer runs on a thread of its own (a single-threaded runtime) and keeps one
//! connection: a batch's few statements never wait in the request handlers' run queue (on
//! SQLite, 10,900 check-ins/s against 9,000 as a task among the handlers), and no pool checkout
//! precedes each transaction. The commit's fsync is the floor of a batch's time.
//!
//! Nothing here is instance state another instance needs: nonces, tokens and escrows are rows,
//! and two instances' batches meet only in the database (`ON CONFLICT`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use keyward_core::schedule::CommandReport;
use keyward_core::VolumeName;
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyPool, Connection};
use tokio::sync::{mpsc, oneshot};

use crate::store::{Dialect, Store, StoreError};

pub mod batch;

/// Units in one transaction at most.
pub const MAX_BATCH: usize = 256;
/// Units queued at most; beyond that, requests wait for room (back-pressure, bounded memory).
const QUEUE: usize = 4096;

/// A request nonce, recorded with the write it authenticates.
#[derive(Debug)]
pub struct Nonce {
    /// The device that signed the request.
    pub device: String,
    /// Its nonce.
    pub value: String,
    /// Its timestamp (Unix seconds): part of the key (a replay repeats it), and for pruning.
    pub ts: i64,
}

/// A new escrow.
#[derive(Debug)]
pub struct NewEscrow {
    /// The id it gets if it is new.
    pub id: String,
    /// The volume.
    pub volume: String,
    /// The device's rotation id.
    pub rotation_id: String,
    /// Hex SHA-256 of the ciphertext.
    pub sha256: String,
    /// The age ciphertext.
    pub ciphertext: Vec<u8>,
}

/// A check-in to keep.
#[derive(Debug)]
pub struct CheckInWrite {
    /// The report as stored (JSON).
    pub report: String,
    /// The escrow id each volume reported active, in report order.
    pub escrow_ids: Vec<(VolumeName, String)>,
    /// What became of the device's commands.
    pub commands: Vec<CommandReport>,
}

/// One write.
#[derive(Debug)]
#[non_exhaustive]
pub enum Unit {
    /// Spend a token and enroll a device with it.
    Enroll {
        /// SHA-256 of the token.
        token_hash: String,
        /// The new device's id.
        device: String,
        /// Its public key (base64).
        key_b64: String,
    },
    /// Only record a nonce (a signed request refused for its content still spends it).
    Nonce(Nonce),
    /// Record a nonce and store an escrow.
    Escrow(Nonce, NewEscrow),
    /// Record a nonce and keep a check-in; read what the device must be told.
    CheckIn(Nonce, CheckInWrite),
    /// Forget at most `limit` nonces older than `before` (Unix seconds).
    Prune {
        /// The cut-off.
        before: i64,
        /// Rows at most, so one prune never holds the write lock long.
        limit: i64,
    },
}

/// What became of one unit.
#[derive(Debug)]
#[non_exhaustive]
pub enum Outcome {
    /// Enrolled, or why the token did not enroll a device.
    Enrolled(Result<(), crate::tokens::TokenRefused>),
    /// A [`Unit::Nonce`]: false if the device used it before.
    NonceFresh(bool),
    /// An escrow or check-in whose nonce the device used before: nothing written.
    Replayed,
    /// A request (nonce, escrow or check-in) from a revoked device: nothing written.
    Revoked,
    /// The rotation's stored escrow, (id, sha256): this one's, or the one stored before it.
    /// None only if it vanished between the insert and the read.
    Escrowed(Option<(String, String)>),
    /// An escrow of a volume new to its device, which already has escrows of
    /// `batch::MAX_VOLUMES_PER_DEVICE` volumes: nothing stored.
    TooManyVolumes,
    /// A kept check-in: the volumes whose active key an admin has seen, and the signed
    /// commands (JSON) to deliver.
    CheckedIn {
        /// Rotate these after use.
        rotate: Vec<VolumeName>,
        /// Signed commands.
        commands: Vec<String>,
    },
    /// Nonces forgotten.
    Pruned(u64),
}

/// A unit and where its answer goes.
struct Job {
    unit: Unit,
    reply: oneshot::Sender<Result<Outcome, StoreError>>,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct Stats {
    /// Transactions committed or failed.
    pub batches: AtomicU64,
    /// Units taken from the queue.
    pub units: AtomicU64,
    /// Batches that failed and were retried unit by unit.
    pub retried: AtomicU64,
}

/// The handle requests submit writes through.
#[derive(Debug, Clone)]
pub struct Writer {
    queue: mpsc::Sender<Job>,
    stats: Arc<Stats>,
}

impl Writer {
    /// Start the writer's thread and open its connection.
    pub async fn start(store: &Store) -> Result<Self, StoreError> {
        let begin = match store.dialect() {
            // Take the write lock at BEGIN: the batch writes anyway, and waiting for the lock
            // then is what busy_timeout handles well.
            Dialect::Sqlite => "BEGIN IMMEDIATE",
            Dialect::Postgres => "BEGIN",
        };
        let (queue, rx) = mpsc::channel(QUEUE);
        let stats = Arc::new(Stats::default());
        let (ready, started) = oneshot::channel();
        let (store, writer_stats) = (store.clone(), stats.clone());
        std::thread::Builder::new()
            .name("keyward-writer".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready.send(Err(StoreError::other(e.to_string())));
                        return;
                    }
                };
                rt.block_on(async move {
                    let pool = match store.writer_pool(1).await {
                        Ok(pool) => pool,
                        Err(e) => {
                            let _ = ready.send(Err(e));
                            return;
                        }
                    };
                    let _ = ready.send(Ok(()));
                    run(pool, begin, rx, writer_stats).await;
                });
            })
            .map_err(|e| StoreError::other(format!("starting the writer thread: {e}")))?;
        started
            .await
            .map_err(|_| StoreError::other("the writer thread did not start"))??;
        Ok(Writer { queue, stats })
    }

    /// Queue `unit` and wait until its batch is committed (or failed).
    pub async fn submit(&self, unit: Unit) -> Result<Outcome, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Job { unit, reply })
            .await
            .map_err(|_| StoreError::other("the writer has stopped"))?;
        answer
            .await
            .map_err(|_| StoreError::other("the writer dropped a write"))?
    }

    /// Its counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }
}

/// The writer: take what is queued, apply it, answer, until the queue closes.
async fn run(
    pool: AnyPool,
    begin: &'static str,
    mut queue: mpsc::Receiver<Job>,
    stats: Arc<Stats>,
) {
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    let mut conn = None;
    loop {
        // Everything that queued up while the last batch committed.
        let got = queue.recv_many(&mut jobs, MAX_BATCH).await;
        if got == 0 {
            return;
        }
        let (units, replies): (Vec<Unit>, Vec<_>) =
            jobs.drain(..).map(|j| (j.unit, j.reply)).unzip();
        stats.batches.fetch_add(1, Ordering::Relaxed);
        stats.units.fetch_add(units.len() as u64, Ordering::Relaxed);
        let answers = apply(&pool, &mut conn, begin, &units, &stats).await;
        for (reply, answer) in replies.into_iter().zip(answers) {
            // The request may have gone (client hung up); its write stands regardless.
            let _ = reply.send(answer);
        }
    }
}

/// Apply `units` in one transaction; if that fails, each in its own.
async fn apply(
    pool: &AnyPool,
    conn: &mut Option<PoolConnection<Any>>,
    begin: &'static str,
    units: &[Unit],
    stats: &Stats,
) -> Vec<Result<Outcome, StoreError>> {
    let e = match in_transaction(pool, conn, begin, units).await {
        Ok(outcomes) => return outcomes.into_iter().map(Ok).collect(),
        Err(e) if units.len() == 1 => return vec![Err(e)],
        Err(e) => e,
    };
    stats.retried.fetch_add(1, Ordering::Relaxed);
    crate::log::error(
        "write batch failed; retrying its writes one by one",
        &[
            ("units", units.len().into()),
            ("error", e.to_string().into()),
        ],
    );
    let mut answers = Vec::with_capacity(units.len());
    for unit in units {
        let one = in_transaction(pool, conn, begin, std::slice::from_ref(unit)).await;
        answers.push(one.and_then(|mut o| {
            o.pop()
                .ok_or_else(|| StoreError::other("a write went unanswered"))
        }));
    }
    answers
}

/// Apply `units` in one transaction on the writer's connection (taken from the pool when it
/// has none, and given back after an error, so a broken one is replaced).
async fn in_transaction(
    pool: &AnyPool,
    slot: &mut Option<PoolConnection<Any>>,
    begin: &'static str,
    units: &[Unit],
) -> Result<Vec<Outcome>, StoreError> {
    let conn = match slot {
        Some(conn) => conn,
        None => slot.insert(pool.acquire().await?),
    };
    let done = async {
        let mut tx = conn.begin_with(begin).await?;
        let outcomes = batch::apply(&mut tx, units, SystemTime::now()).await?;
        tx.commit().await?;
        Ok::<_, sqlx::Error>(outcomes)
    }
    .await;
    if done.is_err() {
        *slot = None;
    }
    Ok(done?)
}
