//! `sysadminctl` builders. Passwords are always `-` in argv ("Pass '-' instead of password …
//! to request prompt", sysadminctl's usage text) and answered on stdin in argv order: the
//! account's password, then the administrator's. The helper runs without a controlling
//! terminal, so the prompts read stdin.

use keyward_core::Secret;

use crate::build::prompt_answers;
use crate::command::{Arg, Invocation, Program, Purpose};
use crate::error::MacError;
use crate::names::ShortName;

/// `sysadminctl -secureTokenStatus USER`. Needs no privileges; answers on stderr, naming the
/// account by its RealName.
pub fn token_status(user: &ShortName) -> Invocation {
    Invocation::new(
        Purpose::TokenStatus,
        Program::Sysadminctl,
        vec![Arg::fixed("-secureTokenStatus"), Arg::name(user)],
    )
}

/// `sysadminctl -secureTokenOn USER -password - -adminUser ADMIN -adminPassword -`: give USER
/// a Secure Token, authorised by ADMIN, an administrator who holds one.
pub fn token_on(
    user: &ShortName,
    user_password: &Secret,
    admin: &ShortName,
    admin_password: &Secret,
) -> Result<Invocation, MacError> {
    token_switch(
        Purpose::TokenOn,
        "-secureTokenOn",
        user,
        user_password,
        admin,
        admin_password,
    )
}

/// `sysadminctl -secureTokenOff USER -password - -adminUser ADMIN -adminPassword -`. Apple
/// requires USER's own password: no administrator can take a token without it.
pub fn token_off(
    user: &ShortName,
    user_password: &Secret,
    admin: &ShortName,
    admin_password: &Secret,
) -> Result<Invocation, MacError> {
    token_switch(
        Purpose::TokenOff,
        "-secureTokenOff",
        user,
        user_password,
        admin,
        admin_password,
    )
}

/// The shared shape of `-secureTokenOn` and `-secureTokenOff`: both passwords answered on
/// stdin, in argv order.
fn token_switch(
    purpose: Purpose,
    flag: &'static str,
    user: &ShortName,
    user_password: &Secret,
    admin: &ShortName,
    admin_password: &Secret,
) -> Result<Invocation, MacError> {
    Ok(Invocation::new(
        purpose,
        Program::Sysadminctl,
        vec![
            Arg::fixed(flag),
            Arg::name(user),
            Arg::fixed("-password"),
            Arg::fixed("-"),
            Arg::fixed("-adminUser"),
            Arg::name(admin),
            Arg::fixed("-adminPassword"),
            Arg::fixed("-"),
        ],
    )
    .with_stdin(prompt_answers(&[user_password, admin_password])?))
}

/// `sysadminctl -deleteUser USER -keepHome -adminUser ADMIN -adminPassword -`. `-keepHome`
/// because the service account's home is `/var/empty`, which must never be removed.
pub fn delete_user(
    user: &ShortName,
    admin: &ShortName,
    admin_password: &Secret,
) -> Result<Invocation, MacError> {
    Ok(Invocation::new(
        Purpose::DeleteUser,
        Program::Sysadminctl,
        vec![
            Arg::fixed("-deleteUser"),
            Arg::name(user),
            Arg::fixed("-keepHome"),
            Arg::fixed("-adminUser"),
            Arg::name(admin),
            Arg::fixed("-adminPassword"),
            Arg::fixed("-"),
        ],
    )
    .with_stdin(prompt_answers(&[admin_password])?))
}
