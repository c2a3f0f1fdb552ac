//! The login's second step for accounts with TOTP (`totp.rs`). The account's sealed secret is
//! read and opened before the password hash, for every known name, so how long a login takes
//! does not depend on whether its password was right; the code is checked only after a right
//! password, and its step spent with a conditional update (`db::spend_totp_step`), so among
//! every instance on the database one login, at most, gets each step. Neither the code nor the
//! secret is logged or audited.

use super::db::{self, TotpRow};
use super::totp::{self, Secret};
use super::UiError;
use crate::app_state::AppState;

/// An account's second factor, opened for one login.
#[derive(Debug)]
pub struct Enrolled {
    secret: Secret,
    row: TotpRow,
}

/// `name`'s second factor, if the account has one. A secret this server cannot open is an
/// error: the login fails closed.
pub async fn load(s: &AppState, name: &str) -> Result<Option<Enrolled>, UiError> {
    let Some(row) = db::totp_of(s.store.pool(), name).await? else {
        return Ok(None);
    };
    let secret = Secret::unseal(&row.sealed, &s.identity.age)
        .map_err(|e| UiError::Internal(format!("account {name}: {e}")))?;
    Ok(Some(Enrolled { secret, row }))
}

/// Whether a login whose password was right passes its second step: always without TOTP;
/// with it, when `code` is the code of a step in the window that no login spent before and
/// this login spends it now.
pub async fn passes(
    s: &AppState,
    name: &str,
    enrolled: Option<&Enrolled>,
    code: &str,
    now: i64,
) -> Result<bool, UiError> {
    let Some(e) = enrolled else {
        return Ok(true);
    };
    let Some(step) = totp::matching_step(&e.secret, code, now, e.row.last_step) else {
        return Ok(false);
    };
    Ok(db::spend_totp_step(s.store.pool(), name, &e.row.sealed, step).await?)
}
