//! One batch of the device API's writes, applied in one transaction by the writer
//! (`writer.rs`): a few multi-row statements for the whole batch instead of several statements
//! and a commit per request. Every unit gets the answer it would have had alone: a replayed
//! nonce refuses its unit only (the first of two equal ones in one batch wins), an escrow
//! whose rotation is already stored is read back (so a retry gets its receipt, and another
//! ciphertext a 409), a token spent twice enrolls once, and a revoked device's units write
//! nothing (the revocation is read in the batch's transaction, so it holds from its commit on,
//! at every instance). SQL both dialects accept (`$N`,
//! `ON CONFLICT`, `RETURNING`); no I/O but the connection it is given, no commit.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime};

use sqlx::{AnyConnection, Row};

use crate::clock::timestamp;
use crate::sql::{numbered, placeholders, ROWS_PER_STATEMENT};
use crate::tokens::TokenRefused;
use crate::writer::{CheckInWrite, NewEscrow, Nonce, Outcome, Unit};

/// Escrows kept per device and volume (the newest, plus any its last check-in names), set
/// once at serve start from `--escrows-kept` (default 16: a rotation every 90 days keeps four
/// years of keys, and a device uploading in a loop keeps 16).
static KEPT_ESCROWS_PER_VOLUME: std::sync::atomic::AtomicU32 =
    std::sync::atomic::AtomicU32::new(16);

/// The most volumes one device's escrows may name (as many as a check-in may report,
/// `checkin.rs`). Escrows are kept per device and volume, and the device names its volumes:
/// without this, one device key stored 16 escrows under every name it made up.
pub const MAX_VOLUMES_PER_DEVICE: usize = 64;

/// Set how many escrows per device and volume are kept.
pub fn keep_escrows_per_volume(n: u32) {
    KEPT_ESCROWS_PER_VOLUME.store(n.max(1), std::sync::atomic::Ordering::Relaxed);
}

fn nonce_of(u: &Unit) -> Option<&Nonce> {
    match u {
        Unit::Nonce(n) | Unit::Escrow(n, _) | Unit::CheckIn(n, _) => Some(n),
        Unit::Enroll { .. } | Unit::Prune { .. } => None,
    }
}

/// Apply `units` on `conn`, inside a transaction the caller opened and commits. One answer per
/// unit, in order. `now` stamps the rows; escrows get `now` plus their place in the batch in
/// nanoseconds, so "latest" keeps the order the requests came in.
pub async fn apply(
    conn: &mut AnyConnection,
    units: &[Unit],
    now: SystemTime,
) -> Result<Vec<Outcome>, sqlx::Error> {
    let mut out: Vec<Option<Outcome>> = units.iter().map(|_| None).collect();
    let mut fresh = record_nonces(conn, units).await?;
    let revoked = revoked_units(conn, units, &fresh).await?;
    for (f, r) in fresh.iter_mut().zip(&revoked) {
        *f &= !r;
    }
    for (i, u) in units.iter().enumerate() {
        if revoked[i] {
            out[i] = Some(Outcome::Revoked);
            continue;
        }
        match u {
            Unit::Nonce(_) => out[i] = Some(Outcome::NonceFresh(fresh[i])),
            Unit::Escrow(..) | Unit::CheckIn(..) if !fresh[i] => out[i] = Some(Outcome::Replayed),
            _ => {}
        }
    }
    enroll(conn, units, &mut out, now).await?;
    escrow(conn, units, &fresh, &mut out, now).await?;
    checkin(conn, units, &fresh, &mut out, now).await?;
    for (i, u) in units.iter().enumerate() {
        if let Unit::Prune { before, limit } = u {
            let gone = sqlx::query(
                "DELETE FROM nonces WHERE (ts, device, nonce) IN \
                 (SELECT ts, device, nonce FROM nonces WHERE ts < $1 LIMIT $2)",
            )
            .bind(*before)
            .bind(*limit)
            .execute(&mut *conn)
            .await?;
            out[i] = Some(Outcome::Pruned(gone.rows_affected()));
        }
    }
    out.into_iter()
        .map(|o| o.ok_or_else(|| sqlx::Error::Protocol("a write unit was left unanswered".into())))
        .collect()
}

/// Per unit, whether it comes from a revoked device. Only a unit whose nonce was not recorded
/// can be one ([`record_nonces`] records none of a revoked device's), so the read is of those
/// units' devices, and there is none in a batch without a replay or a revoked device.
async fn revoked_units(
    conn: &mut AnyConnection,
    units: &[Unit],
    fresh: &[bool],
) -> Result<Vec<bool>, sqlx::Error> {
    let devices: Vec<&str> = units
        .iter()
        .zip(fresh)
        .filter(|(_, fresh)| !**fresh)
        .filter_map(|(u, _)| nonce_of(u).map(|n| n.device.as_str()))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let mut revoked: HashSet<String> = HashSet::new();
    for chunk in devices.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "SELECT id FROM devices WHERE revoked IS NOT NULL AND id IN ({})",
            numbered(1, chunk.len())
        );
        let mut q = sqlx::query(&sql);
        for d in chunk {
            q = q.bind(*d);
        }
        for row in q.fetch_all(&mut *conn).await? {
            revoked.insert(row.try_get(0)?);
        }
    }
    Ok(units
        .iter()
        .zip(fresh)
        .map(|(u, fresh)| !fresh && nonce_of(u).is_some_and(|n| revoked.contains(&n.device)))
        .collect())
}

/// Insert every unit's nonce but a revoked device's (the revocation is read in the same
/// statement: one round trip to the database for both); per unit, whether its nonce was new
/// (true for units without one; false for a replay, or a revoked device's).
async fn record_nonces(conn: &mut AnyConnection, units: &[Unit]) -> Result<Vec<bool>, sqlx::Error> {
    let mut fresh = vec![true; units.len()];
    // The first of equal nonces in the batch is the candidate; the others are replays of it.
    let mut candidates: HashMap<(i64, &str, &str), usize> = HashMap::new();
    let mut order = Vec::new();
    for (i, n) in units.iter().enumerate() {
        let Some(n) = nonce_of(n) else { continue };
        match candidates.entry((n.ts, n.device.as_str(), n.value.as_str())) {
            std::collections::hash_map::Entry::Occupied(_) => fresh[i] = false,
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(i);
                order.push((i, n));
            }
        }
    }
    for chunk in order.chunks(ROWS_PER_STATEMENT) {
        for (i, _) in chunk {
            fresh[*i] = false;
        }
        // VALUES' columns are column1, column2, ... in both databases; SQLite needs the WHERE
        // before an upsert on INSERT ... SELECT.
        let sql = format!(
            "INSERT INTO nonces (device, nonce, ts) SELECT column1, column2, column3 FROM \
             (VALUES {}) AS v WHERE NOT EXISTS (SELECT 1 FROM devices d WHERE d.id = v.column1 \
             AND d.revoked IS NOT NULL) ON CONFLICT DO NOTHING RETURNING ts, device, nonce",
            placeholders(chunk.len(), 3, "")
        );
        let mut q = sqlx::query(&sql);
        for (_, n) in chunk {
            q = q.bind(n.device.as_str()).bind(n.value.as_str()).bind(n.ts);
        }
        for row in q.fetch_all(&mut *conn).await? {
            let (ts, device, value): (i64, String, String) =
                (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
            if let Some(&i) = candidates.get(&(ts, device.as_str(), value.as_str())) {
                fresh[i] = true;
            }
        }
    }
    Ok(fresh)
}

async fn enroll(
    conn: &mut AnyConnection,
    units: &[Unit],
    out: &mut [Option<Outcome>],
    now: SystemTime,
) -> Result<(), sqlx::Error> {
    let todo: Vec<(usize, &str, &str, &str)> = units
        .iter()
        .enumerate()
        .filter_map(|(i, u)| match u {
            Unit::Enroll {
                token_hash,
                device,
                key_b64,
            } => Some((i, token_hash.as_str(), device.as_str(), key_b64.as_str())),
            _ => None,
        })
        .collect();
    if todo.is_empty() {
        return Ok(());
    }
    let unix = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let hashes: Vec<&str> = todo.iter().map(|(_, h, _, _)| *h).collect();
    let mut spent = crate::tokens::spend(conn, &hashes, unix).await?;
    // A token is spent once: the first unit that named it enrolls.
    let mut enrolled = Vec::new();
    let mut refused = Vec::new();
    for &(i, hash, device, key) in &todo {
        if spent.remove(hash) {
            out[i] = Some(Outcome::Enrolled(Ok(())));
            enrolled.push((device, key));
        } else {
            refused.push((i, hash));
        }
    }
    if !refused.is_empty() {
        let hashes: Vec<&str> = refused.iter().map(|(_, h)| *h).collect();
        let why = crate::tokens::refusals(conn, &hashes, unix).await?;
        for (i, hash) in refused {
            let why = why.get(hash).copied().unwrap_or(TokenRefused::Unknown);
            out[i] = Some(Outcome::Enrolled(Err(why)));
        }
    }
    let created = timestamp(now);
    for chunk in enrolled.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO devices (id, key, created) VALUES {}",
            placeholders(chunk.len(), 3, "")
        );
        let mut q = sqlx::query(&sql);
        for (device, key) in chunk {
            q = q.bind(*device).bind(*key).bind(created.as_str());
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

async fn escrow(
    conn: &mut AnyConnection,
    units: &[Unit],
    fresh: &[bool],
    out: &mut [Option<Outcome>],
    now: SystemTime,
) -> Result<(), sqlx::Error> {
    let todo: Vec<(usize, &str, &NewEscrow, String)> = units
        .iter()
        .enumerate()
        .filter_map(|(i, u)| match u {
            Unit::Escrow(n, e) if fresh[i] => {
                let at = now + Duration::from_nanos(u64::try_from(i).unwrap_or(u64::MAX));
                Some((i, n.device.as_str(), e, timestamp(at)))
            }
            _ => None,
        })
        .collect();
    let mut inserted: HashSet<String> = HashSet::new();
    for chunk in todo.chunks(ROWS_PER_STATEMENT) {
        // A device's escrows name at most MAX_VOLUMES_PER_DEVICE volumes: a row for a volume
        // it has no escrow of yet is inserted only while it has fewer (the count is of rows
        // stored before this statement, so the uploads of one batch can pass it together).
        // SQLite needs the WHERE before an upsert on INSERT ... SELECT.
        let sql = format!(
            "INSERT INTO escrows (id, device, volume, rotation_id, sha256, ciphertext, created, \
             rotate_after_use) SELECT column1, column2, column3, column4, column5, column6, \
             column7, 0 FROM (VALUES {}) AS v WHERE EXISTS (SELECT 1 FROM escrows e WHERE \
             e.device = v.column2 AND e.volume = v.column3) OR (SELECT COUNT(DISTINCT e.volume) \
             FROM escrows e WHERE e.device = v.column2) < {MAX_VOLUMES_PER_DEVICE} \
             ON CONFLICT DO NOTHING RETURNING id",
            placeholders(chunk.len(), 7, "")
        );
        let mut q = sqlx::query(&sql);
        for (_, device, e, created) in chunk {
            q = q
                .bind(e.id.as_str())
                .bind(*device)
                .bind(e.volume.as_str())
                .bind(e.rotation_id.as_str())
                .bind(e.sha256.as_str())
                .bind(e.ciphertext.as_slice())
                .bind(created.as_str());
        }
        for row in q.fetch_all(&mut *conn).await? {
            inserted.insert(row.try_get(0)?);
        }
    }
    // Keep only the newest escrows per device and volume, so an enrolled device cannot store
    // records without bound; never one its last check-in names (the key now on the disk).
    let mut pairs: Vec<(&str, &str)> = Vec::new();
    let mut seen_pairs: HashSet<(&str, &str)> = HashSet::new();
    for (_, device, e, _) in &todo {
        if inserted.contains(&e.id) && seen_pairs.insert((*device, e.volume.as_str())) {
            pairs.push((*device, e.volume.as_str()));
        }
    }
    let kept = KEPT_ESCROWS_PER_VOLUME.load(std::sync::atomic::Ordering::Relaxed);
    prune(conn, &pairs, kept).await?;
    for (i, device, e, _) in &todo {
        if inserted.contains(&e.id) {
            out[*i] = Some(Outcome::Escrowed(Some((e.id.clone(), e.sha256.clone()))));
            continue;
        }
        // Rare: the rotation was stored before (a retry, or a race with another instance).
        let row = sqlx::query(
            "SELECT id, sha256 FROM escrows WHERE device = $1 AND volume = $2 AND rotation_id = $3",
        )
        .bind(*device)
        .bind(e.volume.as_str())
        .bind(e.rotation_id.as_str())
        .fetch_optional(&mut *conn)
        .await?;
        // Neither inserted nor stored before: refused for the device's number of volumes.
        out[*i] = Some(match row {
            Some(r) => Outcome::Escrowed(Some((r.try_get("id")?, r.try_get("sha256")?))),
            None => Outcome::TooManyVolumes,
        });
    }
    Ok(())
}

/// Delete all but the newest `kept` escrows of each (device, volume) in `pairs`, except any
/// its device's last check-in names as a volume's `escrow_id` (matched with its JSON key and
/// quotes: an id in a command report's free-text detail is escaped there, so a device cannot
/// keep escrows by naming them elsewhere in its report): one statement for a whole batch's volumes (one a volume
/// was one round trip to the database per escrow, a quarter of the writer's statements).
async fn prune(
    conn: &mut AnyConnection,
    pairs: &[(&str, &str)],
    kept: u32,
) -> Result<(), sqlx::Error> {
    for chunk in pairs.chunks(ROWS_PER_STATEMENT) {
        let each: Vec<String> = (0..chunk.len())
            .map(|k| format!("(device = ${} AND volume = ${})", 2 * k + 1, 2 * k + 2))
            .collect();
        let sql = format!(
            "DELETE FROM escrows WHERE id IN (SELECT id FROM (SELECT id, ROW_NUMBER() OVER \
             (PARTITION BY device, volume ORDER BY created DESC, id DESC) AS n FROM escrows \
             WHERE {}) ranked WHERE n > {kept}) \
             AND NOT EXISTS (SELECT 1 FROM checkins c WHERE c.device = escrows.device \
             AND c.report LIKE '%\"escrow_id\":\"' || escrows.id || '\"%')",
            each.join(" OR ")
        );
        let mut q = sqlx::query(&sql);
        for (device, volume) in chunk {
            q = q.bind(*device).bind(*volume);
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

async fn checkin(
    conn: &mut AnyConnection,
    units: &[Unit],
    fresh: &[bool],
    out: &mut [Option<Outcome>],
    now: SystemTime,
) -> Result<(), sqlx::Error> {
    let todo: Vec<(usize, &str, &CheckInWrite)> = units
        .iter()
        .enumerate()
        .filter_map(|(i, u)| match u {
            Unit::CheckIn(n, c) if fresh[i] => Some((i, n.device.as_str(), c)),
            _ => None,
        })
        .collect();
    if todo.is_empty() {
        return Ok(());
    }
    for (_, device, c) in &todo {
        if !c.commands.is_empty() {
            crate::commands::record(conn, device, &c.commands).await?;
        }
    }
    // The last report of a device in the batch is its latest; one row per device a statement
    // (PostgreSQL refuses to update a row twice in one), in device order (so two instances
    // lock rows in the same order).
    let mut latest: HashMap<&str, &CheckInWrite> = HashMap::new();
    for (_, device, c) in &todo {
        latest.insert(device, c);
    }
    let mut rows: Vec<(&str, &CheckInWrite)> = latest.into_iter().collect();
    rows.sort_unstable_by_key(|(d, _)| *d);
    let at = timestamp(now);
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO checkins (device, at, report) VALUES {} \
             ON CONFLICT (device) DO UPDATE SET at = excluded.at, report = excluded.report",
            placeholders(chunk.len(), 3, "")
        );
        let mut q = sqlx::query(&sql);
        for (device, c) in chunk {
            q = q.bind(*device).bind(at.as_str()).bind(c.report.as_str());
        }
        q.execute(&mut *conn).await?;
    }
    let seen = seen(conn, &todo).await?;
    let devices: Vec<&str> = rows.iter().map(|(d, _)| *d).collect();
    let pending = crate::commands::pending(conn, &devices).await?;
    for (i, device, c) in &todo {
        let rotate = c
            .escrow_ids
            .iter()
            .filter(|(v, id)| {
                seen.get(id)
                    .is_some_and(|(d, vol)| d == device && vol == v.as_str())
            })
            .map(|(v, _)| v.clone())
            .collect();
        let commands = pending.get(*device).cloned().unwrap_or_default();
        out[*i] = Some(Outcome::CheckedIn { rotate, commands });
    }
    Ok(())
}

/// Which of the reported escrow ids an admin has seen: id to (device, volume).
async fn seen(
    conn: &mut AnyConnection,
    todo: &[(usize, &str, &CheckInWrite)],
) -> Result<HashMap<String, (String, String)>, sqlx::Error> {
    let ids: Vec<&str> = todo
        .iter()
        .flat_map(|(_, _, c)| c.escrow_ids.iter().map(|(_, id)| id.as_str()))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let mut seen = HashMap::new();
    for chunk in ids.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "SELECT id, device, volume FROM escrows WHERE rotate_after_use <> 0 AND id IN ({})",
            numbered(1, chunk.len())
        );
        let mut q = sqlx::query(&sql);
        for id in chunk {
            q = q.bind(*id);
        }
        for row in q.fetch_all(&mut *conn).await? {
            seen.insert(row.try_get(0)?, (row.try_get(1)?, row.try_get(2)?));
        }
    }
    Ok(seen)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::store::Store;
    use keyward_core::VolumeName;

    #[test]
    fn placeholders_number_rows_in_order() {
        assert_eq!(placeholders(2, 3, ""), "($1, $2, $3), ($4, $5, $6)");
        assert_eq!(placeholders(2, 1, ", 0"), "($1, 0), ($2, 0)");
        assert_eq!(numbered(2, 3), "$2, $3, $4");
    }

    fn nonce(device: &str, value: &str) -> Nonce {
        Nonce {
            device: device.into(),
            value: value.into(),
            ts: 1_700_000_000,
        }
    }

    fn escrow(id: &str, rotation: &str, sha: &str) -> NewEscrow {
        NewEscrow {
            id: id.into(),
            volume: "data".into(),
            rotation_id: rotation.into(),
            sha256: sha.into(),
            ciphertext: vec![1, 2, 3],
        }
    }

    fn checkin(report: &str) -> CheckInWrite {
        CheckInWrite {
            report: report.into(),
            escrow_ids: vec![(VolumeName::parse("data").unwrap(), "e1".into())],
            commands: Vec::new(),
        }
    }

    /// Conflicts inside one batch get the answers they would get one request at a time.
    #[tokio::test(flavor = "current_thread")]
    async fn a_batch_answers_each_unit_as_if_alone() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = Store::open(&url).await.unwrap();
        store
            .add_tokens(&["t1".into()], 0, i64::MAX, None)
            .await
            .unwrap();
        let pool = store.writer_pool(1).await.unwrap();
        let units = vec![
            Unit::Enroll {
                token_hash: "t1".into(),
                device: "d1".into(),
                key_b64: "k".into(),
            },
            Unit::Enroll {
                token_hash: "t1".into(),
                device: "d2".into(),
                key_b64: "k".into(),
            },
            Unit::Enroll {
                token_hash: "unknown".into(),
                device: "d3".into(),
                key_b64: "k".into(),
            },
            Unit::Escrow(nonce("d1", "n1"), escrow("e1", "r1", "aa")),
            Unit::Escrow(nonce("d1", "n1"), escrow("e2", "r2", "aa")),
            Unit::Escrow(nonce("d1", "n2"), escrow("e3", "r1", "bb")),
            Unit::Nonce(nonce("d1", "n3")),
            Unit::CheckIn(nonce("d1", "n4"), checkin("first")),
            Unit::CheckIn(nonce("d1", "n5"), checkin("second")),
        ];
        let mut conn = pool.acquire().await.unwrap();
        // A receipt means the escrow is on disk: the writer's commits are fsynced.
        let sync: i64 = sqlx::query("PRAGMA synchronous")
            .fetch_one(&mut *conn)
            .await
            .unwrap()
            .try_get(0)
            .unwrap();
        assert_eq!(sync, 2, "synchronous = FULL");
        let out = apply(&mut conn, &units, SystemTime::now()).await.unwrap();
        let show: Vec<String> = out.iter().map(|o| format!("{o:?}")).collect();
        assert_eq!(
            show[..7],
            [
                "Enrolled(Ok(()))",
                "Enrolled(Err(Used))",
                "Enrolled(Err(Unknown))",
                "Escrowed(Some((\"e1\", \"aa\")))",
                "Replayed",
                // The same rotation with another ciphertext: the first is read back (409).
                "Escrowed(Some((\"e1\", \"aa\")))",
                "NonceFresh(true)",
            ]
        );
        assert!(matches!(&out[7], Outcome::CheckedIn { rotate, commands }
            if rotate.is_empty() && commands.is_empty()));
        // The latest report of a device in a batch is the one kept.
        let d = store.device("d1").await.unwrap().unwrap();
        assert_eq!(d.checkin.unwrap().1, "second");
        assert!(store.device("d2").await.unwrap().is_none());

        // A later batch: spent nonces and tokens stay spent; a seen key asks for rotation.
        sqlx::query("UPDATE escrows SET rotate_after_use = 1 WHERE id = 'e1'")
            .execute(store.pool())
            .await
            .unwrap();
        let units = vec![
            Unit::Nonce(nonce("d1", "n3")),
            Unit::CheckIn(nonce("d1", "n4"), checkin("again")),
            Unit::CheckIn(nonce("d1", "n6"), checkin("third")),
            Unit::Prune {
                before: 1_700_000_001,
                limit: 100,
            },
        ];
        let out = apply(&mut conn, &units, SystemTime::now()).await.unwrap();
        assert!(matches!(out[0], Outcome::NonceFresh(false)));
        assert!(matches!(out[1], Outcome::Replayed));
        assert!(matches!(&out[2], Outcome::CheckedIn { rotate, .. }
            if rotate.len() == 1 && rotate[0].as_str() == "data"));
        // Every nonce so far (n1..n6, at the same second) is older than the cut-off.
        assert!(matches!(out[3], Outcome::Pruned(6)));
    }

    /// One prune statement for several volumes keeps each volume's newest `kept` escrows and
    /// the one its device's last check-in names, and touches no other volume.
    #[tokio::test(flavor = "current_thread")]
    async fn one_prune_bounds_every_volume_of_a_batch() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = Store::open(&url).await.unwrap();
        let pool = store.writer_pool(1).await.unwrap();
        let mut conn = pool.acquire().await.unwrap();
        for (device, volume) in [
            ("d1", "data"),
            ("d1", "home"),
            ("d2", "data"),
            ("d3", "data"),
        ] {
            for n in 0..5 {
                sqlx::query(
                    "INSERT INTO escrows (id, device, volume, rotation_id, sha256, ciphertext, \
                     created, rotate_after_use) VALUES ($1, $2, $3, $4, 'aa', $5, $6, 0)",
                )
                .bind(format!("e-{device}-{volume}-{n}"))
                .bind(device)
                .bind(volume)
                .bind(format!("r{n}"))
                .bind(vec![1u8, 2, 3])
                .bind(format!("2026-01-0{}T00:00:00Z", n + 1))
                .execute(&mut *conn)
                .await
                .unwrap();
            }
        }
        // d2's device reports its oldest escrow active.
        sqlx::query("INSERT INTO checkins (device, at, report) VALUES ('d2', 'now', $1)")
            .bind(r#"{"volumes":[{"escrow_id":"e-d2-data-0"}]}"#)
            .execute(&mut *conn)
            .await
            .unwrap();
        prune(
            &mut conn,
            &[("d1", "data"), ("d1", "home"), ("d2", "data")],
            2,
        )
        .await
        .unwrap();
        let ids: Vec<String> = sqlx::query("SELECT id FROM escrows ORDER BY id")
            .fetch_all(&mut *conn)
            .await
            .unwrap()
            .iter()
            .map(|r| r.try_get(0).unwrap())
            .collect();
        let want = [
            "e-d1-data-3",
            "e-d1-data-4",
            "e-d1-home-3",
            "e-d1-home-4",
            "e-d2-data-0",
            "e-d2-data-3",
            "e-d2-data-4",
            "e-d3-data-0",
            "e-d3-data-1",
            "e-d3-data-2",
            "e-d3-data-3",
            "e-d3-data-4",
        ];
        assert_eq!(ids, want);
    }

    /// A revoked device's units write nothing, not even their nonces; others' in the same
    /// batch are applied.
    #[tokio::test(flavor = "current_thread")]
    async fn a_revoked_device_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = Store::open(&url).await.unwrap();
        store
            .add_tokens(&["t1".into(), "t2".into()], 0, i64::MAX, None)
            .await
            .unwrap();
        let pool = store.writer_pool(1).await.unwrap();
        let mut conn = pool.acquire().await.unwrap();
        let enroll = |t: &str, d: &str| Unit::Enroll {
            token_hash: t.into(),
            device: d.into(),
            key_b64: "k".into(),
        };
        let now = SystemTime::now();
        apply(&mut conn, &[enroll("t1", "d1"), enroll("t2", "d2")], now)
            .await
            .unwrap();
        sqlx::query("UPDATE devices SET revoked = 'now', revoked_by = 'test' WHERE id = 'd1'")
            .execute(store.pool())
            .await
            .unwrap();
        let units = vec![
            Unit::Escrow(nonce("d1", "n1"), escrow("e1", "r1", "aa")),
            Unit::CheckIn(nonce("d1", "n2"), checkin("r")),
            Unit::Nonce(nonce("d1", "n3")),
            Unit::CheckIn(nonce("d2", "n1"), checkin("r")),
        ];
        let out = apply(&mut conn, &units, now).await.unwrap();
        for o in &out[..3] {
            assert!(matches!(o, Outcome::Revoked), "{o:?}");
        }
        assert!(matches!(out[3], Outcome::CheckedIn { .. }));
        let count = |sql: &'static str| {
            let pool = store.pool().clone();
            async move {
                sqlx::query(sql)
                    .fetch_one(&pool)
                    .await
                    .unwrap()
                    .try_get::<i64, _>(0)
                    .unwrap()
            }
        };
        assert_eq!(count("SELECT count(*) FROM escrows").await, 0);
        assert_eq!(
            count("SELECT count(*) FROM nonces WHERE device = 'd1'").await,
            0
        );
        assert_eq!(count("SELECT count(*) FROM checkins").await, 1);
    }
}
