//! `diskutil apfs unlockVolume VOLUME -verify -user UUID -stdinpassphrase`: does this password
//! unlock the volume for this crypto user? It tests the unlock right itself, which is what
//! keyward verifies (a login password and a FileVault password can drift apart), and takes
//! the passphrase on stdin, where `dscl . -authonly USER PASSWORD` would put it in argv.

use keyward_core::Secret;

use crate::command::{Arg, Invocation, Program, Purpose};
use crate::names::{GeneratedUid, VolumeOperand};

/// The verification command. The passphrase is sent as-is, without a newline.
pub fn verify_unlock(volume: &VolumeOperand, user: &GeneratedUid, password: &Secret) -> Invocation {
    Invocation::new(
        Purpose::VerifyUnlock,
        Program::Diskutil,
        vec![
            Arg::fixed("apfs"),
            Arg::fixed("unlockVolume"),
            Arg::volume(volume),
            Arg::fixed("-verify"),
            Arg::fixed("-user"),
            Arg::uuid(user),
            Arg::fixed("-stdinpassphrase"),
        ],
    )
    .with_stdin(password.duplicate())
}
