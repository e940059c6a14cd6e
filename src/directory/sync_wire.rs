//! PLACEHOLDER (helper's module replaces it): ldap3's own parsers, which panic on bad input.
#![allow(dead_code)]
pub const SYNC_REQUEST_OID: &str = "1.3.6.1.4.1.4203.1.9.1.1";
pub const SYNC_STATE_OID: &str = "1.3.6.1.4.1.4203.1.9.1.2";
pub const SYNC_DONE_OID: &str = "1.3.6.1.4.1.4203.1.9.1.3";
pub const SYNC_INFO_OID: &str = "1.3.6.1.4.1.4203.1.9.1.4";
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Malformed(pub String);
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Present,
    Add,
    Modify,
    Delete,
}
pub struct SyncState {
    pub state: State,
    pub uuid: [u8; 16],
    pub cookie: Option<Vec<u8>>,
}
pub enum SyncInfo {
    NewCookie(Vec<u8>),
    RefreshDelete { cookie: Option<Vec<u8>>, done: bool },
    RefreshPresent { cookie: Option<Vec<u8>>, done: bool },
    IdSet { cookie: Option<Vec<u8>>, deletes: bool, uuids: Vec<[u8; 16]> },
}
pub struct SyncDone {
    pub cookie: Option<Vec<u8>>,
    pub refresh_deletes: bool,
}
pub fn sync_state(value: &[u8]) -> Result<SyncState, Malformed> {
    use ldap3::controls::{EntryState, RawControl, SyncState as S};
    let s: S = RawControl { ctype: SYNC_STATE_OID.into(), crit: false, val: Some(value.to_vec()) }.parse();
    Ok(SyncState {
        state: match s.state {
            EntryState::Present => State::Present,
            EntryState::Add => State::Add,
            EntryState::Modify => State::Modify,
            EntryState::Delete => State::Delete,
        },
        uuid: s.entry_uuid.as_slice().try_into().map_err(|_| Malformed("uuid".into()))?,
        cookie: s.cookie,
    })
}
pub fn sync_done(_value: &[u8]) -> Result<SyncDone, Malformed> {
    todo!()
}
pub fn sync_info(message: ldap3::asn1::StructureTag) -> Result<SyncInfo, Malformed> {
    use ldap3::controls::SyncInfo as I;
    let id = |v: &Vec<u8>| -> [u8; 16] { v.as_slice().try_into().unwrap() };
    Ok(match ldap3::controls::parse_syncinfo(ldap3::ResultEntry::new(message)) {
        I::NewCookie(c) => SyncInfo::NewCookie(c),
        I::RefreshDelete { cookie, refresh_done } => SyncInfo::RefreshDelete { cookie, done: refresh_done },
        I::RefreshPresent { cookie, refresh_done } => SyncInfo::RefreshPresent { cookie, done: refresh_done },
        I::SyncIdSet { cookie, refresh_deletes, sync_uuids } => {
            SyncInfo::IdSet { cookie, deletes: refresh_deletes, uuids: sync_uuids.iter().map(id).collect() }
        }
    })
}
pub fn entry(message: ldap3::asn1::StructureTag) -> Result<ldap3::SearchEntry, Malformed> {
    Ok(ldap3::SearchEntry::construct(ldap3::ResultEntry::new(message)))
}
