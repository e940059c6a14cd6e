//! PATCH (being written).
use super::error::ScimError;
pub const MAX_OPERATIONS: usize = 1000;
pub fn apply(_body: &mut serde_json::Map<String, serde_json::Value>, _request: &serde_json::Value) -> Result<(), ScimError> {
    Err(ScimError::invalid_syntax("PATCH not implemented yet"))
}
