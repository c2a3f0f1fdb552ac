//! The escrow server's policy override (`state_dir/policy-override.json`, root 0600, written
//! atomically): set only by a verified `set-policy` command, read wherever the helper applies
//! policy, and reported to the agent (`Request::Policy`), which cannot read the helper's state.

use keyward_core::config::{Config, Policy};
use keyward_core::ipc::PolicyReport;
use keyward_core::policy::PolicyOverride;
use keyward_core::quote;
use keyward_sys::safe_fs;

use crate::ctx::state_owner;
use crate::error::OpError;

const FILE: &str = "policy-override.json";

/// The override in force, if any. A file that cannot be read or parsed is an error: it was
/// written by a genuine command, so silently ignoring it could undo the server's decision.
fn load(c: &Config) -> Result<Option<PolicyOverride>, String> {
    let expect = safe_fs::Expect::private(state_owner(c).0);
    safe_fs::read_json(&c.state_dir.join(FILE), expect, 4096)
        .map_err(|e| format!("policy override: {e}"))
}

/// Replace the override with `new` (durably) and report the policy now in force, unless the
/// override in force came from a command issued later: commands may arrive out of order.
pub fn replace(c: &Config, new: &PolicyOverride) -> Result<PolicyReport, OpError> {
    if let Some(newer) = load(c)
        .map_err(OpError::Failed)?
        .filter(|o| o.issued > new.issued)
    {
        return Err(OpError::Refused(format!(
            "superseded by the policy of command {}, issued later; nothing changed",
            quote(&newer.command_id)
        )));
    }
    safe_fs::write_json(&c.state_dir, FILE, new, 0o600)
        .map_err(|e| OpError::Failed(format!("policy override: {e}")))?;
    Ok(report(c))
}

/// The policy in force and the command that set its override. If the override cannot be
/// read, `keyward.toml`'s policy applies and the helper says so on stderr.
fn in_force(c: &Config) -> (Policy, Option<String>) {
    match load(c) {
        Ok(Some(o)) => (o.apply(&c.policy), Some(o.command_id)),
        Ok(None) => (c.policy.clone(), None),
        Err(e) => {
            eprintln!("keyward-helper: {e}; using keyward.toml's [policy]");
            (c.policy.clone(), None)
        }
    }
}

/// The policy in force.
pub fn effective(c: &Config) -> Policy {
    in_force(c).0
}

/// The policy in force, for a reply.
pub fn report(c: &Config) -> PolicyReport {
    let (p, override_command) = in_force(c);
    PolicyReport {
        recovery_rotation_days: p.recovery_rotation_days,
        revoke_unmanaged: p.revoke_unmanaged,
        override_command,
    }
}
