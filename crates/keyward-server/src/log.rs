//! Structured logs: one JSON object per line on stderr (journald and log shippers take them
//! as they are), with a timestamp, a level and a message, plus fields. Never a secret: callers
//! pass ids, routes, statuses and counts only.

use serde_json::{Map, Value};

/// Log `msg` at `level` with `fields`.
pub fn event(level: &str, msg: &str, fields: &[(&str, Value)]) {
    let mut line = Map::new();
    line.insert("ts".into(), crate::clock::now().into());
    line.insert("level".into(), level.into());
    line.insert("msg".into(), msg.into());
    for (k, v) in fields {
        line.insert((*k).into(), v.clone());
    }
    eprintln!("{}", Value::Object(line));
}

/// An informational event.
pub fn info(msg: &str, fields: &[(&str, Value)]) {
    event("info", msg, fields);
}

/// An error the operator should see.
pub fn error(msg: &str, fields: &[(&str, Value)]) {
    event("error", msg, fields);
}
