//! The audit trail as the console shows it.

use serde_json::Value;

/// One event, as a row of a table.
pub struct EventRow {
    pub time: String,
    pub event_type: String,
    pub user_id: String,
    pub user_name: String,
    pub origin: String,
    pub actor: String,
    pub reason: String,
}

impl EventRow {
    /// From the JSON the audit service renders (the API's shape).
    pub fn of(e: &Value) -> Self {
        let text = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
        EventRow {
            time: text("time").replacen('T', " ", 1),
            event_type: text("type"),
            user_id: text("userId"),
            user_name: text("userName"),
            origin: text("origin"),
            actor: text("actor"),
            reason: text("reason"),
        }
    }
}
