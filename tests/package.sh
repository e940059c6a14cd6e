#!/usr/bin/env bash
# The Debian package (`cargo deb`, [package.metadata.deb] in Cargo.toml), as an admin meets it:
# built from the debug build (no release build: fat LTO takes minutes), checked by lintian
# (errors fail, warnings are printed), installed with dpkg -i, looked at (binary, conffile, user,
# man page, completions, postinst's advice, systemd-analyze verify of the installed unit),
# installed again with an MFA key, removed (data kept) and purged (data deleted).
#
# As root on Debian/Ubuntu (it installs lintian and cargo-deb when missing). It refuses to run
# where provisiond is already installed, packaged or by hand, and leaves the machine as it found
# it, on failure too. Last line: `package: ok (<deb>, lintian: N warnings)`.
set -euo pipefail

# CARGO_TARGET_DIR is relative to where the script was started.
target=${CARGO_TARGET_DIR:-}
if [ -n "$target" ] && [ "${target#/}" = "$target" ]; then
    target=$PWD/$target
fi
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${target:-$PWD/target}
target=$CARGO_TARGET_DIR

say() { echo "package: $*"; }
fail() {
    echo "package: FAIL: $*" >&2
    exit 1
}

UNIT=/usr/lib/systemd/system/provisiond.service
CONF=/etc/provisiond/provisiond.toml
KEY=/etc/provisiond/credentials/mfa.key
WANTS=/etc/systemd/system/multi-user.target.wants/provisiond.service

[ "$(id -u)" -eq 0 ] || fail "run as root (it installs the package with dpkg -i): sudo $0"
command -v dpkg >/dev/null || fail "dpkg not found: this test needs Debian or Ubuntu"

# Never touch a real installation: the purge at the end deletes /etc/provisiond (the MFA key).
if dpkg-query -W -f='${Status}' provisiond 2>/dev/null | grep -qv 'not-installed'; then
    fail "the provisiond package is installed here (dpkg -l provisiond): this test would purge it"
fi
for path in /usr/bin/provisiond /etc/provisiond /var/lib/provisiond /etc/systemd/system/provisiond.service; do
    [ ! -e "$path" ] || fail "$path exists (provisiond installed by hand?): this test would overwrite or delete it"
done
user_existed=no
if getent passwd provisiond >/dev/null; then
    user_existed=yes
fi

# Tools: lintian, systemd-analyze, strip (cargo-deb strips the binary) from apt; cargo-deb from
# crates.io.
missing=()
command -v lintian >/dev/null || missing+=(lintian)
command -v systemd-analyze >/dev/null || missing+=(systemd)
command -v strip >/dev/null || missing+=(binutils)
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null; } ||
        fail "could not install ${missing[*]}: run apt-get update && apt-get install -y ${missing[*]}"
fi
if ! cargo deb --version >/dev/null 2>&1; then
    say "installing cargo-deb (cargo install --locked cargo-deb, ~3 minutes)"
    cargo install --locked cargo-deb --version '^3.8' ||
        fail "could not install cargo-deb: run cargo install --locked cargo-deb"
fi

work=$(mktemp -d)
installed=no
# cargo-deb gets a target directory of its own: it deletes the provisiond .debs it finds in
# <target>/debian/, which is where `cargo deb` puts the release package.
pkgtarget=$target/deb-check
stage=$pkgtarget/deb-check
cleanup() {
    local status=$?
    if [ "$installed" = yes ]; then
        echo "package: cleaning up: dpkg --purge provisiond" >&2
        dpkg --purge provisiond >/dev/null 2>&1 || echo "package: dpkg --purge provisiond failed" >&2
    fi
    if [ "$user_existed" = no ] && getent passwd provisiond >/dev/null; then
        userdel provisiond >/dev/null 2>&1 || echo "package: could not delete the provisiond user" >&2
        # sysusers/adduser --group made a group of the same name.
        ! getent group provisiond >/dev/null || groupdel provisiond >/dev/null 2>&1 || true
    fi
    # The staged copy of the debug build (a hard link that would keep an old 400 MB binary once
    # cargo builds again), and the stripped binary cargo-deb leaves in its temporary directory.
    rm -rf "$work" "$stage" "$pkgtarget/provisiond"
    exit "$status"
}
trap cleanup EXIT

# The debug build, and build.rs's assets (man pages, completions, the package's config).
# cargo-deb deprecates the `dev` profile: it packages [profile.deb-check] (inherits dev),
# whose directory (in cargo-deb's target directory) gets the debug build's files; nothing is
# compiled for it.
say "cargo build (debug)"
cargo build --locked --bin provisiond --quiet || fail "cargo build --locked failed"
[ -x "$target/debug/provisiond" ] && [ -f "$target/debug/assets/provisiond.toml" ] ||
    fail "$target/debug/provisiond or its assets/ are missing after cargo build"
rm -rf "$stage"
mkdir -p "$stage"
# A hard link, not a 400 MB copy (cargo-deb strips into a file of its own).
ln -f "$target/debug/provisiond" "$stage/provisiond" 2>/dev/null || cp -f "$target/debug/provisiond" "$stage/provisiond"
cp -r "$target/debug/assets" "$stage/assets"

# --strip: a dev build has full debug info (the release package puts its line tables into a
# -dbgsym.ddeb instead, which takes minutes for a debug build); --fast: lighter xz.
say "cargo deb --profile deb-check --no-build"
out=$(CARGO_TARGET_DIR=$pkgtarget cargo deb --profile deb-check --no-build --no-dbgsym --strip --fast \
    2>"$work/cargo-deb.err") || {
    cat "$work/cargo-deb.err" >&2
    fail "cargo deb failed"
}
[ ! -s "$work/cargo-deb.err" ] || sed 's/^/  cargo-deb: /' "$work/cargo-deb.err"
deb=$(printf '%s\n' "$out" | tail -n 1)
[ -f "$deb" ] || fail "cargo deb did not say where the package is: $out"
say "built $deb ($(du -h "$deb" | cut -f1))"
# cargo-deb packages systemd/deb/changelog as it is: its first entry must be this version.
deb_version=$(dpkg-deb -f "$deb" Version)
head -n 1 systemd/deb/changelog | grep -qF "provisiond ($deb_version)" ||
    fail "systemd/deb/changelog does not start with an entry for $deb_version: add one"

# What the package holds (independent of dpkg path-exclude settings on this machine).
dpkg-deb -c "$deb" >"$work/contents"
for path in ./usr/bin/provisiond "$UNIT" ./usr/lib/sysusers.d/provisiond.conf ./usr/lib/tmpfiles.d/provisiond.conf \
    ./usr/share/man/man1/provisiond.1.gz ./usr/share/man/man1/provisiond-token-create.1.gz \
    ./usr/share/bash-completion/completions/provisiond ./usr/share/zsh/vendor-completions/_provisiond \
    ./usr/share/fish/vendor_completions.d/provisiond.fish ./usr/share/doc/provisiond/copyright; do
    grep -q " \.\?${path#.}\$" "$work/contents" || fail "the package lacks $path"
done
grep -q '^-rw-r----- 0/0 .* \./etc/provisiond/provisiond\.toml$' "$work/contents" ||
    fail "etc/provisiond/provisiond.toml is not 0640 in the package"
dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles | grep -qx "$CONF" || fail "$CONF is not a conffile"
dpkg-deb --fsys-tarfile "$deb" | tar -xO ./usr/bin/provisiond >"$work/provisiond"
if readelf -S "$work/provisiond" | grep -q '\.debug_info'; then
    fail "/usr/bin/provisiond in the package is not stripped"
fi

# lintian: errors fail, warnings are shown. (It says that running as root is not recommended.)
say "lintian"
lintian_status=0
lintian --fail-on error --tag-display-limit 0 "$deb" >"$work/lintian" 2>"$work/lintian.err" || lintian_status=$?
grep -v 'running with root privileges is not recommended' "$work/lintian.err" >&2 || true
sed 's/^/  lintian: /' "$work/lintian"
[ "$lintian_status" -eq 0 ] || fail "lintian found errors (above): lintian --info $deb explains them"
warnings=$(grep -c '^W: ' "$work/lintian" || true)

# Install. No MFA key yet: postinst must say how to make one and not start the service.
say "dpkg -i"
installed=yes
dpkg -i "$deb" >"$work/install" 2>&1 || {
    cat "$work/install" >&2
    fail "dpkg -i failed"
}
sed 's/^/  dpkg: /' "$work/install"
for advice in "head -c 32 /dev/urandom > $KEY" "systemctl enable --now provisiond" \
    "provisiond --config $CONF token create --name admin --scope admin"; do
    grep -qF -- "$advice" "$work/install" || fail "postinst did not say: $advice"
done
[ ! -e "$WANTS" ] || fail "postinst enabled the service without an MFA key"

# What an admin notices.
version=$(/usr/bin/provisiond --version) || fail "/usr/bin/provisiond --version failed"
for word in provisiond commit backends; do
    grep -q "$word" <<<"$version" || fail "provisiond --version does not name '$word': $version"
done
say "$(head -n 1 <<<"$version")"
getent passwd provisiond >/dev/null || fail "postinst did not create the provisiond user"
[ "$(getent passwd provisiond | cut -d: -f6)" = /var/lib/provisiond ] || fail "provisiond's home is not /var/lib/provisiond"
[ -f "$CONF" ] || fail "$CONF was not installed"
[ "$(stat -c '%U:%G %a' "$CONF")" = "root:provisiond 640" ] ||
    fail "$CONF is $(stat -c '%U:%G %a' "$CONF"), not root:provisiond 640"
grep -q '^url = "sqlite:///var/lib/provisiond/provisiond.db"' "$CONF" || fail "$CONF does not name /var/lib/provisiond/provisiond.db"
[ "$(stat -c '%U:%G %a' /etc/provisiond)" = "root:provisiond 750" ] ||
    fail "/etc/provisiond is $(stat -c '%U:%G %a' /etc/provisiond), not root:provisiond 750"
[ "$(stat -c '%U:%G %a' /etc/provisiond/credentials)" = "root:root 700" ] ||
    fail "/etc/provisiond/credentials is $(stat -c '%U:%G %a' /etc/provisiond/credentials 2>&1), not root:root 700"
[ "$(stat -c '%U:%G %a' /var/lib/provisiond)" = "provisiond:provisiond 700" ] ||
    fail "/var/lib/provisiond is $(stat -c '%U:%G %a' /var/lib/provisiond 2>&1), not provisiond:provisiond 700"
# The configuration as shipped passes check-config, run as the service's user (with a key).
umask_was=$(umask)
umask 077
head -c 32 /dev/urandom >"$work/mfa-key"
umask "$umask_was"
chown provisiond "$work/mfa-key"
chmod 755 "$work"
(cd /var/lib/provisiond && runuser -u provisiond -- env CREDENTIALS_DIRECTORY="$work" \
    /usr/bin/provisiond --config "$CONF" check-config) >"$work/check" 2>&1 || {
    cat "$work/check" >&2
    fail "provisiond --config $CONF check-config failed as the provisiond user"
}
rm -f "$work/mfa-key"
# dpkg may be told not to install documentation (path-exclude in /etc/dpkg/dpkg.cfg.d/).
if grep -qs '^path-exclude=/usr/share/man' /etc/dpkg/dpkg.cfg.d/*; then
    say "dpkg excludes /usr/share/man here: the man page was checked in the package only"
elif command -v man >/dev/null; then
    page=$(man -w provisiond 2>/dev/null) || fail "man -w provisiond finds no page"
    [ "$page" = /usr/share/man/man1/provisiond.1.gz ] || fail "man -w provisiond: $page"
    man -w provisiond-token-create >/dev/null 2>&1 || fail "man -w provisiond-token-create finds no page"
else
    [ -f /usr/share/man/man1/provisiond.1.gz ] || fail "/usr/share/man/man1/provisiond.1.gz was not installed"
fi
for completion in /usr/share/bash-completion/completions/provisiond /usr/share/zsh/vendor-completions/_provisiond \
    /usr/share/fish/vendor_completions.d/provisiond.fish; do
    [ -s "$completion" ] || fail "$completion was not installed"
done
bash -n /usr/share/bash-completion/completions/provisiond || fail "the bash completion does not parse"

# The installed unit. Complaints about the host (no systemd running in a container) are not
# about the unit: as in tests/api/systemd.rs.
[ -f "$UNIT" ] || fail "$UNIT was not installed"
systemd-analyze verify "$UNIT" >"$work/verify" 2>&1 || {
    cat "$work/verify" >&2
    fail "systemd-analyze verify $UNIT failed"
}
if grep -v 'sysinit.target' "$work/verify" | grep -q '[^[:space:]]'; then
    cat "$work/verify" >&2
    fail "systemd-analyze verify $UNIT has something to say about the unit"
fi

# Remove: configuration, credentials and database stay.
say "dpkg -r"
echo "keep me" >/var/lib/provisiond/provisiond.db
dpkg -r provisiond >"$work/remove" 2>&1 || {
    cat "$work/remove" >&2
    fail "dpkg -r provisiond failed"
}
sed 's/^/  dpkg: /' "$work/remove"
grep -qF "kept until the package is purged" "$work/remove" || fail "postrm did not say what removal keeps"
[ ! -e /usr/bin/provisiond ] || fail "dpkg -r left /usr/bin/provisiond"
[ -f "$CONF" ] || fail "dpkg -r deleted $CONF"
[ -f /var/lib/provisiond/provisiond.db ] || fail "dpkg -r deleted /var/lib/provisiond/provisiond.db"

# Install again, now with an MFA key: postinst enables the service (it would start it, were
# systemd running) and has nothing to advise.
say "dpkg -i with an MFA key"
sh -c "umask 077; head -c 32 /dev/urandom > $KEY"
dpkg -i "$deb" >"$work/reinstall" 2>&1 || {
    cat "$work/reinstall" >&2
    fail "dpkg -i (again, with a key) failed"
}
sed 's/^/  dpkg: /' "$work/reinstall"
! grep -qF "head -c 32" "$work/reinstall" || fail "postinst asked for an MFA key that exists"
[ -L "$WANTS" ] || fail "postinst did not enable the service once the MFA key existed ($WANTS)"
[ "$(cat /var/lib/provisiond/provisiond.db)" = "keep me" ] || fail "reinstalling changed the database"

# An upgrade (the same version again): the admin's edit of the conffile stays, and so do its
# owner and mode.
say "dpkg -i over the installed package (an upgrade)"
echo "# edited by the admin" >>"$CONF"
dpkg -i "$deb" >"$work/upgrade" 2>&1 || {
    cat "$work/upgrade" >&2
    fail "dpkg -i over the installed package failed"
}
sed 's/^/  dpkg: /' "$work/upgrade"
grep -qx "# edited by the admin" "$CONF" || fail "the upgrade replaced the admin's $CONF"
[ "$(stat -c '%U:%G %a' "$CONF")" = "root:provisiond 640" ] ||
    fail "after the upgrade $CONF is $(stat -c '%U:%G %a' "$CONF"), not root:provisiond 640"

# Purge: says what it deletes, and deletes it; the user stays.
say "dpkg -P"
dpkg -P provisiond >"$work/purge" 2>&1 || {
    cat "$work/purge" >&2
    fail "dpkg -P provisiond failed"
}
installed=no
sed 's/^/  dpkg: /' "$work/purge"
for said in "purge deletes /etc/provisiond" "including the MFA key" "purge deletes /var/lib/provisiond" \
    "database" "user is kept"; do
    grep -qF "$said" "$work/purge" || fail "purge did not say: $said"
done
for path in /etc/provisiond /var/lib/provisiond /usr/bin/provisiond "$UNIT" "$WANTS"; do
    [ ! -e "$path" ] && [ ! -L "$path" ] || fail "dpkg -P left $path"
done
getent passwd provisiond >/dev/null || fail "purge deleted the provisiond user (Debian keeps system users)"

say "ok ($(basename "$deb"), lintian: $warnings warnings)"
