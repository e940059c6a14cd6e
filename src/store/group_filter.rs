//! SCIM filters on Groups, and a User's `groups` in a filter on users, compiled to SQL on `groups` and the membership tables: `id`,
//! `displayName` (ignoring case), `externalId`, `meta.created`, `meta.lastModified`, and
//! membership as identity providers ask it: `members[value eq "id"]`, `members eq "id"`,
//! `members.value eq "id"` (Entra's check is `id eq "G" and members eq "U"`).

use crate::scim::error::ScimError;
use crate::scim::filter::{AttrPath, CompValue, CompareOp, Filter};
use crate::scim::schema::GROUP;

use super::sql::{Bind, Condition};

/// Compiles a filter on groups.
pub fn compile(filter: &Filter) -> Result<Condition, ScimError> {
    Ok(match filter {
        Filter::And(a, b) => binary(a, " AND ", b)?,
        Filter::Or(a, b) => binary(a, " OR ", b)?,
        Filter::Not(inner) => Condition::new().sql("NOT (").push(compile(inner)?).sql(")"),
        Filter::Present(path) => present(path)?,
        Filter::Compare(path, op, value) => compare(path, *op, value)?,
        Filter::ValuePath(attr, inner) => {
            if !is(attr, "members", None) {
                return Err(unknown(attr));
            }
            member_filter(inner)?
        }
    })
}

fn binary(a: &Filter, op: &str, b: &Filter) -> Result<Condition, ScimError> {
    Ok(Condition::new().sql("(").push(compile(a)?).sql(op).push(compile(b)?).sql(")"))
}

/// `name` (and `sub`) in the core Group schema, written plainly or with its URN.
fn is(path: &AttrPath, name: &str, sub: Option<&str>) -> bool {
    path.urn.as_deref().is_none_or(|u| u.eq_ignore_ascii_case(GROUP))
        && path.name.eq_ignore_ascii_case(name)
        && match (path.sub.as_deref(), sub) {
            (None, None) => true,
            (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
            _ => false,
        }
}

fn unknown(path: &AttrPath) -> ScimError {
    ScimError::invalid_filter(format!(
        "groups can be filtered by id, displayName, externalId, meta.created, meta.lastModified and members \
         (members[value eq \"id\"]), not by {path}"
    ))
}

/// The groups that have `id` as a direct member (a user or a group).
fn has_member(id: &str) -> Condition {
    Condition::new()
        .sql("groups.id IN (SELECT group_users.group_id FROM group_users WHERE group_users.user_id = ")
        .bind(Bind::Text(id.to_string()))
        .sql(" UNION SELECT group_groups.group_id FROM group_groups WHERE group_groups.member_id = ")
        .bind(Bind::Text(id.to_string()))
        .sql(")")
}

/// Inside `members[…]`: `value eq "id"`, combined with `or` and `and`.
fn member_filter(inner: &Filter) -> Result<Condition, ScimError> {
    match inner {
        Filter::Or(a, b) => Ok(Condition::new().sql("(").push(member_filter(a)?).sql(" OR ").push(member_filter(b)?).sql(")")),
        Filter::And(a, b) => Ok(Condition::new().sql("(").push(member_filter(a)?).sql(" AND ").push(member_filter(b)?).sql(")")),
        Filter::Compare(p, CompareOp::Eq, CompValue::Str(id))
            if p.urn.is_none() && p.sub.is_none() && p.name.eq_ignore_ascii_case("value") =>
        {
            Ok(has_member(id))
        }
        _ => Err(ScimError::invalid_filter("a members filter can only compare value with eq: members[value eq \"id\"]")),
    }
}

fn present(path: &AttrPath) -> Result<Condition, ScimError> {
    let always = ["id", "displayName"].iter().any(|n| is(path, n, None))
        || is(path, "meta", Some("created"))
        || is(path, "meta", Some("lastModified"));
    Ok(if always {
        Condition::new().sql("1 = 1")
    } else if is(path, "externalId", None) {
        Condition::new().sql("groups.external_id IS NOT NULL")
    } else if is(path, "members", None) || is(path, "members", Some("value")) {
        Condition::new().sql(
            "(EXISTS (SELECT 1 FROM group_users WHERE group_users.group_id = groups.id) \
             OR EXISTS (SELECT 1 FROM group_groups WHERE group_groups.group_id = groups.id))",
        )
    } else {
        return Err(unknown(path));
    })
}

fn compare(path: &AttrPath, op: CompareOp, value: &CompValue) -> Result<Condition, ScimError> {
    if is(path, "members", None) || is(path, "members", Some("value")) {
        return match (op, value) {
            (CompareOp::Eq, CompValue::Str(id)) => Ok(has_member(id)),
            _ => Err(ScimError::invalid_filter("members can only be compared with eq and a member id")),
        };
    }
    if is(path, "meta", Some("created")) || is(path, "meta", Some("lastModified")) {
        let column = if is(path, "meta", Some("created")) { "groups.created_at" } else { "groups.updated_at" };
        let CompValue::Str(text) = value else {
            return Err(ScimError::invalid_filter(format!("{path} compares with a date-time string")));
        };
        let at = chrono::DateTime::parse_from_rfc3339(text)
            .map_err(|_| ScimError::invalid_filter(format!("{text:?} is not an RFC 3339 date-time")))?
            .naive_utc();
        let sql_op = match op {
            CompareOp::Eq => "=",
            CompareOp::Ne => "<>",
            CompareOp::Gt => ">",
            CompareOp::Ge => ">=",
            CompareOp::Lt => "<",
            CompareOp::Le => "<=",
            _ => return Err(ScimError::invalid_filter(format!("{path} cannot be compared with {op:?}"))),
        };
        return Ok(Condition::new().sql(&format!("{column} {sql_op} ")).bind(Bind::Timestamp(at)));
    }
    let (column, folded) = if is(path, "id", None) {
        ("groups.id", false)
    } else if is(path, "displayName", None) {
        ("groups.display_name_key", true)
    } else if is(path, "externalId", None) {
        ("groups.external_id", false)
    } else {
        return Err(unknown(path));
    };
    let CompValue::Str(text) = value else {
        return Err(ScimError::invalid_filter(format!("{path} compares with a string")));
    };
    let text = if folded { super::groups::display_name_key(text) } else { text.clone() };
    let like = |pattern: String| Condition::new().sql(&format!("{column} LIKE ")).bind(Bind::Text(pattern)).sql(" ESCAPE '\\'");
    let escaped = text.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
    Ok(match op {
        CompareOp::Eq => Condition::new().sql(&format!("{column} = ")).bind(Bind::Text(text)),
        CompareOp::Ne => Condition::new().sql(&format!("({column} IS NULL OR {column} <> ")).bind(Bind::Text(text)).sql(")"),
        CompareOp::Sw => Condition::new()
            .sql(&format!("({column} >= "))
            .bind(Bind::Text(text.clone()))
            .sql(&format!(" AND {column} < "))
            .bind(Bind::Text(super::user_filter::prefix_end(&text)))
            .sql(")"),
        CompareOp::Co => like(format!("%{escaped}%")),
        CompareOp::Ew => like(format!("%{escaped}")),
        CompareOp::Gt | CompareOp::Ge | CompareOp::Lt | CompareOp::Le => {
            let sql_op = match op {
                CompareOp::Gt => ">",
                CompareOp::Ge => ">=",
                CompareOp::Lt => "<",
                _ => "<=",
            };
            Condition::new().sql(&format!("{column} {sql_op} ")).bind(Bind::Text(text))
        }
    })
}

/// A User's `groups` (readOnly, computed from the membership tables): `groups[value eq "g"]`,
/// `groups.value eq "g"` and `groups eq "g"` find the users in group `g`, directly or through
/// nested groups, `groups.display eq "Finance"` those of the group of that name (ignoring
/// case); `groups pr` those in any group. `None` for filters on other attributes.
pub(super) fn user_membership(f: &Filter) -> Result<Option<Condition>, ScimError> {
    let is_groups = |p: &AttrPath| {
        p.urn.as_deref().is_none_or(|u| u.eq_ignore_ascii_case(crate::scim::schema::USER))
            && p.name.eq_ignore_ascii_case("groups")
    };
    let refuse = || {
        ScimError::invalid_filter(
            "groups can be filtered with eq on value or display: groups[value eq \"id\"], groups.display eq \"name\"",
        )
    };
    Ok(Some(match f {
        Filter::Compare(p, op, value) if is_groups(p) => match (p.sub.as_deref(), op, value) {
            (None, CompareOp::Eq, CompValue::Str(id)) => super::groups::members_condition(std::slice::from_ref(id)),
            (Some(sub), CompareOp::Eq, CompValue::Str(id)) if sub.eq_ignore_ascii_case("value") => {
                super::groups::members_condition(std::slice::from_ref(id))
            }
            (Some(sub), CompareOp::Eq, CompValue::Str(name)) if sub.eq_ignore_ascii_case("display") => {
                super::groups::members_condition_named(name)
            }
            _ => return Err(refuse()),
        },
        Filter::Present(p) if is_groups(p) => {
            Condition::new().sql("EXISTS (SELECT 1 FROM group_users WHERE group_users.user_id = users.id)")
        }
        Filter::ValuePath(p, inner) if is_groups(p) => {
            let mut ids = Vec::new();
            collect_values(inner, &mut ids).then_some(()).ok_or_else(refuse)?;
            super::groups::members_condition(&ids)
        }
        _ => return Ok(None),
    }))
}

/// The ids of `value eq "id"` comparisons joined by `or`; false for anything else.
fn collect_values(f: &Filter, ids: &mut Vec<String>) -> bool {
    match f {
        Filter::Or(a, b) => collect_values(a, ids) && collect_values(b, ids),
        Filter::Compare(p, CompareOp::Eq, CompValue::Str(id)) if p.sub.is_none() && p.name.eq_ignore_ascii_case("value") => {
            ids.push(id.clone());
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scim::filter::parse_filter;

    fn sql(filter: &str) -> Result<String, String> {
        compile(&parse_filter(filter).unwrap()).map(|c| c.text()).map_err(|e| e.detail)
    }

    #[test]
    fn membership_checks_as_identity_providers_write_them() {
        for f in ["members[value eq \"u1\"]", "members eq \"u1\"", "members.value eq \"u1\""] {
            assert!(sql(f).unwrap().contains("group_users.user_id = ?"), "{f}");
        }
        let entra = sql("id eq \"g1\" and members eq \"u1\"").unwrap();
        assert!(entra.starts_with("(groups.id = ? AND groups.id IN ("), "{entra}");
        assert!(sql("members[value eq \"a\" or value eq \"b\"]").unwrap().contains(" OR "));
    }

    #[test]
    fn names_ignore_case_and_unknown_attributes_are_refused() {
        assert_eq!(sql("displayName eq \"Finance\"").unwrap(), "groups.display_name_key = ?");
        assert!(sql("externalId eq \"x\"").is_ok());
        assert!(sql("meta.created gt \"2026-01-01T00:00:00Z\"").is_ok());
        for bad in ["title eq \"x\"", "members[display eq \"x\"]", "members gt \"x\"", "emails[value eq \"x\"]"] {
            assert!(sql(bad).is_err(), "{bad}");
        }
    }
}
