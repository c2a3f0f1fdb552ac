//! Crash tests of the orderings that keep a secret at rest (`secret_orderings`): bootstrap,
//! service rotate and repair, recovery begin, commit and abort, run over the in-memory store
//! and host, with the power cut before every header write, before every write at rest and at
//! every named step. The run stops there (nothing after the cut reaches the header or the
//! stored secrets); then the settling a restarted helper runs (reconcile, the recovery
//! start-up pass, the service settle) and the checks:
//!
//! * the stored service secret opens the volume's one service slot, or the volume has none
//!   only if it never had one (drift only where the test lost the secret on purpose);
//! * no recovery key in force is lost: the previous key opens the committed recovery slot
//!   until the commit of the next one went through;
//! * a recovery slot counts as a way in only once its key's commit was asked for, and a
//!   pending slot always has its key sealed;
//! * I1 and I3 hold (`invariants::check_state`).

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use keyward_core::error::StoreError;
use keyward_core::fake::MemoryBackend;
use keyward_core::invariants::{check_state, committed_paths};
use keyward_core::kdf::KdfClass;
use keyward_core::orderings::{SlotBackend, SlotStore};
use keyward_core::secret_orderings::memory::MemoryHost;
use keyward_core::secret_orderings::{recovery, service, Host, ProtocolError, ServiceStanding};
use keyward_core::{
    KeywardToken, Role, Secret, SlotId, SlotPriority, TokenId, TokenState, UnlockStore, VolumeName,
    VolumeState,
};
use proptest::prelude::*;

/// The power: it goes off at the `cut_at`-th step (counting from 0) and stays off.
#[derive(Debug, Default)]
struct Power {
    cut_at: Option<usize>,
    passed: usize,
    off: bool,
    clock: Option<SystemTime>,
}

impl Power {
    /// One step: does the machine get past it?
    fn step(&mut self) -> bool {
        if self.off {
            return false;
        }
        let n = self.passed;
        self.passed += 1;
        self.off = self.cut_at == Some(n);
        !self.off
    }
}

type Shared = Rc<RefCell<Power>>;

const CUT: StoreError = StoreError::Failpoint("power cut");

fn on(p: &Shared) -> Result<(), StoreError> {
    if p.borrow().off {
        Err(CUT)
    } else {
        Ok(())
    }
}

fn step(p: &Shared) -> Result<(), StoreError> {
    if p.borrow_mut().step() {
        Ok(())
    } else {
        Err(CUT)
    }
}

/// The volume's header: the in-memory one, with the power cut before any write.
struct Disk {
    inner: MemoryBackend,
    power: Shared,
}

impl SlotBackend for Disk {
    type Guard = ();
    fn lock(&mut self) -> Result<(), StoreError> {
        on(&self.power)
    }
    fn now(&self) -> SystemTime {
        self.power.borrow().clock.unwrap_or(SystemTime::UNIX_EPOCH)
    }
    fn read(&mut self) -> Result<VolumeState, StoreError> {
        on(&self.power)?;
        self.inner.read()
    }
    fn add_slot(
        &mut self,
        slot: SlotId,
        authority: &Secret,
        authority_slot: Option<SlotId>,
        secret: &Secret,
        kdf: KdfClass,
    ) -> Result<(), StoreError> {
        step(&self.power)?;
        self.inner
            .add_slot(slot, authority, authority_slot, secret, kdf)
    }
    fn test_slot(&mut self, slot: SlotId, secret: &Secret) -> Result<bool, StoreError> {
        on(&self.power)?;
        self.inner.test_slot(slot, secret)
    }
    fn destroy_slot(&mut self, slot: SlotId) -> Result<(), StoreError> {
        step(&self.power)?;
        self.inner.destroy_slot(slot)
    }
    fn add_token(&mut self, token: &KeywardToken) -> Result<TokenId, StoreError> {
        step(&self.power)?;
        self.inner.add_token(token)
    }
    fn replace_token(&mut self, id: TokenId, token: &KeywardToken) -> Result<(), StoreError> {
        step(&self.power)?;
        self.inner.replace_token(id, token)
    }
    fn remove_token(&mut self, id: TokenId) -> Result<(), StoreError> {
        step(&self.power)?;
        self.inner.remove_token(id)
    }
    fn set_priority(&mut self, slot: SlotId, priority: SlotPriority) -> Result<(), StoreError> {
        step(&self.power)?;
        self.inner.set_priority(slot, priority)
    }
    fn failpoint(&mut self, _name: &'static str) -> Result<(), StoreError> {
        step(&self.power)
    }
}

/// The helper's state at rest: the in-memory host, with the power cut before any write and
/// at every named step. Its clock is the disk's.
struct State {
    inner: MemoryHost,
    power: Shared,
}

impl State {
    fn write<T>(&mut self, f: impl FnOnce(&mut MemoryHost) -> T) -> Result<T, StoreError> {
        step(&self.power)?;
        Ok(f(&mut self.inner))
    }
    fn read<T>(&mut self, f: impl FnOnce(&mut MemoryHost) -> T) -> Result<T, StoreError> {
        on(&self.power)?;
        Ok(f(&mut self.inner))
    }
}

fn dup(s: &Option<Secret>) -> Option<Secret> {
    s.as_ref().map(Secret::duplicate)
}

impl Host for State {
    type Error = StoreError;
    fn service_secret(&mut self) -> Result<Option<Secret>, StoreError> {
        self.read(|h| dup(&h.current))
    }
    fn next_service_secret(&mut self) -> Result<Option<Secret>, StoreError> {
        self.read(|h| dup(&h.next))
    }
    fn store_next_service_secret(&mut self, s: &Secret) -> Result<(), StoreError> {
        self.write(|h| h.next = Some(s.duplicate()))
    }
    fn promote_next_service_secret(&mut self) -> Result<(), StoreError> {
        self.write(|h| {
            if let Some(next) = h.next.take() {
                h.current = Some(next);
            }
        })
    }
    fn discard_next_service_secret(&mut self) -> Result<(), StoreError> {
        self.write(|h| h.next = None)
    }
    fn forget_service_secret(&mut self) -> Result<(), StoreError> {
        self.write(|h| h.current = None)
    }
    fn pending_key(&mut self) -> Result<Option<Secret>, StoreError> {
        self.read(|h| dup(&h.pending))
    }
    fn seal_pending_key(&mut self, key: &Secret) -> Result<(), StoreError> {
        self.write(|h| h.pending = Some(key.duplicate()))
    }
    fn drop_pending_key(&mut self) -> Result<(), StoreError> {
        self.write(|h| h.pending = None)
    }
    fn new_service_secret(&mut self) -> Result<Secret, StoreError> {
        self.read(|h| h.new_service_secret().expect("numbered"))
    }
    fn new_recovery_key(&mut self) -> Result<Secret, StoreError> {
        self.read(|h| h.new_recovery_key().expect("numbered"))
    }
    fn now(&self) -> SystemTime {
        self.power.borrow().clock.unwrap_or(SystemTime::UNIX_EPOCH)
    }
    fn pending_max_age(&self) -> Duration {
        self.inner.max_age
    }
    fn expired(&mut self, slot: SlotId) {
        self.inner.expired(slot);
    }
    fn failpoint(&mut self, name: &str) -> Result<(), StoreError> {
        self.inner.trace.push(name.to_owned());
        step(&self.power)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Bootstrap,
    Rotate,
    Repair,
    /// The stored service secrets are lost (a restored backup of the state directory).
    LoseSecret,
    Begin,
    Commit,
    Abort,
    /// Time passes beyond the pending age.
    Age,
    /// Another tool removes the installer's slot, where another way in remains.
    RemoveInstaller,
}

const OPS: &[Op] = &[
    Op::Bootstrap,
    Op::Rotate,
    Op::Repair,
    Op::LoseSecret,
    Op::Begin,
    Op::Commit,
    Op::Abort,
    Op::Age,
    Op::RemoveInstaller,
];

type Outcome = Result<(), ProtocolError<StoreError>>;

struct World {
    store: SlotStore<Disk>,
    host: State,
    power: Shared,
    install: Secret,
    name: VolumeName,
    /// A bootstrap finished once: the volume must keep a service slot.
    had_service: bool,
    /// The service secrets were lost on purpose and no repair has finished since.
    drifted: bool,
    /// The recovery key a person holds: its commit finished.
    in_force: Option<Secret>,
    /// The key whose commit was asked for (the proof given) but may not have finished.
    committing: Option<Secret>,
}

fn slot0() -> SlotId {
    SlotId::new(0).expect("0")
}

impl World {
    fn new() -> Self {
        let install = Secret::copy_from(b"installer passphrase");
        let clock = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        let power = Rc::new(RefCell::new(Power {
            clock: Some(clock),
            ..Power::default()
        }));
        let disk = Disk {
            inner: MemoryBackend::formatted(&install),
            power: Rc::clone(&power),
        };
        let host = State {
            inner: MemoryHost::new(clock),
            power: Rc::clone(&power),
        };
        World {
            store: SlotStore::new(disk),
            host,
            power,
            install,
            name: VolumeName::parse("root").expect("valid"),
            had_service: false,
            drifted: false,
            in_force: None,
            committing: None,
        }
    }

    /// Run `op`, the power cut at step `cut` if it gets that far: did it?
    fn run(&mut self, op: Op, cut: Option<usize>) -> bool {
        {
            let mut p = self.power.borrow_mut();
            p.cut_at = cut;
            p.passed = 0;
        }
        let outcome = self.apply(op);
        let crashed = self.power.borrow().off;
        match outcome {
            Ok(()) => assert!(!crashed, "{op:?} went on after the power cut"),
            Err(ProtocolError::Store(StoreError::Failpoint(_)) | ProtocolError::Host(_))
                if crashed => {}
            // Refusals and failures that leave the volume as it was are the caller's to see.
            Err(e) => assert!(
                e.is_refusal()
                    || matches!(
                        e,
                        ProtocolError::Store(
                            StoreError::Refused(_) | StoreError::AuthenticationFailed
                        )
                    ),
                "{op:?} failed: {e}"
            ),
        }
        crashed
    }

    fn working(&mut self) -> Result<Option<(SlotId, Secret)>, ProtocolError<StoreError>> {
        match service::settle(&mut self.store, &mut self.host)? {
            ServiceStanding::Working(slot, secret) => Ok(Some((slot, secret))),
            _ => Ok(None),
        }
    }

    fn apply(&mut self, op: Op) -> Outcome {
        let (store, host) = (&mut self.store, &mut self.host);
        match op {
            Op::Bootstrap => {
                if let ServiceStanding::Missing = service::settle(store, host)? {
                    service::create(store, host, &self.install)?;
                    self.had_service = true;
                }
            }
            Op::Rotate => {
                if let Some((old, current)) = self.working()? {
                    service::rotate(&mut self.store, &mut self.host, old, &current)?;
                }
            }
            Op::Repair => {
                let install = &self.install;
                service::repair(store, host, &self.name, install)?;
                self.drifted = false;
            }
            Op::LoseSecret => {
                if self.had_service {
                    host.inner.current = None;
                    host.inner.next = None;
                    self.drifted = true;
                }
            }
            Op::Begin => {
                if let Some((_, service)) = self.working()? {
                    let (store, host) = (&mut self.store, &mut self.host);
                    if recovery::settle_pending(store, host)?.is_none() {
                        recovery::new_pending(store, host, &service)?;
                    }
                }
            }
            Op::Commit => {
                if let Some((slot, key)) = recovery::settle_pending(store, host)? {
                    self.committing = Some(key.duplicate());
                    recovery::commit(store, host, slot, None)?;
                    host.drop_pending_key()?;
                    self.in_force = Some(key);
                    self.committing = None;
                }
            }
            Op::Abort => {
                recovery::abort(store, host)?;
                host.drop_pending_key()?;
            }
            Op::Age => {
                let mut p = self.power.borrow_mut();
                p.clock = p
                    .clock
                    .map(|c| c + host.inner.max_age + Duration::from_secs(1));
            }
            Op::RemoveInstaller => {
                let state = store.state()?;
                if state.slot(slot0()).is_some() && committed_paths(&state).len() > 1 {
                    store.backend_mut().destroy_slot(slot0())?;
                }
            }
        }
        Ok(())
    }

    /// The helper starts again (power back on), settles as `start.rs` does (the power cut
    /// again at step `cut`, if given: then once more), and the checks hold.
    fn restart(&mut self, cut: Option<usize>) {
        {
            let mut p = self.power.borrow_mut();
            (p.off, p.cut_at, p.passed) = (false, cut, 0);
        }
        let settled = self.start_up();
        let crashed = self.power.borrow().off;
        match settled {
            Ok(standing) if !crashed => self.check(standing),
            Err(_) if crashed => self.restart(None),
            other => panic!("start-up settled to {other:?}"),
        }
    }

    fn start_up(&mut self) -> Result<ServiceStanding, ProtocolError<StoreError>> {
        let (store, host) = (&mut self.store, &mut self.host);
        store.reconcile()?;
        recovery::settle_at_start(store, host)?;
        service::settle(store, host)
    }

    fn keys_of(&mut self, role: Role, state: TokenState) -> Vec<SlotId> {
        let s = self.store.state().expect("read");
        s.keyward_tokens()
            .filter(|(_, t)| t.role == role && t.state == state)
            .filter_map(|(_, t)| t.keyslot)
            .collect()
    }

    fn opens(&mut self, slot: SlotId, key: &Option<Secret>) -> bool {
        key.as_ref()
            .is_some_and(|k| self.store.verify(slot, k).expect("verify"))
    }

    fn check(&mut self, standing: ServiceStanding) {
        let state = self.store.state().expect("read");
        assert_eq!(check_state(&state), vec![], "I1/I3 after start-up");
        // The service slot.
        match standing {
            ServiceStanding::Working(slot, secret) => {
                let stored = self.host.inner.current.as_ref().expect("a stored secret");
                assert!(stored.ct_eq(&secret), "settle answered another secret");
                assert!(self.host.inner.next.is_none(), "a next secret left over");
                assert_eq!(
                    self.keys_of(Role::Service, TokenState::Active),
                    vec![slot],
                    "one service slot"
                );
                assert_eq!(self.keys_of(Role::Service, TokenState::Pending), vec![]);
                assert!(self.store.verify(slot, &secret).expect("verify"));
                let priority = state.slot(slot).map(|s| s.priority);
                assert_eq!(priority, Some(SlotPriority::Ignore));
                self.had_service = true;
                self.drifted = false;
            }
            ServiceStanding::Missing => assert!(!self.had_service, "the service slot was lost"),
            ServiceStanding::Drift(slot) => {
                assert!(
                    self.drifted,
                    "the stored secret no longer opens slot {slot}"
                )
            }
        }
        // The recovery key in force.
        let active = self.keys_of(Role::Recovery, TokenState::Active);
        assert!(
            active.len() <= 1,
            "several recovery keys in force: {active:?}"
        );
        let (in_force, committing) = (dup(&self.in_force), dup(&self.committing));
        match active.first() {
            Some(&slot) if self.opens(slot, &in_force) => {}
            Some(&slot) if self.opens(slot, &committing) => {
                self.in_force = self.committing.take();
            }
            Some(&slot) => panic!("recovery slot {slot} is in force without a commit"),
            None => assert!(in_force.is_none(), "the recovery key in force was lost"),
        }
        // A pending slot is never a way in, and its key is sealed.
        let pending = self.keys_of(Role::Recovery, TokenState::Pending);
        assert!(pending.len() <= 1, "several pending recovery slots");
        let paths = committed_paths(&state);
        for slot in pending {
            assert!(
                !paths.contains(&slot),
                "pending slot {slot} counted as a way in"
            );
            let sealed = dup(&self.host.inner.pending);
            assert!(
                self.opens(slot, &sealed),
                "pending slot {slot} has no sealed key"
            );
        }
    }
}

/// The world after `ops`, each run to its end.
fn world_after(ops: &[Op]) -> World {
    let mut w = World::new();
    for op in ops {
        assert!(!w.run(*op, None));
        w.restart(None);
    }
    w
}

/// Where each operation is interesting from.
const PRELUDES: &[&[Op]] = &[
    &[],
    &[Op::Bootstrap],
    &[Op::Bootstrap, Op::Begin],
    &[Op::Bootstrap, Op::Begin, Op::Commit],
    &[Op::Bootstrap, Op::Begin, Op::Commit, Op::Begin],
    &[
        Op::Bootstrap,
        Op::Begin,
        Op::Commit,
        Op::RemoveInstaller,
        Op::Begin,
    ],
    &[Op::Bootstrap, Op::Begin, Op::Age],
    &[Op::Bootstrap, Op::LoseSecret],
    &[Op::Bootstrap, Op::Begin, Op::Commit, Op::LoseSecret],
];

/// Every operation from every prelude, the power cut at every step in turn until the
/// operation runs to its end, then the restart's checks.
#[test]
fn a_crash_at_every_step_settles_to_a_working_volume() {
    let mut cuts = 0;
    for prelude in PRELUDES {
        for op in OPS {
            for cut in 0.. {
                let mut w = world_after(prelude);
                let crashed = w.run(*op, Some(cut));
                w.restart(None);
                if !crashed {
                    break;
                }
                cuts += 1;
                assert!(cut < 200, "{op:?} never finishes");
            }
        }
    }
    assert!(cuts > 250, "only {cuts} crash points");
}

/// Every named step of the protocols is passed by a run without crashes (so each is a crash
/// point above).
#[test]
fn every_named_step_is_passed() {
    let w = world_after(&[
        Op::Bootstrap,
        Op::Rotate,
        Op::Begin,
        Op::Commit,
        Op::Begin,
        Op::Commit,
        Op::Begin,
        Op::Abort,
        Op::Begin,
        Op::Age,
        Op::Begin,
        Op::LoseSecret,
        Op::Repair,
    ]);
    let steps = [
        "bootstrap.next-written",
        "bootstrap.slot-added",
        "service-rotate.next-written",
        "service-rotate.slot-added",
        "service-rotate.renamed",
        "service-rotate.committed",
        "service-repair.next-written",
        "service-repair.slot-added",
        "service-settle.promoted",
        "service-settle.committed",
        "recovery-begin.sealed",
        "recovery-commit.committed",
        "recovery-commit.retired",
        "recovery-abort.revoked",
        "recovery-expire.revoked",
    ];
    let trace = &w.host.inner.trace;
    for s in steps {
        assert!(trace.iter().any(|t| t == s), "{s} never passed: {trace:?}");
    }
    assert_eq!(w.host.inner.expired.len(), 1, "one pending slot expired");
}

fn op() -> impl Strategy<Value = (Op, Option<usize>, Option<usize>)> {
    (
        proptest::sample::select(OPS),
        proptest::option::weighted(0.5, 0usize..40),
        proptest::option::weighted(0.2, 0usize..20),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Random sequences of the operations, each perhaps cut short, the restart perhaps cut
    /// short too: after every restart the checks hold.
    #[test]
    fn random_operations_and_crashes_keep_the_keys(ops in proptest::collection::vec(op(), 1..25)) {
        let mut w = World::new();
        for (op, cut, cut_again) in ops {
            w.run(op, cut);
            w.restart(cut_again);
        }
    }
}
