//! A real OpenLDAP `slapd` for the tests (and the sync benchmark): its own temp dir, mdb backend,
//! the inetOrgPerson schemas plus the project's flag attribute, data loaded with `slapadd`,
//! listening on a free loopback port; killed when dropped.

#![allow(dead_code)]

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const SUFFIX: &str = "dc=example,dc=org";
pub const PEOPLE: &str = "ou=people,dc=example,dc=org";
pub const ADMIN_DN: &str = "cn=admin,dc=example,dc=org";
pub const ADMIN_PASSWORD: &str = "admin-secret";
/// A bind account that may read everything and write nothing.
pub const READER_DN: &str = "cn=reader,ou=system,dc=example,dc=org";
pub const READER_PASSWORD: &str = "reader-secret";
/// Where the tests' groups live (`nis.schema` is loaded for posixGroup; the `refint` overlay
/// keeps `member` and `uniqueMember` values in step with renames, and `memberof` keeps the users'
/// `memberOf` for groups added online, as OpenLDAP set-ups with groups do).
pub const GROUPS: &str = "ou=groups,dc=example,dc=org";
/// The project's own schema: the MFA reset flag an LDAP admin sets.
pub const FLAG_ATTRIBUTE: &str = "mfaResetRequested";

const SCHEMA: &str = "\
attributetype ( 1.3.6.1.4.1.99999.42.1.1 NAME 'mfaResetRequested'
    DESC 'provisiond: reset the second factor of this user at the next sync'
    EQUALITY booleanMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.7 SINGLE-VALUE )
objectclass ( 1.3.6.1.4.1.99999.42.2.1 NAME 'provisiondUser' SUP top AUXILIARY
    MAY ( mfaResetRequested ) )
";

fn tool(name: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/sbin", "/bin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("{name} is not installed: run `sudo apt-get install -y slapd ldap-utils` (tests/run-all.sh does it when run as root)");
}

/// Whether slapd offers the change feed, and how it tells of deletions on resumption.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feed {
    /// No syncprov overlay.
    None,
    /// syncprov without a session log: a resumed feed has a present phase (entries not named
    /// are gone).
    Present,
    /// syncprov with a session log: a resumed feed lists the deleted entries.
    SessionLog,
}

pub struct Slapd {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub url: String,
    child: Option<Child>,
}

impl Slapd {
    /// Starts a directory holding the base entries and `people` (LDIF of user entries).
    pub fn start(people: &str) -> Self {
        Self::start_with(people, Feed::None)
    }

    /// The same, with the content synchronization provider (RFC 4533) the change feed reads.
    pub fn start_syncprov(people: &str, feed: Feed) -> Self {
        Self::start_with(people, feed)
    }

    fn start_with(people: &str, feed: Feed) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path();
        std::fs::create_dir(d.join("db")).unwrap();
        std::fs::write(d.join("provisiond.schema"), SCHEMA).unwrap();
        let conf = format!(
            "include /etc/ldap/schema/core.schema\n\
             include /etc/ldap/schema/cosine.schema\n\
             include /etc/ldap/schema/inetorgperson.schema\n\
             include /etc/ldap/schema/nis.schema\n\
             include {dir}/provisiond.schema\n\
             pidfile {dir}/slapd.pid\n\
             modulepath /usr/lib/ldap\n\
             moduleload back_mdb\n\
             moduleload refint\n\
             moduleload memberof\n\
             {module}\
             sizelimit unlimited\n\
             database mdb\n\
             maxsize 4294967296\n\
             suffix \"{SUFFIX}\"\n\
             rootdn \"{ADMIN_DN}\"\n\
             rootpw {ADMIN_PASSWORD}\n\
             directory {dir}/db\n\
             index objectClass eq\n\
             index entryUUID eq\n\
             index uid eq\n\
             index modifyTimestamp eq\n\
             {index}\
             access to attrs=userPassword by anonymous auth by * none\n\
             access to * by dn.exact=\"{READER_DN}\" read by * none\n\
             overlay memberof\n\
             overlay refint\n\
             refint_attributes member uniqueMember\n\
             refint_nothing \"cn=nobody\"\n\
             {overlay}",
            dir = d.display(),
            module = if feed == Feed::None { "" } else { "moduleload syncprov\n" },
            index = if feed == Feed::None { "" } else { "index entryCSN eq\n" },
            overlay = match feed {
                Feed::None => String::new(),
                // contextCSN written at once, so that a killed slapd keeps its place in history.
                Feed::Present => "overlay syncprov\nsyncprov-checkpoint 1 1\n".into(),
                Feed::SessionLog => "overlay syncprov\nsyncprov-checkpoint 1 1\nsyncprov-sessionlog 1000\n".into(),
            },
        );
        std::fs::write(d.join("slapd.conf"), conf).unwrap();
        let ldif = format!("{}{people}", base_ldif());
        let path = d.join("data.ldif");
        std::fs::write(&path, ldif).unwrap();
        let out = Command::new(tool("slapadd"))
            .args(if feed == Feed::None { ["-q", "-f"].as_slice() } else { ["-q", "-w", "-f"].as_slice() })
            .arg(d.join("slapd.conf"))
            .arg("-l")
            .arg(&path)
            .output()
            .expect("slapadd runs");
        assert!(out.status.success(), "slapadd failed: {}", String::from_utf8_lossy(&out.stderr));
        let port = free_port();
        let mut slapd = Slapd { url: format!("ldap://127.0.0.1:{port}"), dir, port, child: None };
        slapd.restart();
        slapd
    }

    /// Starts (again) on the same port and data.
    pub fn restart(&mut self) {
        let d = self.dir.path();
        let child = Command::new(tool("slapd"))
            .arg("-f")
            .arg(d.join("slapd.conf"))
            .args(["-h", &format!("ldap://127.0.0.1:{}/", self.port), "-d", "0"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("slapd starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("slapd exited at start ({status}); config in {}", d.display());
            }
            assert!(Instant::now() < deadline, "slapd did not listen on port {}", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills slapd at once (SIGKILL), as a crash or a pulled cable would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Applies LDIF changes (changetype records) as the admin, with `ldapmodify`.
    pub fn modify(&self, ldif: &str) {
        self.modify_as(ADMIN_DN, ADMIN_PASSWORD, ldif).expect("ldapmodify");
    }

    pub fn modify_as(&self, dn: &str, password: &str, ldif: &str) -> Result<(), String> {
        let mut child = Command::new(tool("ldapmodify"))
            .args(["-x", "-H", &self.url, "-D", dn, "-w", password])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ldapmodify runs");
        child.stdin.take().unwrap().write_all(ldif.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// `ldapsearch -LLL` output for `filter` under the suffix, as the admin.
    pub fn search(&self, filter: &str, attrs: &[&str]) -> String {
        let out = Command::new(tool("ldapsearch"))
            .args([
                "-x",
                "-LLL",
                "-o",
                "ldif-wrap=no",
                "-H",
                &self.url,
                "-D",
                ADMIN_DN,
                "-w",
                ADMIN_PASSWORD,
                "-b",
                SUFFIX,
                filter,
            ])
            .args(attrs)
            .output()
            .expect("ldapsearch runs");
        assert!(out.status.success(), "ldapsearch failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    /// The benchmarks' baseline, the directory's own speed: `ldapsearch -E pr=500/noprompt` of
    /// every user entry with the attributes the default mapping reads, output discarded; checks
    /// that all `users` came.
    pub fn timed_paged_search(&self, users: usize) -> Duration {
        let t = Instant::now();
        let out = Command::new(tool("ldapsearch"))
            .args(["-x", "-LLL", "-E", "pr=500/noprompt", "-H", &self.url, "-D", ADMIN_DN, "-w", ADMIN_PASSWORD, "-b", PEOPLE])
            .arg("(objectClass=inetOrgPerson)")
            .args(["uid", "givenName", "sn", "cn", "mail", "entryUUID", "modifyTimestamp", FLAG_ATTRIBUTE])
            .stdout(Stdio::piped())
            .output()
            .expect("ldapsearch runs");
        let elapsed = t.elapsed();
        assert!(out.status.success(), "ldapsearch failed: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(out.stdout.windows(4).filter(|w| w == b"dn: ").count(), users, "ldapsearch returned every entry");
        elapsed
    }

    /// An `[ldap]` section for this directory, bound as the admin, flags configured.
    pub fn config(&self) -> provisiond::config::Ldap {
        provisiond::config::Ldap {
            url: self.url.clone(),
            bind_dn: Some(ADMIN_DN.into()),
            bind_password: Some(provisiond::config::Secret::new(ADMIN_PASSWORD)),
            base_dn: PEOPLE.into(),
            timeout: 10,
            schedule: provisiond::config::Schedule::disabled(),
            full_schedule: provisiond::config::Schedule::disabled(),
            mfa_reset: Some(provisiond::config::LdapMfaReset {
                attribute: FLAG_ATTRIBUTE.into(),
                value: "TRUE".into(),
                clear: true,
            }),
            ..Default::default()
        }
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn base_ldif() -> String {
    format!(
        "dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example\n\n\
         dn: {PEOPLE}\nobjectClass: organizationalUnit\nou: people\n\n\
         dn: ou=system,{SUFFIX}\nobjectClass: organizationalUnit\nou: system\n\n\
         dn: {READER_DN}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\ncn: reader\nuserPassword: {READER_PASSWORD}\n\n\
         dn: ou=groups,{SUFFIX}\nobjectClass: organizationalUnit\nou: groups\n\n"
    )
}

/// The entry of user `i`: `uid=user{i}`, a fixed entryUUID, and an old modifyTimestamp (user `i`
/// changed `i` hours after 2000-01-01) so that only what a test changes, and the newest entry,
/// are at or after the first sync's high-water mark.
pub fn person(i: usize) -> String {
    let mut s = String::new();
    write!(
        s,
        "dn: uid=user{i},{PEOPLE}\nobjectClass: inetOrgPerson\nobjectClass: provisiondUser\nuid: user{i}\n\
         cn: User {i}\ngivenName: Given{i}\nsn: Family{i}\nmail: user{i}@example.org\nemployeeNumber: {i}\n\
         entryUUID: {}\ncreateTimestamp: {t}\nmodifyTimestamp: {t}\n\n",
        uuid_of(i),
        t = (chrono::NaiveDate::from_ymd_opt(2000, 1, 1).unwrap().and_hms_opt(0, 0, 0).unwrap()
            + chrono::Duration::hours(i as i64))
        .format("%Y%m%d%H%M%SZ")
    )
    .unwrap();
    s
}

pub fn people(range: std::ops::Range<usize>) -> String {
    range.map(person).collect()
}

/// The entryUUID given to user `i`.
pub fn uuid_of(i: usize) -> String {
    format!("00000000-0000-4000-8000-{i:012}")
}

/// LDAP protocol operation tags (RFC 4511), as [`Stall::hold`] rules look at them.
pub const SEARCH_REQUEST: u8 = 0x63;
pub const MODIFY_REQUEST: u8 = 0x66;

/// A TCP relay in front of slapd that can stall the directory at one operation: from the first
/// client request a rule picks, that request and everything after it on its connection is held
/// (not forwarded: the server stays silent, as a hung or overloaded one does) until
/// [`Stall::release`]. Answers to requests forwarded earlier still flow. Everything else is
/// passed through unchanged to the real slapd.
pub struct Stall {
    pub url: String,
    state: std::sync::Arc<StallState>,
}

type Rule = Box<dyn FnMut(&[u8]) -> bool + Send>;

#[derive(Default)]
struct StallState {
    rule: std::sync::Mutex<Option<Rule>>,
    /// Requests held now.
    held: std::sync::atomic::AtomicUsize,
    /// Bumped by `release` (forward what is held) and at drop (discard it).
    generation: std::sync::Mutex<(u64, bool)>,
    wake: std::sync::Condvar,
}

impl Stall {
    pub fn start(slapd: &Slapd) -> Stall {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("ldap://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let state = std::sync::Arc::new(StallState::default());
        let (target, shared) = (slapd.port, state.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if shared.generation.lock().unwrap().1 {
                    return;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else { continue };
                let (mut from_server, mut to_client) = (server.try_clone().unwrap(), client.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from_server, &mut to_client);
                    let _ = to_client.shutdown(std::net::Shutdown::Both);
                });
                let shared = shared.clone();
                std::thread::spawn(move || relay_requests(client, server, &shared));
            }
        });
        Stall { url, state }
    }

    /// Holds, from now on, the first request for which `rule` (given each whole LDAP message)
    /// says true, and all that follow it on its connection.
    pub fn hold(&self, rule: impl FnMut(&[u8]) -> bool + Send + 'static) {
        *self.state.rule.lock().unwrap() = Some(Box::new(rule));
    }

    /// Whether a request is being held now.
    pub fn holding(&self) -> bool {
        self.state.held.load(std::sync::atomic::Ordering::SeqCst) > 0
    }

    /// Waits (up to a minute) until a request is held.
    pub fn wait_until_holding(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.holding() {
            assert!(Instant::now() < deadline, "no request was held");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Holds nothing more from now on; what is held stays held (never reaches the server).
    pub fn stop_holding(&self) {
        *self.state.rule.lock().unwrap() = None;
    }

    /// Forwards what is held (the server then answers it, late) and holds nothing more.
    pub fn release(&self) {
        *self.state.rule.lock().unwrap() = None;
        self.state.generation.lock().unwrap().0 += 1;
        self.state.wake.notify_all();
    }
}

impl Drop for Stall {
    fn drop(&mut self) {
        self.state.generation.lock().unwrap().1 = true;
        self.state.wake.notify_all();
        if let Some(port) = self.url.rsplit(':').next().and_then(|p| p.parse::<u16>().ok()) {
            let _ = TcpStream::connect(("127.0.0.1", port));
        }
    }
}

/// Client to server, one whole LDAP message at a time, holding per the rule.
fn relay_requests(mut client: TcpStream, mut server: TcpStream, state: &StallState) {
    use std::sync::atomic::Ordering;
    let mut holding = false;
    while let Some(message) = read_message(&mut client) {
        if !holding {
            holding = state.rule.lock().unwrap().as_mut().is_some_and(|rule| rule(&message));
        }
        if holding {
            state.held.fetch_add(1, Ordering::SeqCst);
            let mut g = state.generation.lock().unwrap();
            let at = g.0;
            while g.0 == at && !g.1 {
                g = state.wake.wait(g).unwrap();
            }
            let discard = g.1;
            drop(g);
            state.held.fetch_sub(1, Ordering::SeqCst);
            holding = false;
            if discard {
                break;
            }
        }
        if server.write_all(&message).is_err() {
            break;
        }
    }
    let _ = server.shutdown(std::net::Shutdown::Both);
    let _ = client.shutdown(std::net::Shutdown::Both);
}

/// One BER-encoded LDAP message (SEQUENCE, definite length), or None at the end.
fn read_message(r: &mut impl std::io::Read) -> Option<Vec<u8>> {
    let mut head = [0u8; 2];
    r.read_exact(&mut head).ok()?;
    let mut message = head.to_vec();
    let len = if head[1] & 0x80 == 0 {
        head[1] as usize
    } else {
        let n = (head[1] & 0x7f) as usize;
        let mut bytes = vec![0u8; n];
        r.read_exact(&mut bytes).ok()?;
        message.extend(&bytes);
        bytes.iter().fold(0usize, |acc, b| (acc << 8) | *b as usize)
    };
    let start = message.len();
    message.resize(start + len, 0);
    r.read_exact(&mut message[start..]).ok()?;
    Some(message)
}

/// The protocol operation tag of an LDAP message (after its messageID).
pub fn operation(message: &[u8]) -> u8 {
    let skip_len = |at: usize| if message[at] & 0x80 == 0 { at + 1 } else { at + 1 + (message[at] & 0x7f) as usize };
    let id = skip_len(1); // the messageID's INTEGER tag
    let id_len = message[id + 1] as usize;
    message.get(id + 2 + id_len).copied().unwrap_or(0)
}

/// Whether `needle` occurs in `message` (a key or value in a request).
pub fn mentions(message: &[u8], needle: &str) -> bool {
    message.windows(needle.len()).any(|w| w == needle.as_bytes())
}
