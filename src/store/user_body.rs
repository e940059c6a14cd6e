//! A stored user's body: the canonical SCIM body (`scim::resource::normalize`) as the `body`
//! column holds it, parsed into values only when something reads its attributes. An answer
//! without a projection is written from the text itself (`scim::resource::render_stored`):
//! a page of a hundred users spent most of its time parsing bodies and writing them out again.

use std::ops::Deref;
use std::sync::OnceLock;

use serde_json::{Map, Value};

use crate::scim::resource::Fields;

pub struct Body {
    text: String,
    parsed: OnceLock<Map<String, Value>>,
}

impl Body {
    /// A body as read from the database; `None` unless it is one JSON object. The text is
    /// checked whole here, so that reading its values later cannot fail.
    pub(crate) fn read(text: String) -> Option<Self> {
        Fields::of(&text)?;
        Some(Body { text, parsed: OnceLock::new() })
    }

    /// A body and its stored text, as just written.
    pub(crate) fn written(body: Map<String, Value>, text: String) -> Self {
        Body { text, parsed: OnceLock::from(body) }
    }

    /// The body as stored.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The body's members as stored, their values unparsed (`scim::resource::render_stored`).
    pub(crate) fn fields(&self) -> Fields<'_> {
        Fields::of(&self.text).expect("a body is checked when it is read")
    }

    pub fn into_map(self) -> Map<String, Value> {
        match self.parsed.into_inner() {
            Some(body) => body,
            None => parse(&self.text),
        }
    }
}

fn parse(text: &str) -> Map<String, Value> {
    match serde_json::from_str(text) {
        Ok(Value::Object(body)) => body,
        _ => unreachable!("a body is checked when it is read"),
    }
}

impl Deref for Body {
    type Target = Map<String, Value>;

    fn deref(&self) -> &Self::Target {
        self.parsed.get_or_init(|| parse(&self.text))
    }
}

impl Clone for Body {
    fn clone(&self) -> Self {
        Body { text: self.text.clone(), parsed: self.parsed.clone() }
    }
}

/// Bodies compare by their values (two texts may order the same members differently).
impl PartialEq for Body {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text || **self == **other
    }
}

impl PartialEq<Map<String, Value>> for Body {
    fn eq(&self, other: &Map<String, Value>) -> bool {
        **self == *other
    }
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Body").field(&self.text).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_body_read_is_checked_then_parsed_when_read() {
        assert!(Body::read("[1]".into()).is_none());
        assert!(Body::read("{\"a\": ".into()).is_none());
        let body = Body::read(r#"{"userName":"a","emails":[{"value":"a@x"}]}"#.into()).unwrap();
        assert_eq!(body.get("userName"), Some(&json!("a")));
        assert_eq!(body.text(), r#"{"userName":"a","emails":[{"value":"a@x"}]}"#);
        let reordered = Body::read(r#"{"emails":[{"value":"a@x"}],"userName":"a"}"#.into()).unwrap();
        assert_eq!(body, reordered);
        assert_eq!(reordered.into_map()["emails"][0]["value"], "a@x");
    }
}
