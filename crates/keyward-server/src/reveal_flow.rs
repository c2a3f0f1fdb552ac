//! The two-person reveal as a pure state machine: a request (device, volume, reason) is made by
//! someone who may request reveals; a different person who may decide approves or denies it;
//! an approval lets the requester reveal the key once, within the approval window. Denied,
//! expired and used requests reveal nothing. This file decides; it does no I/O and keeps no
//! clock (the caller passes `now`). `reveal_requests.rs` stores the outcome, conditionally, so
//! two instances can never both approve or both reveal.

use crate::roles::{Right, Role};

/// Where a request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum State {
    /// Waiting for an approver.
    Pending,
    /// Approved: the requester may reveal the key once, until it expires.
    Approved,
    /// Denied: reveals nothing, ever.
    Denied,
    /// The key was revealed: reveals nothing more.
    Revealed,
    /// Nobody decided, or nobody revealed, in time.
    Expired,
}

impl State {
    /// The word stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Approved => "approved",
            State::Denied => "denied",
            State::Revealed => "revealed",
            State::Expired => "expired",
        }
    }

    /// The state a stored word names.
    pub fn parse(s: &str) -> Option<State> {
        [
            State::Pending,
            State::Approved,
            State::Denied,
            State::Revealed,
            State::Expired,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }
}

/// A reveal request as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `req-` and 96 random bits in hex.
    pub id: String,
    /// The device.
    pub device: String,
    /// The volume.
    pub volume: String,
    /// Why the key is needed.
    pub reason: String,
    /// Who asked (as the audit names them: `web:NAME`, `api:NAME`).
    pub requester: String,
    /// When (Unix seconds).
    pub created: i64,
    /// Where it stands.
    pub state: State,
    /// Who approved or denied it.
    pub decided_by: Option<String>,
    /// When it was approved or denied.
    pub decided: Option<i64>,
    /// When it lapses (pending: undecided; approved: unrevealed).
    pub expires: i64,
    /// When the key was revealed.
    pub revealed: Option<i64>,
}

impl Request {
    /// Whether a pending or approved request is past its time.
    pub fn lapsed(&self, now: i64) -> bool {
        matches!(self.state, State::Pending | State::Approved) && now >= self.expires
    }
}

/// Why a step was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The role does not carry the right this step needs.
    #[error("your role ({0}) may not do this")]
    RoleLacks(Role),
    /// Approving or denying one's own request.
    #[error("a request must be approved or denied by someone other than the requester")]
    OwnRequest,
    /// Revealing someone else's request.
    #[error("only the person who requested this key may reveal it")]
    NotRequester,
    /// Deciding a request that is no longer pending.
    #[error("this request is {} and can no longer be decided", .0.as_str())]
    NotPending(State),
    /// Revealing a request that was never approved.
    #[error("this request has not been approved")]
    NotApproved,
    /// Revealing a denied request.
    #[error("this request was denied")]
    Denied,
    /// Revealing a request whose key was revealed already.
    #[error("this request's key was revealed already; make a new request")]
    Used,
    /// Past its time.
    #[error("this request has expired; make a new request")]
    Expired,
}

/// The person behind an actor as the audit names them: a web UI account `web:NAME` and an API
/// token `api:NAME` of one name are one person (`keyward-server admin add` and `api-token add`
/// take names of one form), so neither can be the other's second person; nor can the same
/// name signed in by single sign-on (`web:sso:NAME`): the provider's "hannah" is taken to be
/// the account "hannah" (the safe reading for a two-person rule: at worst a third person is
/// asked, never one person let through twice).
fn person(actor: &str) -> &str {
    let name = actor
        .strip_prefix("web:")
        .or_else(|| actor.strip_prefix("api:"))
        .unwrap_or(actor);
    name.strip_prefix("sso:").unwrap_or(name)
}

/// Whether `actor` (with `role`) may approve or deny `req` at `now`.
pub fn may_decide(req: &Request, actor: &str, role: Role, now: i64) -> Result<(), Refusal> {
    if !role.may(Right::Decide) {
        return Err(Refusal::RoleLacks(role));
    }
    if person(actor) == person(&req.requester) {
        return Err(Refusal::OwnRequest);
    }
    if req.lapsed(now) {
        return Err(Refusal::Expired);
    }
    match req.state {
        State::Pending => Ok(()),
        other => Err(Refusal::NotPending(other)),
    }
}

/// Whether `actor` (with `role`) may reveal the key of `req` at `now`.
pub fn may_reveal(req: &Request, actor: &str, role: Role, now: i64) -> Result<(), Refusal> {
    if !role.may(Right::RequestReveal) {
        return Err(Refusal::RoleLacks(role));
    }
    if actor != req.requester {
        return Err(Refusal::NotRequester);
    }
    if req.lapsed(now) {
        return Err(Refusal::Expired);
    }
    match req.state {
        State::Approved => Ok(()),
        State::Pending => Err(Refusal::NotApproved),
        State::Denied => Err(Refusal::Denied),
        State::Revealed => Err(Refusal::Used),
        State::Expired => Err(Refusal::Expired),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(state: State) -> Request {
        Request {
            id: "req-1".into(),
            device: "dev-1".into(),
            volume: "data".into(),
            reason: "ticket 1".into(),
            requester: "web:hannah".into(),
            created: 1000,
            state,
            decided_by: None,
            decided: None,
            expires: 2000,
            revealed: None,
        }
    }

    #[test]
    fn someone_else_who_may_decide_decides_a_pending_request_in_time() {
        let r = request(State::Pending);
        assert_eq!(may_decide(&r, "web:alice", Role::Approver, 1500), Ok(()));
        assert_eq!(may_decide(&r, "web:alice", Role::Admin, 1500), Ok(()));
        assert_eq!(
            may_decide(&r, "web:alice", Role::Helpdesk, 1500),
            Err(Refusal::RoleLacks(Role::Helpdesk))
        );
        assert_eq!(
            may_decide(&r, "web:alice", Role::Viewer, 1500),
            Err(Refusal::RoleLacks(Role::Viewer))
        );
        // Never one's own, not even an admin's.
        assert_eq!(
            may_decide(&r, "web:hannah", Role::Admin, 1500),
            Err(Refusal::OwnRequest)
        );
        // Nor with a token of the same name, nor the other way round, nor signed in by SSO.
        assert_eq!(
            may_decide(&r, "api:hannah", Role::Approver, 1500),
            Err(Refusal::OwnRequest)
        );
        let by_token = Request {
            requester: "api:hannah".into(),
            ..r.clone()
        };
        assert_eq!(
            may_decide(&by_token, "web:hannah", Role::Approver, 1500),
            Err(Refusal::OwnRequest)
        );
        assert_eq!(
            may_decide(&r, "web:sso:hannah", Role::Approver, 1500),
            Err(Refusal::OwnRequest)
        );
        assert_eq!(
            may_decide(&r, "web:sso:alice", Role::Approver, 1500),
            Ok(())
        );
        assert_eq!(
            may_decide(&r, "web:alice", Role::Approver, 2000),
            Err(Refusal::Expired)
        );
        for done in [
            State::Approved,
            State::Denied,
            State::Revealed,
            State::Expired,
        ] {
            assert_eq!(
                may_decide(&request(done), "web:alice", Role::Approver, 1500),
                Err(Refusal::NotPending(done))
            );
        }
    }

    #[test]
    fn only_the_requester_reveals_only_an_approved_request_only_once_and_in_time() {
        let r = request(State::Approved);
        assert_eq!(may_reveal(&r, "web:hannah", Role::Helpdesk, 1999), Ok(()));
        assert_eq!(
            may_reveal(&r, "web:alice", Role::Admin, 1500),
            Err(Refusal::NotRequester)
        );
        assert_eq!(
            may_reveal(&r, "web:hannah", Role::Helpdesk, 2000),
            Err(Refusal::Expired)
        );
        // Demoted after asking: no key.
        assert_eq!(
            may_reveal(&r, "web:hannah", Role::Viewer, 1500),
            Err(Refusal::RoleLacks(Role::Viewer))
        );
        let refused = |s| may_reveal(&request(s), "web:hannah", Role::Helpdesk, 1500);
        assert_eq!(refused(State::Pending), Err(Refusal::NotApproved));
        assert_eq!(refused(State::Denied), Err(Refusal::Denied));
        assert_eq!(refused(State::Revealed), Err(Refusal::Used));
        assert_eq!(refused(State::Expired), Err(Refusal::Expired));
    }

    #[test]
    fn states_round_trip_through_their_words() {
        for s in [
            State::Pending,
            State::Approved,
            State::Denied,
            State::Revealed,
            State::Expired,
        ] {
            assert_eq!(State::parse(s.as_str()), Some(s));
        }
        assert_eq!(State::parse("APPROVED"), None);
    }
}
