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

pub struct Slapd {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub url: String,
    child: Option<Child>,
}

impl Slapd {
    /// Starts a directory holding the base entries and `people` (LDIF of user entries).
    pub fn start(people: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path();
        std::fs::create_dir(d.join("db")).unwrap();
        std::fs::write(d.join("provisiond.schema"), SCHEMA).unwrap();
        let conf = format!(
            "include /etc/ldap/schema/core.schema\n\
             include /etc/ldap/schema/cosine.schema\n\
             include /etc/ldap/schema/inetorgperson.schema\n\
             include {dir}/provisiond.schema\n\
             pidfile {dir}/slapd.pid\n\
             modulepath /usr/lib/ldap\n\
             moduleload back_mdb\n\
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
             access to attrs=userPassword by anonymous auth by * none\n\
             access to * by dn.exact=\"{READER_DN}\" read by * none\n",
            dir = d.display()
        );
        std::fs::write(d.join("slapd.conf"), conf).unwrap();
        let ldif = format!("{}{people}", base_ldif());
        let path = d.join("data.ldif");
        std::fs::write(&path, ldif).unwrap();
        let out = Command::new(tool("slapadd"))
            .args(["-q", "-f"])
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
            .args(["-x", "-LLL", "-o", "ldif-wrap=no", "-H", &self.url, "-D", ADMIN_DN, "-w", ADMIN_PASSWORD, "-b", SUFFIX, filter])
            .args(attrs)
            .output()
            .expect("ldapsearch runs");
        assert!(out.status.success(), "ldapsearch failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    /// An `[ldap]` section for this directory, bound as the admin, flags configured.
    pub fn config(&self) -> provisiond::config::Ldap {
        let mut c = provisiond::config::Ldap::default();
        c.url = self.url.clone();
        c.bind_dn = Some(ADMIN_DN.into());
        c.bind_password = Some(provisiond::config::Secret::new(ADMIN_PASSWORD));
        c.base_dn = PEOPLE.into();
        c.timeout = 10;
        c.schedule = String::new();
        c.full_schedule = String::new();
        c.mfa_reset = Some(provisiond::config::LdapMfaReset { attribute: FLAG_ATTRIBUTE.into(), value: "TRUE".into(), clear: true });
        c
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
        t = (chrono::NaiveDate::from_ymd_opt(2000, 1, 1).unwrap().and_hms_opt(0, 0, 0).unwrap() + chrono::Duration::hours(i as i64))
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
