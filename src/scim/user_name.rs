//! Which spellings of a userName name the same user.
//!
//! `userName` is unique and compared ignoring case (RFC 7643 §4.1.1, `caseExact=false`). Comparing
//! lower-cased strings is not enough: `Å` written as `A`+U+030A and as U+00C5, `STRASSE` and
//! `straße`, a fullwidth `Ａ` and `a`, `ﬃx` and `FFIX`, `İstanbul` and `istanbul`, `"trail "` and
//! `"trail"` look alike to a person and were different users. The rule here is at least as strict
//! as PRECIS UsernameCaseMapped (RFC 8265: width mapping, normalisation, case mapping), and
//! stricter where people would be fooled:
//!
//! 1. Refused outright (`invalidValue`): control characters, and the invisible ones — format
//!    characters such as zero-width spaces and joiners, bidirectional overrides and isolates,
//!    variation selectors and the other default-ignorable code points — and a name that is empty
//!    once trimmed.
//! 2. The comparison key is NFKC (compatibility forms: fullwidth and halfwidth letters,
//!    ligatures), full Unicode case folding (`ß` → `ss`), NFKC again, then a combining dot above
//!    after a soft-dotted letter (`i`, `j`, …, which show a dot already) is dropped, and white
//!    space at either end is trimmed.
//!
//! The name itself is stored and returned as it was sent; only the key is folded.

use std::fmt;
use std::hash::{Hash, Hasher};

use unicode_normalization::UnicodeNormalization;

/// A userName that passed the check, with its comparison key: two are equal (and hash alike)
/// exactly when they name the same user, whatever their spelling. Shown as it was sent.
#[derive(Debug, Clone)]
pub struct UserName {
    name: String,
    key: String,
}

/// Why a userName cannot be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidUserName {
    #[error("userName is required")]
    Empty,
    #[error("userName contains the invisible or control character U+{0:04X}; such names look like others and are refused")]
    Invisible(u32),
}

impl UserName {
    /// The userName `name`, refused when empty once trimmed or when it holds an invisible or
    /// control character (see the module doc).
    pub fn parse(name: &str) -> Result<Self, InvalidUserName> {
        Self::check(name)?;
        Ok(UserName { name: name.to_string(), key: Self::key_of(name) })
    }

    /// Whether `name` would be accepted, without deriving its key (normalisation checks every
    /// body written, and the store derives the key once).
    pub(crate) fn check(name: &str) -> Result<(), InvalidUserName> {
        if name.trim().is_empty() {
            return Err(InvalidUserName::Empty);
        }
        match name.chars().find(|&c| invisible(c)) {
            Some(c) => Err(InvalidUserName::Invisible(c as u32)),
            None => Ok(()),
        }
    }

    /// The name as it was sent, the one stored and shown.
    pub(crate) fn as_str(&self) -> &str {
        &self.name
    }

    /// The form every spelling of this name shares.
    pub(crate) fn key(&self) -> &str {
        &self.key
    }

    /// The comparison key of any string, checked or not (a name looked up, a filter value, a
    /// name stored before the check existed): NFKC, case folding, NFKC, a redundant dot above
    /// dropped, trimmed.
    pub(crate) fn key_of(name: &str) -> String {
        Self::fold(name).trim().to_string()
    }

    /// The form a substring (`co`, `sw`, `ew` filters) is compared in: the key without trimming,
    /// so that a leading or trailing space of the pattern still counts.
    pub fn fold(part: &str) -> String {
        let folded: String = caseless::default_case_fold_str(&part.nfkc().collect::<String>()).nfkc().collect();
        let mut out = String::with_capacity(folded.len());
        let mut previous = None;
        for c in folded.chars() {
            if c == COMBINING_DOT_ABOVE && previous.is_some_and(soft_dotted) {
                continue;
            }
            out.push(c);
            previous = Some(c);
        }
        out
    }
}

impl PartialEq for UserName {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl Eq for UserName {}

impl Hash for UserName {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key.hash(state);
    }
}

impl fmt::Display for UserName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

const COMBINING_DOT_ABOVE: char = '\u{0307}';

/// Letters whose lower case shows a dot, so that a dot above adds nothing (Unicode Soft_Dotted,
/// the ones folding can produce before U+0307).
fn soft_dotted(c: char) -> bool {
    matches!(c, 'i' | 'j' | '\u{012F}' | '\u{0249}' | '\u{0268}' | '\u{029D}' | '\u{0456}' | '\u{0458}' | '\u{1E2D}' | '\u{1ECB}')
}

/// Control characters, and code points that show nothing: Unicode's Default_Ignorable_Code_Point
/// (zero-width space and joiners, bidirectional marks, overrides and isolates, variation
/// selectors, fillers, tags), the interlinear annotation marks, and noncharacters.
fn invisible(c: char) -> bool {
    c.is_control()
        || matches!(c as u32,
            0x00AD | 0x034F | 0x061C | 0x115F..=0x1160 | 0x17B4..=0x17B5 | 0x180B..=0x180F | 0x200B..=0x200F
            | 0x202A..=0x202E | 0x2060..=0x206F | 0x3164 | 0xFDD0..=0xFDEF | 0xFE00..=0xFE0F | 0xFEFF | 0xFFA0
            | 0xFFF0..=0xFFFB | 0x1BCA0..=0x1BCA3 | 0x1D173..=0x1D17A | 0xE0000..=0xE0FFF)
        || (c as u32 & 0xFFFE) == 0xFFFE
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> String {
        UserName::key_of(name)
    }

    fn check(name: &str) -> Result<(), InvalidUserName> {
        let parsed = UserName::parse(name).map(drop);
        assert_eq!(parsed, UserName::check(name), "{name:?}");
        parsed
    }

    fn fold(part: &str) -> String {
        UserName::fold(part)
    }

    #[test]
    fn names_that_look_alike_share_a_key() {
        let twins = [
            ("A\u{030A}ngstr\u{00F6}m", "\u{00C5}ngstro\u{0308}m"),
            ("STRASSE", "stra\u{00DF}e"),
            ("\u{0130}stanbul", "istanbul"),
            ("\u{FF21}lice", "alice"),
            ("\u{FB03}x", "FFIX"),
            ("trail ", "trail"),
            ("\u{3000}lead", "lead"),
            ("Bjensen@Example.COM", "bjensen@example.com"),
        ];
        for (a, b) in twins {
            assert_eq!(key(a), key(b), "{a:?} and {b:?}");
        }
    }

    #[test]
    fn different_names_keep_different_keys() {
        for (a, b) in [("resume", "r\u{00E9}sum\u{00E9}"), ("anna", "ana"), ("a b", "ab"), ("i", "\u{0131}")] {
            assert_ne!(key(a), key(b), "{a:?} and {b:?}");
        }
    }

    #[test]
    fn invisible_and_control_characters_are_refused() {
        for bad in
            ["zero\u{200B}width", "bidi\u{202E}override", "tab\tname", "new\nline", "isolate\u{2067}", "   ", "", "bom\u{FEFF}"]
        {
            assert!(check(bad).is_err(), "{bad:?}");
        }
        for good in ["bjensen@example.com", "Barbara Jensen", "\u{00C5}ngstr\u{00F6}m", "李小龍", "o'brien"] {
            assert!(check(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn substrings_fold_like_keys_without_trimming() {
        assert_eq!(fold("STRA\u{00DF}"), "strass");
        assert_eq!(fold(" X"), " x");
        assert!(key("\u{0130}stanbul").contains(&fold("\u{0130}st")));
    }

    #[test]
    fn user_names_compare_by_key_and_show_as_sent() {
        let a = UserName::parse("STRASSE").unwrap();
        let b = UserName::parse("stra\u{00DF}e").unwrap();
        assert_eq!(a, b);
        assert_eq!((a.as_str(), a.key(), b.to_string()), ("STRASSE", "strasse", "stra\u{00DF}e".to_string()));
        let set: std::collections::HashSet<UserName> = [a, b, UserName::parse("strase").unwrap()].into_iter().collect();
        assert_eq!(set.len(), 2);
        assert_eq!(UserName::parse(" ").unwrap_err().to_string(), "userName is required");
        assert_eq!(
            UserName::parse("zero\u{200B}width").unwrap_err().to_string(),
            "userName contains the invisible or control character U+200B; such names look like others and are refused"
        );
    }
}
