//! A fake LDAP server that says what a test tells it to: a few bytes on a socket, for what no
//! real directory sends (malformed sync controls, broken envelopes).
//!
//! It accepts one connection on 127.0.0.1, answers the first request (a simple bind) with
//! success, then answers the next one (the search) with the scripted replies, each wrapped in
//! an LDAPMessage carrying the search's message id (except [`Reply::Raw`], sent as it is). Then
//! it closes the socket or keeps it open (reading and ignoring whatever comes) as scripted.
//!
//! ```ignore
//! let fake = FakeLdap::start(
//!     vec![
//!         Reply::entry("uid=ada,dc=example,dc=org", &[("uid", &[b"ada"])], &sync_state_value(1, &UUID, None)),
//!         Reply::sync_info(&[0xa1, 0x00]), // refreshDelete, refreshDone left out
//!         Reply::raw(&[0x30, 0x00]),      // a broken envelope
//!     ],
//!     End::KeepOpen,
//! );
//! let (conn, mut ldap) = LdapConnAsync::new(&fake.url()).await?;
//! ```

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use ldap3::controls::{MakeCritical, RefreshMode, SyncRequest};
use ldap3::{LdapConnAsync, LdapError, Scope};
use provisiond::sync_wire;

/// One answer to the search.
#[derive(Clone)]
pub enum Reply {
    /// A protocolOp and its encoded Controls, sent in an LDAPMessage with the search's id.
    Op { op: Vec<u8>, controls: Vec<Vec<u8>> },
    /// Bytes sent as they are.
    Raw(Vec<u8>),
}

impl Reply {
    /// A SearchResultEntry with `attrs`, carrying a Sync State control whose value is `state`.
    pub fn entry(dn: &str, attrs: &[(&str, &[&[u8]])], state: &[u8]) -> Reply {
        let attrs: Vec<u8> = attrs
            .iter()
            .flat_map(|(name, values)| {
                let values: Vec<u8> = values.iter().flat_map(|v| tlv(0x04, v)).collect();
                tlv(0x30, &[tlv(0x04, name.as_bytes()), tlv(0x31, &values)].concat())
            })
            .collect();
        let op = tlv(0x64, &[tlv(0x04, dn.as_bytes()), tlv(0x30, &attrs)].concat());
        Reply::Op { op, controls: vec![control(sync_wire::SYNC_STATE_OID, state)] }
    }

    /// An IntermediateResponse named syncInfo with `value` as responseValue.
    pub fn sync_info(value: &[u8]) -> Reply {
        let op = tlv(0x79, &[tlv(0x80, sync_wire::SYNC_INFO_OID.as_bytes()), tlv(0x81, value)].concat());
        Reply::Op { op, controls: vec![] }
    }

    /// A SearchResultDone with result code `rc` (below 128).
    pub fn done(rc: u8) -> Reply {
        Reply::Op { op: tlv(0x65, &[tlv(0x0a, &[rc]), tlv(0x04, b""), tlv(0x04, b"")].concat()), controls: vec![] }
    }

    pub fn raw(bytes: &[u8]) -> Reply {
        Reply::Raw(bytes.to_vec())
    }
}

/// What the server does after the last reply.
pub enum End {
    Close,
    KeepOpen,
}

pub struct FakeLdap {
    port: u16,
    search: Arc<Mutex<Option<Vec<u8>>>>,
    _server: JoinHandle<()>,
}

impl FakeLdap {
    pub fn start(replies: Vec<Reply>, end: End) -> FakeLdap {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local address").port();
        let search = Arc::new(Mutex::new(None));
        let seen = search.clone();
        let server = std::thread::spawn(move || {
            let Ok((mut socket, _)) = listener.accept() else { return };
            let _ = socket.set_read_timeout(Some(Duration::from_secs(30)));
            let Some(bind) = read_message(&mut socket) else { return };
            let bind_response = tlv(0x61, &[tlv(0x0a, &[0]), tlv(0x04, b""), tlv(0x04, b"")].concat());
            let _ = socket.write_all(&message(&message_id(&bind), &bind_response, &[]));
            let Some(request) = read_message(&mut socket) else { return };
            let id = message_id(&request);
            *seen.lock().unwrap() = Some(request);
            for reply in replies {
                let bytes = match reply {
                    Reply::Op { op, controls } => message(&id, &op, &controls),
                    Reply::Raw(bytes) => bytes,
                };
                if socket.write_all(&bytes).is_err() {
                    return;
                }
            }
            match end {
                End::Close => drop(socket),
                End::KeepOpen => while read_message(&mut socket).is_some() {},
            }
        });
        FakeLdap { port, search, _server: server }
    }

    pub fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    /// The search request as received (the whole LDAPMessage), once it has come.
    pub fn search_request(&self) -> Option<Vec<u8>> {
        self.search.lock().unwrap().clone()
    }
}

/// A fake directory for the whole daemon: any number of connections, each served on its own
/// thread. A bind succeeds; a search of the root DSE (empty base) answers that the Content
/// Synchronization control is supported (and no naming context, so the feed refreshes by
/// itself); any other search is answered with `replies` (the connection stays open until the
/// client closes it).
pub struct FakeDirectory {
    port: u16,
    /// Searches answered with the script so far.
    pub scripted: Arc<std::sync::atomic::AtomicUsize>,
    _server: JoinHandle<()>,
}

impl FakeDirectory {
    pub fn start(replies: Vec<Reply>) -> FakeDirectory {
        use std::sync::atomic::Ordering;
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local address").port();
        let scripted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = scripted.clone();
        let server = std::thread::spawn(move || {
            for socket in listener.incoming() {
                let Ok(mut socket) = socket else { return };
                let (replies, count) = (replies.clone(), count.clone());
                std::thread::spawn(move || {
                    let _ = socket.set_read_timeout(Some(Duration::from_secs(60)));
                    while let Some(request) = read_message(&mut socket) {
                        let id = message_id(&request);
                        match protocol_op(&request) {
                            Some((0x60, _)) => {
                                let ok = tlv(0x61, &[tlv(0x0a, &[0]), tlv(0x04, b""), tlv(0x04, b"")].concat());
                                let _ = socket.write_all(&message(&id, &ok, &[]));
                            }
                            Some((0x63, base)) if base.is_empty() => {
                                let root = tlv(
                                    0x64,
                                    &[
                                        tlv(0x04, b""),
                                        tlv(
                                            0x30,
                                            &tlv(
                                                0x30,
                                                &[
                                                    tlv(0x04, b"supportedControl"),
                                                    tlv(0x31, &tlv(0x04, sync_wire::SYNC_REQUEST_OID.as_bytes())),
                                                ]
                                                .concat(),
                                            ),
                                        ),
                                    ]
                                    .concat(),
                                );
                                let done = tlv(0x65, &[tlv(0x0a, &[0]), tlv(0x04, b""), tlv(0x04, b"")].concat());
                                let _ = socket.write_all(&[message(&id, &root, &[]), message(&id, &done, &[])].concat());
                            }
                            Some((0x63, _)) => {
                                count.fetch_add(1, Ordering::SeqCst);
                                for reply in &replies {
                                    let bytes = match reply {
                                        Reply::Op { op, controls } => message(&id, op, controls),
                                        Reply::Raw(bytes) => bytes.clone(),
                                    };
                                    let _ = socket.write_all(&bytes);
                                }
                            }
                            // Unbind, abandon: nothing to answer.
                            _ => {}
                        }
                    }
                });
            }
        });
        FakeDirectory { port, scripted, _server: server }
    }

    pub fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }
}

/// The protocolOp's tag of an LDAPMessage, and for a search its base DN.
fn protocol_op(message: &[u8]) -> Option<(u8, Vec<u8>)> {
    let (_, body) = element(message)?;
    let (id_len, _) = element(body)?;
    let op = body.get(id_len..)?;
    let tag = *op.first()?;
    if tag != 0x63 {
        return Some((tag, Vec::new()));
    }
    let (_, content) = element(op)?;
    let (_, base) = element(content)?;
    Some((tag, base.to_vec()))
}

/// The first BER element of `bytes`: its whole length and its content.
fn element(bytes: &[u8]) -> Option<(usize, &[u8])> {
    let first = *bytes.get(1)?;
    let (header, len) = if first & 0x80 == 0 {
        (2, usize::from(first))
    } else {
        let n = usize::from(first & 0x7f);
        (2 + n, bytes.get(2..2 + n)?.iter().fold(0, |acc, &d| (acc << 8) | usize::from(d)))
    };
    Some((header + len, bytes.get(header..header + len)?))
}

/// A BER element with a one-byte identifier and a definite length.
pub fn tlv(identifier: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![identifier];
    match content.len() {
        n @ 0..=0x7f => out.push(n as u8),
        n @ 0x80..=0xff => out.extend([0x81, n as u8]),
        n => out.extend([0x82, (n >> 8) as u8, n as u8]),
    }
    out.extend_from_slice(content);
    out
}

/// A Control { controlType, controlValue }.
pub fn control(oid: &str, value: &[u8]) -> Vec<u8> {
    tlv(0x30, &[tlv(0x04, oid.as_bytes()), tlv(0x04, value)].concat())
}

/// A syncStateValue: `state` 0 present, 1 add, 2 modify, 3 delete.
pub fn sync_state_value(state: u8, uuid: &[u8], cookie: Option<&[u8]>) -> Vec<u8> {
    tlv(0x30, &[tlv(0x0a, &[state]), tlv(0x04, uuid), cookie.map(|c| tlv(0x04, c)).unwrap_or_default()].concat())
}

/// LDAPMessage { messageID (encoded INTEGER content), protocolOp, [0] controls }.
fn message(id: &[u8], op: &[u8], controls: &[Vec<u8>]) -> Vec<u8> {
    let controls = if controls.is_empty() { vec![] } else { tlv(0xa0, &controls.concat()) };
    tlv(0x30, &[tlv(0x02, id), op.to_vec(), controls].concat())
}

/// The content of an LDAPMessage's messageID.
fn message_id(message: &[u8]) -> Vec<u8> {
    let skip = if message[1] & 0x80 == 0 { 2 } else { 2 + usize::from(message[1] & 0x7f) };
    let len = usize::from(message[skip + 1]);
    message[skip + 2..skip + 2 + len].to_vec()
}

/// One whole LDAPMessage, or `None` at the end of the connection.
fn read_message(socket: &mut TcpStream) -> Option<Vec<u8>> {
    let mut head = [0u8; 2];
    socket.read_exact(&mut head).ok()?;
    let mut out = head.to_vec();
    let len = if head[1] & 0x80 == 0 {
        usize::from(head[1])
    } else {
        let mut digits = vec![0u8; usize::from(head[1] & 0x7f)];
        socket.read_exact(&mut digits).ok()?;
        out.extend(&digits);
        digits.iter().fold(0, |n, &d| (n << 8) | usize::from(d))
    };
    let mut body = vec![0u8; len];
    socket.read_exact(&mut body).ok()?;
    out.extend(body);
    Some(out)
}

pub const UUID: [u8; 16] = [0, 0, 0, 0, 0, 0, 0x40, 0, 0x80, 0, 0, 0, 0, 0, 0, 0x2a];

fn sync_request() -> ldap3::controls::CriticalControl<SyncRequest> {
    SyncRequest { mode: RefreshMode::RefreshAndPersist, cookie: None, reload_hint: false }.critical()
}

#[tokio::test]
async fn fake_ldap_serves_an_entry_and_sync_messages_that_sync_wire_reads() {
    let cookie = b"rid=000,csn=20261130190000.000000Z#000000#000#000000";
    let fake = FakeLdap::start(
        vec![
            Reply::entry(
                "uid=ada,dc=example,dc=org",
                &[("uid", &[b"ada"]), ("mail", &[b"ada@example.org"])],
                &sync_state_value(1, &UUID, None),
            ),
            Reply::sync_info(&[tlv(0xa1, &tlv(0x04, cookie))].concat()),
            Reply::done(0),
        ],
        End::Close,
    );
    let (conn, mut ldap) = LdapConnAsync::new(&fake.url()).await.expect("connect");
    ldap3::drive!(conn);
    ldap.simple_bind("cn=admin,dc=example,dc=org", "secret").await.expect("bind").success().expect("bind succeeds");
    ldap.with_controls(sync_request());
    let mut stream =
        ldap.streaming_search("dc=example,dc=org", Scope::Subtree, "(objectClass=*)", vec!["*"]).await.expect("search");

    let item = stream.next().await.expect("an item").expect("an entry");
    assert!(!item.is_intermediate());
    let state = sync_wire::sync_state_of(&item.1).expect("a valid syncState");
    assert_eq!((state.state, state.uuid, state.cookie), (sync_wire::State::Add, UUID, None));
    assert_eq!(provisiond::config::SyncUuidKey::EntryUuid.key(&state.uuid), "00000000-0000-4000-8000-00000000002a");
    let entry = sync_wire::entry(item.0).expect("a valid entry");
    assert_eq!(entry.dn, "uid=ada,dc=example,dc=org");
    assert_eq!(entry.attrs["mail"], ["ada@example.org"]);

    let item = stream.next().await.expect("an item").expect("an intermediate message");
    assert!(item.is_intermediate());
    let info = sync_wire::sync_info(item.0).expect("a valid syncInfo");
    assert_eq!(info, sync_wire::SyncInfo::RefreshDelete { cookie: Some(cookie.to_vec()), done: true });

    assert!(stream.next().await.expect("the end").is_none());
    assert_eq!(stream.finish().await.rc, 0);
    // The search went out with the Sync Request control, critical.
    let request = fake.search_request().expect("a search came");
    let oid = sync_wire::SYNC_REQUEST_OID.as_bytes();
    let at = request.windows(oid.len()).position(|w| w == oid).expect("the Sync Request control");
    assert_eq!(request[at + oid.len()..at + oid.len() + 3], [0x01, 0x01, 0xff], "critical");
}

#[tokio::test]
async fn fake_ldap_a_malformed_sync_state_is_an_error_and_the_stream_goes_on() {
    let fake = FakeLdap::start(
        vec![
            Reply::entry("uid=ada,dc=example,dc=org", &[], &[0xff, 0xff]),
            Reply::entry("uid=bob,dc=example,dc=org", &[], &sync_state_value(1, &UUID[..3], None)),
            Reply::entry("uid=eve,dc=example,dc=org", &[], &sync_state_value(3, &UUID, None)),
        ],
        End::KeepOpen,
    );
    let (conn, mut ldap) = LdapConnAsync::new(&fake.url()).await.expect("connect");
    ldap3::drive!(conn);
    ldap.simple_bind("", "").await.expect("bind");
    ldap.with_controls(sync_request());
    let mut stream =
        ldap.streaming_search("dc=example,dc=org", Scope::Subtree, "(objectClass=*)", vec!["*"]).await.expect("search");
    let mut got = vec![];
    for _ in 0..3 {
        let item = stream.next().await.expect("an item").expect("an entry");
        got.push(sync_wire::sync_state_of(&item.1).map(|s| s.state).map_err(|e| e.to_string()));
    }
    assert_eq!(
        got,
        [
            Err("syncState control: syncStateValue: a tag number of more than one byte".to_string()),
            Err("syncState control: entryUUID is 3 bytes, not 16".to_string()),
            Ok(sync_wire::State::Delete),
        ]
    );
}

/// A broken envelope panics ldap3's connection driver (protocol.rs: `tags.pop().expect`), and
/// so do a control whose type is a SEQUENCE (controls_impl.rs `parse_controls`) and a search
/// reply with an unexpected protocolOp (conn.rs `unrecognized op id`). The panic prints on
/// stderr; the search stream then ends with `EndOfStream` (it does not hang), exactly as when
/// the connection is lost. Only a driver spawned by us tells the two apart: its `JoinHandle`
/// gives `JoinError::is_panic()`. `ldap3::drive!` drops the handle, so the panic is invisible.
#[tokio::test]
async fn fake_ldap_a_malformed_envelope_ends_the_stream_and_only_our_own_driver_task_shows_the_panic() {
    let broken: Vec<(&str, Vec<u8>)> = vec![
        ("an empty LDAPMessage", vec![0x30, 0x00]),
        (
            "a control whose type is a SEQUENCE",
            tlv(
                0x30,
                &[
                    tlv(0x02, &[2]),
                    tlv(0x64, &[tlv(0x04, b"cn=x"), tlv(0x30, b"")].concat()),
                    tlv(0xa0, &tlv(0x30, &tlv(0x30, b""))),
                ]
                .concat(),
            ),
        ),
        (
            "a ModifyResponse for the search",
            tlv(0x30, &[tlv(0x02, &[2]), tlv(0x67, &[tlv(0x0a, &[0]), tlv(0x04, b""), tlv(0x04, b"")].concat())].concat()),
        ),
    ];
    for (what, bytes) in broken {
        for own_task in [false, true] {
            let fake = FakeLdap::start(vec![Reply::raw(&bytes)], End::KeepOpen);
            let (conn, mut ldap) = LdapConnAsync::new(&fake.url()).await.expect("connect");
            let driver = if own_task {
                Some(tokio::spawn(conn.drive()))
            } else {
                ldap3::drive!(conn);
                None
            };
            ldap.simple_bind("", "").await.expect("bind");
            ldap.with_controls(sync_request());
            let mut stream =
                ldap.streaming_search("dc=example,dc=org", Scope::Subtree, "(objectClass=*)", vec!["*"]).await.expect("search");
            let next = tokio::time::timeout(Duration::from_secs(10), stream.next()).await.expect("no hang");
            assert!(matches!(next, Err(LdapError::EndOfStream)), "{what}, own task {own_task}: {next:?}");
            if let Some(driver) = driver {
                let ended = tokio::time::timeout(Duration::from_secs(10), driver).await.expect("the driver ends");
                assert!(ended.as_ref().is_err_and(|e| e.is_panic()), "{what}: {ended:?}");
            }
            // The connection is gone for later operations too.
            let later = tokio::time::timeout(Duration::from_secs(10), ldap.simple_bind("", "")).await.expect("no hang");
            assert!(later.is_err(), "{what}, own task {own_task}: {later:?}");
        }
    }
}
