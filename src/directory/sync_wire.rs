//! The messages of LDAP Content Synchronization (RFC 4533) as they arrive on a search stream,
//! parsed without panicking: the Sync State control on each entry, the Sync Info intermediate
//! messages, the Sync Done control, and the entry itself.
//!
//! `ldap3` has parsers for all of them, but they `expect` and index their way through the
//! input, so a broken or hostile server would take the daemon down. These return
//! [`Malformed`] instead, naming what was wrong.
//!
//! The control values and the Sync Info value are octet strings that nothing has parsed yet:
//! they are read here with a small BER reader that follows the RFC 4533 grammar and nothing
//! else, so it never descends more than three levels (lber's `parse_tag` recurses once per
//! nesting level of whatever it is given, without limit). Every length is checked against the
//! bytes that remain before anything is allocated. Entries and intermediate messages arrive as
//! trees that ldap3's connection driver already decoded; they are walked to the depth their
//! grammar has, never further.
//!
//! What is checked: the class, number and form (primitive or constructed) of each element;
//! definite lengths only (RFC 4511 section 5.1); BOOLEANs of exactly one byte; ENUMERATEDs of one
//! to eight bytes and within their range; sync UUIDs of sixteen bytes; elements in their ASN.1
//! order, none missing, none left over, nothing after the value. Omitted BOOLEANs take their
//! RFC 4533 defaults: `refreshDone` TRUE (389-ds never sends it), `refreshDeletes` FALSE.

use std::collections::HashMap;

use ldap3::asn1::{StructureTag, TagClass, PL};
use ldap3::controls::Control;
use ldap3::SearchEntry;

/// The Sync Request control (sent with the search).
pub const SYNC_REQUEST_OID: &str = "1.3.6.1.4.1.4203.1.9.1.1";
/// The Sync State control (on each entry).
pub const SYNC_STATE_OID: &str = "1.3.6.1.4.1.4203.1.9.1.2";
/// The Sync Done control (on the SearchResultDone).
/// The responseName of the Sync Info intermediate message.
pub const SYNC_INFO_OID: &str = "1.3.6.1.4.1.4203.1.9.1.4";

/// A message that does not have the shape RFC 4533 (or RFC 4511) gives it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}: {problem}")]
pub struct Malformed {
    /// Which message: "syncState control", "syncDone control", "syncInfo message", "search entry".
    pub message: &'static str,
    /// What was wrong with it, e.g. "entryUUID is 3 bytes, not 16".
    pub problem: String,
}

/// What happened to an entry, from its Sync State control.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Still in the content, unchanged (present phase).
    Present,
    Add,
    /// Changed, renamed (same UUID, new DN) included.
    Modify,
    /// Left the content: deleted, moved out of the base, or no longer matching the filter.
    Delete,
}

/// The value of a Sync State control.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncState {
    pub state: State,
    /// The entry's sync UUID: entryUUID on OpenLDAP, nsUniqueId on 389-ds.
    pub uuid: [u8; 16],
    pub cookie: Option<Vec<u8>>,
}

/// The value of a Sync Info intermediate message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncInfo {
    NewCookie(Vec<u8>),
    /// `done` is TRUE when the server left it out.
    RefreshDelete {
        cookie: Option<Vec<u8>>,
        done: bool,
    },
    /// `done` is TRUE when the server left it out.
    RefreshPresent {
        cookie: Option<Vec<u8>>,
        done: bool,
    },
    /// `deletes`: the UUIDs are deleted entries (TRUE) or present ones (FALSE, also when left out).
    IdSet {
        cookie: Option<Vec<u8>>,
        deletes: bool,
        uuids: Vec<[u8; 16]>,
    },
}

const STATE: &str = "syncState control";
const INFO: &str = "syncInfo message";
const ENTRY: &str = "search entry";

// Universal tag numbers.
const BOOLEAN: u64 = 1;
const OCTET_STRING: u64 = 4;
const ENUMERATED: u64 = 10;
const SEQUENCE: u64 = 16;
const SET: u64 = 17;

/// Parses a Sync State control's value.
pub fn sync_state(value: &[u8]) -> Result<SyncState, Malformed> {
    let bad = |problem: String| Malformed { message: STATE, problem };
    let mut fields = Ber::new(single(value, "syncStateValue", TagClass::Universal, SEQUENCE, true).map_err(bad)?);
    let state =
        fields.required("state", TagClass::Universal, ENUMERATED, false).and_then(|e| enumerated("state", e)).map_err(bad)?;
    let state = match state {
        0 => State::Present,
        1 => State::Add,
        2 => State::Modify,
        3 => State::Delete,
        n => return Err(bad(format!("state is {n}, not present (0), add (1), modify (2) or delete (3)"))),
    };
    let uuid =
        fields.required("entryUUID", TagClass::Universal, OCTET_STRING, false).and_then(|e| uuid("entryUUID", e)).map_err(bad)?;
    let cookie = fields.optional("cookie", TagClass::Universal, OCTET_STRING, false).map_err(bad)?.map(<[u8]>::to_vec);
    fields.end("syncStateValue").map_err(bad)?;
    Ok(SyncState { state, uuid, cookie })
}

/// The Sync State control among an entry's controls, parsed: exactly one, with a value.
pub fn sync_state_of(controls: &[Control]) -> Result<SyncState, Malformed> {
    let bad = |problem: &str| Malformed { message: STATE, problem: problem.to_string() };
    let mut found = controls.iter().filter(|c| c.1.ctype == SYNC_STATE_OID);
    let control = found.next().ok_or_else(|| bad("the entry has none"))?;
    if found.next().is_some() {
        return Err(bad("the entry has more than one"));
    }
    sync_state(control.1.val.as_deref().ok_or_else(|| bad("the control has no value"))?)
}

/// Parses an IntermediateResponse (a stream item with `is_intermediate()`, its `.0`) as a Sync
/// Info message: responseName must be [`SYNC_INFO_OID`], responseValue a syncInfoValue.
pub fn sync_info(message: StructureTag) -> Result<SyncInfo, Malformed> {
    let bad = |problem: String| Malformed { message: INFO, problem };
    let mut parts = constructed(message, "IntermediateResponse", TagClass::Application, 25).map_err(bad)?.into_iter();
    let name = primitive(parts.next(), "responseName", TagClass::Context, 0).map_err(bad)?;
    if name != SYNC_INFO_OID.as_bytes() {
        return Err(bad(format!("responseName is {:?}, not {SYNC_INFO_OID}", String::from_utf8_lossy(&name))));
    }
    let value = primitive(parts.next(), "responseValue", TagClass::Context, 1).map_err(bad)?;
    if let Some(extra) = parts.next() {
        return Err(bad(format!("{} after responseValue", describe_tag(&extra))));
    }
    sync_info_value(&value).map_err(bad)
}

fn sync_info_value(value: &[u8]) -> Result<SyncInfo, String> {
    let mut outer = Ber::new(value);
    let choice = outer.next("syncInfoValue")?;
    outer.end("syncInfoValue")?;
    let expect = |constructed: bool| check(&choice, "syncInfoValue", TagClass::Context, choice.number, constructed);
    match (choice.class, choice.number) {
        (TagClass::Context, 0) => {
            expect(false)?;
            Ok(SyncInfo::NewCookie(choice.content.to_vec()))
        }
        (TagClass::Context, n @ (1 | 2)) => {
            expect(true)?;
            let name = if n == 1 { "refreshDelete" } else { "refreshPresent" };
            let mut fields = Ber::new(choice.content);
            let cookie = fields.optional("cookie", TagClass::Universal, OCTET_STRING, false)?.map(<[u8]>::to_vec);
            let done = fields.optional_boolean("refreshDone")?.unwrap_or(true);
            fields.end(name)?;
            Ok(if n == 1 { SyncInfo::RefreshDelete { cookie, done } } else { SyncInfo::RefreshPresent { cookie, done } })
        }
        (TagClass::Context, 3) => {
            expect(true)?;
            let mut fields = Ber::new(choice.content);
            let cookie = fields.optional("cookie", TagClass::Universal, OCTET_STRING, false)?.map(<[u8]>::to_vec);
            let deletes = fields.optional_boolean("refreshDeletes")?.unwrap_or(false);
            let set = fields.required("syncUUIDs", TagClass::Universal, SET, true)?;
            fields.end("syncIdSet")?;
            let mut members = Ber::new(set);
            // Each member takes at least 18 bytes: no more room is reserved than the input can fill.
            let mut uuids = Vec::with_capacity(set.len() / 18);
            while !members.is_empty() {
                let member = members.required("a syncUUID", TagClass::Universal, OCTET_STRING, false)?;
                uuids.push(uuid("a syncUUID", member)?);
            }
            Ok(SyncInfo::IdSet { cookie, deletes, uuids })
        }
        _ => Err(format!(
            "syncInfoValue is {}, not newcookie [0], refreshDelete [1], refreshPresent [2] or syncIdSet [3]",
            describe(choice.class, choice.number, choice.constructed)
        )),
    }
}

/// Turns a SearchResultEntry (a stream item's `.0`) into a [`SearchEntry`], as ldap3's
/// `SearchEntry::construct` does: an attribute whose values are all UTF-8 goes to `attrs`;
/// one with any other value goes to `bin_attrs` with all its values, the non-UTF-8 ones first,
/// so that the same entry read by the paged search and by the feed compares equal.
/// An attribute named twice is malformed (construct would keep the last one).
pub fn entry(message: StructureTag) -> Result<SearchEntry, Malformed> {
    let bad = |problem: String| Malformed { message: ENTRY, problem };
    let mut parts = constructed(message, "SearchResultEntry", TagClass::Application, 4).map_err(bad)?.into_iter();
    let dn = primitive(parts.next(), "objectName", TagClass::Universal, OCTET_STRING).and_then(|dn| utf8("objectName", dn));
    let dn = dn.map_err(bad)?;
    let bad = |problem: String| Malformed { message: ENTRY, problem: format!("{dn:?}: {problem}") };
    let attributes = match parts.next() {
        Some(tag) => constructed(tag, "attributes", TagClass::Universal, SEQUENCE).map_err(bad)?,
        None => return Err(bad("attributes are missing".into())),
    };
    if let Some(extra) = parts.next() {
        return Err(bad(format!("{} after attributes", describe_tag(&extra))));
    }
    let mut attrs = HashMap::new();
    let mut bin_attrs = HashMap::new();
    for attribute in attributes {
        let mut parts = constructed(attribute, "an attribute", TagClass::Universal, SEQUENCE).map_err(bad)?.into_iter();
        let name = primitive(parts.next(), "an attribute's type", TagClass::Universal, OCTET_STRING)
            .and_then(|name| utf8("an attribute's type", name))
            .map_err(bad)?;
        let (text, binary) = attribute_values(parts).map_err(|problem| bad(format!("{name}: {problem}")))?;
        if attrs.contains_key(&name) || bin_attrs.contains_key(&name) {
            return Err(bad(format!("{name} is listed twice")));
        }
        if binary.is_empty() {
            attrs.insert(name, text);
        } else {
            bin_attrs.insert(name, binary);
        }
    }
    Ok(SearchEntry { dn, attrs, bin_attrs })
}

/// The rest of a PartialAttribute, its SET of values: the values if all are UTF-8, or all of
/// them as bytes (the non-UTF-8 ones first, as ldap3 orders them) if not.
fn attribute_values(mut parts: std::vec::IntoIter<StructureTag>) -> Result<(Vec<String>, Vec<Vec<u8>>), String> {
    let values = match parts.next() {
        Some(tag) => constructed(tag, "the values", TagClass::Universal, SET)?,
        None => return Err("the values are missing".into()),
    };
    if let Some(extra) = parts.next() {
        return Err(format!("{} after the values", describe_tag(&extra)));
    }
    let mut text = Vec::with_capacity(values.len());
    let mut binary = Vec::new();
    for value in values {
        match String::from_utf8(primitive(Some(value), "a value", TagClass::Universal, OCTET_STRING)?) {
            Ok(s) => text.push(s),
            Err(e) => binary.push(e.into_bytes()),
        }
    }
    if !binary.is_empty() {
        binary.extend(text.drain(..).map(String::into_bytes));
    }
    Ok((text, binary))
}

// --- The trees the connection driver decoded -----------------------------------------------

/// The children of `tag`, which must be the constructed `[class number]`.
fn constructed(tag: StructureTag, name: &str, class: TagClass, number: u64) -> Result<Vec<StructureTag>, String> {
    match tag {
        StructureTag { class: c, id, payload: PL::C(children) } if c == class && id == number => Ok(children),
        other => Err(format!("{name} is {}, not {}", describe_tag(&other), describe(class, number, true))),
    }
}

/// The content of `tag`, which must be there and be the primitive `[class number]`.
fn primitive(tag: Option<StructureTag>, name: &str, class: TagClass, number: u64) -> Result<Vec<u8>, String> {
    match tag {
        Some(StructureTag { class: c, id, payload: PL::P(content) }) if c == class && id == number => Ok(content),
        Some(other) => Err(format!("{name} is {}, not {}", describe_tag(&other), describe(class, number, false))),
        None => Err(format!("{name} is missing")),
    }
}

fn utf8(name: &str, bytes: Vec<u8>) -> Result<String, String> {
    String::from_utf8(bytes).map_err(|e| format!("{name} is not UTF-8: {:?}", String::from_utf8_lossy(e.as_bytes())))
}

fn describe_tag(tag: &StructureTag) -> String {
    describe(tag.class, tag.id, matches!(tag.payload, PL::C(_)))
}

/// `SEQUENCE`, `primitive [1]`, `constructed [APPLICATION 4]`...
fn describe(class: TagClass, number: u64, constructed: bool) -> String {
    let form = if constructed { "constructed" } else { "primitive" };
    match (class, number) {
        (TagClass::Universal, BOOLEAN) => format!("{form} BOOLEAN"),
        (TagClass::Universal, OCTET_STRING) => format!("{form} OCTET STRING"),
        (TagClass::Universal, ENUMERATED) => format!("{form} ENUMERATED"),
        (TagClass::Universal, SEQUENCE) => format!("{form} SEQUENCE"),
        (TagClass::Universal, SET) => format!("{form} SET"),
        (TagClass::Universal, n) => format!("{form} [UNIVERSAL {n}]"),
        (TagClass::Application, n) => format!("{form} [APPLICATION {n}]"),
        (TagClass::Context, n) => format!("{form} [{n}]"),
        (TagClass::Private, n) => format!("{form} [PRIVATE {n}]"),
    }
}

// --- Bytes nothing has parsed yet ------------------------------------------------------------

/// One BER element: its identifier and its content (not parsed).
struct Element<'a> {
    class: TagClass,
    constructed: bool,
    number: u64,
    content: &'a [u8],
}

/// The elements of a content, read one at a time in order. Nothing here recurses: a
/// constructed element's content is read by another `Ber` when the grammar says so.
struct Ber<'a> {
    rest: &'a [u8],
}

impl<'a> Ber<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Ber { rest: bytes }
    }

    fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// The next element, or an error naming `name` when there is none or it is cut short.
    fn next(&mut self, name: &str) -> Result<Element<'a>, String> {
        let (element, rest) = read_element(self.rest).map_err(|problem| format!("{name}: {problem}"))?;
        self.rest = rest;
        Ok(element)
    }

    fn required(&mut self, name: &str, class: TagClass, number: u64, constructed: bool) -> Result<&'a [u8], String> {
        let element = self.next(name)?;
        check(&element, name, class, number, constructed)?;
        Ok(element.content)
    }

    /// The next element's content if it is `[class number]`; `None` (and nothing read) if the
    /// content is over or another element comes next.
    fn optional(&mut self, name: &str, class: TagClass, number: u64, constructed: bool) -> Result<Option<&'a [u8]>, String> {
        let Some(&first) = self.rest.first() else { return Ok(None) };
        if (first >> 6, u64::from(first & 0x1f)) != (class as u8, number) {
            return Ok(None);
        }
        self.required(name, class, number, constructed).map(Some)
    }

    fn optional_boolean(&mut self, name: &str) -> Result<Option<bool>, String> {
        match self.optional(name, TagClass::Universal, BOOLEAN, false)? {
            None => Ok(None),
            Some([byte]) => Ok(Some(*byte != 0)),
            Some(content) => Err(format!("{name} is a BOOLEAN of {} bytes, not 1", content.len())),
        }
    }

    /// Nothing may follow the last element of `name`.
    fn end(&self, name: &str) -> Result<(), String> {
        if self.rest.is_empty() {
            return Ok(());
        }
        match read_element(self.rest) {
            Ok((e, _)) => Err(format!("{} after the end of {name}", describe(e.class, e.number, e.constructed))),
            Err(_) => Err(format!("{} bytes after the end of {name}", self.rest.len())),
        }
    }
}

/// The only element of `bytes`, which must be `[class number]`: its content.
fn single<'a>(bytes: &'a [u8], name: &str, class: TagClass, number: u64, constructed: bool) -> Result<&'a [u8], String> {
    let mut outer = Ber::new(bytes);
    let content = outer.required(name, class, number, constructed)?;
    outer.end(name)?;
    Ok(content)
}

fn check(element: &Element, name: &str, class: TagClass, number: u64, constructed: bool) -> Result<(), String> {
    if (element.class, element.number, element.constructed) == (class, number, constructed) {
        return Ok(());
    }
    let found = describe(element.class, element.number, element.constructed);
    Err(format!("{name} is {found}, not {}", describe(class, number, constructed)))
}

/// Reads one element's identifier and length, and takes its content. Only the forms LDAP
/// allows (RFC 4511 section 5.1): low tag numbers, definite lengths of up to four bytes.
fn read_element(bytes: &[u8]) -> Result<(Element<'_>, &[u8]), String> {
    let [identifier, rest @ ..] = bytes else { return Err("missing".into()) };
    let class = match identifier >> 6 {
        0 => TagClass::Universal,
        1 => TagClass::Application,
        2 => TagClass::Context,
        _ => TagClass::Private,
    };
    let constructed = identifier & 0x20 != 0;
    let number = u64::from(identifier & 0x1f);
    if number == 0x1f {
        return Err("a tag number of more than one byte".into());
    }
    let [first, rest @ ..] = rest else { return Err("the length is missing".into()) };
    let (length, rest) = match *first {
        n @ 0..=0x7f => (usize::from(n), rest),
        0x80 => return Err("an indefinite length (LDAP allows definite lengths only)".into()),
        n => {
            let count = usize::from(n & 0x7f);
            if count > 4 {
                return Err(format!("a length of {count} bytes"));
            }
            let Some((digits, rest)) = rest.split_at_checked(count) else {
                return Err(format!("the length is cut short ({} of {count} bytes)", rest.len()));
            };
            (digits.iter().fold(0usize, |n, &d| (n << 8) | usize::from(d)), rest)
        }
    };
    let Some((content, rest)) = rest.split_at_checked(length) else {
        return Err(format!("{} claims {length} bytes, {} left", describe(class, number, constructed), rest.len()));
    };
    Ok((Element { class, constructed, number, content }, rest))
}

/// An ENUMERATED: two's complement, one to eight bytes.
fn enumerated(name: &str, content: &[u8]) -> Result<i64, String> {
    if content.is_empty() || content.len() > 8 {
        return Err(format!("{name} is an ENUMERATED of {} bytes, not 1 to 8", content.len()));
    }
    let negative = content.first().is_some_and(|b| b & 0x80 != 0);
    Ok(content.iter().fold(if negative { -1i64 } else { 0 }, |n, &b| (n << 8) | i64::from(b)))
}

fn uuid(name: &str, content: &[u8]) -> Result<[u8; 16], String> {
    <[u8; 16]>::try_from(content).map_err(|_| format!("{name} is {} bytes, not 16", content.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proptest_support::config;
    use ldap3::asn1::{parse_tag, write};
    use ldap3::controls::{ControlParser, RawControl};
    use ldap3::ResultEntry;
    use proptest::prelude::*;
    use std::collections::HashSet;

    const UUID: [u8; 16] = [0, 0, 0, 0, 0, 0, 0x40, 0, 0x80, 0, 0, 0, 0, 0, 0, 0x2a];

    fn prim(class: TagClass, id: u64, content: &[u8]) -> StructureTag {
        StructureTag { class, id, payload: PL::P(content.to_vec()) }
    }

    fn cons(class: TagClass, id: u64, children: Vec<StructureTag>) -> StructureTag {
        StructureTag { class, id, payload: PL::C(children) }
    }

    fn octets(content: &[u8]) -> StructureTag {
        prim(TagClass::Universal, OCTET_STRING, content)
    }

    fn boolean(b: bool) -> StructureTag {
        prim(TagClass::Universal, BOOLEAN, &[if b { 0xff } else { 0 }])
    }

    /// BER with lber's own writer, the one ldap3 encodes requests with.
    fn ber(tag: StructureTag) -> Vec<u8> {
        let mut buf = Default::default();
        write::encode_into(&mut buf, tag).expect("encodes");
        buf.to_vec()
    }

    fn state_value(state: i64, uuid: &[u8], cookie: Option<&[u8]>) -> Vec<u8> {
        let state = ldap3::asn1::Enumerated { inner: state, ..Default::default() };
        let mut fields = vec![ldap3::asn1::ASNTag::into_structure(state), octets(uuid)];
        fields.extend(cookie.map(octets));
        ber(cons(TagClass::Universal, SEQUENCE, fields))
    }

    /// The syncInfoValue for `info`; `explicit` also writes BOOLEANs that equal their default.
    fn info_value(info: &SyncInfo, explicit: bool) -> Vec<u8> {
        let flagged = |id: u64, cookie: &Option<Vec<u8>>, flag: bool, default: bool, rest: Vec<StructureTag>| {
            let mut fields: Vec<_> = cookie.as_deref().map(octets).into_iter().collect();
            if explicit || flag != default {
                fields.push(boolean(flag));
            }
            fields.extend(rest);
            cons(TagClass::Context, id, fields)
        };
        ber(match info {
            SyncInfo::NewCookie(c) => prim(TagClass::Context, 0, c),
            SyncInfo::RefreshDelete { cookie, done } => flagged(1, cookie, *done, true, vec![]),
            SyncInfo::RefreshPresent { cookie, done } => flagged(2, cookie, *done, true, vec![]),
            SyncInfo::IdSet { cookie, deletes, uuids } => {
                let set = cons(TagClass::Universal, SET, uuids.iter().map(|u| octets(u)).collect());
                flagged(3, cookie, *deletes, false, vec![set])
            }
        })
    }

    fn intermediate(name: &[u8], value: &[u8]) -> StructureTag {
        cons(TagClass::Application, 25, vec![prim(TagClass::Context, 0, name), prim(TagClass::Context, 1, value)])
    }

    fn entry_tag(dn: &[u8], attrs: &[(&[u8], Vec<Vec<u8>>)]) -> StructureTag {
        let attrs = attrs
            .iter()
            .map(|(name, values)| {
                let values = cons(TagClass::Universal, SET, values.iter().map(|v| octets(v)).collect());
                cons(TagClass::Universal, SEQUENCE, vec![octets(name), values])
            })
            .collect();
        cons(TagClass::Application, 4, vec![octets(dn), cons(TagClass::Universal, SEQUENCE, attrs)])
    }

    fn problem(r: Result<impl std::fmt::Debug, Malformed>) -> String {
        r.expect_err("malformed").to_string()
    }

    #[test]
    fn a_sync_state_as_openldap_sends_it() {
        // An Add during a cookieless refresh: no cookie.
        let mut bytes = vec![0x30, 0x15, 0x0a, 0x01, 0x01, 0x04, 0x10];
        bytes.extend(UUID);
        assert_eq!(bytes, state_value(1, &UUID, None));
        assert_eq!(sync_state(&bytes), Ok(SyncState { state: State::Add, uuid: UUID, cookie: None }));
        // A Modify in persist mode carries the cookie after the UUID.
        let cookie = b"rid=000,csn=20261130190000.000000Z#000000#000#000000";
        let parsed = sync_state(&state_value(2, &UUID, Some(cookie))).expect("valid");
        assert_eq!(parsed, SyncState { state: State::Modify, uuid: UUID, cookie: Some(cookie.to_vec()) });
        for (n, state) in [(0, State::Present), (3, State::Delete)] {
            assert_eq!(sync_state(&state_value(n, &UUID, None)).map(|s| s.state), Ok(state));
        }
    }

    #[test]
    fn a_malformed_sync_state_says_what_is_wrong() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (state_value(1, &[1, 2, 3], None), "syncState control: entryUUID is 3 bytes, not 16"),
            (vec![0xff, 0xff], "syncStateValue: a tag number of more than one byte"),
            (vec![], "syncStateValue: missing"),
            (vec![0x30, 0x00], "state: missing"),
            (state_value(4, &UUID, None), "state is 4, not present (0)"),
            (state_value(-1, &UUID, None), "state is -1"),
            (state_value(256, &UUID, None), "state is 256"),
            ([&[0x30, 0x02, 0x0a, 0x00][..]].concat(), "state is an ENUMERATED of 0 bytes"),
            ([&[0x30, 0x0b, 0x0a, 0x09][..], &[0; 9]].concat(), "state is an ENUMERATED of 9 bytes"),
            ([&[0x30, 0x05, 0x0a, 0x01, 0x01, 0x04, 0x00][..]].concat(), "entryUUID is 0 bytes, not 16"),
            ([&[0x30, 0x03, 0x0a, 0x01, 0x01][..]].concat(), "entryUUID: missing"),
            ([&state_value(1, &UUID, None)[..], &[0x00]].concat(), "1 bytes after the end of syncStateValue"),
            (
                [&state_value(1, &UUID, None)[..], &[0x04, 0x00]].concat(),
                "primitive OCTET STRING after the end of syncStateValue",
            ),
            ([&[0x30, 0x80][..], &state_value(1, &UUID, None)[2..], &[0, 0]].concat(), "an indefinite length"),
            ([&[0x30, 0x85, 0, 0, 0, 0, 0x15][..], &state_value(1, &UUID, None)[2..]].concat(), "a length of 5 bytes"),
            ([&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff][..]].concat(), "claims 4294967295 bytes, 0 left"),
            ([&[0x30, 0x82, 0x01][..]].concat(), "the length is cut short (1 of 2 bytes)"),
            ([&[0x3f, 0x81, 0x00][..]].concat(), "a tag number of more than one byte"),
            ([&[0x31, 0x00][..]].concat(), "syncStateValue is constructed SET, not constructed SEQUENCE"),
            ([&[0x10, 0x00][..]].concat(), "syncStateValue is primitive SEQUENCE, not constructed SEQUENCE"),
        ];
        for (bytes, expected) in cases {
            let got = problem(sync_state(&bytes));
            assert!(got.contains(expected), "{bytes:02x?}: {got:?} does not say {expected:?}");
            assert!(got.starts_with("syncState control: "), "{got}");
        }
        // A constructed OCTET STRING (BER allows it, LDAP does not) for the UUID.
        let mut bytes = vec![0x30, 0x17, 0x0a, 0x01, 0x01, 0x24, 0x12, 0x04, 0x10];
        bytes.extend(UUID);
        assert!(problem(sync_state(&bytes)).contains("entryUUID is constructed OCTET STRING, not primitive OCTET STRING"));
        // An extra element after the cookie.
        let mut extra = state_value(1, &UUID, Some(b"c"));
        extra[1] += 3;
        extra.extend([0x01, 0x01, 0xff]);
        assert!(problem(sync_state(&extra)).contains("primitive BOOLEAN after the end of syncStateValue"));
    }

    #[test]
    fn the_sync_state_control_is_found_among_the_controls() {
        let control = |oid: &str, val: Option<Vec<u8>>| Control(None, RawControl { ctype: oid.into(), crit: false, val });
        let state = control(SYNC_STATE_OID, Some(state_value(3, &UUID, None)));
        let other = control("1.2.840.113556.1.4.319", Some(vec![0x30, 0x00]));
        assert_eq!(sync_state_of(&[other.clone(), state.clone()]).map(|s| s.state), Ok(State::Delete));
        assert_eq!(problem(sync_state_of(&[other])), "syncState control: the entry has none");
        assert_eq!(problem(sync_state_of(&[state.clone(), state])), "syncState control: the entry has more than one");
        assert_eq!(problem(sync_state_of(&[control(SYNC_STATE_OID, None)])), "syncState control: the control has no value");
    }

    #[test]
    fn sync_info_messages_as_openldap_and_389_ds_send_them() {
        let oid = SYNC_INFO_OID.as_bytes();
        // OpenLDAP, end of a refresh without cookie: refreshDelete { cookie, refreshDone TRUE }.
        let cookie = b"rid=000,csn=20261130190000.000000Z#000000#000#000000".to_vec();
        let mut value = vec![0xa1, 0x39, 0x04, 0x34];
        value.extend(&cookie);
        value.extend([0x01, 0x01, 0xff]);
        assert_eq!(
            sync_info(intermediate(oid, &value)),
            Ok(SyncInfo::RefreshDelete { cookie: Some(cookie.clone()), done: true })
        );
        // 389-ds leaves refreshDone out: it is TRUE.
        let value = [0xa2, 0x00];
        assert_eq!(sync_info(intermediate(oid, &value)), Ok(SyncInfo::RefreshPresent { cookie: None, done: true }));
        let value = [0xa1, 0x03, 0x01, 0x01, 0x00];
        assert_eq!(sync_info(intermediate(oid, &value)), Ok(SyncInfo::RefreshDelete { cookie: None, done: false }));
        // A newcookie, and a present set (refreshDeletes left out: FALSE).
        assert_eq!(sync_info(intermediate(oid, &[0x80, 0x01, b'c'])), Ok(SyncInfo::NewCookie(b"c".to_vec())));
        let mut other = UUID;
        other[15] = 0x2b;
        let mut value = vec![0xa3, 0x26, 0x31, 0x24, 0x04, 0x10];
        value.extend(UUID);
        value.extend([0x04, 0x10]);
        value.extend(other);
        let expected = SyncInfo::IdSet { cookie: None, deletes: false, uuids: vec![UUID, other] };
        assert_eq!(value, info_value(&expected, false));
        assert_eq!(sync_info(intermediate(oid, &value)), Ok(expected));
        let deletes = SyncInfo::IdSet { cookie: Some(b"c,delcsn=1".to_vec()), deletes: true, uuids: vec![] };
        assert_eq!(sync_info(intermediate(oid, &info_value(&deletes, false))), Ok(deletes));
    }

    #[test]
    fn a_malformed_sync_info_says_what_is_wrong() {
        let oid = SYNC_INFO_OID.as_bytes();
        let mut short = vec![0xa3, 0x07, 0x31, 0x05, 0x04, 0x03, 1, 2, 3];
        short[1] = 0x07;
        let cases: Vec<(StructureTag, &str)> = vec![
            (
                intermediate(b"1.3.6.1.4.1.1466.20036", &[0xa2, 0x00]),
                "responseName is \"1.3.6.1.4.1.1466.20036\", not 1.3.6.1.4.1.4203.1.9.1.4",
            ),
            (intermediate(oid, &[0xa4, 0x00]), "syncInfoValue is constructed [4], not newcookie [0]"),
            (intermediate(oid, &[0xa0, 0x00]), "syncInfoValue is constructed [0], not primitive [0]"),
            (intermediate(oid, &[0x81, 0x00]), "syncInfoValue is primitive [1], not constructed [1]"),
            (intermediate(oid, &[0x30, 0x00]), "syncInfoValue is constructed SEQUENCE, not newcookie"),
            (intermediate(oid, &[0xa3, 0x00]), "syncUUIDs: missing"),
            (intermediate(oid, &short), "a syncUUID is 3 bytes, not 16"),
            (
                intermediate(oid, &[0xa3, 0x04, 0x31, 0x02, 0x30, 0x00]),
                "a syncUUID is constructed SEQUENCE, not primitive OCTET STRING",
            ),
            (
                intermediate(oid, &[0xa3, 0x04, 0x01, 0x01, 0xff, 0x31, 0x00][..5]),
                "syncInfoValue: constructed [3] claims 4 bytes, 3 left",
            ),
            (intermediate(oid, &[0xa3, 0x05, 0x01, 0x01, 0xff, 0x31, 0x02]), "syncUUIDs: constructed SET claims 2 bytes, 0 left"),
            (intermediate(oid, &[0xa1, 0x02, 0x01, 0x00]), "refreshDone is a BOOLEAN of 0 bytes, not 1"),
            (
                intermediate(oid, &[0xa1, 0x05, 0x01, 0x01, 0xff, 0x04, 0x00]),
                "primitive OCTET STRING after the end of refreshDelete",
            ),
            (intermediate(oid, &[0x80, 0x00, 0x00]), "1 bytes after the end of syncInfoValue"),
            (intermediate(oid, &[]), "syncInfoValue: missing"),
            (cons(TagClass::Application, 25, vec![prim(TagClass::Context, 0, oid)]), "responseValue is missing"),
            (cons(TagClass::Application, 25, vec![]), "responseName is missing"),
            (
                cons(TagClass::Application, 24, vec![]),
                "IntermediateResponse is constructed [APPLICATION 24], not constructed [APPLICATION 25]",
            ),
            (prim(TagClass::Application, 25, &[]), "IntermediateResponse is primitive [APPLICATION 25]"),
            (
                cons(TagClass::Application, 25, vec![cons(TagClass::Context, 0, vec![])]),
                "responseName is constructed [0], not primitive [0]",
            ),
        ];
        for (tag, expected) in cases {
            let got = problem(sync_info(tag.clone()));
            assert!(
                got.starts_with("syncInfo message: ") && got.contains(expected),
                "{tag:?}: {got:?} does not say {expected:?}"
            );
        }
        let mut extra = intermediate(oid, &[0x80, 0x00]);
        if let PL::C(parts) = &mut extra.payload {
            parts.push(octets(b""));
        }
        assert_eq!(problem(sync_info(extra)), "syncInfo message: primitive OCTET STRING after responseValue");
    }

    #[test]
    fn an_entry_reads_as_search_entry_construct_reads_it() {
        let tag = entry_tag(
            b"uid=ada,ou=people,dc=example,dc=org",
            &[
                (b"uid", vec![b"ada".to_vec()]),
                (b"mail", vec![b"ada@example.org".to_vec(), "äda@example.org".as_bytes().to_vec()]),
                (b"jpegPhoto", vec![b"text".to_vec(), vec![0xff, 0xd8], b"more".to_vec(), vec![0x80]]),
                (b"description", vec![]),
            ],
        );
        let ours = entry(tag.clone()).expect("valid");
        let theirs = SearchEntry::construct(ResultEntry::new(tag));
        assert_eq!((&ours.dn, &ours.attrs, &ours.bin_attrs), (&theirs.dn, &theirs.attrs, &theirs.bin_attrs));
        assert_eq!(ours.attrs["mail"], ["ada@example.org", "äda@example.org"]);
        // ldap3's order: the values that are not UTF-8 first, then the others.
        assert_eq!(ours.bin_attrs["jpegPhoto"], [vec![0xff, 0xd8], vec![0x80], b"text".to_vec(), b"more".to_vec()]);
        assert_eq!(ours.attrs["description"], Vec::<String>::new());
        // A Delete comes with the DN and no attributes.
        let gone = entry(entry_tag(b"uid=bob,dc=example,dc=org", &[])).expect("valid");
        assert!(gone.attrs.is_empty() && gone.bin_attrs.is_empty());
    }

    #[test]
    fn a_malformed_entry_says_what_is_wrong() {
        let values = |v: Vec<StructureTag>| cons(TagClass::Universal, SET, v);
        let attribute = |parts: Vec<StructureTag>| cons(TagClass::Universal, SEQUENCE, parts);
        let with_attributes = |attrs: Vec<StructureTag>| {
            cons(TagClass::Application, 4, vec![octets(b"cn=x"), cons(TagClass::Universal, SEQUENCE, attrs)])
        };
        let cases: Vec<(StructureTag, &str)> = vec![
            (entry_tag(&[0xff, b'x'], &[]), "objectName is not UTF-8: \"\u{fffd}x\""),
            (entry_tag(b"cn=x", &[(b"mail", vec![]), (b"mail", vec![])]), "\"cn=x\": mail is listed twice"),
            (entry_tag(b"cn=x", &[(&[0xc3], vec![])]), "\"cn=x\": an attribute's type is not UTF-8"),
            (
                cons(TagClass::Application, 5, vec![]),
                "SearchResultEntry is constructed [APPLICATION 5], not constructed [APPLICATION 4]",
            ),
            (cons(TagClass::Application, 4, vec![]), "objectName is missing"),
            (cons(TagClass::Application, 4, vec![octets(b"cn=x")]), "\"cn=x\": attributes are missing"),
            (
                cons(TagClass::Application, 4, vec![octets(b"cn=x"), octets(b"")]),
                "attributes is primitive OCTET STRING, not constructed SEQUENCE",
            ),
            (with_attributes(vec![octets(b"")]), "an attribute is primitive OCTET STRING, not constructed SEQUENCE"),
            (with_attributes(vec![attribute(vec![])]), "an attribute's type is missing"),
            (with_attributes(vec![attribute(vec![octets(b"cn")])]), "\"cn=x\": cn: the values are missing"),
            (
                with_attributes(vec![attribute(vec![octets(b"cn"), attribute(vec![])])]),
                "cn: the values is constructed SEQUENCE, not constructed SET",
            ),
            (
                with_attributes(vec![attribute(vec![octets(b"cn"), values(vec![values(vec![])])])]),
                "cn: a value is constructed SET",
            ),
            (
                with_attributes(vec![attribute(vec![octets(b"cn"), values(vec![]), octets(b"")])]),
                "cn: primitive OCTET STRING after the values",
            ),
        ];
        for (tag, expected) in cases {
            let got = problem(entry(tag.clone()));
            assert!(got.starts_with("search entry: ") && got.contains(expected), "{tag:?}: {got:?} does not say {expected:?}");
        }
        let mut extra = entry_tag(b"cn=x", &[]);
        if let PL::C(parts) = &mut extra.payload {
            parts.push(octets(b""));
        }
        assert!(problem(entry(extra)).ends_with("primitive OCTET STRING after attributes"));
    }

    // --- Properties ------------------------------------------------------------------------

    fn cookie() -> impl Strategy<Value = Option<Vec<u8>>> {
        prop::option::of(prop::collection::vec(any::<u8>(), 0..60))
    }

    fn any_sync_state() -> impl Strategy<Value = SyncState> {
        let state = prop::sample::select(vec![State::Present, State::Add, State::Modify, State::Delete]);
        (state, any::<[u8; 16]>(), cookie()).prop_map(|(state, uuid, cookie)| SyncState { state, uuid, cookie })
    }

    fn any_sync_info() -> impl Strategy<Value = SyncInfo> {
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..60).prop_map(SyncInfo::NewCookie),
            (cookie(), any::<bool>()).prop_map(|(cookie, done)| SyncInfo::RefreshDelete { cookie, done }),
            (cookie(), any::<bool>()).prop_map(|(cookie, done)| SyncInfo::RefreshPresent { cookie, done }),
            (cookie(), any::<bool>(), prop::collection::vec(any::<[u8; 16]>(), 0..12))
                .prop_map(|(cookie, deletes, uuids)| SyncInfo::IdSet { cookie, deletes, uuids }),
        ]
    }

    type Attributes = Vec<(String, Vec<Vec<u8>>)>;

    /// Entries with distinct attribute names, UTF-8 values and (now and then) binary ones.
    fn any_entry() -> impl Strategy<Value = (String, Attributes)> {
        let value = prop_oneof![3 => "\\PC{0,12}".prop_map(String::into_bytes), 1 => prop::collection::vec(any::<u8>(), 0..12)];
        let attrs = prop::collection::btree_map("[a-zA-Z][a-zA-Z0-9-]{0,8}", prop::collection::vec(value, 0..4), 0..6);
        ("\\PC{0,30}", attrs).prop_map(|(dn, attrs)| (dn, attrs.into_iter().collect()))
    }

    fn entry_of((dn, attrs): &(String, Attributes)) -> StructureTag {
        let attrs: Vec<(&[u8], Vec<Vec<u8>>)> = attrs.iter().map(|(n, v)| (n.as_bytes(), v.clone())).collect();
        entry_tag(dn.as_bytes(), &attrs)
    }

    /// Edits at random places: a byte replaced, inserted or removed, or the end cut off.
    fn mutate(mut bytes: Vec<u8>, edits: &[(prop::sample::Index, u8, u8)]) -> Vec<u8> {
        for (at, byte, kind) in edits {
            let i = at.index(bytes.len() + 1);
            match kind % 4 {
                0 if i < bytes.len() => bytes[i] = *byte,
                1 => bytes.insert(i, *byte),
                2 if i < bytes.len() => {
                    bytes.remove(i);
                }
                _ => bytes.truncate(i),
            }
        }
        bytes
    }

    fn edits() -> impl Strategy<Value = Vec<(prop::sample::Index, u8, u8)>> {
        prop::collection::vec(any::<(prop::sample::Index, u8, u8)>(), 1..5)
    }

    /// Any tree of tags a few levels deep, as the connection driver could hand over.
    fn any_tree() -> impl Strategy<Value = StructureTag> {
        let class = prop::sample::select(vec![TagClass::Universal, TagClass::Application, TagClass::Context, TagClass::Private]);
        let id = prop_oneof![0..32u64, Just(4), Just(16), Just(17), Just(25)];
        let leaf = (
            class.clone(),
            id.clone(),
            prop_oneof![Just(SYNC_INFO_OID.as_bytes().to_vec()), prop::collection::vec(any::<u8>(), 0..20),],
        )
            .prop_map(|(class, id, content)| prim(class, id, &content));
        leaf.prop_recursive(4, 32, 5, move |inner| {
            (class.clone(), id.clone(), prop::collection::vec(inner, 0..5))
                .prop_map(|(class, id, children)| cons(class, id, children))
        })
    }

    proptest! {
        #![proptest_config(config(256))]

        #[test]
        fn a_sync_state_round_trips_and_reads_as_ldap3_reads_it(s in any_sync_state()) {
            let n = match s.state { State::Present => 0, State::Add => 1, State::Modify => 2, State::Delete => 3 };
            let bytes = state_value(n, &s.uuid, s.cookie.as_deref());
            prop_assert_eq!(sync_state(&bytes), Ok(s.clone()));
            let theirs = <ldap3::controls::SyncState as ControlParser>::parse(&bytes);
            prop_assert_eq!(format!("{:?}", theirs.state), format!("{:?}", s.state));
            prop_assert_eq!((theirs.entry_uuid, theirs.cookie), (s.uuid.to_vec(), s.cookie));
        }

        #[test]
        fn a_sync_info_round_trips_and_reads_as_ldap3_reads_it(info in any_sync_info(), explicit in any::<bool>()) {
            let message = intermediate(SYNC_INFO_OID.as_bytes(), &info_value(&info, explicit));
            prop_assert_eq!(sync_info(message.clone()), Ok(info.clone()));
            use ldap3::controls::SyncInfo as Theirs;
            let theirs = ldap3::controls::parse_syncinfo(ResultEntry::new(message));
            let ours_as_theirs = match info {
                SyncInfo::NewCookie(c) => Theirs::NewCookie(c),
                SyncInfo::RefreshDelete { cookie, done } => Theirs::RefreshDelete { cookie, refresh_done: done },
                SyncInfo::RefreshPresent { cookie, done } => Theirs::RefreshPresent { cookie, refresh_done: done },
                SyncInfo::IdSet { cookie, deletes, uuids } => Theirs::SyncIdSet {
                    cookie,
                    refresh_deletes: deletes,
                    sync_uuids: uuids.into_iter().map(Vec::from).collect::<HashSet<_>>(),
                },
            };
            prop_assert_eq!(format!("{theirs:?}").len(), format!("{ours_as_theirs:?}").len());
            match (theirs, ours_as_theirs) {
                (Theirs::SyncIdSet { cookie: a, refresh_deletes: b, sync_uuids: c }, Theirs::SyncIdSet { cookie: x, refresh_deletes: y, sync_uuids: z }) => {
                    prop_assert_eq!((a, b, c), (x, y, z));
                }
                (theirs, ours) => prop_assert_eq!(format!("{theirs:?}"), format!("{ours:?}")),
            }
        }

        #[test]
        fn an_entry_reads_as_search_entry_construct_reads_it_whatever_its_values(e in any_entry()) {
            let tag = entry_of(&e);
            let ours = entry(tag.clone()).expect("valid");
            let theirs = SearchEntry::construct(ResultEntry::new(tag));
            prop_assert_eq!((ours.dn, ours.attrs, ours.bin_attrs), (theirs.dn, theirs.attrs, theirs.bin_attrs));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = sync_state(&bytes);
            let _ = sync_info(intermediate(SYNC_INFO_OID.as_bytes(), &bytes));
            if let Ok((_, tag)) = parse_tag(&bytes) {
                let _ = entry(tag.clone());
                let _ = sync_info(tag);
            }
        }

        #[test]
        fn mutated_sync_controls_never_panic(s in any_sync_state(), edits in edits()) {
            let n = match s.state { State::Present => 0, State::Add => 1, State::Modify => 2, State::Delete => 3 };
            let state = mutate(state_value(n, &s.uuid, s.cookie.as_deref()), &edits);
            if let Ok(parsed) = sync_state(&state) {
                prop_assert!(matches!(parsed.state, State::Present | State::Add | State::Modify | State::Delete));
            }
        }

        #[test]
        fn mutated_sync_infos_never_panic(info in any_sync_info(), explicit in any::<bool>(), edits in edits()) {
            let value = info_value(&info, explicit);
            let _ = sync_info(intermediate(SYNC_INFO_OID.as_bytes(), &mutate(value.clone(), &edits)));
            // The whole message mutated, as the driver would have decoded it.
            let whole = mutate(ber(intermediate(SYNC_INFO_OID.as_bytes(), &value)), &edits);
            if let Ok((_, tag)) = parse_tag(&whole) {
                let _ = sync_info(tag);
            }
        }

        #[test]
        fn mutated_entries_never_panic(e in any_entry(), edits in edits()) {
            let bytes = mutate(ber(entry_of(&e)), &edits);
            if let Ok((_, tag)) = parse_tag(&bytes) {
                let _ = entry(tag);
            }
        }

        #[test]
        fn arbitrary_trees_never_panic(tag in any_tree()) {
            let _ = entry(tag.clone());
            let _ = sync_info(tag.clone());
            let _ = sync_info(cons(TagClass::Application, 25, vec![prim(TagClass::Context, 0, SYNC_INFO_OID.as_bytes()), tag]));
        }
    }
}
