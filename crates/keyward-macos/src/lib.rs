//! keyward-macos: keyward's [`UnlockStore`](keyward_core::UnlockStore) on a Mac, where the
//! unlock right is Apple's Secure Token and the recovery key is FileVault's personal recovery
//! key, both managed through Apple's command-line tools.
//!
//! Plain Rust, tested on Linux: every command is a typed argv array ([`build`]) run through a
//! [`Runner`](runner::Runner), every output is judged by its text ([`parse`]), and the
//! orderings ([`store`], `rights`, [`recovery`], [`service`], `reconcile`) are exercised against
//! a simulated Mac that answers with transcribed outputs (`fake`, feature `fake`). Only the process
//! runner's constructor and the System keychain are `cfg(target_os = "macos")` glue.
//!
//! Secrets reach the tools on stdin only — answers to `-` prompts, an `-inputplist`, or a line
//! for `dscl`'s interactive mode — never in argv, environment or files.
#![forbid(unsafe_code)]

pub mod authdb;
pub mod build;
pub mod bundle;
pub mod command;
pub mod error;
#[cfg(feature = "fake")]
pub mod fake;
#[cfg(feature = "fake")]
pub mod fixture;
pub mod inventory;
pub mod keychain;
#[cfg(target_os = "macos")]
pub mod keychain_macos;
pub mod login_capture;
pub mod login_right;
pub mod names;
pub mod out_of_step;
pub mod parse;
pub mod password_sync;
#[cfg(any(target_os = "macos", test))]
pub mod process;
mod reconcile;
pub mod recovery;
pub mod registry;
pub mod report;
mod rights;
pub mod runner;
pub mod service;
pub mod store;

pub use error::MacError;
pub use reconcile::reconcile_registry;
pub use store::{FileVaultStore, MacConfig};
