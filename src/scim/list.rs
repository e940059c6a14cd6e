//! List and search requests (RFC 7644 §3.4.2, §3.4.3) and the ListResponse.

use serde::Serialize;
use serde_json::Value;

use super::error::{ScimError, ScimType};
use super::filter::{self, AttrPath, Filter};
use super::resource::Projection;
use super::schema;

/// The raw parameters of a list request, from the query string or a `.search` body.
#[derive(Debug, Default, Clone)]
pub struct ListParams {
    pub filter: Option<String>,
    pub start_index: Option<String>,
    pub count: Option<String>,
    pub sort_by: Option<String>,
    pub sort_order: Option<String>,
    pub attributes: Option<String>,
    pub excluded_attributes: Option<String>,
    /// RFC 9865: present (even empty) asks for cursor paging.
    pub cursor: Option<String>,
}

impl ListParams {
    /// From query-string pairs; parameter names are matched ignoring case.
    pub(crate) fn from_query(pairs: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut p = ListParams::default();
        for (k, v) in pairs {
            if let Some(slot) = p.slot(&k) {
                *slot = Some(v);
            }
        }
        p
    }

    /// The field of parameter `name` (ignoring case); unknown parameters are ignored.
    fn slot(&mut self, name: &str) -> Option<&mut Option<String>> {
        Some(match name.to_ascii_lowercase().as_str() {
            "filter" => &mut self.filter,
            "startindex" => &mut self.start_index,
            "count" => &mut self.count,
            "sortby" => &mut self.sort_by,
            "sortorder" => &mut self.sort_order,
            "attributes" => &mut self.attributes,
            "excludedattributes" => &mut self.excluded_attributes,
            "cursor" => &mut self.cursor,
            _ => return None,
        })
    }

    /// From a SearchRequest body (RFC 7644 §3.4.3).
    pub(crate) fn from_search_body(body: &Value) -> Result<Self, ScimError> {
        let Some(obj) = body.as_object() else {
            return Err(ScimError::invalid_syntax("a SearchRequest must be a JSON object"));
        };
        let mut p = ListParams::default();
        for (k, v) in obj {
            let text = |v: &Value| -> Result<Option<String>, ScimError> {
                Ok(match v {
                    Value::Null => None,
                    Value::String(s) => Some(s.clone()),
                    Value::Number(n) => Some(n.to_string()),
                    Value::Array(items) => Some(
                        items
                            .iter()
                            .map(|i| i.as_str().map(str::to_string))
                            .collect::<Option<Vec<_>>>()
                            .ok_or_else(|| ScimError::invalid_syntax(format!("{k} must be a list of strings")))?
                            .join(","),
                    ),
                    _ => return Err(ScimError::invalid_syntax(format!("{k} has the wrong type"))),
                })
            };
            if let Some(slot) = p.slot(k) {
                *slot = text(v)?;
            }
        }
        Ok(p)
    }
}

/// A validated list request.
#[derive(Debug, Clone)]
pub struct ListQuery {
    pub filter: Option<Filter>,
    /// 1-based.
    pub start_index: i64,
    pub count: i64,
    pub sort_by: Option<AttrPath>,
    pub descending: bool,
    pub projection: Projection,
    /// RFC 9865 cursor paging: `Some("")` asks for the first page, `Some(c)` for the page a
    /// `nextCursor` or `previousCursor` names; `None` pages by `startIndex`.
    pub cursor: Option<String>,
    /// What the list is of (filter, sortBy, sortOrder), as a short digest: a cursor or a walk
    /// position belongs to one query.
    pub fingerprint: String,
}

impl ListQuery {
    /// Validates parameters: `startIndex` below 1 counts as 1, `count` is clamped to
    /// `0..=max_count` (RFC 7644 §3.4.2.4); with a `cursor` (RFC 9865), a `count` above
    /// `max_count` is `invalidCount` and a `startIndex` beside it `invalidValue`.
    pub fn parse(p: &ListParams, default_count: i64, max_count: i64) -> Result<Self, ScimError> {
        let int = |name: &str, v: &Option<String>| -> Result<Option<i64>, ScimError> {
            v.as_deref()
                .map(|s| integer(s).ok_or_else(|| ScimError::invalid_value(format!("{name} must be an integer, got {s:?}"))))
                .transpose()
        };
        let filter = match p.filter.as_deref().map(str::trim) {
            None => None,
            Some("") => return Err(ScimError::invalid_filter("filter is empty: leave it out to list every user")),
            Some(f) => Some(filter::parse_filter(f).map_err(|e| ScimError::invalid_filter(e.message))?),
        };
        let sort_by = match p.sort_by.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(s) => {
                let path = filter::parse_path(s).map_err(|e| ScimError::invalid_value(format!("sortBy: {}", e.message)))?;
                if path.filter.is_some() {
                    return Err(ScimError::invalid_value("sortBy cannot hold a value filter"));
                }
                Some(path.attr)
            }
        };
        let descending = match p.sort_order.as_deref().map(str::to_ascii_lowercase).as_deref() {
            None | Some("") | Some("ascending") => false,
            Some("descending") => true,
            Some(other) => {
                return Err(ScimError::invalid_value(format!("sortOrder must be ascending or descending, got {other:?}")))
            }
        };
        let count = int("count", &p.count)?.unwrap_or(default_count);
        if p.cursor.is_some() {
            if p.start_index.is_some() {
                return Err(ScimError::invalid_value(
                    "startIndex and cursor ask for two ways of paging (RFC 9865 §2.5): send one of them",
                ));
            }
            if count > max_count {
                return Err(ScimError::bad_request(
                    ScimType::InvalidCount,
                    format!("count must be between 0 and {max_count} (maxPageSize) when paging by cursor"),
                ));
            }
        }
        let fingerprint = fingerprint(p.filter.as_deref(), sort_by.as_ref(), descending);
        Ok(ListQuery {
            filter,
            start_index: int("startIndex", &p.start_index)?.unwrap_or(1).max(1),
            count: count.clamp(0, max_count),
            sort_by,
            descending,
            projection: Projection::parse(p.attributes.as_deref(), p.excluded_attributes.as_deref()),
            cursor: p.cursor.as_deref().map(str::trim).map(str::to_string),
            fingerprint,
        })
    }
}

/// A short digest of what a list is of: the filter as sent (trimmed), the sort attribute and
/// its direction.
fn fingerprint(filter: Option<&str>, sort_by: Option<&AttrPath>, descending: bool) -> String {
    use sha2::{Digest, Sha256};
    let sort = sort_by.map(|p| format!("{p:?}")).unwrap_or_default();
    let text = format!("{}\0{}\0{}", filter.map(str::trim).unwrap_or_default(), sort.to_ascii_lowercase(), descending);
    hex::encode(&Sha256::digest(text.as_bytes())[..12])
}

/// An integer parameter; one too large for 64 bits saturates (`count=999999999999999999999` is
/// then clamped like any other large count) instead of being refused.
fn integer(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Ok(n) = s.parse::<i64>() {
        return Some(n);
    }
    let (negative, digits) = match s.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())).then_some(if negative { i64::MIN } else { i64::MAX })
}

/// The ListResponse document, of resources of any rendering.
#[derive(Debug, Serialize)]
pub(crate) struct ListResponse<T> {
    schemas: [&'static str; 1],
    #[serde(rename = "totalResults")]
    total: i64,
    #[serde(rename = "startIndex", skip_serializing_if = "Option::is_none")]
    start_index: Option<i64>,
    #[serde(rename = "itemsPerPage")]
    items_per_page: usize,
    #[serde(rename = "Resources")]
    resources: Vec<T>,
    #[serde(rename = "nextCursor", skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
    #[serde(rename = "previousCursor", skip_serializing_if = "Option::is_none")]
    previous_cursor: Option<String>,
}

/// The ListResponse of a page asked for by `startIndex`.
pub(crate) fn list_response<T: Serialize>(total: i64, start_index: i64, resources: Vec<T>) -> ListResponse<T> {
    ListResponse {
        schemas: [schema::LIST_RESPONSE],
        total,
        start_index: Some(start_index),
        items_per_page: resources.len(),
        resources,
        next_cursor: None,
        previous_cursor: None,
    }
}

/// The ListResponse of a page asked for by cursor (RFC 9865 §2): no `startIndex`; `nextCursor`
/// unless it is the last page, `previousCursor` unless it is the first.
pub(crate) fn cursor_list_response<T: Serialize>(
    total: i64,
    resources: Vec<T>,
    next_cursor: Option<String>,
    previous_cursor: Option<String>,
) -> ListResponse<T> {
    ListResponse { start_index: None, next_cursor, previous_cursor, ..list_response(total, 1, resources) }
}

/// Refuses a cursor where only `startIndex` pages (groups, the search over every type).
pub(crate) fn refuse_cursor(q: &ListQuery, what: &str) -> Result<(), ScimError> {
    match q.cursor {
        Some(_) => Err(ScimError::invalid_value(format!("{what} pages by startIndex only: cursor paging is offered for /Users"))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(pairs: &[(&str, &str)]) -> Result<ListQuery, ScimError> {
        let p = ListParams::from_query(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        ListQuery::parse(&p, 100, 1000)
    }

    #[test]
    fn paging_is_clamped() {
        let q = parse(&[("startIndex", "0"), ("count", "5000")]).unwrap();
        assert_eq!((q.start_index, q.count), (1, 1000));
        let q = parse(&[("COUNT", "-3")]).unwrap();
        assert_eq!(q.count, 0);
        let q = parse(&[]).unwrap();
        assert_eq!((q.start_index, q.count), (1, 100));
        assert_eq!(parse(&[("count", "ten")]).unwrap_err().status, 400);
        let q = parse(&[("count", "999999999999999999999"), ("startIndex", "-99999999999999999999999")]).unwrap();
        assert_eq!((q.start_index, q.count), (1, 1000));
        assert_eq!(parse(&[("count", "-999999999999999999999")]).unwrap().count, 0);
        assert_eq!(parse(&[("count", "9".repeat(30).as_str())]).unwrap().count, 1000);
        assert_eq!(parse(&[("count", "99999999999999999999x")]).unwrap_err().status, 400);
    }

    #[test]
    fn an_empty_filter_is_refused() {
        for f in ["", "   "] {
            assert_eq!(parse(&[("filter", f)]).unwrap_err().scim_type.unwrap().as_str(), "invalidFilter", "{f:?}");
        }
        assert!(parse(&[]).unwrap().filter.is_none());
    }

    #[test]
    fn sort_order_is_checked() {
        assert!(parse(&[("sortBy", "userName"), ("sortOrder", "DESCENDING")]).unwrap().descending);
        assert_eq!(parse(&[("sortOrder", "up")]).unwrap_err().scim_type.unwrap().as_str(), "invalidValue");
    }

    #[test]
    fn cursor_requests_follow_rfc_9865() {
        let q = parse(&[("cursor", "")]).unwrap();
        assert_eq!((q.cursor.as_deref(), q.count), (Some(""), 100));
        assert!(parse(&[]).unwrap().cursor.is_none());
        // A count above maxPageSize is refused with a cursor, clamped without one.
        assert_eq!(parse(&[("cursor", ""), ("count", "1001")]).unwrap_err().scim_type, Some(ScimType::InvalidCount));
        assert_eq!(parse(&[("cursor", ""), ("count", "-5")]).unwrap().count, 0);
        assert_eq!(parse(&[("count", "1001")]).unwrap().count, 1000);
        let both = parse(&[("cursor", "abc"), ("startIndex", "3")]).unwrap_err();
        assert_eq!(both.scim_type, Some(ScimType::InvalidValue));
        // A cursor belongs to a filter, sortBy and sortOrder; not to a page size or projection.
        let print = |pairs: &[(&str, &str)]| parse(pairs).unwrap().fingerprint;
        let plain = print(&[]);
        assert_eq!(plain, print(&[("count", "5"), ("attributes", "userName"), ("cursor", "")]));
        assert_ne!(plain, print(&[("filter", "active eq true")]));
        assert_ne!(plain, print(&[("sortBy", "userName")]));
        assert_ne!(print(&[("sortBy", "userName")]), print(&[("sortBy", "userName"), ("sortOrder", "descending")]));
    }

    #[test]
    fn cursor_answers_have_no_start_index() {
        let doc = serde_json::to_value(cursor_list_response(9, vec![json!({"id": "a"})], Some("n".into()), None)).unwrap();
        assert!(doc.get("startIndex").is_none());
        assert_eq!((doc["nextCursor"].clone(), doc.get("previousCursor")), (json!("n"), None));
        assert_eq!(doc["totalResults"], json!(9));
    }

    #[test]
    fn search_body_accepts_lists() {
        let p = ListParams::from_search_body(&json!({
            "schemas": [schema::SEARCH_REQUEST], "attributes": ["userName", "emails"], "startIndex": 2, "count": 10
        }))
        .unwrap();
        assert_eq!(p.attributes.as_deref(), Some("userName,emails"));
        assert_eq!(p.start_index.as_deref(), Some("2"));
    }

    #[test]
    fn response_counts_are_integers() {
        let doc = serde_json::to_value(list_response(3, 1, vec![json!({"id": "a"})])).unwrap();
        assert_eq!(doc["totalResults"], json!(3));
        assert_eq!(doc["itemsPerPage"], json!(1));
        assert_eq!(doc["schemas"][0], schema::LIST_RESPONSE);
    }
}
