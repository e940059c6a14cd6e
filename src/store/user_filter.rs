//! SCIM filters and `sortBy` on Users, compiled to SQL over the indexed columns of `users`
//! and the `user_values` search index. Nothing is filtered in memory.

use crate::scim::error::ScimError;
use crate::scim::filter::{AttrPath, CompValue, CompareOp, Filter};
use crate::scim::schema::{self, Attribute, Kind};

use super::sql::{Bind, Condition, Fragment};

/// Where the values of an attribute live.
#[derive(Debug, Clone, PartialEq)]
enum Target {
    /// A column of `users`; `lower` when the column holds the lower-cased value.
    Column { column: &'static str, kind: Kind, lower: bool },
    /// Rows of `user_values` with these paths (several for `pr` on a complex attribute).
    Values { paths: Vec<String>, kind: Kind, case_exact: bool },
}

/// The attribute a path names, resolved against the User schemas.
fn resolve(path: &AttrPath) -> Result<Target, ScimError> {
    let unknown = || ScimError::invalid_filter(format!("unknown attribute {}", display(path)));
    let schema = match &path.urn {
        None => &schema::USER_SCHEMA,
        Some(urn) => schema::user_schema(urn).ok_or_else(unknown)?,
    };
    let name = path.name.as_str();
    let sub = path.sub.as_deref();
    if schema.id == schema::USER {
        let column = |column, kind, lower| Ok(Target::Column { column, kind, lower });
        match (name.to_ascii_lowercase().as_str(), sub.map(str::to_ascii_lowercase).as_deref()) {
            ("id", None) => return column("users.id", Kind::String, false),
            ("externalid", None) => return column("users.external_id", Kind::String, false),
            ("username", None) => return column("users.user_name_key", Kind::String, true),
            ("active", None) => return column("users.active", Kind::Boolean, false),
            ("meta", Some("created")) => return column("users.created_at", Kind::DateTime, false),
            ("meta", Some("lastmodified")) => return column("users.updated_at", Kind::DateTime, false),
            _ => {}
        }
    }
    let attr = schema.attribute(name).ok_or_else(unknown)?;
    let prefix = value_path(schema.id, attr.name);
    let leaf = |a: &Attribute, path: String| Target::Values {
        paths: vec![path],
        kind: a.kind,
        case_exact: a.case_exact,
    };
    match (sub, attr.kind) {
        (Some(sub), Kind::Complex) => {
            let s = attr.sub(sub).ok_or_else(unknown)?;
            Ok(leaf(s, format!("{prefix}.{}", s.name.to_ascii_lowercase())))
        }
        (Some(_), _) => Err(unknown()),
        // `emails eq "x"` means the primary value sub-attribute (RFC 7644 §3.4.2.2).
        (None, Kind::Complex) => match attr.sub("value") {
            Some(v) if attr.multi_valued => Ok(leaf(v, format!("{prefix}.value"))),
            _ => Ok(Target::Values {
                paths: attr
                    .sub_attributes
                    .iter()
                    .map(|s| format!("{prefix}.{}", s.name.to_ascii_lowercase()))
                    .collect(),
                kind: Kind::Complex,
                case_exact: false,
            }),
        },
        (None, _) => Ok(leaf(attr, prefix)),
    }
}

/// The `user_values.path` of an attribute: lower-cased, URN-qualified for extensions.
pub fn value_path(schema_id: &str, attr: &str) -> String {
    if schema_id == schema::USER {
        attr.to_ascii_lowercase()
    } else {
        format!("{}:{}", schema_id.to_ascii_lowercase(), attr.to_ascii_lowercase())
    }
}

/// The form a value is stored and compared in: lower-cased unless caseExact, booleans as
/// `true`/`false`, dateTimes as RFC 3339 UTC with milliseconds.
pub fn comparable(kind: Kind, case_exact: bool, value: &serde_json::Value) -> Option<String> {
    match (kind, value) {
        (Kind::Boolean, serde_json::Value::Bool(b)) => Some(b.to_string()),
        (Kind::DateTime, serde_json::Value::String(s)) => Some(
            chrono::DateTime::parse_from_rfc3339(s)
                .map(|t| crate::scim::resource::datetime(&t.to_utc()))
                .unwrap_or_else(|_| s.clone()),
        ),
        (_, serde_json::Value::String(s)) if case_exact => Some(s.clone()),
        (_, serde_json::Value::String(s)) => Some(s.to_lowercase()),
        (_, serde_json::Value::Number(n)) => Some(n.to_string()),
        (_, serde_json::Value::Bool(b)) => Some(b.to_string()),
        _ => None,
    }
}

fn display(path: &AttrPath) -> String {
    let mut s = path.urn.as_ref().map(|u| format!("{u}:")).unwrap_or_default();
    s.push_str(&path.name);
    if let Some(sub) = &path.sub {
        s.push('.');
        s.push_str(sub);
    }
    s
}

/// Compiles a filter on Users into an SQL condition on `users`.
pub fn compile(filter: &Filter) -> Result<Condition, ScimError> {
    Compiler { next_alias: 0 }.filter(filter, None)
}

/// The `ORDER BY` key of a `sortBy` attribute (its smallest value for multi-valued ones).
pub fn sort_key(path: &AttrPath) -> Result<Fragment<diesel::sql_types::Nullable<diesel::sql_types::Text>>, ScimError> {
    match resolve(path).map_err(|e| ScimError::invalid_value(e.detail))? {
        Target::Column { column, .. } => Ok(Fragment::new().sql(column)),
        Target::Values { paths, .. } => Ok(Fragment::new()
            .sql("(SELECT MIN(s.value) FROM user_values s WHERE s.user_id = users.id AND s.path = ")
            .bind(Bind::Text(paths[0].clone()))
            .sql(")")),
    }
}

/// The element being matched inside a value filter (`emails[type eq "work"]`).
struct Element<'a> {
    alias: String,
    attr: &'a AttrPath,
}

struct Compiler {
    next_alias: usize,
}

impl Compiler {
    fn alias(&mut self) -> String {
        self.next_alias += 1;
        format!("v{}", self.next_alias)
    }

    fn filter(&mut self, f: &Filter, element: Option<&Element>) -> Result<Condition, ScimError> {
        Ok(match f {
            Filter::And(a, b) => self.binary(a, " AND ", b, element)?,
            Filter::Or(a, b) => self.binary(a, " OR ", b, element)?,
            Filter::Not(inner) => Condition::new().sql("NOT (").push(self.filter(inner, element)?).sql(")"),
            Filter::Present(path) => self.present(path, element)?,
            Filter::Compare(path, op, value) => self.compare(path, *op, value, element)?,
            Filter::ValuePath(attr, inner) => {
                if element.is_some() {
                    return Err(ScimError::invalid_filter("value filters cannot be nested"));
                }
                let Target::Values { paths, .. } = resolve(&AttrPath { sub: None, ..attr.clone() })? else {
                    return Err(ScimError::invalid_filter(format!("{} is not multi-valued", display(attr))));
                };
                let alias = self.alias();
                let prefix = paths[0].rsplit_once('.').map(|(p, _)| p.to_string()).unwrap_or_default();
                let inner_cond = self.filter(inner, Some(&Element { alias: alias.clone(), attr }))?;
                Condition::new()
                    .sql(&format!(
                        "EXISTS (SELECT 1 FROM user_values {alias} WHERE {alias}.user_id = users.id AND {alias}.path LIKE "
                    ))
                    .bind(Bind::Text(format!("{}.%", like_escape(&prefix))))
                    .sql(&format!(" ESCAPE '\\' AND ("))
                    .push(inner_cond)
                    .sql("))")
            }
        })
    }

    fn binary(&mut self, a: &Filter, op: &str, b: &Filter, element: Option<&Element>) -> Result<Condition, ScimError> {
        Ok(Condition::new()
            .sql("(")
            .push(self.filter(a, element)?)
            .sql(op)
            .push(self.filter(b, element)?)
            .sql(")"))
    }

    /// Inside a value filter, `type` means `emails.type` of the same element.
    fn target(&self, path: &AttrPath, element: Option<&Element>) -> Result<Target, ScimError> {
        match element {
            None => resolve(path),
            Some(e) => {
                if path.urn.is_some() || path.sub.is_some() {
                    return Err(ScimError::invalid_filter(format!(
                        "{} inside a value filter must be a sub-attribute name",
                        display(path)
                    )));
                }
                resolve(&AttrPath {
                    sub: Some(path.name.clone()),
                    ..e.attr.clone()
                })
            }
        }
    }

    /// `EXISTS (SELECT 1 FROM user_values vN WHERE <same user or element> AND vN.path IN (…)`
    /// — left open for the caller to add a value condition and the closing parenthesis.
    fn values_exists(&mut self, paths: &[String], element: Option<&Element>) -> (String, Condition) {
        let alias = self.alias();
        let mut c = Condition::new().sql(&format!("EXISTS (SELECT 1 FROM user_values {alias} WHERE "));
        c = match element {
            Some(e) => c.sql(&format!(
                "{alias}.user_id = {e}.user_id AND {alias}.elem = {e}.elem AND ",
                e = e.alias
            )),
            None => c.sql(&format!("{alias}.user_id = users.id AND ")),
        };
        c = c.sql(&format!("{alias}.path IN ("));
        for (i, p) in paths.iter().enumerate() {
            if i > 0 {
                c = c.sql(", ");
            }
            c = c.bind(Bind::Text(p.clone()));
        }
        (alias, c.sql(")"))
    }

    fn present(&mut self, path: &AttrPath, element: Option<&Element>) -> Result<Condition, ScimError> {
        Ok(match self.target(path, element)? {
            Target::Column { column, kind: Kind::String, .. } => {
                Condition::new().sql(&format!("({column} IS NOT NULL AND {column} <> ''"))
                    .sql(")")
            }
            Target::Column { column, .. } => Condition::new().sql(&format!("{column} IS NOT NULL")),
            Target::Values { paths, .. } => {
                let (alias, c) = self.values_exists(&paths, element);
                c.sql(&format!(" AND {alias}.value <> '')"))
            }
        })
    }

    fn compare(&mut self, path: &AttrPath, op: CompareOp, value: &CompValue, element: Option<&Element>) -> Result<Condition, ScimError> {
        let target = self.target(path, element)?;
        if matches!(value, CompValue::Null) {
            // `attr eq null` is how some clients spell "not present".
            let present = self.present(path, element)?;
            return match op {
                CompareOp::Eq => Ok(Condition::new().sql("NOT ").push(present)),
                CompareOp::Ne => Ok(present),
                _ => Err(ScimError::invalid_filter("null can only be compared with eq or ne")),
            };
        }
        let (kind, case_exact) = match &target {
            Target::Column { kind, lower, .. } => (*kind, !lower),
            Target::Values { kind, case_exact, .. } => (*kind, *case_exact),
        };
        if kind == Kind::Complex {
            return Err(ScimError::invalid_filter(format!("{} is complex: compare one of its sub-attributes", display(path))));
        }
        let json = match value {
            CompValue::Str(s) => serde_json::Value::String(s.clone()),
            CompValue::Num(n) => serde_json::Value::Number(n.clone()),
            CompValue::Bool(b) => serde_json::Value::Bool(*b),
            CompValue::Null => unreachable!("handled above"),
        };
        if kind == Kind::Boolean && !matches!(op, CompareOp::Eq | CompareOp::Ne) {
            return Err(ScimError::invalid_filter(format!("{} is boolean: use eq or ne", display(path))));
        }
        if kind == Kind::Boolean && !json.is_boolean() {
            return Err(ScimError::invalid_filter(format!("{} is boolean: compare with true or false", display(path))));
        }
        let text = comparable(kind, case_exact, &json).expect("scalar value");
        let (sql_op, bind) = match op {
            CompareOp::Eq => ("=", text),
            CompareOp::Ne => ("=", text), // negated below
            CompareOp::Gt => (">", text),
            CompareOp::Ge => (">=", text),
            CompareOp::Lt => ("<", text),
            CompareOp::Le => ("<=", text),
            CompareOp::Co => ("LIKE", format!("%{}%", like_escape(&text))),
            CompareOp::Sw => ("LIKE", format!("{}%", like_escape(&text))),
            CompareOp::Ew => ("LIKE", format!("%{}", like_escape(&text))),
        };
        if matches!(op, CompareOp::Gt | CompareOp::Ge | CompareOp::Lt | CompareOp::Le) && !json.is_string() && kind != Kind::String {
            return Err(ScimError::invalid_filter(format!("{} cannot be ordered against {json}", display(path))));
        }
        let escape = if sql_op == "LIKE" { " ESCAPE '\\'" } else { "" };
        let cond = match target {
            Target::Column { column, kind, .. } => {
                let bind = match kind {
                    Kind::Boolean => Bind::Bool(bind == "true"),
                    Kind::DateTime if sql_op != "LIKE" => Bind::Timestamp(parse_datetime(&bind)?),
                    _ => Bind::Text(bind),
                };
                let c = Condition::new().sql(&format!("{column} {sql_op} ")).bind(bind).sql(escape);
                if op == CompareOp::Ne {
                    // `ne` also holds when the attribute has no value.
                    Condition::new().sql(&format!("({column} IS NULL OR NOT (")).push(c).sql("))")
                } else {
                    c
                }
            }
            Target::Values { paths, .. } => {
                let (alias, c) = self.values_exists(&paths, element);
                let c = c.sql(&format!(" AND {alias}.value {sql_op} ")).bind(Bind::Text(bind)).sql(escape).sql(")");
                if op == CompareOp::Ne {
                    Condition::new().sql("NOT ").push(c)
                } else {
                    c
                }
            }
        };
        Ok(cond)
    }
}

fn parse_datetime(s: &str) -> Result<chrono::NaiveDateTime, ScimError> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.naive_utc())
        .map_err(|_| ScimError::invalid_filter(format!("{s:?} is not an RFC 3339 dateTime")))
}

/// Escapes `%`, `_` and `\` for a LIKE pattern with `ESCAPE '\'`.
fn like_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(name: &str, sub: Option<&str>) -> AttrPath {
        AttrPath { urn: None, name: name.into(), sub: sub.map(Into::into) }
    }

    fn str_cmp(name: &str, sub: Option<&str>, op: CompareOp, v: &str) -> Filter {
        Filter::Compare(attr(name, sub), op, CompValue::Str(v.into()))
    }

    #[test]
    fn indexed_attributes_use_their_columns() {
        let c = compile(&str_cmp("USERNAME", None, CompareOp::Eq, "BJensen")).unwrap();
        assert_eq!(c.text(), "users.user_name_key = ?");
        let c = compile(&str_cmp("meta", Some("lastModified"), CompareOp::Gt, "2024-01-01T00:00:00Z")).unwrap();
        assert_eq!(c.text(), "users.updated_at > ?");
        let c = compile(&str_cmp("externalId", None, CompareOp::Sw, "a_b")).unwrap();
        assert_eq!(c.text(), "users.external_id LIKE ? ESCAPE '\\'");
    }

    #[test]
    fn other_attributes_use_the_value_index() {
        let c = compile(&str_cmp("emails", None, CompareOp::Co, "example")).unwrap();
        assert_eq!(
            c.text(),
            "EXISTS (SELECT 1 FROM user_values v1 WHERE v1.user_id = users.id AND v1.path IN (?) AND v1.value LIKE ? ESCAPE '\\')"
        );
        let f = Filter::ValuePath(attr("emails", None), Box::new(str_cmp("type", None, CompareOp::Eq, "work")));
        let c = compile(&f).unwrap();
        assert!(c.text().contains("v2.user_id = v1.user_id AND v2.elem = v1.elem"), "{}", c.text());
    }

    #[test]
    fn bad_filters_are_invalid_filter_errors() {
        let bad = [
            str_cmp("nosuch", None, CompareOp::Eq, "x"),
            str_cmp("name", None, CompareOp::Eq, "x"),
            Filter::Compare(attr("active", None), CompareOp::Gt, CompValue::Bool(true)),
            Filter::Compare(attr("active", None), CompareOp::Eq, CompValue::Str("yes".into())),
            str_cmp("meta", Some("created"), CompareOp::Gt, "yesterday"),
        ];
        for f in bad {
            let e = compile(&f).unwrap_err();
            assert_eq!(e.scim_type.unwrap().as_str(), "invalidFilter", "{f:?}");
        }
    }

    #[test]
    fn like_patterns_are_escaped() {
        assert_eq!(like_escape("50%_a\\b"), "50\\%\\_a\\\\b");
    }
}
