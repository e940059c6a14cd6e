//! The MFA reset flag an LDAP admin sets on an entry: applied exactly once per setting.
//!
//! A setting is known by the entry's change mark (`entryCSN`, else `modifyTimestamp`) at the time
//! the sync saw the flag. After applying it the sync removes the attribute (`clear = true`); when
//! it cannot (a read-only bind) it remembers the mark and does not apply the flag again until
//! the entry changes. Any change of the entry while the flag stays set counts as a new setting:
//! a second reset is the safe side of the doubt, a missed one is not.

/// What to do with an entry's flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// No flag: forget any remembered mark, so that the next setting applies.
    Absent,
    /// Reset the factor (and clear the flag).
    Apply,
    /// This setting was applied already; the flag could not be cleared.
    AlreadyApplied,
}

/// `flag`: the entry's change mark when the flag is set; `remembered`: the mark it was applied at.
pub fn decide(flag: Option<&str>, remembered: Option<&str>) -> Decision {
    match (flag, remembered) {
        (None, _) => Decision::Absent,
        (Some(mark), Some(done)) if mark == done => Decision::AlreadyApplied,
        (Some(_), _) => Decision::Apply,
    }
}

/// An LDAP filter for entries that carry the flag but are outside the user filter: their flag is
/// reported, never applied. `value` is escaped (RFC 4515).
pub fn outside_filter(user_filter: &str, attribute: &str, value: &str) -> String {
    format!("(&({attribute}={})(!{user_filter}))", ldap3::ldap_escape(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_setting_applies_once() {
        assert_eq!(decide(Some("csn1"), None), Decision::Apply);
        assert_eq!(decide(Some("csn1"), Some("csn1")), Decision::AlreadyApplied);
        assert_eq!(decide(Some("csn2"), Some("csn1")), Decision::Apply);
        assert_eq!(decide(None, Some("csn1")), Decision::Absent);
    }

    #[test]
    fn flag_values_are_escaped_in_filters() {
        assert_eq!(
            outside_filter("(objectClass=inetOrgPerson)", "mfaResetRequested", "T*)(uid=*"),
            r"(&(mfaResetRequested=T\2a\29\28uid=\2a)(!(objectClass=inetOrgPerson)))"
        );
    }
}
