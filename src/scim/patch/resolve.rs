//! Which attribute (or schema object) an operation's path names, and value filters on it.

use serde_json::Value;

use super::*;

/// Resolves an explicit `path` of an operation.
pub(super) fn resolve(rt: &ResourceType, path: &str) -> Result<Target, ScimError> {
    let parsed = filter::parse_path(path).map_err(|e| ScimError::invalid_path(e.message))?;
    resolve_parsed(rt, &parsed, rt.core)
}

/// Resolves a parsed path among the schemas of `rt`; names without a URN belong to `default`
/// (the core schema, or the extension whose object is being merged).
pub(super) fn resolve_parsed(rt: &ResourceType, path: &PatchPath, default: &'static Schema) -> Result<Target, ScimError> {
    let AttrPath { urn, name, sub } = &path.attr;
    let narrowed = sub.is_some() || path.filter.is_some() || path.sub.is_some();
    let schema = match urn {
        None => default,
        Some(urn) => match rt.schema(urn) {
            Some(s) => s,
            // A bare URN split at its last colon (`…:2.0` + `User`) still means the whole schema.
            None => match rt.schema(&format!("{urn}:{name}")) {
                Some(s) if !narrowed => return Ok(Target::Schema(s)),
                _ => return Err(ScimError::invalid_path(format!("unknown schema {urn}"))),
            },
        },
    };
    if name.is_empty() {
        if narrowed {
            return Err(ScimError::invalid_path(format!("{} is a schema, not an attribute", schema.id)));
        }
        return Ok(Target::Schema(schema));
    }
    let sub_name = sub.as_deref().or(path.sub.as_deref());

    if rt.is_core(schema) {
        // Common attributes (RFC 7643 §3.1) are not in the schema tables.
        if ["id", "meta", "schemas"].iter().any(|c| c.eq_ignore_ascii_case(name)) {
            return Err(ScimError::mutability(format!("{name} cannot be modified")));
        }
        if name.eq_ignore_ascii_case("externalId") {
            if narrowed {
                return Err(ScimError::invalid_path("externalId is a simple attribute"));
            }
            return Ok(Target::ExternalId);
        }
    }
    let Some(attr) = schema.attribute(name) else {
        return Err(ScimError::invalid_path(format!("unknown attribute {name}")));
    };
    if attr.mutability == Mutability::ReadOnly {
        return Err(ScimError::mutability(format!("{} is readOnly", attr.name)));
    }
    if let Some(f) = &path.filter {
        if !attr.multi_valued {
            return Err(ScimError::invalid_path(format!("{} is not multi-valued and cannot take a value filter", attr.name)));
        }
        check_filter(attr, f)?;
    }
    let sub = match sub_name {
        None => None,
        Some(_) if attr.sub_attributes.is_empty() => {
            return Err(ScimError::invalid_path(format!("{} has no sub-attributes", attr.name)));
        }
        Some(s) => {
            let Some(sub) = attr.sub(s) else {
                return Err(ScimError::invalid_path(format!("unknown sub-attribute {}.{s}", attr.name)));
            };
            if sub.mutability == Mutability::ReadOnly {
                return Err(ScimError::mutability(format!("{}.{} is readOnly", attr.name, sub.name)));
            }
            Some(sub)
        }
    };
    Ok(Target::Attr(AttrTarget { schema, attr, filter: path.filter.clone(), sub }))
}

/// A value filter may only name sub-attributes of the element (`type`, `value`, ...).
pub(super) fn check_filter(attr: &Attribute, f: &Filter) -> Result<(), ScimError> {
    match f {
        Filter::Compare(p, ..) | Filter::Present(p) => {
            if p.urn.is_some() || p.sub.is_some() || attr.sub(&p.name).is_none() {
                return Err(ScimError::invalid_path(format!(
                    "the filter on {} names an unknown sub-attribute {}",
                    attr.name, p.name
                )));
            }
            Ok(())
        }
        Filter::And(a, b) | Filter::Or(a, b) => check_filter(attr, a).and_then(|()| check_filter(attr, b)),
        Filter::Not(a) => check_filter(attr, a),
        Filter::ValuePath(..) => Err(ScimError::invalid_path("value filters cannot be nested")),
    }
}

/// Evaluates a value filter on one element; strings compare ignoring case unless the schema
/// says the sub-attribute is caseExact.
pub(super) fn element_matches(attr: &Attribute, f: &Filter, element: &Value) -> bool {
    let case_exact = |p: &AttrPath| attr.sub(&p.name).is_some_and(|s| s.case_exact);
    filter::matches(f, element, &case_exact)
}
