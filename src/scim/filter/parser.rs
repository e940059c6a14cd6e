//! The filter and PATCH-path parser: a byte cursor over the input, recursive descent with a
//! depth limit.

use super::{AttrPath, CompValue, CompareOp, Filter, PatchPath, SyntaxError, MAX_DEPTH, MAX_LENGTH};

/// Cursor over the input. All grammar tokens are ASCII, so it walks bytes; non-ASCII text can
/// only appear inside string literals, which are sliced at quote bytes (always char boundaries).
pub(super) struct Parser<'a> {
    src: &'a str,
    pos: usize,
    depth: usize,
}

impl<'a> Parser<'a> {
    /// A whole filter: nothing may follow it (see [`super::parse_filter`]).
    pub(super) fn whole_filter(mut self) -> Result<Filter, SyntaxError> {
        let filter = self.parse_or(false)?;
        self.skip_ws();
        if !self.at_end() {
            return Err(self.expected("'and', 'or' or end of filter"));
        }
        Ok(filter)
    }

    /// A whole PATCH path: nothing may follow it (see [`super::parse_path`]).
    pub(super) fn whole_path(mut self) -> Result<PatchPath, SyntaxError> {
        let p = &mut self;
        let attr = p.parse_attr_path(false, true)?;
        let mut filter = None;
        let mut sub = None;
        if !attr.name.is_empty() {
            let save = p.pos;
            p.skip_ws();
            if p.peek() == Some(b'[') {
                filter = Some(p.parse_value_filter(&attr)?);
                if p.peek() == Some(b'.') {
                    p.pos += 1;
                    let start = p.pos;
                    while p.peek().is_some_and(is_name_char) {
                        p.pos += 1;
                    }
                    let name = &p.src[start..p.pos];
                    if !is_attr_name(name) {
                        p.pos = start;
                        return Err(p.expected("sub-attribute name"));
                    }
                    sub = Some(name.to_string());
                }
            } else {
                p.pos = save;
            }
        }
        p.skip_ws();
        if !p.at_end() {
            return Err(p.expected("end of path"));
        }
        Ok(PatchPath { attr, filter, sub })
    }

    /// Checks the length limit and skips leading whitespace; `what` names the input in errors.
    pub(super) fn new(src: &'a str, what: &str) -> Result<Self, SyntaxError> {
        if src.len() > MAX_LENGTH {
            return Err(error(format!("{what} is {} bytes long; at most {MAX_LENGTH} are accepted", src.len())));
        }
        let mut p = Parser { src, pos: 0, depth: 0 };
        p.skip_ws();
        if p.at_end() {
            return Err(error(format!("empty {what}: expected {what} at position 0")));
        }
        Ok(p)
    }

    pub(super) fn peek(&self) -> Option<u8> {
        self.src.as_bytes().get(self.pos).copied()
    }

    pub(super) fn at_end(&self) -> bool {
        self.pos >= self.src.len()
    }

    /// Skips spaces, tabs and line breaks; returns whether there were any.
    pub(super) fn skip_ws(&mut self) -> bool {
        let start = self.pos;
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r' | b'\n')) {
            self.pos += 1;
        }
        self.pos > start
    }

    /// `expected <what> at position <pos>, found <next char or end of input>`.
    pub(super) fn expected(&self, what: &str) -> SyntaxError {
        self.expected_at(self.pos, what)
    }

    pub(super) fn expected_at(&self, pos: usize, what: &str) -> SyntaxError {
        let found = match self.src[pos..].chars().next() {
            Some(c) => format!("'{c}'"),
            None => "end of input".to_string(),
        };
        error(format!("expected {what} at position {pos}, found {found}"))
    }

    pub(super) fn expect_byte(&mut self, b: u8) -> Result<(), SyntaxError> {
        self.skip_ws();
        if self.peek() != Some(b) {
            return Err(self.expected(&format!("'{}'", b as char)));
        }
        self.pos += 1;
        Ok(())
    }

    /// Enters one nesting level; pair with `self.depth -= 1`. Checked before recursing, so the
    /// parser's own stack depth stays bounded by `MAX_DEPTH` whatever the input.
    pub(super) fn enter(&mut self) -> Result<(), SyntaxError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(error(format!("nesting deeper than {MAX_DEPTH} levels at position {}", self.pos)));
        }
        Ok(())
    }

    /// Consumes keyword `kw` (ASCII lowercase) if it is next, ignoring case, and is not merely
    /// the start of a longer attribute name (`order` is not `or` + `der`).
    pub(super) fn eat_keyword(&mut self, kw: &str) -> bool {
        let end = self.pos + kw.len();
        let word = self.src.as_bytes().get(self.pos..end);
        if word.is_some_and(|w| w.eq_ignore_ascii_case(kw.as_bytes()))
            && !self.src.as_bytes().get(end).copied().is_some_and(is_path_char)
        {
            self.pos = end;
            return true;
        }
        false
    }

    /// Consumes ` and ` / ` or ` between two terms. The keyword must be separated from its
    /// neighbours by whitespace, except that a `)`/`]` before it or a `(` after it suffices
    /// (`(a eq 1)or(b eq 2)`). Leaves the cursor untouched when the keyword is not there.
    pub(super) fn eat_logical(&mut self, kw: &str) -> Result<bool, SyntaxError> {
        let save = self.pos;
        let after_bracket = save > 0 && matches!(self.src.as_bytes()[save - 1], b')' | b']');
        let spaced = self.skip_ws();
        if (spaced || after_bracket) && self.eat_keyword(kw) {
            // At the end of input, let the missing operand produce the error instead.
            if !self.skip_ws() && !self.at_end() && self.peek() != Some(b'(') {
                return Err(self.expected(&format!("whitespace or '(' after '{kw}'")));
            }
            return Ok(true);
        }
        self.pos = save;
        Ok(false)
    }

    /// `or`-chain, built iteratively (left-associative) so long chains cannot overflow the stack.
    pub(super) fn parse_or(&mut self, in_brackets: bool) -> Result<Filter, SyntaxError> {
        let mut left = self.parse_and(in_brackets)?;
        while self.eat_logical("or")? {
            let right = self.parse_and(in_brackets)?;
            left = Filter::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    pub(super) fn parse_and(&mut self, in_brackets: bool) -> Result<Filter, SyntaxError> {
        let mut left = self.parse_unary(in_brackets)?;
        while self.eat_logical("and")? {
            let right = self.parse_unary(in_brackets)?;
            left = Filter::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    /// `"(" filter ")"`, `not "(" filter ")"`, `attrPath op value`, `attrPath pr` or
    /// `attrPath "[" valFilter "]"`.
    pub(super) fn parse_unary(&mut self, in_brackets: bool) -> Result<Filter, SyntaxError> {
        self.skip_ws();
        if self.peek() == Some(b'(') {
            return self.parse_group(in_brackets);
        }
        let start = self.pos;
        if self.eat_keyword("not") {
            self.skip_ws();
            if self.peek() != Some(b'(') {
                return Err(self.expected("'(' after 'not'"));
            }
            return Ok(Filter::Not(Box::new(self.parse_group(in_brackets)?)));
        }
        self.pos = start;
        self.parse_attr_expr(in_brackets)
    }

    /// A parenthesised filter; the cursor is on `(`.
    pub(super) fn parse_group(&mut self, in_brackets: bool) -> Result<Filter, SyntaxError> {
        self.enter()?;
        self.pos += 1;
        let inner = self.parse_or(in_brackets)?;
        self.expect_byte(b')')?;
        self.depth -= 1;
        Ok(inner)
    }

    /// `"[" valFilter "]"` after `attr`; the cursor is on `[`.
    pub(super) fn parse_value_filter(&mut self, attr: &AttrPath) -> Result<Filter, SyntaxError> {
        if attr.sub.is_some() {
            return Err(self.expected("'[' directly after an attribute without sub-attribute"));
        }
        self.enter()?;
        self.pos += 1;
        let inner = self.parse_or(true)?;
        self.expect_byte(b']')?;
        self.depth -= 1;
        Ok(inner)
    }

    pub(super) fn parse_attr_expr(&mut self, in_brackets: bool) -> Result<Filter, SyntaxError> {
        let path = self.parse_attr_path(in_brackets, false)?;

        let save = self.pos;
        self.skip_ws();
        if self.peek() == Some(b'[') {
            if in_brackets {
                return Err(error(format!("nested value filter at position {}: '[' is not allowed inside '[...]'", self.pos)));
            }
            let inner = self.parse_value_filter(&path)?;
            if self.peek() == Some(b'.') {
                // `emails[type eq "work"].value eq "x"`: identity providers send this for
                // existence checks; it means an element matching both conditions.
                self.pos += 1;
                let sub = self.parse_attr_path(true, false)?;
                if sub.sub.is_some() {
                    return Err(self.expected("a single sub-attribute name after ']'"));
                }
                let condition = self.parse_comparison(sub)?;
                return Ok(Filter::ValuePath(path, Box::new(Filter::And(Box::new(inner), Box::new(condition)))));
            }
            return Ok(Filter::ValuePath(path, Box::new(inner)));
        }
        self.pos = save;
        self.parse_comparison(path)
    }

    /// `SP compareOp SP compValue` or `SP "pr"` after an attribute path.
    pub(super) fn parse_comparison(&mut self, path: AttrPath) -> Result<Filter, SyntaxError> {
        // Whitespace is mandatory between path, operator and value (`userNameeq"x"` fails).
        if !self.skip_ws() {
            return Err(self.expected("comparison operator"));
        }
        let op_start = self.pos;
        while self.peek().is_some_and(|b| b.is_ascii_alphabetic()) {
            self.pos += 1;
        }
        let op = match self.src[op_start..self.pos].to_ascii_lowercase().as_str() {
            "pr" => None,
            "eq" => Some(CompareOp::Eq),
            "ne" => Some(CompareOp::Ne),
            "co" => Some(CompareOp::Co),
            "sw" => Some(CompareOp::Sw),
            "ew" => Some(CompareOp::Ew),
            "gt" => Some(CompareOp::Gt),
            "ge" => Some(CompareOp::Ge),
            "lt" => Some(CompareOp::Lt),
            "le" => Some(CompareOp::Le),
            _ => return Err(self.expected_at(op_start, "comparison operator")),
        };
        let Some(op) = op else {
            // Catch `title pr "x"` here: the generic trailing-input error would be confusing.
            let save = self.pos;
            self.skip_ws();
            if matches!(self.peek(), Some(b'"' | b'-' | b'0'..=b'9')) {
                return Err(error(format!("unexpected value at position {}: 'pr' takes no value", self.pos)));
            }
            self.pos = save;
            return Ok(Filter::Present(path));
        };
        if !self.skip_ws() {
            return Err(self.expected("whitespace after comparison operator"));
        }
        let value = self.parse_comp_value()?;
        Ok(Filter::Compare(path, op, value))
    }

    /// compValue: JSON string, JSON number, `true`, `false` or `null` (keywords ignore case).
    pub(super) fn parse_comp_value(&mut self) -> Result<CompValue, SyntaxError> {
        let start = self.pos;
        let bytes = self.src.as_bytes();
        let value = match self.peek() {
            Some(b'"') => {
                // Find the closing quote, stepping over escaped characters; serde_json then decodes
                // the literal (escapes, \uXXXX, surrogate pairs) and refuses control characters.
                let mut i = start + 1;
                loop {
                    match bytes.get(i) {
                        None => return Err(error(format!("unterminated string starting at position {start}"))),
                        Some(b'\\') => i += 2,
                        Some(b'"') => break,
                        Some(_) => i += 1,
                    }
                }
                self.pos = i + 1;
                let s = serde_json::from_str::<String>(&self.src[start..self.pos])
                    .map_err(|e| error(format!("invalid string at position {start}: {e}")))?;
                CompValue::Str(s)
            }
            Some(b'-' | b'0'..=b'9') => {
                while matches!(self.peek(), Some(b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')) {
                    self.pos += 1;
                }
                let n = serde_json::from_str::<serde_json::Number>(&self.src[start..self.pos])
                    .map_err(|_| self.expected_at(start, "JSON number"))?;
                CompValue::Num(n)
            }
            _ => {
                while self.peek().is_some_and(|b| b.is_ascii_alphabetic()) {
                    self.pos += 1;
                }
                match self.src[start..self.pos].to_ascii_lowercase().as_str() {
                    "true" => CompValue::Bool(true),
                    "false" => CompValue::Bool(false),
                    "null" => CompValue::Null,
                    _ => return Err(self.expected_at(start, "comparison value (string, number, true, false or null)")),
                }
            }
        };
        // The value must end the expression: `a eq 1or b pr` and `a eq "x"and b pr` fail here.
        if !matches!(self.peek(), None | Some(b' ' | b'\t' | b'\r' | b'\n' | b')' | b']')) {
            return Err(self.expected("whitespace, ')' or end of filter after comparison value"));
        }
        Ok(value)
    }

    /// `[urn ":"] name ["." sub]`. Scans the whole token first, because URNs contain dots
    /// (`…:2.0:User`): for `urn:` tokens the URN is everything before the last `:`.
    /// `relative` (inside `[...]`) refuses URNs; `allow_bare_urn` lets PATCH paths name a whole
    /// extension schema (see [`parse_path`]).
    pub(super) fn parse_attr_path(&mut self, relative: bool, allow_bare_urn: bool) -> Result<AttrPath, SyntaxError> {
        let start = self.pos;
        while self.peek().is_some_and(is_path_char) {
            self.pos += 1;
        }
        let token = &self.src[start..self.pos];
        if token.is_empty() {
            return Err(self.expected("attribute path"));
        }
        let is_urn = token.len() > 4 && token[..4].eq_ignore_ascii_case("urn:");
        if !is_urn {
            let (name, sub) = self.split_name(token, start)?;
            return Ok(AttrPath { urn: None, name, sub });
        }
        if relative {
            return Err(self.expected_at(start, "attribute name relative to the value filter"));
        }
        let colon = token.rfind(':').expect("token starts with urn:");
        let (urn, rest) = (&token[..colon], &token[colon + 1..]);
        let before_last = urn.rsplit(':').next().unwrap_or_default();
        if rest.is_empty() || is_version(before_last) {
            if !allow_bare_urn {
                return Err(self.expected_at(self.pos, "':' and attribute name after schema URN"));
            }
            let urn = token.strip_suffix(':').unwrap_or(token);
            return Ok(AttrPath { urn: Some(urn.to_string()), name: String::new(), sub: None });
        }
        let (name, sub) = self.split_name(rest, start + colon + 1)?;
        Ok(AttrPath { urn: Some(urn.to_string()), name, sub })
    }

    /// Splits `name[.sub]` (which starts at byte `offset`) and validates both names.
    pub(super) fn split_name(&self, s: &str, offset: usize) -> Result<(String, Option<String>), SyntaxError> {
        let (name, sub) = match s.split_once('.') {
            Some((name, sub)) => (name, Some(sub)),
            None => (s, None),
        };
        if !is_attr_name(name) {
            return Err(self.expected_at(offset, "attribute name"));
        }
        if let Some(sub) = sub {
            if !is_attr_name(sub) {
                return Err(self.expected_at(offset + name.len() + 1, "sub-attribute name"));
            }
        }
        Ok((name.to_string(), sub.map(str::to_string)))
    }
}

pub(super) fn error(message: String) -> SyntaxError {
    SyntaxError { message }
}

/// Characters of an attribute-path token, URN included.
pub(super) fn is_path_char(b: u8) -> bool {
    is_name_char(b) || b == b':' || b == b'.'
}

pub(super) fn is_name_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'$')
}

/// ATTRNAME = ALPHA *(nameChar), plus the `$ref` of reference attributes.
pub(super) fn is_attr_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    s.eq_ignore_ascii_case("$ref")
        || (bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
            && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
}

/// `2.0`, `1`: the version segment that precedes the resource type in a schema URN.
pub(super) fn is_version(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_digit()) && s.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}
