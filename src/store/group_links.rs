//! What the LDAP group sync keeps: the link of each mirrored group to its entry (stable key and
//! DN), and the DNs through which member DNs resolve (users' from `directory_links`, groups'
//! from here).

use diesel::prelude::*;
use diesel::result::Error as DieselError;

use super::schema::{directory_links, group_links};
use super::{DbConn, Result, Tx};

#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = group_links)]
pub struct GroupLink {
    pub group_id: String,
    pub entry_key: String,
    pub dn: String,
}

/// The links of these entry keys.
pub fn links_by_key(conn: &mut DbConn, keys: &[&str]) -> Result<Vec<GroupLink>> {
    let mut out = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(500) {
        out.extend(group_links::table.filter(group_links::entry_key.eq_any(chunk)).select(GroupLink::as_select()).load(conn)?);
    }
    Ok(out)
}

pub fn link_of_group(conn: &mut DbConn, group_id: &str) -> Result<Option<GroupLink>> {
    Ok(group_links::table.find(group_id).select(GroupLink::as_select()).first(conn).optional()?)
}

/// Inserts or replaces the link of `link.group_id`.
pub fn save_link(tx: &mut Tx, link: &GroupLink) -> Result<(), DieselError> {
    let conn = tx.conn();
    diesel::delete(group_links::table.find(&link.group_id)).execute(conn)?;
    diesel::insert_into(group_links::table).values(link).execute(conn)?;
    Ok(())
}

/// Every group link after `after` in key order (keyset paging).
pub fn links_after(conn: &mut DbConn, after: &str, limit: i64) -> Result<Vec<GroupLink>> {
    Ok(group_links::table
        .filter(group_links::entry_key.gt(after))
        .order(group_links::entry_key.asc())
        .limit(limit)
        .select(GroupLink::as_select())
        .load(conn)?)
}

/// The DNs of the users whose entries are present, after user id `after` in id order (keyset
/// paging), as `(user_id, dn)`.
pub fn user_dns_after(conn: &mut DbConn, after: &str, limit: i64) -> Result<Vec<(String, String)>> {
    Ok(directory_links::table
        .filter(directory_links::user_id.gt(after))
        .filter(directory_links::missing_since.is_null())
        .order(directory_links::user_id.asc())
        .limit(limit)
        .select((directory_links::user_id, directory_links::dn))
        .load(conn)?)
}
