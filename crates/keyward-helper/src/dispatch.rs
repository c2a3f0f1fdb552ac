//! Request → operation: the one match over the catalog's requests the helper serves. The
//! caller's class was checked against the allow-list by `server` before this runs; names were
//! parsed while decoding. Frames, peers and the wire `Response` stay in `server`.

use std::sync::Arc;

use keyward_core::ipc::{Reply, Request};
use keyward_core::login_queue::Event;

use crate::ctx::{Caller, Ctx};
use crate::error::OpError;
use crate::ops::{self, commands, configured, jobs, on_volume, recovery, volumes};
use crate::policy_override;

/// Run one request.
pub fn run(ctx: &Arc<Ctx>, request: Request, caller: Caller) -> Result<Reply, OpError> {
    let c = &ctx.config;
    match request {
        Request::Status { volume } => volumes(c, volume.as_ref())
            .map(|vs| Reply::Status(vs.iter().map(|v| ops::status(c, v)).collect())),
        Request::Verify { volume } => volumes(c, volume.as_ref())
            .map(|vs| Reply::Verified(vs.iter().map(|v| ops::verify(c, v)).collect())),
        Request::Bootstrap { volume, passphrase } => on_volume(c, &volume, |v| {
            ops::bootstrap_on(v, None, &passphrase.into_secret())
        }),
        Request::BootstrapFrom {
            volume,
            holder,
            passphrase,
        } => on_volume(c, &volume, |v| {
            ops::bootstrap_on(v, Some(&holder), &passphrase.into_secret())
        }),
        Request::Grant {
            volume,
            user,
            passphrase,
        } => on_volume(c, &volume, |v| {
            ops::grant_on(v, &user, &passphrase.into_secret())
        }),
        Request::Revoke { volume, user } => on_volume(c, &volume, |v| ops::revoke_on(v, &user)),
        Request::Release { volume, dry_run } => {
            on_volume(c, &volume, |v| ops::release_on(v, dry_run))
        }
        Request::ServiceRotate { volume } => on_volume(c, &volume, ops::service_rotate_on),
        Request::ServiceRepair { volume, passphrase } => on_volume(c, &volume, |v| {
            ops::service_repair_on(v, &passphrase.into_secret())
        }),
        Request::RecoveryBegin { volume } => recovery::begin(c, configured(c, &volume)?),
        Request::RecoveryCommit {
            volume,
            slot,
            confirm,
        } => recovery::commit(c, configured(c, &volume)?, slot, &confirm.into_secret()),
        Request::RecoveryAbort { volume } => recovery::abort(c, configured(c, &volume)?),
        Request::SetDevice { device_id } => recovery::set_device(c, &device_id),
        Request::RecoveryEscrowBegin { volume } => {
            recovery::escrow_begin(c, configured(c, &volume)?)
        }
        Request::RecoveryEscrowCommit { volume, receipt } => {
            recovery::escrow_commit(c, configured(c, &volume)?, &receipt)
        }
        Request::LoginCapture { user, password } => {
            jobs::submit(ctx, user, Event::Login(password.into_secret()), caller);
            Ok(Reply::Queued)
        }
        Request::PasswordChange { user, new, old } => {
            // The old password is not needed: the service secret opens the way. Drop it now.
            drop(old);
            jobs::submit(ctx, user, Event::Change(new.into_secret()), caller);
            Ok(Reply::Queued)
        }
        Request::Command { signed } => commands::run(c, &signed),
        Request::Policy => Ok(Reply::Policy(policy_override::report(c))),
        _ => Err(OpError::Usage(
            "operation not supported by this helper".into(),
        )),
    }
}
