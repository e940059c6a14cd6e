//! SCIM filter and attribute-path grammar (RFC 7644 §3.4.2.2 and §3.5.2 PATCH paths).
//!
//! Pure: strings in, AST out. The store turns the AST into SQL; PATCH evaluates value filters
//! against the elements of one resource with [`matches()`].

mod eval;
mod parser;

use eval::eval;
use parser::Parser;
use serde_json::Value;

/// An attribute reference: `[urn ":"] name ["." sub]`.
///
/// Inside a value filter (`emails[type eq "work"]`) paths are relative to the element, so `name`
/// is the sub-attribute (`type`) and `urn`/`sub` are `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttrPath {
    /// Schema URN as written, e.g. `urn:ietf:params:scim:schemas:extension:enterprise:2.0:User`.
    pub urn: Option<String>,
    /// Attribute name as written (SCIM names are case-insensitive; callers compare ignoring case).
    pub name: String,
    /// Sub-attribute name as written, e.g. `givenName` in `name.givenName`.
    pub sub: Option<String>,
}

/// A comparison value: a JSON string, number, boolean or `null` (RFC 7644 `compValue`).
#[derive(Debug, Clone, PartialEq)]
pub enum CompValue {
    Str(String),
    Num(serde_json::Number),
    Bool(bool),
    Null,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    Eq,
    Ne,
    Co,
    Sw,
    Ew,
    Gt,
    Ge,
    Lt,
    Le,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    Compare(AttrPath, CompareOp, CompValue),
    Present(AttrPath),
    And(Box<Filter>, Box<Filter>),
    Or(Box<Filter>, Box<Filter>),
    Not(Box<Filter>),
    /// `attr[filter]`: true when one element of the multi-valued `attr` matches `filter`.
    ValuePath(AttrPath, Box<Filter>),
}

/// A PATCH `path`: `attrPath` or `valuePath ["." subAttr]`.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchPath {
    /// The attribute; `attr.sub` is only set when there is no `filter` (`name.givenName`).
    pub attr: AttrPath,
    /// The value filter of `emails[type eq "work"]`.
    pub filter: Option<Filter>,
    /// The sub-attribute after a value filter: `value` in `emails[type eq "work"].value`.
    pub sub: Option<String>,
}

/// Why a filter or path was refused; the message names the position and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SyntaxError {
    pub message: String,
}

/// Longest filter or path accepted, in bytes.
pub const MAX_LENGTH: usize = 4096;
/// Deepest nesting of parentheses, `not` and value filters accepted (and/or chains are built
/// iteratively and bounded by [`MAX_LENGTH`]).
pub const MAX_DEPTH: usize = 32;

/// Parses a SCIM filter (RFC 7644 §3.4.2.2), e.g. `userName eq "bjensen" and not (title pr)`.
///
/// Operators and `and`/`or`/`not` are case-insensitive; `not` binds tighter than `and`, which binds
/// tighter than `or`, and chains are left-associative. Attribute names and URNs keep the case they
/// were written in. `attr[filter]` yields [`Filter::ValuePath`]; a comparison on a sub-attribute
/// after a value filter (`emails[type eq "work"].value eq "x"`) is read as one element
/// matching both: `emails[type eq "work" and value eq "x"]`.
///
/// # Errors
///
/// A [`SyntaxError`] naming the byte offset (0-based) and what was expected, e.g.
/// `expected comparison operator at position 9, found '"'`. Inputs longer than [`MAX_LENGTH`]
/// bytes, or nesting (parentheses, `not`, value filters) deeper than [`MAX_DEPTH`], are refused.
/// `and`/`or` chains are built iteratively, so they never recurse in the parser; their length is
/// bounded by `MAX_LENGTH` only (a chain of ~500 `a pr` terms fits and is accepted).
pub fn parse_filter(input: &str) -> Result<Filter, SyntaxError> {
    Parser::new(input, "filter")?.whole_filter()
}

/// Parses a PATCH `path` (RFC 7644 §3.5.2): `attrPath` or `valuePath ["." subAttr]`, e.g.
/// `name.familyName`, `emails[type eq "work"].value` or
/// `urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value`.
///
/// With a value filter, `attr.sub` is `None` and the trailing sub-attribute goes in
/// [`PatchPath::sub`]. Paths inside the brackets are relative (`type`, not `emails.type`).
///
/// **Bare schema URN.** A path that is only a schema URN, such as
/// `urn:ietf:params:scim:schemas:extension:enterprise:2.0:User`, addresses the whole extension
/// object. It is returned as `AttrPath { urn: Some(<the whole URN>), name: "", sub: None }` (an
/// **empty** `name`) with no filter and no sub. A URN path is taken to be bare when the segment
/// before its last `:` is a version such as `2.0` (SCIM schema URNs end in
/// `…:<version>:<ResourceType>`), or when it ends with `:`. Otherwise the part after the last `:`
/// is the attribute: `urn:…:2.0:User:manager.value` → urn `urn:…:2.0:User`, name `manager`,
/// sub `value`. Filters never accept a bare URN.
///
/// # Errors
///
/// A [`SyntaxError`] as for [`parse_filter`], with the same limits ([`MAX_LENGTH`] bytes,
/// [`MAX_DEPTH`] nesting); trailing input after the path is refused.
pub fn parse_path(input: &str) -> Result<PatchPath, SyntaxError> {
    Parser::new(input, "path")?.whole_path()
}

/// Evaluates `filter` against one JSON object (a resource or an element of a multi-valued
/// attribute). Attribute names match ignoring case; string comparisons ignore case unless
/// `case_exact(path)` says the attribute is caseExact.
///
/// * A multi-valued attribute matches when any element does. Complex values (objects: array
///   elements or a single complex attribute such as `manager`) compare through their `value`
///   key unless a sub-attribute is named.
/// * With `urn: Some(u)`, the attribute is looked up in `object[u]` when that key exists
///   (ignoring case), else at the top level (core schema attributes are not nested).
/// * `ne` is the negation of `eq`, so it is true when the attribute is absent. `eq null` is true
///   when the attribute is absent or null. Booleans support only `eq`/`ne`; `co`/`sw`/`ew` apply
///   to strings only; `gt`/`ge`/`lt`/`le` compare strings lexicographically and numbers
///   numerically. Mismatched types never match.
/// * `pr` is true when the value is not null, `""`, `[]` or `{}`.
/// * Inside `attr[...]`, `case_exact` receives the qualified path `attr.sub` (e.g. `emails` with
///   sub `type`), so a schema lookup works; called directly on an element, it gets the path as
///   written (`type`).
pub(crate) fn matches(filter: &Filter, object: &serde_json::Value, case_exact: &dyn Fn(&AttrPath) -> bool) -> bool {
    eval(filter, object, None, case_exact)
}

// ---------------------------------------------------------------------------------------------
// Printing
// ---------------------------------------------------------------------------------------------

/// `[urn ":"] name ["." sub]`, as written.
impl std::fmt::Display for AttrPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(urn) = &self.urn {
            write!(f, "{urn}:")?;
        }
        f.write_str(&self.name)?;
        if let Some(sub) = &self.sub {
            write!(f, ".{sub}")?;
        }
        Ok(())
    }
}

impl CompareOp {
    /// The operator as the grammar spells it (lower case).
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            CompareOp::Eq => "eq",
            CompareOp::Ne => "ne",
            CompareOp::Co => "co",
            CompareOp::Sw => "sw",
            CompareOp::Ew => "ew",
            CompareOp::Gt => "gt",
            CompareOp::Ge => "ge",
            CompareOp::Lt => "lt",
            CompareOp::Le => "le",
        }
    }
}

/// A compValue as JSON: strings quoted and escaped (RFC 7644 §3.4.2.2 takes JSON strings).
impl std::fmt::Display for CompValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CompValue::Str(s) => f.write_str(&Value::String(s.clone()).to_string()),
            CompValue::Num(n) => write!(f, "{n}"),
            CompValue::Bool(b) => write!(f, "{b}"),
            CompValue::Null => f.write_str("null"),
        }
    }
}

/// Filter text that [`parse_filter`] reads back as the same AST: operators in lower case, and
/// parentheses exactly where precedence and left-associativity need them (`and` binds tighter
/// than `or`; a right operand of the same operator is grouped, `a or (b or c)`).
impl std::fmt::Display for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        /// Binding strength: `or` 1, `and` 2, everything else 3 (never needs parentheses).
        fn level(filter: &Filter) -> u8 {
            match filter {
                Filter::Or(..) => 1,
                Filter::And(..) => 2,
                _ => 3,
            }
        }
        fn operand(f: &mut std::fmt::Formatter<'_>, filter: &Filter, min: u8) -> std::fmt::Result {
            if level(filter) < min {
                write!(f, "({filter})")
            } else {
                write!(f, "{filter}")
            }
        }
        match self {
            Filter::Compare(path, op, value) => write!(f, "{path} {} {value}", op.as_str()),
            Filter::Present(path) => write!(f, "{path} pr"),
            Filter::And(a, b) => {
                operand(f, a, 2)?;
                f.write_str(" and ")?;
                operand(f, b, 3)
            }
            Filter::Or(a, b) => {
                operand(f, a, 1)?;
                f.write_str(" or ")?;
                operand(f, b, 2)
            }
            Filter::Not(inner) => write!(f, "not ({inner})"),
            Filter::ValuePath(path, inner) => write!(f, "{path}[{inner}]"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use CompareOp::*;

    const ENT: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
    const CORE: &str = "urn:ietf:params:scim:schemas:core:2.0:User";

    /// Table inputs spell the long schema URNs as `{ENT}` and `{CORE}`.
    fn expand(input: &str) -> String {
        input.replace("{ENT}", ENT).replace("{CORE}", CORE)
    }
    fn p(name: &str) -> AttrPath {
        AttrPath { urn: None, name: name.into(), sub: None }
    }
    fn ps(name: &str, sub: &str) -> AttrPath {
        AttrPath { urn: None, name: name.into(), sub: Some(sub.into()) }
    }
    fn pu(urn: &str, name: &str, sub: Option<&str>) -> AttrPath {
        AttrPath { urn: Some(urn.into()), name: name.into(), sub: sub.map(Into::into) }
    }
    fn cmp(path: AttrPath, op: CompareOp, value: CompValue) -> Filter {
        Filter::Compare(path, op, value)
    }
    fn s(v: &str) -> CompValue {
        CompValue::Str(v.into())
    }
    fn n(v: &str) -> CompValue {
        CompValue::Num(serde_json::from_str(v).unwrap())
    }
    fn b(v: bool) -> CompValue {
        CompValue::Bool(v)
    }
    fn pr(path: AttrPath) -> Filter {
        Filter::Present(path)
    }
    fn and(a: Filter, b: Filter) -> Filter {
        Filter::And(Box::new(a), Box::new(b))
    }
    fn or(a: Filter, b: Filter) -> Filter {
        Filter::Or(Box::new(a), Box::new(b))
    }
    fn not(a: Filter) -> Filter {
        Filter::Not(Box::new(a))
    }
    fn vp(path: AttrPath, inner: Filter) -> Filter {
        Filter::ValuePath(path, Box::new(inner))
    }
    fn pp(attr: AttrPath, filter: Option<Filter>, sub: Option<&str>) -> PatchPath {
        PatchPath { attr, filter, sub: sub.map(Into::into) }
    }
    fn assert_err(result: Result<impl std::fmt::Debug, SyntaxError>, input: &str, want: &str) {
        match result {
            Ok(v) => panic!("{input:?} was accepted as {v:?}"),
            Err(e) => assert!(e.message.contains(want), "{input:?}: got {:?}", e.message),
        }
    }

    #[test]
    fn valid_filters() {
        let work = || cmp(p("type"), Eq, s("work"));
        #[rustfmt::skip]
        let cases = [
            (r#"userName eq "bjensen""#, cmp(p("userName"), Eq, s("bjensen"))),
            (r#"name.familyName co "O'Malley""#, cmp(ps("name", "familyName"), Co, s("O'Malley"))),
            (r#"userName sw "J""#, cmp(p("userName"), Sw, s("J"))),
            (r#"userName ew "sen""#, cmp(p("userName"), Ew, s("sen"))),
            (r#"userName ne "x""#, cmp(p("userName"), Ne, s("x"))),
            (r#"meta.created gt "2011""#, cmp(ps("meta", "created"), Gt, s("2011"))),
            (r#"meta.created ge "2011""#, cmp(ps("meta", "created"), Ge, s("2011"))),
            (r#"meta.created lt "2011""#, cmp(ps("meta", "created"), Lt, s("2011"))),
            (r#"meta.created le "2011""#, cmp(ps("meta", "created"), Le, s("2011"))),
            ("title pr", pr(p("title"))),
            (r#"emails[type eq "work"].value eq "a@b""#,
                vp(p("emails"), and(work(), cmp(p("value"), Eq, s("a@b"))))),
            (r#"emails[type eq "work"].display pr"#, vp(p("emails"), and(work(), pr(p("display"))))),
            (r#"schemas eq "{ENT}""#, cmp(p("schemas"), Eq, s(ENT))),
            // URN prefixes: the URN ends at the last ':' even though it contains "2.0".
            (r#"{CORE}:userName sw "J""#, cmp(pu(CORE, "userName", None), Sw, s("J"))),
            (r#"{CORE}:name.givenName eq "B""#,
                cmp(pu(CORE, "name", Some("givenName")), Eq, s("B"))),
            (r#"{ENT}:manager.value eq "261""#,
                cmp(pu(ENT, "manager", Some("value")), Eq, s("261"))),
            ("{ENT}:employeeNumber pr", pr(pu(ENT, "employeeNumber", None))),
            // Precedence: not > and > or; chains are left-associative.
            ("a pr and b pr", and(pr(p("a")), pr(p("b")))),
            ("a pr or b pr", or(pr(p("a")), pr(p("b")))),
            ("a pr or b pr and c pr", or(pr(p("a")), and(pr(p("b")), pr(p("c"))))),
            ("a pr and b pr or c pr", or(and(pr(p("a")), pr(p("b"))), pr(p("c")))),
            ("a pr or b pr or c pr", or(or(pr(p("a")), pr(p("b"))), pr(p("c")))),
            ("a pr and b pr and c pr", and(and(pr(p("a")), pr(p("b"))), pr(p("c")))),
            ("not (a pr) and b pr", and(not(pr(p("a"))), pr(p("b")))),
            ("a pr and (b pr or c pr)", and(pr(p("a")), or(pr(p("b")), pr(p("c"))))),
            ("not (a pr or b pr) or c pr", or(not(or(pr(p("a")), pr(p("b")))), pr(p("c")))),
            // Case-insensitive operators, keywords and literals; names keep their case.
            (r#"UserName EQ "x" And NOT (t PR) OR active Eq TRUE"#,
                or(and(cmp(p("UserName"), Eq, s("x")), not(pr(p("t")))),
                    cmp(p("active"), Eq, b(true)))),
            ("active eq false", cmp(p("active"), Eq, b(false))),
            ("active eq False", cmp(p("active"), Eq, b(false))),
            ("manager eq null", cmp(p("manager"), Eq, CompValue::Null)),
            ("manager ne NULL", cmp(p("manager"), Ne, CompValue::Null)),
            // String escapes are decoded by serde_json; grammar characters inside strings are text.
            (r#"x eq "a \"q\" \\ \/ \n\t \u00e9 \ud83d\ude00""#,
                cmp(p("x"), Eq, s("a \"q\" \\ / \n\t é 😀"))),
            (r#"x eq "Zoë (x) [y] and or""#, cmp(p("x"), Eq, s("Zoë (x) [y] and or"))),
            // Numbers stay serde_json::Number.
            ("age gt 42", cmp(p("age"), Gt, n("42"))),
            ("x eq -1.5", cmp(p("x"), Eq, n("-1.5"))),
            ("x eq 1e3", cmp(p("x"), Eq, n("1e3"))),
            ("x le 0", cmp(p("x"), Le, n("0"))),
            ("x lt -2.5E-3", cmp(p("x"), Lt, n("-2.5E-3"))),
            // Value paths: inner paths are relative.
            (r#"emails[type eq "work" and value co "@x.com"]"#,
                vp(p("emails"), and(work(), cmp(p("value"), Co, s("@x.com"))))),
            (r#"emails[type eq "work"] and userName sw "a""#,
                and(vp(p("emails"), work()), cmp(p("userName"), Sw, s("a")))),
            (r#"a pr and emails[type eq "work"]"#, and(pr(p("a")), vp(p("emails"), work()))),
            (r#"emails[type eq "work"] or ims[not (value pr)]"#,
                or(vp(p("emails"), work()), vp(p("ims"), not(pr(p("value")))))),
            (r#"{CORE}:emails[type eq "work"]"#, vp(pu(CORE, "emails", None), work())),
            // Whitespace: optional next to parentheses and brackets, tabs and padding accepted.
            ("(a eq 1)or(b eq 2)", or(cmp(p("a"), Eq, n("1")), cmp(p("b"), Eq, n("2")))),
            ("  ( a eq 1 )  and\t( b pr )  ", and(cmp(p("a"), Eq, n("1")), pr(p("b")))),
            ("a\teq\t1", cmp(p("a"), Eq, n("1"))),
            ("not(a pr)", not(pr(p("a")))),
            ("a pr and(b pr)", and(pr(p("a")), pr(p("b")))),
            (r#"emails [ type eq "work" ]"#, vp(p("emails"), work())),
            (r#"emails[type eq "work"]or b pr"#, or(vp(p("emails"), work()), pr(p("b")))),
            // Names: $ref, '-' and '_', keyword-like prefixes.
            ("members.$ref pr", pr(ps("members", "$ref"))),
            ("x-custom_attr2 pr", pr(p("x-custom_attr2"))),
            ("notes pr or order eq 1", or(pr(p("notes")), cmp(p("order"), Eq, n("1")))),
            ("andy pr and origin pr", and(pr(p("andy")), pr(p("origin")))),
        ];
        for (input, expected) in cases {
            assert_eq!(parse_filter(&expand(input)), Ok(expected), "input: {input}");
        }
    }

    #[test]
    fn invalid_filters() {
        #[rustfmt::skip]
        let cases = [
            ("", "empty filter"),
            ("  \t ", "empty filter"),
            ("userName", "expected comparison operator at position 8, found end of input"),
            (r#"userName "bjensen""#, "expected comparison operator at position 9, found '\"'"),
            (r#"userNameeq"x""#, "expected comparison operator at position 10"),
            (r#"userName eq"x""#, "expected whitespace after comparison operator at position 11"),
            (r#"userName xx "x""#, "expected comparison operator at position 9"),
            (r#"userName equals "x""#, "expected comparison operator at position 9"),
            ("userName eq", "expected whitespace after comparison operator"),
            ("userName eq ", "expected comparison value"),
            (r#"userName eq "unterminated"#, "unterminated string starting at position 12"),
            (r#"userName eq "ends in backslash\"#, "unterminated string"),
            (r#"userName eq "bad \q escape""#, "invalid string at position 12"),
            ("userName eq 'single'", "expected comparison value"),
            (r#"title pr "x""#, "'pr' takes no value"),
            ("title pr 1", "'pr' takes no value"),
            ("title pr true", "expected 'and', 'or' or end of filter at position 9"),
            ("a eq 1 b eq 2", "expected 'and', 'or' or end of filter at position 7"),
            ("a eq 1)", "expected 'and', 'or' or end of filter at position 6"),
            ("(a eq 1", "expected ')' at position 7, found end of input"),
            ("()", "expected attribute path at position 1"),
            ("not a eq 1", "expected '(' after 'not' at position 4"),
            ("not", "expected '(' after 'not'"),
            ("a eq 1 and", "expected attribute path at position 10, found end of input"),
            ("a eq 1 or or b eq 2", "expected comparison operator at position 13"),
            ("a eq 1 or\"x\"", "expected whitespace or '(' after 'or' at position 9"),
            ("a eq 1 and\"x\"", "expected whitespace or '(' after 'and' at position 10"),
            ("a eq 1 orb eq 2", "expected 'and', 'or' or end of filter at position 7"),
            ("a eq 1or b eq 2", "after comparison value"),
            ("a eq \"x\"and b pr", "after comparison value"),
            ("a eq 01", "expected JSON number at position 5"),
            ("a eq +1", "expected comparison value"),
            ("a eq 1.", "expected JSON number"),
            ("a eq -", "expected JSON number"),
            ("a eq tru", "expected comparison value"),
            ("a eq truex", "expected comparison value"),
            ("1abc eq 1", "expected attribute name at position 0"),
            ("a.b.c eq 1", "expected sub-attribute name at position 2"),
            ("a:b eq 1", "expected attribute name"),
            ("a$ eq 1", "expected attribute name"),
            ("\"a\" eq 1", "expected attribute path at position 0"),
            ("é eq 1", "expected attribute path at position 0, found 'é'"),
            ("{ENT} pr", "attribute name after schema URN"),
            ("{ENT}: pr", "attribute name after schema URN"),
            (r#"emails[type eq "work""#, "expected ']'"),
            (r#"emails[type eq "work")"#, "expected ']'"),
            ("emails[]", "expected attribute path at position 7"),
            (r#"emails[ims[type eq "x"]]"#, "nested value filter at position 10"),
            (r#"emails[(ims[type eq "x"])]"#, "nested value filter"),
            ("emails[{ENT}:x eq 1]", "relative to the value filter"),
            (r#"emails[type eq "work"].value.x eq "x""#, "single sub-attribute"),
            (r#"name.x[type eq "work"]"#, "without sub-attribute"),
        ];
        for (input, want) in cases {
            assert_err(parse_filter(&expand(input)), input, want);
        }
    }

    #[test]
    fn printing_quotes_strings_and_groups_only_where_needed() {
        #[rustfmt::skip]
        let cases = [
            (r#"a eq "q\"b\\s\n\u0001é/""#, r#"a eq "q\"b\\s\n\u0001é/""#),
            ("a pr or b pr and (c pr or d pr)", "a pr or b pr and (c pr or d pr)"),
            ("(a pr or b pr) and c pr", "(a pr or b pr) and c pr"),
            ("a pr or (b pr or c pr)", "a pr or (b pr or c pr)"),
            ("(a pr or b pr) or c pr", "a pr or b pr or c pr"),
            ("a pr and (b pr and c pr)", "a pr and (b pr and c pr)"),
            ("NOT(a Eq TRUE) OR b LE -2", "not (a eq true) or b le -2"),
            (r#"emails[type eq "work"].value eq "x""#, r#"emails[type eq "work" and value eq "x"]"#),
            ("{ENT}:manager.value ne null", "{ENT}:manager.value ne null"),
            ("a gt 1.5e3", "a gt 1500.0"),
        ];
        for (input, printed) in cases {
            let filter = parse_filter(&expand(input)).unwrap();
            assert_eq!(filter.to_string(), expand(printed), "input: {input}");
            assert_eq!(parse_filter(&filter.to_string()), Ok(filter), "input: {input}");
        }
    }

    #[test]
    fn numbers_are_read_exactly() {
        // Found by `printed_filters_parse_back_to_themselves`: without serde_json's
        // `float_roundtrip` the last digit could change (…986e87 for …987e87).
        for text in ["6.253957209029987e+87", "-1.1720906869564627e-165", "0.30000000000000004"] {
            let want = serde_json::Number::from_f64(text.parse().unwrap()).unwrap();
            assert_eq!(parse_filter(&format!("a eq {text}")), Ok(cmp(p("a"), Eq, CompValue::Num(want))), "{text}");
        }
    }

    #[test]
    fn depth_and_length_limits() {
        let nested = |k: usize| format!("{}a pr{}", "(".repeat(k), ")".repeat(k));
        assert_eq!(parse_filter(&nested(MAX_DEPTH)), Ok(pr(p("a"))));
        assert_err(parse_filter(&nested(MAX_DEPTH + 1)), "33 (", "nesting deeper than 32");
        let k = MAX_DEPTH + 1;
        let nots = format!("{}a pr{}", "not (".repeat(k), ")".repeat(k));
        assert_err(parse_filter(&nots), "33 not", "nesting deeper");
        let brackets = format!("{}e[t pr]{}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
        assert_err(parse_filter(&brackets), "32 ( and [", "nesting deeper");
        assert_err(parse_path(&format!("e[{}", "(".repeat(100))), "path", "nesting deeper");

        // Malicious inputs must fail cleanly, not overflow the stack.
        assert_err(parse_filter(&"(".repeat(100_000)), "100000 (", "at most 4096");
        assert_err(parse_filter(&"(".repeat(MAX_LENGTH)), "4096 (", "nesting deeper");
        assert_err(parse_filter(&"a eq 1 ".repeat(700)), "long", "at most 4096");
        assert_err(parse_path(&"a".repeat(MAX_LENGTH + 1)), "long path", "at most 4096");
        let chain = |k: usize| vec!["a eq 1"; k].join(" or ");
        assert_err(parse_filter(&chain(4000)), "4000 terms", "at most 4096");

        // The longest chain that fits is accepted as a left-deep tree, and evaluates.
        let k = (MAX_LENGTH + 4) / 10;
        let filter = parse_filter(&chain(k)).unwrap();
        let (mut depth, mut node) = (1, &filter);
        while let Filter::Or(left, _) = node {
            (depth, node) = (depth + 1, left);
        }
        assert_eq!(depth, k);
        assert!(matches(&filter, &json!({"a": 1}), &|_| false));
        assert!(!matches(&filter, &json!({"a": 2}), &|_| false));
    }

    #[test]
    fn paths() {
        const X: &str = "urn:ietf:params:scim:schemas:extension:X:2.0:User";
        const UPPER: &str = "URN:IETF:params:scim:schemas:extension:enterprise:2.0:User";
        let work = || Some(cmp(p("type"), Eq, s("work")));
        #[rustfmt::skip]
        let cases = [
            ("members", pp(p("members"), None, None)),
            ("name.familyName", pp(ps("name", "familyName"), None, None)),
            (" userName ", pp(p("userName"), None, None)),
            (r#"emails[type eq "work"]"#, pp(p("emails"), work(), None)),
            (r#"emails[type eq "work"].value"#, pp(p("emails"), work(), Some("value"))),
            (r#"emails [type eq "work"].value"#, pp(p("emails"), work(), Some("value"))),
            (r#"addresses[type eq "work"].streetAddress"#,
                pp(p("addresses"), work(), Some("streetAddress"))),
            (r#"emails[type eq "work" and primary eq TRUE]"#,
                pp(p("emails"), Some(and(work().unwrap(), cmp(p("primary"), Eq, b(true)))), None)),
            (r#"members[value eq "2819c223-7f76-453a-919d-413861904646"]"#,
                pp(p("members"),
                    Some(cmp(p("value"), Eq, s("2819c223-7f76-453a-919d-413861904646"))), None)),
            ("{ENT}:manager", pp(pu(ENT, "manager", None), None, None)),
            ("{ENT}:manager.value", pp(pu(ENT, "manager", Some("value")), None, None)),
            ("{CORE}:userName", pp(pu(CORE, "userName", None), None, None)),
            ("{CORE}:name.givenName", pp(pu(CORE, "name", Some("givenName")), None, None)),
            (r#"{CORE}:emails[type eq "work"].value"#,
                pp(pu(CORE, "emails", None), work(), Some("value"))),
            // Entra custom extensions: capitalised attribute names after "…:2.0:User".
            ("urn:ietf:params:scim:schemas:extension:X:2.0:User:Attr",
                pp(pu(X, "Attr", None), None, None)),
            // A bare schema URN addresses the whole extension: whole URN, empty name.
            ("{ENT}", pp(pu(ENT, "", None), None, None)),
            ("{ENT}:", pp(pu(ENT, "", None), None, None)),
            (UPPER, pp(pu(UPPER, "", None), None, None)),
        ];
        for (input, expected) in cases {
            assert_eq!(parse_path(&expand(input)), Ok(expected), "input: {input}");
        }

        #[rustfmt::skip]
        let invalid = [
            ("", "empty path"),
            ("a b", "expected end of path at position 2"),
            ("name.", "expected sub-attribute name at position 5"),
            ("1name", "expected attribute name at position 0"),
            (r#"emails[type eq "work"]x"#, "expected end of path"),
            (r#"emails[type eq "work"].value.x"#, "expected end of path"),
            (r#"emails[type eq "work"]."#, "expected sub-attribute name"),
            (r#"emails[type eq "work""#, "expected ']'"),
            (r#"name.givenName[type eq "x"]"#, "without sub-attribute"),
            (r#"emails[ims[type eq "x"]]"#, "nested value filter"),
            (r#"{ENT}[type eq "x"]"#, "expected end of path"),
            (r#"emails[type eq "work"] and a pr"#, "expected end of path"),
        ];
        for (input, want) in invalid {
            assert_err(parse_path(&expand(input)), input, want);
        }
    }

    #[test]
    fn matching() {
        let user = json!({
            "schemas": [CORE, ENT],
            "id": "abc-123",
            "userName": "bjensen",
            "name": {"familyName": "Jensen", "givenName": "Barbara"},
            "nickName": "",
            "title": null,
            "active": true,
            "age": 42,
            "emails": [
                {"value": "bjensen@example.com", "type": "work", "primary": true},
                {"value": "babs@jensen.org", "type": "home"}
            ],
            "ims": [{"value": "bj", "type": "aim"}],
            "phoneNumbers": [],
            "roles": ["admin", "Dev"],
            "meta": {"lastModified": "2011-05-13T04:42:34Z"},
            ENT: {"employeeNumber": "701984", "manager": {"value": "26118915"}}
        });
        // `id` is caseExact, and so is `ims.type` (checks that value filters qualify paths).
        let case_exact =
            |path: &AttrPath| path.name.eq_ignore_ascii_case("id") || (path.name == "ims" && path.sub.as_deref() == Some("type"));
        #[rustfmt::skip]
        let cases = [
            (r#"userName eq "BJensen""#, true),
            (r#"USERNAME eq "bjensen""#, true),
            (r#"userName ne "bjensen""#, false),
            (r#"userName eq "bjensen2""#, false),
            (r#"id eq "ABC-123""#, false),
            (r#"id eq "abc-123""#, true),
            (r#"id sw "abc""#, true),
            (r#"name.familyName sw "jen""#, true),
            (r#"name.givenName ew "RA""#, true),
            (r#"name.familyName co "x""#, false),
            (r#"name eq "Jensen""#, false),
            (r#"emails co "EXAMPLE.com""#, true),
            (r#"emails.type eq "home""#, true),
            (r#"emails.type eq "other""#, false),
            (r#"roles eq "dev""#, true),
            (r#"emails[type eq "work" and value ew "@example.com"]"#, true),
            (r#"emails[type eq "WORK"]"#, true),
            (r#"emails[type eq "home" and primary eq true]"#, false),
            ("emails[not (primary pr)]", true),
            (r#"ims[type eq "AIM"]"#, false),
            (r#"ims[type eq "aim"]"#, true),
            (r#"missing[type eq "x"]"#, false),
            ("title pr", false),
            ("nickName pr", false),
            ("phoneNumbers pr", false),
            ("missing pr", false),
            ("emails pr", true),
            ("name pr", true),
            ("emails.primary pr", true),
            (r#"title ne "x""#, true),
            (r#"missing ne "x""#, true),
            ("title eq null", true),
            ("missing eq null", true),
            ("userName eq null", false),
            ("userName ne null", true),
            ("active eq true", true),
            ("active ne false", true),
            ("active eq false", false),
            ("active gt false", false),
            (r#"active eq "true""#, false),
            (r#"meta.lastModified gt "2011-05-13T04:42:33Z""#, true),
            (r#"meta.lastModified lt "2011-05-13T04:42:33Z""#, false),
            (r#"userName gt "A""#, true),
            (r#"userName le "BJENSEN""#, true),
            ("age ge 42", true),
            ("age eq 42.0", true),
            ("age lt 42.5", true),
            ("age gt 1e2", false),
            ("age co 4", false),
            (r#"age eq "42""#, false),
            (r#"{ENT}:manager.value eq "26118915""#, true),
            (r#"{ENT}:manager eq "26118915""#, true),
            (r#"{ENT}:employeeNumber eq "701984""#, true),
            ("URN:IETF:PARAMS:SCIM:SCHEMAS:EXTENSION:ENTERPRISE:2.0:USER:MANAGER pr", true),
            (r#"{CORE}:userName eq "bjensen""#, true),
            (r#"{CORE}:name.givenName eq "barbara""#, true),
            (r#"not (userName eq "bjensen")"#, false),
            (r#"userName eq "x" or (active eq true and not (title pr))"#, true),
            (r#"emails[type eq "work"] and userName sw "b""#, true),
        ];
        for (input, expected) in cases {
            let filter = parse_filter(&expand(input)).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(matches(&filter, &user, &case_exact), expected, "filter: {input}");
        }

        // PATCH-style use: the inner filter against one element gets the path as written.
        let inner = parse_filter(r#"type eq "WORK""#).unwrap();
        assert!(matches(&inner, &user["emails"][0], &|_| false));
        assert!(!matches(&inner, &user["emails"][0], &|p| p.name == "type"));
        assert!(!matches(&inner, &json!("not an object"), &|_| false));
    }
}

/// Properties: the parsers survive any input, and printed filters read back as themselves.
#[cfg(test)]
mod props {
    use proptest::prelude::*;

    use super::*;
    use crate::proptest_support::{comp_value, config, element_filter_ast, filter_ast, random_case, FilterParts};
    use crate::scim::schema;

    /// ATTRNAME: a letter then letters, digits, `-` and `_` (or `$ref`). `not` is left out: a
    /// filter starting with `not` is read as the operator.
    fn attr_name() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => "[a-zA-Z][a-zA-Z0-9_-]{0,8}",
            1 => (proptest::sample::select(vec!["and", "or", "pr", "eq", "true", "null", "order", "notes", "andy", "urn", "$ref"]), any::<u64>())
                .prop_map(|(k, bits)| random_case(k, bits)),
        ]
        .prop_filter("not is the operator", |n| !n.eq_ignore_ascii_case("not"))
    }

    /// A schema URN: the real ones, or made up, never ending in a version segment (a filter
    /// path needs an attribute after the URN).
    fn urn() -> impl Strategy<Value = String> {
        prop_oneof![
            proptest::sample::select(vec![
                schema::USER.to_string(),
                schema::ENTERPRISE_USER.to_string(),
                schema::MFA_USER.to_string(),
            ]),
            ("urn|URN|Urn", prop::collection::vec("[A-Za-z0-9._$-]{1,6}", 0..4), "[A-Za-z][A-Za-z0-9._-]{0,6}").prop_map(
                |(urn, middle, last)| {
                    let mut parts = vec![urn];
                    parts.extend(middle);
                    parts.push(last);
                    parts.join(":")
                }
            ),
        ]
    }

    fn path(with_urn: bool, with_sub: bool) -> BoxedStrategy<AttrPath> {
        let urn = if with_urn { prop::option::of(urn()).boxed() } else { Just(None).boxed() };
        let sub = if with_sub { prop::option::of(attr_name()).boxed() } else { Just(None).boxed() };
        (urn, attr_name(), sub).prop_map(|(urn, name, sub)| AttrPath { urn, name, sub }).boxed()
    }

    /// ASTs as the parser builds them: value filters on attributes without sub-attribute,
    /// relative paths inside them.
    fn parseable_filter() -> impl Strategy<Value = Filter> {
        filter_ast(FilterParts {
            paths: path(true, true),
            value_path_attrs: path(true, false),
            element_paths: path(false, true),
            values: comp_value().boxed(),
        })
    }

    /// Grammar tokens, to reach deeper than random characters do.
    fn token_soup() -> impl Strategy<Value = String> {
        let tokens = vec![
            "(",
            ")",
            "[",
            "]",
            " ",
            "not",
            "and",
            "or",
            "pr",
            "eq",
            "co",
            "gt",
            "\"",
            "\\",
            "\"x\"",
            "\"\\u00e9\"",
            "\"\\ud800\"",
            "1",
            "-",
            "1e309",
            "0.5",
            "true",
            "null",
            "emails",
            "type",
            ".",
            ":",
            "urn:",
            "urn:a:2.0:User",
            "urn:a:2.0:User:",
            "é",
            "\u{0}",
            "\t",
            "$ref",
            "userName",
        ];
        prop::collection::vec(proptest::sample::select(tokens), 0..40).prop_map(|t| t.concat())
    }

    /// Inputs at the limits: deep nesting of each kind, and lengths around `MAX_LENGTH` with
    /// multi-byte characters straddling the boundary.
    fn extreme() -> impl Strategy<Value = String> {
        let nest = (
            proptest::sample::select(vec!["(", "not (", "not(", "e[", "e[(", "[", "emails[type eq \"w\"].value eq ("]),
            0usize..5000,
            any::<bool>(),
        )
            .prop_map(|(open, k, closed)| {
                let close = if open.contains('[') { "]" } else { ")" };
                let body = if closed { format!("{}a pr{}", open.repeat(k), close.repeat(k)) } else { open.repeat(k) };
                body
            });
        let long = (
            proptest::sample::select(vec!["a", "é", "👩", "\"", "a pr or ", "x eq \"é\" and "]),
            (MAX_LENGTH - 8)..(MAX_LENGTH + 8),
        )
            .prop_map(|(unit, bytes)| {
                let mut s = String::new();
                while s.len() + unit.len() <= bytes {
                    s.push_str(unit);
                }
                s
            });
        prop_oneof![nest, long]
    }

    fn any_input() -> impl Strategy<Value = String> {
        prop_oneof![3 => any::<String>(), 3 => token_soup(), 1 => extreme(), 3 => parseable_filter().prop_map(|f| f.to_string())]
    }

    proptest! {
        #![proptest_config(config(2000))]

        #[test]
        fn parsers_never_panic(input in any_input()) {
            let _ = parse_filter(&input);
            let _ = parse_path(&input);
        }

        #[test]
        fn matching_never_panics(filter in parseable_filter(), object in crate::proptest_support::json_value()) {
            let _ = matches(&filter, &object, &|p: &AttrPath| p.name.len() % 2 == 0);
        }
    }

    proptest! {
        #![proptest_config(config(1000))]

        #[test]
        fn printed_filters_parse_back_to_themselves(filter in parseable_filter()) {
            let text = filter.to_string();
            prop_assume!(text.len() <= MAX_LENGTH);
            prop_assert_eq!(parse_filter(&text), Ok(filter), "printed as {}", text);
        }

        #[test]
        fn printed_value_paths_parse_back_as_patch_paths(
            attr in path(true, false),
            inner in element_filter_ast(path(false, true), comp_value().boxed()),
            sub in prop::option::of(attr_name()),
        ) {
            // A PATCH path: `attr[filter].sub`, with the element filter relative.
            let text = match &sub {
                Some(s) => format!("{attr}[{inner}].{s}"),
                None => format!("{attr}[{inner}]"),
            };
            prop_assume!(text.len() <= MAX_LENGTH);
            prop_assert_eq!(parse_path(&text), Ok(PatchPath { attr, filter: Some(inner), sub }), "printed as {}", text);
        }
    }
}
