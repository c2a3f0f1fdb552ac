//! The escrow server attacked by one of its own people: someone who holds both a web UI
//! account and an API token, trying to be their own second person.
#![allow(clippy::unwrap_used)]

mod common;

use common::escrow::*;
use common::http::admin_api;
use common::team::{team, REASON, SECRET};
use common::ui_client::*;

/// The two-person rule compared how the audit names the requester (`api:NAME`, `web:NAME`) with
/// how it names the approver, so one person with a web UI account and an API token of the same
/// name — both hers — was two people: she asked for a key with her help-desk token and approved
/// it in the web UI as an approver, then revealed it alone. Now an account and a token of one
/// name are one person: her approval is refused as her own (403, nothing changed), and nothing
/// is revealed until someone else approves.
#[test]
fn one_name_with_an_account_and_a_token_is_one_person() {
    for backend in backends() {
        let t = team(&backend);
        let srv = &t.srv;
        let token = srv.api_token("alice", "helpdesk");
        let password = "alice's long passphrase";
        srv.add_account("alice", password, "approver");
        let mut alice = Browser::new(srv);
        assert_eq!(alice.login("alice", password).status, 303);

        let body = serde_json::json!({ "device": t.device, "volume": "data", "reason": REASON });
        let (status, req) = admin_api(
            &srv.addr,
            Some(&token),
            "POST",
            "/v1/admin/reveal-requests",
            &body,
        );
        assert_eq!(status, 200, "{req}");
        let id = req["id"].as_str().unwrap().to_owned();

        let queue = alice.get("/ui/requests");
        let csrf = queue.csrf();
        let r = alice.post(&format!("/ui/requests/{id}/approve"), &[("csrf", &csrf)]);
        assert_eq!(
            r.status, 403,
            "{backend:?}: alice approved her own request: {}",
            r.body
        );
        let state = srv.query(&format!(
            "SELECT state FROM reveal_requests WHERE id = '{id}'"
        ));
        assert_eq!(state.trim(), "pending", "{backend:?}");
        let reveal = format!("/v1/admin/reveal-requests/{id}/reveal");
        let (status, answer) = admin_api(
            &srv.addr,
            Some(&token),
            "POST",
            &reveal,
            &serde_json::Value::Null,
        );
        assert_eq!(status, 409, "{backend:?}: {answer}");
        assert!(!answer.to_string().contains(SECRET));

        // Someone else's approval still works, and she reveals once.
        let approve = format!("/v1/admin/reveal-requests/{id}/approve");
        let (status, answer) = admin_api(
            &srv.addr,
            Some(&t.approver),
            "POST",
            &approve,
            &serde_json::Value::Null,
        );
        assert_eq!(status, 200, "{answer}");
        let (status, answer) = admin_api(
            &srv.addr,
            Some(&token),
            "POST",
            &reveal,
            &serde_json::Value::Null,
        );
        assert_eq!(status, 200, "{answer}");
        assert!(answer.to_string().contains(SECRET), "{answer}");
    }
}
