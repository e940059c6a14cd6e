//! Counts for the metrics gauges, each answered from an index alone (migration
//! `metric_indexes`): a scrape reads index entries, never the rows.

use diesel::prelude::*;

use super::schema::{audit_events, users};
use super::{DbConn, Result};

/// `(source, active, users)`.
pub(crate) fn users_by_source(conn: &mut DbConn) -> Result<Vec<(String, bool, i64)>> {
    Ok(users::table
        .group_by((users::source, users::active))
        .select((users::source, users::active, diesel::dsl::count_star()))
        .load(conn)?)
}

/// `(event type, origin, events)` of the given event types.
pub(crate) fn events_by_origin(conn: &mut DbConn, types: &[&str]) -> Result<Vec<(String, String, i64)>> {
    Ok(audit_events::table
        .filter(audit_events::event_type.eq_any(types))
        .group_by((audit_events::event_type, audit_events::origin))
        .select((audit_events::event_type, audit_events::origin, diesel::dsl::count_star()))
        .load(conn)?)
}
