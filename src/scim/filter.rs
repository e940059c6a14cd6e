//! SCIM filter and attribute-path grammar (RFC 7644 §3.4.2.2 and §3.5.2 PATCH paths).
//!
//! Pure: strings in, AST out. The store turns the AST into SQL; PATCH evaluates value filters
//! against the elements of one resource with [`matches`].

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
/// Deepest nesting of parentheses, `not`, value filters and and/or chains accepted.
pub const MAX_DEPTH: usize = 32;

pub fn parse_filter(input: &str) -> Result<Filter, SyntaxError> {
    todo!()
}

pub fn parse_path(input: &str) -> Result<PatchPath, SyntaxError> {
    todo!()
}

/// Evaluates `filter` against one JSON object (a resource or an element of a multi-valued
/// attribute). Attribute names match ignoring case; string comparisons ignore case unless
/// `case_exact(path)` says the attribute is caseExact.
pub fn matches(
    filter: &Filter,
    object: &serde_json::Value,
    case_exact: &dyn Fn(&AttrPath) -> bool,
) -> bool {
    todo!()
}
