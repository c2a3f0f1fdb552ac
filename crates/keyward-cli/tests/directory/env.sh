# shellcheck shell=bash
# A real directory for tests: an OpenLDAP slapd and an sssd (ldap id/auth/chpass providers,
# cached credentials), private to the calling mount namespace.
#
# Source this from a bash script that already runs inside `unshare --mount` and has done
#   cp -a /etc "$T/etc-work"; mount --bind "$T/etc-work" /etc
# ($T: the test's directory). Everything this creates lives under "$T/dir" (DIR_D), except what
# it writes into the namespace's /etc (sssd.conf, nsswitch.conf, ldap.conf, pam.d/common-*) and
# what it mounts over /var/lib/sss, /var/log/sssd, /run, /usr/share/pam-configs, /var/lib/pam and
# /var/cache/debconf, all only in this namespace. The host is never touched.
#
# Functions:
#   dir_start                 slapd + directory data + sssd, namespace NSS; waits for `getent`
#   dir_pam_update [PROFILE_FILE...]
#                             /etc/pam.d/common-* as pam-auth-update makes them once libpam-sss
#                             (and libpam-pwquality, which it depends on) is installed, plus the
#                             given pam-auth-update profiles (enabled if `Default: yes`); names in
#                             DIR_PAM_SKIP (e.g. "pwquality") stay off
#   dir_stop_slapd            stop slapd (sssd goes offline on its next request)
#   dir_start_slapd           start it again, same port and data; has sssd go online and waits
#                             until it is (dir_wait_online)
#   dir_wait_online           wait until sssd's lookups reach slapd (not its cache), up to 20 s
#   dir_stop                  stop sssd and slapd, and wait for them (safe to call twice)
#   dir_reset_password USER NEWPASS   an admin reset (ldappasswd as the rootdn)
#   dir_remove_member USER    delete `memberUid: USER` from the kwdir group
#   dir_delete_user USER      delete USER's entry from the directory
#   dir_start_sssd            start sssd again after dir_stop (its cache kept); then dir_start_slapd
#   dir_flush_cache           expire everything sssd has cached (sss_cache -E)
#   dir_user_dn USER          prints uid=USER,ou=people,dc=example,dc=test
#   dir_wait CMD...           run CMD until it succeeds, up to 30 s
#
# Variables (set when this file is sourced):
#   DIR_USERS=(dave erin frank gail hugo)   DIR_UID_<user>   DIR_PW_<user>
#   DIR_GROUP=kwdir DIR_GID=250000 (members dave erin gail hugo; not frank)
#   DIR_PRIMARY_GROUP=dirusers DIR_PRIMARY_GID=250001 (every user's primary group, no members)
#   DIR_BASE DIR_PEOPLE DIR_GROUPS DIR_ADMIN_DN DIR_ADMIN_PW DIR_DOMAIN=example DIR_D
# and by dir_start: DIR_PORT DIR_URI (ldap://127.0.0.1:PORT/; exported). The others are plain
# shell variables: pass them as arguments to a `bash -c`.
# Logs: $DIR_D/slapd.log, $DIR_D/sssd.out, $DIR_D/sssd-log/*.log (sssd's own files).
#
# Every process started is listed in "$T/dir.pids" (one PID a line, sssd's children too), so a
# caller can kill what a script that died early left behind. A script should `trap dir_stop EXIT`
# (or call dir_stop from its own EXIT trap).

: "${T:?T must be the test directory}"

DIR_D="$T/dir"
DIR_DOMAIN=example
DIR_BASE="dc=example,dc=test"
DIR_PEOPLE="ou=people,$DIR_BASE"
DIR_GROUPS="ou=groups,$DIR_BASE"
DIR_ADMIN_DN="cn=admin,$DIR_BASE"
DIR_ADMIN_PW='Slate admin key 4c1e'
DIR_USERS=(dave erin frank gail hugo)
DIR_UID_dave=200001
DIR_UID_erin=200002
DIR_UID_frank=200003
DIR_UID_gail=900
DIR_UID_hugo=3000000000
# Good enough for pam_pwquality (no user name in them), should a test set one as a new password.
DIR_PW_dave='Copper kettle 7Qx'
DIR_PW_erin='Willow brook 8Ry'
DIR_PW_frank='Granite moss 9Sz'
DIR_PW_gail='Harbor lantern 2Tw'
DIR_PW_hugo='Velvet comet 3Uv'
DIR_GROUP=kwdir
DIR_GID=250000
DIR_GROUP_MEMBERS=(dave erin gail hugo)
DIR_PRIMARY_GROUP=dirusers
DIR_PRIMARY_GID=250001
DIR_PORT=
DIR_URI=

dir_user_dn() { printf 'uid=%s,%s\n' "$1" "$DIR_PEOPLE"; }

dir_wait() {
  local _
  for _ in $(seq 300); do
    if "$@"; then return 0; fi
    sleep 0.1
  done
  return 1
}

_dir_fail() {
  echo "directory env: $*" >&2
  for f in "$DIR_D/slapd.log" "$DIR_D/sssd.out" "$DIR_D"/sssd-log/*.log; do
    [ -s "$f" ] && { echo "--- $f (tail)" >&2; tail -n 30 "$f" >&2; }
  done
  return 1
}

_dir_free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

_dir_hash() { # _dir_hash PASSWORD -> {SSHA} hash (the password goes through a pipe, not argv)
  slappasswd -h '{SSHA}' -T <(printf '%s' "$1")
}

_dir_admin() { # _dir_admin TOOL ARGS... : an ldap tool bound as the rootdn
  local tool=$1
  shift
  "$tool" -x -H "$DIR_URI" -D "$DIR_ADMIN_DN" -y <(printf '%s' "$DIR_ADMIN_PW") "$@"
}

_dir_pid_alive() { kill -0 "$1" 2>/dev/null; }

_dir_record_pid() { echo "$1" >> "$T/dir.pids"; }

_dir_write_slapd_conf() {
  mkdir -p "$DIR_D/slapd-data"
  chmod 700 "$DIR_D/slapd-data"
  local rootpw
  rootpw=$(_dir_hash "$DIR_ADMIN_PW")
  cat > "$DIR_D/slapd.conf" <<EOF
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/nis.schema
include /etc/ldap/schema/inetorgperson.schema
pidfile $DIR_D/slapd.pid
argsfile $DIR_D/slapd.args
modulepath /usr/lib/ldap
moduleload back_mdb
database mdb
maxsize 33554432
suffix "$DIR_BASE"
rootdn "$DIR_ADMIN_DN"
rootpw $rootpw
directory $DIR_D/slapd-data
index objectClass,uid,uidNumber,gidNumber,memberUid eq
password-hash {SSHA}
# Users change their own password (the password-modify exop sssd's chpass provider uses); anyone
# may bind with it; nobody reads it. Everything else is readable (sssd binds anonymously).
# frank may sign in but not change his password: a change that fails at the directory after
# its preliminary check passed (the old password is right), for tests of what a failed change
# must not do.
access to attrs=userPassword
  by dn.exact="uid=frank,$DIR_PEOPLE" auth
  by self write
  by anonymous auth
  by * none
access to attrs=shadowLastChange
  by self write
  by * read
access to *
  by * read
EOF
  chmod 600 "$DIR_D/slapd.conf"
}

dir_start_slapd() {
  [ -n "$DIR_PORT" ] || { echo "dir_start_slapd: dir_start first" >&2; return 1; }
  # -d: stay in the foreground, logging connections and operations (stats, no secrets).
  slapd -h "$DIR_URI" -f "$DIR_D/slapd.conf" -d stats >> "$DIR_D/slapd.log" 2>&1 < /dev/null &
  local pid=$!
  echo "$pid" > "$DIR_D/slapd.pid.mine"
  _dir_record_pid "$pid"
  local _
  for _ in $(seq 200); do
    if ldapwhoami -x -H "$DIR_URI" > /dev/null 2>&1; then
      # sssd went offline while slapd was down: ask it to go online now, and wait until it is.
      if [ -s "$DIR_D/sssd.pid.mine" ] && _dir_pid_alive "$(cat "$DIR_D/sssd.pid.mine")"; then
        kill -USR2 "$(cat "$DIR_D/sssd.pid.mine")"
        dir_wait_online || return 1
      fi
      return 0
    fi
    _dir_pid_alive "$pid" || break
    sleep 0.05
  done
  _dir_fail "slapd did not start on $DIR_URI"
}

# Wait until sssd answers from the directory, not its cache: look up a name nobody has (a new
# one each time, so no negative cache answers) until slapd's log shows sssd searching for it.
dir_wait_online() {
  local probe _
  for _ in $(seq 100); do
    probe="kwprobe$(date +%s%N)"
    getent passwd "$probe" > /dev/null 2>&1 || true
    if grep -q "(uid=$probe)" "$DIR_D/slapd.log"; then return 0; fi
    sleep 0.2
  done
  _dir_fail "sssd did not go back online"
}

dir_stop_slapd() {
  local pid
  pid=$(cat "$DIR_D/slapd.pid.mine" 2>/dev/null) || return 0
  if _dir_pid_alive "$pid"; then
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    # Not our child (a subshell started it): wait for it by polling.
    dir_wait eval "! kill -0 $pid 2>/dev/null" || { kill -9 "$pid" 2>/dev/null || true; }
  fi
  _dir_pid_alive "$pid" || sed -i "/^$pid\$/d" "$T/dir.pids"
  rm -f "$DIR_D/slapd.pid.mine"
}

_dir_load() {
  local u members="" m
  {
    printf 'dn: %s\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example Test\n\n' "$DIR_BASE"
    printf 'dn: %s\nobjectClass: organizationalUnit\nou: people\n\n' "$DIR_PEOPLE"
    printf 'dn: %s\nobjectClass: organizationalUnit\nou: groups\n\n' "$DIR_GROUPS"
    for u in "${DIR_USERS[@]}"; do
      local uidvar="DIR_UID_$u" pwvar="DIR_PW_$u" hash
      hash=$(_dir_hash "${!pwvar}")
      printf 'dn: %s\nobjectClass: inetOrgPerson\nobjectClass: posixAccount\nobjectClass: shadowAccount\n' "$(dir_user_dn "$u")"
      printf 'uid: %s\ncn: %s\nsn: %s\nuidNumber: %s\ngidNumber: %s\n' "$u" "$u" "$u" "${!uidvar}" "$DIR_PRIMARY_GID"
      printf 'homeDirectory: /nonexistent\nloginShell: /bin/bash\nuserPassword: %s\n\n' "$hash"
    done
    for m in "${DIR_GROUP_MEMBERS[@]}"; do members+="memberUid: $m"$'\n'; done
    printf 'dn: cn=%s,%s\nobjectClass: posixGroup\ncn: %s\ngidNumber: %s\n%s\n' \
      "$DIR_GROUP" "$DIR_GROUPS" "$DIR_GROUP" "$DIR_GID" "$members"
    printf 'dn: cn=%s,%s\nobjectClass: posixGroup\ncn: %s\ngidNumber: %s\n\n' \
      "$DIR_PRIMARY_GROUP" "$DIR_GROUPS" "$DIR_PRIMARY_GROUP" "$DIR_PRIMARY_GID"
  } | _dir_admin ldapadd > "$DIR_D/load.out" 2>&1 || _dir_fail "loading the directory: $(cat "$DIR_D/load.out")"
}

# A private /run (sssd writes /run/sssd.pid, and refuses to start if another sssd's is there):
# a tmpfs, with every entry of the real /run bound back into it.
_dir_private_run() {
  mkdir -p "$DIR_D/host-run"
  mount --bind /run "$DIR_D/host-run"
  mount -t tmpfs -o mode=0755 dir-run /run
  local e n
  for e in "$DIR_D/host-run"/* "$DIR_D/host-run"/.[!.]*; do
    [ -e "$e" ] || [ -L "$e" ] || continue
    n=${e##*/}
    # (mount itself may have made /run/mount here already, for its utab)
    [ -e "/run/$n" ] || [ -L "/run/$n" ] && continue
    if [ -L "$e" ]; then
      cp -P "$e" "/run/$n"
    elif [ -d "$e" ]; then
      mkdir "/run/$n"
      mount --rbind "$e" "/run/$n"
    else
      : > "/run/$n"
      mount --bind "$e" "/run/$n"
    fi
  done
}

# Empty state directories for sssd, as the package makes them (sssd-common's postinst modes).
_dir_private_sssd_state() {
  local s="$DIR_D/sss"
  mkdir -p "$s" "$DIR_D/sssd-log"
  local spec d mode
  for spec in db:700 deskprofile:751 gpo_cache:755 mc:775 pipes:755 pipes/private:750 \
    pubconf:755 pubconf/krb5.include.d:755 secrets:700; do
    d=${spec%%:*}
    mode=${spec##*:}
    mkdir -p "$s/$d"
    chmod "$mode" "$s/$d"
  done
  chmod 755 "$s"
  chmod 750 "$DIR_D/sssd-log"
  mount --bind "$s" /var/lib/sss
  mount --bind "$DIR_D/sssd-log" /var/log/sssd
}

_dir_write_sssd_conf() {
  mkdir -p /etc/sssd
  cat > /etc/sssd/sssd.conf <<EOF
[sssd]
config_file_version = 2
services = nss, pam
domains = $DIR_DOMAIN

[nss]
filter_users = root
filter_groups = root
# No fast in-memory cache and no stale answers: a directory change shows within seconds.
memcache_timeout = 0
entry_negative_timeout = 2
entry_cache_nowait_percentage = 0

[pam]
offline_credentials_expiration = 0
pam_id_timeout = 1

[domain/$DIR_DOMAIN]
id_provider = ldap
auth_provider = ldap
chpass_provider = ldap
access_provider = permit
ldap_uri = $DIR_URI
ldap_search_base = $DIR_BASE
ldap_schema = rfc2307
ldap_id_use_start_tls = false
ldap_auth_disable_tls_never_use_in_production = true
ldap_tls_reqcert = never
cache_credentials = True
enumerate = False
ldap_enumeration_refresh_timeout = 0
ldap_purge_cache_timeout = 0
entry_cache_timeout = 2
entry_cache_user_timeout = 2
entry_cache_group_timeout = 2
refresh_expired_interval = 0
# Quick to notice slapd is down, quick to try it again.
ldap_network_timeout = 2
ldap_opt_timeout = 2
ldap_search_timeout = 3
offline_timeout = 2
offline_timeout_max = 4
offline_timeout_random_offset = 0
debug_level = 2
${DIR_SSSD_EXTRA:-}
EOF
  chown root:root /etc/sssd/sssd.conf
  chmod 600 /etc/sssd/sssd.conf
}

_dir_write_nsswitch() {
  # sss right after files for the account databases; every other line as it was.
  sed -E -i \
    -e 's/^(passwd|group|shadow):([[:space:]]+)files([[:space:]]|$)/\1:\2files sss\3/' \
    -e '/^(passwd|group|shadow):/ { /[[:space:]]files sss([[:space:]]|$)/! s/^([a-z]+):[[:space:]]*/\1:         files sss /; }' \
    /etc/nsswitch.conf
}

_dir_start_sssd() {
  rm -f /run/sssd.pid
  sssd -i --logger=files >> "$DIR_D/sssd.out" 2>&1 < /dev/null &
  local pid=$!
  echo "$pid" > "$DIR_D/sssd.pid.mine"
  _dir_record_pid "$pid"
  local _ ok=0
  for _ in $(seq 300); do
    if getent passwd dave > /dev/null 2>&1; then ok=1; break; fi
    _dir_pid_alive "$pid" || break
    sleep 0.1
  done
  # The monitor's children (sssd_be, sssd_nss, sssd_pam) too.
  local c
  for c in $(pgrep -P "$pid" 2>/dev/null || true); do _dir_record_pid "$c"; done
  [ "$ok" -eq 1 ] || _dir_fail "sssd did not resolve dave"
}

dir_start() {
  mkdir -p "$DIR_D"
  chmod 700 "$DIR_D"
  : >> "$T/dir.pids"
  DIR_PORT=$(_dir_free_port)
  DIR_URI="ldap://127.0.0.1:$DIR_PORT/"
  export DIR_PORT DIR_URI
  _dir_write_slapd_conf
  dir_start_slapd || return 1
  _dir_load || return 1
  # ldap tools in this namespace talk to this directory by default.
  printf 'URI %s\nBASE %s\n' "$DIR_URI" "$DIR_BASE" > /etc/ldap/ldap.conf
  _dir_private_run
  _dir_private_sssd_state
  _dir_write_sssd_conf
  _dir_write_nsswitch
  _dir_start_sssd
}

dir_stop() {
  local pid
  pid=$(cat "$DIR_D/sssd.pid.mine" 2>/dev/null || true)
  if [ -n "$pid" ] && _dir_pid_alive "$pid"; then
    local kids
    kids=$(pgrep -P "$pid" 2>/dev/null || true)
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    dir_wait eval "! kill -0 $pid 2>/dev/null" || kill -9 "$pid" 2>/dev/null || true
    for pid in $kids; do
      dir_wait eval "! kill -0 $pid 2>/dev/null" || kill -9 "$pid" 2>/dev/null || true
    done
  fi
  rm -f "$DIR_D/sssd.pid.mine"
  dir_stop_slapd
  # Only what still runs stays listed (so a PID reused later is never killed by mistake).
  local alive=""
  for pid in $(cat "$T/dir.pids" 2>/dev/null || true); do
    if _dir_pid_alive "$pid"; then alive+="$pid"$'\n'; fi
  done
  printf '%s' "$alive" > "$T/dir.pids"
}

dir_reset_password() {
  local user=$1 pass=$2
  _dir_admin ldappasswd -T <(printf '%s' "$pass") "$(dir_user_dn "$user")" > /dev/null
}

dir_remove_member() {
  printf 'dn: cn=%s,%s\nchangetype: modify\ndelete: memberUid\nmemberUid: %s\n' \
    "$DIR_GROUP" "$DIR_GROUPS" "$1" | _dir_admin ldapmodify > /dev/null
}

dir_delete_user() { # an admin deletes USER's entry from the directory (a user who left)
  _dir_admin ldapdelete "$(dir_user_dn "$1")" > /dev/null
}

dir_start_sssd() { # sssd again after dir_stop, on its kept cache (then dir_start_slapd)
  _dir_start_sssd
}

dir_flush_cache() {
  sss_cache -E
}

dir_pam_update() {
  local configs="$DIR_D/pam-configs" state="$DIR_D/pam-state" debconf="$DIR_D/debconf"
  local fresh=(sss pwquality) f name
  if [ -e "$DIR_D/pam-mounted" ]; then # a second call: start again from the host's
    umount /usr/share/pam-configs /var/lib/pam /var/cache/debconf
    rm -f "$DIR_D/pam-mounted"
  fi
  rm -rf "$configs" "$state" "$debconf"
  cp -a /usr/share/pam-configs "$configs"
  # sss and pwquality as their packages ship them (libpam-sss is installed; scripts/deps).
  for name in sss pwquality; do
    [ -f "$configs/$name" ] || { echo "dir_pam_update: no /usr/share/pam-configs/$name (libpam-sss?)" >&2; return 1; }
  done
  for f in "$@"; do
    name=${f##*/}
    cp "$f" "$configs/$name"
    fresh+=("$name")
  done
  cp -a /var/lib/pam "$state"
  # As on a machine that installs these packages now: their profiles not yet seen, so
  # `--package` enables those that say `Default: yes`.
  for name in "${fresh[@]}"; do
    case " ${DIR_PAM_SKIP:-} " in *" $name "*) continue ;; esac
    sed -i "/^$(printf '%s' "$name" | sed 's/[.[\*^$/]/\\&/g')\$/d" "$state/seen"
  done
  # pam-auth-update keeps its choice in debconf: a private copy, so the host's database is
  # neither changed nor locked against parallel runs.
  cp -a /var/cache/debconf "$debconf"
  mount --bind "$configs" /usr/share/pam-configs
  mount --bind "$state" /var/lib/pam
  mount --bind "$debconf" /var/cache/debconf
  : > "$DIR_D/pam-mounted"
  DEBIAN_FRONTEND=noninteractive DEBCONF_NONINTERACTIVE_SEEN=true \
    pam-auth-update --package --force > "$DIR_D/pam-auth-update.out" 2>&1 \
    || { cat "$DIR_D/pam-auth-update.out" >&2; return 1; }
}
