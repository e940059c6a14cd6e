//! Shared pieces of the property tests (`proptest`): case counts and generators of the odd
//! inputs every parser here must survive.

use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::{Map, Value};

use crate::scim::filter::{AttrPath, CompValue, CompareOp, Filter};
use crate::scim::schema;

/// `cases` cases per property, unless `PROPTEST_CASES` asks for another number (a longer run:
/// `PROPTEST_CASES=10000 cargo test --lib props`). No regression files: a failing input found
/// here is kept as a regular unit test next to the fix.
pub fn config(cases: u32) -> Config {
    let from_env = std::env::var("PROPTEST_CASES").is_ok_and(|v| !v.trim().is_empty());
    Config { cases: if from_env { Config::default().cases } else { cases }, failure_persistence: None, ..Config::default() }
}

/// Strings as clients and directories really send them, and worse: empty, blank, case pairs
/// that fold differently (`ß`/`SS`, `İ`, final sigma), combining marks, right-to-left text,
/// emoji, control characters, quotes and backslashes.
pub fn text() -> BoxedStrategy<String> {
    const ODD: &[&str] = &[
        "",
        " ",
        "\t",
        "True",
        "FALSE",
        "ß",
        "SS",
        "İstanbul",
        "ΣΑΣ",
        "e\u{301}",
        "é",
        "ﬁ",
        "Ⅻ",
        "עברית",
        "👩‍💻",
        "\u{0}",
        "\u{7f}",
        "\u{2028}",
        "\"",
        "\\",
        "a\"b\\c",
        "%_",
        "null",
        "  pad  ",
    ];
    prop_oneof![
        3 => "[a-zA-Z0-9@._ -]{0,12}",
        2 => proptest::sample::select(ODD).prop_map(str::to_string),
        2 => any::<String>(),
        1 => "\\PC{0,40}",
    ]
    .boxed()
}

/// SCIM attribute names of the User schemas in random case, the schema URNs, URN-qualified
/// names, and arbitrary keys.
pub fn key() -> impl Strategy<Value = String> {
    let mut known: Vec<String> = vec!["schemas".into(), "id".into(), "meta".into(), "externalId".into(), "groups".into()];
    for s in schema::USER_RESOURCE.schemas() {
        known.push(s.id.to_string());
        for a in s.attributes {
            known.push(a.name.to_string());
            if s.id != schema::USER {
                known.push(format!("{}:{}", s.id, a.name));
            }
            known.extend(a.sub_attributes.iter().map(|sub| sub.name.to_string()));
        }
    }
    prop_oneof![
        4 => (proptest::sample::select(known), any::<u64>()).prop_map(|(k, bits)| random_case(&k, bits)),
        1 => text(),
    ]
}

/// `s` with the case of its ASCII letters flipped where `bits` says so.
pub fn random_case(s: &str, bits: u64) -> String {
    s.chars()
        .enumerate()
        .map(|(i, c)| if bits >> (i % 64) & 1 == 1 { c.to_ascii_uppercase() } else { c.to_ascii_lowercase() })
        .collect()
}

/// Any JSON value, keys biased towards the User schemas so that it reaches deep into the code.
pub fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f).map(Value::Number)),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..6).prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A User body as identity providers send it: valid attributes with their quirks (booleans as
/// strings, a single object where an array belongs, URN-qualified keys, keys in any case),
/// plus now and then an arbitrary member.
pub fn plausible_user() -> impl Strategy<Value = Value> {
    let email = (text(), proptest::sample::select(vec!["work", "home", "other", "Work"]), prop::option::of(any_boolean()))
        .prop_map(|(value, kind, primary)| {
            let mut e = serde_json::json!({"value": value, "type": kind});
            if let Some(p) = primary {
                e["primary"] = p;
            }
            e
        })
        .boxed();
    let emails = prop_oneof![prop::collection::vec(email.clone(), 0..4).prop_map(Value::Array), email,];
    let enterprise = (prop::option::of(text()), prop::option::of(text()), prop::option::of(text())).prop_map(
        |(department, number, manager)| {
            let mut e = Map::new();
            if let Some(d) = department {
                e.insert("department".into(), d.into());
            }
            if let Some(n) = number {
                e.insert("employeeNumber".into(), n.into());
            }
            if let Some(m) = manager {
                e.insert("manager".into(), m.into());
            }
            Value::Object(e)
        },
    );
    (
        "[a-zA-Z][a-zA-Z0-9@._-]{0,10}",
        any::<u64>(),
        prop::option::of((text(), text())),
        prop::option::of(emails),
        prop::option::of(any_boolean()),
        prop::option::of(enterprise),
        any::<bool>(),
        prop::option::of((key(), json_value())),
    )
        .prop_map(|(user_name, case_bits, name, emails, active, enterprise, qualified, extra)| {
            let mut u = Map::new();
            u.insert(random_case("userName", case_bits), Value::String(user_name));
            if let Some((given, family)) = name {
                u.insert("name".into(), serde_json::json!({"givenName": given, "familyName": family}));
            }
            if let Some(e) = emails {
                u.insert("emails".into(), e);
            }
            if let Some(a) = active {
                u.insert("active".into(), a);
            }
            if let Some(Value::Object(ext)) = enterprise {
                if qualified {
                    for (k, v) in ext {
                        u.insert(format!("{}:{k}", schema::ENTERPRISE_USER), v);
                    }
                } else {
                    u.insert(schema::ENTERPRISE_USER.into(), Value::Object(ext));
                }
            }
            if let Some((k, v)) = extra {
                u.insert(k, v);
            }
            Value::Object(u)
        })
}

/// A boolean as clients send it: JSON, or a string in any case.
fn any_boolean() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<bool>().prop_map(Value::Bool),
        proptest::sample::select(vec!["True", "false", "TRUE", "False"]).prop_map(Value::from),
    ]
}

/// The operators of the filter grammar.
pub fn compare_op() -> impl Strategy<Value = CompareOp> {
    use CompareOp::*;
    proptest::sample::select(vec![Eq, Ne, Co, Sw, Ew, Gt, Ge, Lt, Le])
}

/// Any comparison value: JSON strings (odd ones too), integers, finite floats, booleans, null.
pub fn comp_value() -> impl Strategy<Value = CompValue> {
    prop_oneof![
        4 => text().prop_map(CompValue::Str),
        1 => any::<i64>().prop_map(|n| CompValue::Num(n.into())),
        1 => any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f).map(CompValue::Num)),
        1 => any::<bool>().prop_map(CompValue::Bool),
        1 => Just(CompValue::Null),
    ]
}

/// Where filter ASTs take their parts from.
pub struct FilterParts {
    /// Paths of comparisons and `pr` outside value filters.
    pub paths: BoxedStrategy<AttrPath>,
    /// Attributes of value filters (`emails` in `emails[...]`).
    pub value_path_attrs: BoxedStrategy<AttrPath>,
    /// Paths inside value filters (relative: `type`).
    pub element_paths: BoxedStrategy<AttrPath>,
    pub values: BoxedStrategy<CompValue>,
}

/// Filter ASTs a few levels deep. The inner filter of a value filter is built from
/// `element_paths` and has no value filter of its own, as the grammar allows.
pub fn filter_ast(parts: FilterParts) -> impl Strategy<Value = Filter> {
    let FilterParts { paths, value_path_attrs, element_paths, values } = parts;
    let inner = element_filter_ast(element_paths, values.clone());
    let value_path = (value_path_attrs, inner).prop_map(|(attr, inner)| Filter::ValuePath(attr, Box::new(inner)));
    boolean_tree(prop_oneof![3 => leaf(paths, values), 1 => value_path].boxed())
}

/// The filter inside a value filter: comparisons and `pr` on `element_paths`, no value filter.
pub fn element_filter_ast(element_paths: BoxedStrategy<AttrPath>, values: BoxedStrategy<CompValue>) -> BoxedStrategy<Filter> {
    boolean_tree(leaf(element_paths, values))
}

fn leaf(paths: BoxedStrategy<AttrPath>, values: BoxedStrategy<CompValue>) -> BoxedStrategy<Filter> {
    prop_oneof![
        4 => (paths.clone(), compare_op(), values).prop_map(|(p, op, v)| Filter::Compare(p, op, v)),
        1 => paths.prop_map(Filter::Present),
    ]
    .boxed()
}

/// `and`, `or` and `not` over `leaf`, up to four levels deep.
fn boolean_tree(leaf: BoxedStrategy<Filter>) -> BoxedStrategy<Filter> {
    leaf.prop_recursive(4, 24, 2, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| Filter::And(Box::new(a), Box::new(b))),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| Filter::Or(Box::new(a), Box::new(b))),
            inner.prop_map(|f| Filter::Not(Box::new(f))),
        ]
    })
    .boxed()
}
