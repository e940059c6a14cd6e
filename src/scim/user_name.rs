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

use unicode_normalization::UnicodeNormalization;

/// Why a userName cannot be accepted, or `Ok`.
pub fn check(name: &str) -> Result<(), String> {
    if name.trim().is_empty() {
        return Err("userName is required".into());
    }
    if let Some(c) = name.chars().find(|&c| invisible(c)) {
        return Err(format!(
            "userName contains the invisible or control character U+{:04X}; such names look like others and are refused",
            c as u32
        ));
    }
    Ok(())
}

/// The form two userNames share exactly when they name the same user (see the module doc).
pub fn key(name: &str) -> String {
    fold(name).trim().to_string()
}

/// The form a substring (`co`, `sw`, `ew` filters) is compared in: the key without trimming, so
/// that a leading or trailing space of the pattern still counts.
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
}
