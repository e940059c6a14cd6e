//! Which users a search is about, as one SQL condition: a SCIM filter (compiled by
//! `user_filter`), where they come from, and a search box's text, which is answered from index
//! ranges alone.

use super::sql::{Bind, Condition};
use super::user_filter::{compile, prefix_end, search_paths};
use crate::scim::error::ScimError;
use crate::scim::filter::Filter;
use crate::scim::schema;
use crate::scim::user_name::UserName;

/// The condition of users matching `filter` (of the User resource), coming from `source`, and
/// whose name or address starts with `text` (see [`starting_with`]); `None` matches every user.
pub fn matching(
    filter: Option<&Filter>,
    source: Option<crate::store::users::Source>,
    text: Option<&str>,
) -> Result<Option<Condition>, ScimError> {
    let conditions = [
        filter.map(|f| compile(&schema::USER_RESOURCE, f)).transpose()?,
        source.map(|s| Condition::new().sql("users.source = ").bind(Bind::Text(s.as_str().to_string()))),
        text.map(starting_with),
    ];
    Ok(conditions.into_iter().flatten().reduce(|all, c| Condition::new().sql("(").push(all).sql(") AND (").push(c).sql(")")))
}

/// What a search box looks at: the start of each, ignoring case.
const SEARCHED: [&str; 4] = ["displayName", "name.givenName", "name.familyName", "emails.value"];

/// The users whose userName, or one of [`SEARCHED`], starts with `text` ignoring case: one set of
/// ids from index range scans, which a page and its count share (an `or` of the same
/// comparisons would make the count read every user).
fn starting_with(text: &str) -> Condition {
    let key = UserName::fold(text);
    let value = text.to_lowercase();
    let paths = search_paths(&SEARCHED);
    let mut c = Condition::new()
        .sql("users.id IN (SELECT u.id FROM users u WHERE u.user_name_key >= ")
        .bind(Bind::Text(key.clone()))
        .sql(" AND u.user_name_key < ")
        .bind(Bind::Text(prefix_end(&key)))
        .sql(" UNION SELECT v.user_id FROM user_values v WHERE v.path IN (");
    for (i, path) in paths.into_iter().enumerate() {
        c = if i == 0 { c } else { c.sql(", ") }.bind(Bind::Text(path));
    }
    c.sql(") AND v.value >= ")
        .bind(Bind::Text(value.clone()))
        .sql(" AND v.value < ")
        .bind(Bind::Text(prefix_end(&value)))
        .sql(")")
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_search_box_text_is_one_set_of_ids_from_index_ranges() {
        let c = super::matching(None, None, Some("Ada")).unwrap().unwrap();
        assert_eq!(
            c.text(),
            "users.id IN (SELECT u.id FROM users u WHERE u.user_name_key >= ? AND u.user_name_key < ? \
             UNION SELECT v.user_id FROM user_values v WHERE v.path IN (?, ?, ?, ?) AND v.value >= ? AND v.value < ?)"
        );
    }
}
