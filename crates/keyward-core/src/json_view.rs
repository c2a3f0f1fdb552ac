//! The stable JSON of `keyward status --json` and `keyward verify --json` (docs/MACHINE-OUTPUT.md),
//! as view types of their own, separate from the wire types of `ipc` they are built from. The
//! wire may change with the helper and the CLI of one release; this shape is what inventory and
//! compliance tools read, so fields are only ever added. Each view is built by destructuring its
//! wire type whole: a field added to the wire does not reach the JSON by accident, and does not
//! compile until someone decides whether it does. `tests` pins the shape to the document's own
//! examples, both ways (a documented field missing, or an output field undocumented, fails).

use serde::Serialize;

use crate::ipc::{
    FindingReport, HolderReport, UnlockCostReport, UserReport, VerifyReport, VolumeReport,
    WorkReport,
};

/// `keyward status --json`: `{"volumes": [...]}`.
#[derive(Debug, Serialize)]
pub struct StatusJson<'a> {
    volumes: Vec<VolumeJson<'a>>,
}

#[derive(Debug, Serialize)]
struct VolumeJson<'a> {
    volume: &'a str,
    holders: Vec<HolderJson<'a>>,
    violations: &'a [String],
    findings: Vec<FindingJson<'a>>,
    error: Option<&'a str>,
    unlock_cost: Option<UnlockCostJson<'a>>,
}

#[derive(Debug, Serialize)]
struct HolderJson<'a> {
    slot: u32,
    role: &'a str,
    user: Option<&'a str>,
    uid: Option<u32>,
    kdf: &'a str,
    state: &'a str,
    escrow_id: Option<&'a str>,
    created: Option<u64>,
    priority: &'a str,
    standing: Option<&'a str>,
}

#[derive(Debug, Serialize)]
struct UnlockCostJson<'a> {
    order: &'a [u32],
    last_user: Option<&'a str>,
    last_user_slot: Option<u32>,
    last_user_cost: Option<WorkJson>,
    wrong_password: WorkJson,
}

#[derive(Debug, Serialize)]
struct WorkJson {
    slots: u32,
    argon2_kib_passes: u64,
    pbkdf2_iterations: u64,
    unknown_slots: u32,
}

#[derive(Debug, Serialize)]
struct FindingJson<'a> {
    finding: &'a str,
    slot: u32,
    role: &'a str,
    user: Option<&'a str>,
    kdf: &'a str,
    hash: Option<&'a str>,
    iterations: Option<u64>,
    time: Option<u64>,
    memory_kib: Option<u64>,
    cpus: Option<u64>,
    detail: &'a str,
}

/// `keyward verify --json`: `{"volumes": [...]}`.
#[derive(Debug, Serialize)]
pub struct VerifyJson<'a> {
    volumes: Vec<VerifiedJson<'a>>,
}

#[derive(Debug, Serialize)]
struct VerifiedJson<'a> {
    volume: &'a str,
    service: &'a str,
    detail: Option<&'a str>,
    users: Vec<UserJson<'a>>,
    violations: &'a [String],
    findings: Vec<FindingJson<'a>>,
}

#[derive(Debug, Serialize)]
struct UserJson<'a> {
    user: &'a str,
    slot: u32,
    status: &'a str,
    revoked: bool,
    detail: Option<&'a str>,
}

impl<'a> StatusJson<'a> {
    /// The view of a status reply.
    pub fn new(reports: &'a [VolumeReport]) -> Self {
        StatusJson {
            volumes: reports.iter().map(volume).collect(),
        }
    }
}

impl<'a> VerifyJson<'a> {
    /// The view of a verify reply.
    pub fn new(reports: &'a [VerifyReport]) -> Self {
        VerifyJson {
            volumes: reports.iter().map(verified).collect(),
        }
    }
}

fn volume(r: &VolumeReport) -> VolumeJson<'_> {
    let VolumeReport {
        volume,
        holders,
        violations,
        findings,
        error,
        unlock_cost,
    } = r;
    VolumeJson {
        volume,
        holders: holders.iter().map(holder).collect(),
        violations,
        findings: findings.iter().map(finding).collect(),
        error: error.as_deref(),
        unlock_cost: unlock_cost.as_ref().map(cost),
    }
}

fn holder(h: &HolderReport) -> HolderJson<'_> {
    let HolderReport {
        slot,
        role,
        user,
        uid,
        kdf,
        state,
        escrow_id,
        created,
        priority,
        standing,
    } = h;
    HolderJson {
        slot: *slot,
        role,
        user: user.as_deref(),
        uid: *uid,
        kdf,
        state,
        escrow_id: escrow_id.as_deref(),
        created: *created,
        priority,
        standing: standing.as_deref(),
    }
}

fn cost(c: &UnlockCostReport) -> UnlockCostJson<'_> {
    let UnlockCostReport {
        order,
        last_user,
        last_user_slot,
        last_user_cost,
        wrong_password,
    } = c;
    UnlockCostJson {
        order,
        last_user: last_user.as_deref(),
        last_user_slot: *last_user_slot,
        last_user_cost: last_user_cost.as_ref().map(work),
        wrong_password: work(wrong_password),
    }
}

fn work(w: &WorkReport) -> WorkJson {
    let WorkReport {
        slots,
        argon2_kib_passes,
        pbkdf2_iterations,
        unknown_slots,
    } = *w;
    WorkJson {
        slots,
        argon2_kib_passes,
        pbkdf2_iterations,
        unknown_slots,
    }
}

fn finding(f: &FindingReport) -> FindingJson<'_> {
    let FindingReport {
        finding,
        slot,
        role,
        user,
        kdf,
        hash,
        iterations,
        time,
        memory_kib,
        cpus,
        detail,
    } = f;
    FindingJson {
        finding,
        slot: *slot,
        role,
        user: user.as_deref(),
        kdf,
        hash: hash.as_deref(),
        iterations: *iterations,
        time: *time,
        memory_kib: *memory_kib,
        cpus: *cpus,
        detail,
    }
}

fn verified(r: &VerifyReport) -> VerifiedJson<'_> {
    let VerifyReport {
        volume,
        service,
        detail,
        users,
        violations,
        findings,
    } = r;
    VerifiedJson {
        volume,
        service,
        detail: detail.as_deref(),
        users: users.iter().map(user).collect(),
        violations,
        findings: findings.iter().map(finding).collect(),
    }
}

fn user(u: &UserReport) -> UserJson<'_> {
    let UserReport {
        user,
        slot,
        status,
        revoked,
        detail,
    } = u;
    UserJson {
        user,
        slot: *slot,
        status,
        revoked: *revoked,
        detail: detail.as_deref(),
    }
}

#[cfg(test)]
mod tests;
