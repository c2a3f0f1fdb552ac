//! A team at the escrow server (issue 20): a server on a backend with one device that escrowed
//! [`SECRET`], an API token per role, and the reveal requests' JSON API steps.

use serde_json::{json, Value};

use super::escrow::{Backend, Server};
use super::http::{admin_api, device_with_escrow};
use super::Instance;

/// The recovery key the team's device escrowed.
pub const SECRET: &str = "ABCDE-12345-FGHIJ-67890";
/// The reason every request gives.
pub const REASON: &str = "ticket 4711: locked out after a firmware update";

/// A server on `backend` with a device that escrowed [`SECRET`], and one API token per role.
pub struct Team {
    pub _inst: Instance,
    pub srv: Server,
    pub device: String,
    pub viewer: String,
    pub helpdesk: String,
    pub approver: String,
    pub admin: String,
}

pub fn team(backend: &Backend) -> Team {
    let inst = Instance::prepare();
    let srv = Server::start_on(&inst, backend);
    let (device, _) = device_with_escrow(&srv, SECRET);
    Team {
        viewer: srv.api_token("dashboard", "viewer"),
        helpdesk: srv.api_token("helpdesk-bot", "helpdesk"),
        approver: srv.api_token("approver-bot", "approver"),
        admin: srv.api_token("ops", "admin"),
        _inst: inst,
        srv,
        device,
    }
}

impl Team {
    pub fn call(&self, token: &str, method: &str, path: &str, body: Value) -> (u16, Value) {
        admin_api(&self.srv.addr, Some(token), method, path, &body)
    }

    pub fn request(&self, token: &str) -> (u16, Value) {
        let body = json!({ "device": self.device, "volume": "data", "reason": REASON });
        self.call(token, "POST", "/v1/admin/reveal-requests", body)
    }

    pub fn step(&self, token: &str, id: &str, step: &str) -> (u16, Value) {
        let path = format!("/v1/admin/reveal-requests/{id}/{step}");
        self.call(token, "POST", &path, Value::Null)
    }
}
