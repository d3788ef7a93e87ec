#!/usr/bin/env bash
# test_package: the Debian package and the install rules (issue 12, "Run it like production").
#  1. deploy/package.sh builds cairn_<version>_<arch>.deb from a fresh Release configure in a
#     temp dir (-j2); its control data says what the package is: name, the daemons' version,
#     a Depends entry for the package of every shared library the binaries link (dpkg -S), the
#     conffile /etc/cairn/cairn.env, the maintainer scripts; its files are the four binaries,
#     the units with ExecStart= naming them, the env file and the docs; lintian (if installed)
#     finds no error;
#  2. the same build installs with `cmake --install --prefix P` (nothing outside P) and with
#     DESTDIR=D (what `make install DESTDIR=D` runs);
#  3. dpkg -i really installs it: the system user cairn, /var/lib/cairn (cairn, 0700), the
#     units (systemd-analyze verify), nothing started; the installed units' ExecStart= lines,
#     run as User=cairn with the installed cairn.env (its ports moved to free loopback ports),
#     bring up a node that serves etcdctl and stops cleanly (and stored takes the example YAML
#     config, which says what cairn.env says); a reinstall keeps the data;
#     dpkg -r keeps data, user and conffile; dpkg -P removes them (as Debian's etcd-server does),
#     and the links `systemctl enable` made.
# Skips (exit 0, "skip: ...") when not root, or when a cairn package, user or /var/lib/cairn is
# already there: purging would delete what this test did not create. Everything it installs is
# purged on exit, even on failure; it kills only the processes it started (by PID).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
[ "$(id -u)" -eq 0 ] || { echo "skip: not root (dpkg -i needs root)"; exit 0; }
for c in dpkg-deb dpkg-shlibdeps cpack setpriv; do
  command -v "$c" >/dev/null || { echo "skip: no $c"; exit 0; }
done
if dpkg-query -W -f='${Status}\n' cairn 2>/dev/null | grep -qv "not-installed"; then
  echo "skip: a cairn package is already on this machine ($(dpkg-query -W -f='${Status}' cairn)); this test did not install it"
  exit 0
fi
if getent passwd cairn >/dev/null || getent group cairn >/dev/null || [ -e /var/lib/cairn ] || [ -e /etc/cairn ]; then
  echo "skip: a cairn user/group, /var/lib/cairn or /etc/cairn already exists; purging the package would delete it"
  exit 0
fi

MINE=0 # 1 while a cairn package this test installed is on the machine
pkg_cleanup() {
  t_cleanup # the daemons first (by PID), then the package
  if [ "$MINE" = 1 ]; then
    dpkg -P cairn >/dev/null 2>&1 || echo "cleanup: dpkg -P cairn failed" >&2
  fi
}
trap pkg_cleanup EXIT
trap 'exit 130' INT   # a signal ends the test through the EXIT trap too: the package is purged
trap 'exit 143' TERM

# ---- 1. the package ----------------------------------------------------------------------------
B=$T_TMP/build
# niced: under ctest -j, timing-sensitive tests run beside this compile
if ! BUILD=$B JOBS=2 nice -n 10 bash "$CAIRN_SRC/deploy/package.sh" -DCAIRN_TESTS=OFF -DCAIRN_BENCH=OFF >"$T_TMP/package.out" 2>&1; then
  tail -30 "$T_TMP/package.out" >&2
  t_fail "deploy/package.sh failed"; t_done; exit 1
fi
DEB=$(tail -1 "$T_TMP/package.out")
VERSION=$("$B/stored" --version | sed -n 's/^stored (cairn) \([0-9.]*\),.*/\1/p')
ARCH=$(dpkg --print-architecture)
t_eq "the package is build/cairn_<version>_<arch>.deb" "$B/cairn_${VERSION}_${ARCH}.deb" "$DEB"
[ -n "$VERSION" ] || t_fail "stored --version printed no version"
t_eq "Package:" cairn "$(dpkg-deb -f "$DEB" Package)"
t_eq "Version: the daemons' version" "$VERSION" "$(dpkg-deb -f "$DEB" Version)"
t_eq "Architecture:" "$ARCH" "$(dpkg-deb -f "$DEB" Architecture)"
DEPENDS=$(dpkg-deb -f "$DEB" Depends)
echo "  Depends: $DEPENDS"
dep_names=" $(sed 's/([^)]*)//g; s/[|,]/ /g' <<<"$DEPENDS" | tr -s ' ') "
for p in adduser libzmq5 libczmq4 libleveldb1d libnghttp2-14 libssl3 libprotobuf-c1; do
  [[ $dep_names == *" $p "* ]] && t_ok "Depends names $p" || t_fail "Depends lacks $p: $DEPENDS"
done
# every shared library a binary needs comes from a package the package depends on
owner_of() { # PATH -> the package that owns it (dpkg knows /lib or /usr/lib, as it was shipped)
  local c
  for c in "$1" "$(readlink -f "$1")" "/usr${1#/usr}" "${1#/usr}"; do
    dpkg -S "$c" 2>/dev/null | sed -n '1s/:.*//p' | grep . && return 0
  done
  return 1
}
bad=0
for bin in stored raftd gatewayd cairnctl; do
  for lib in $(objdump -p "$B/$bin" | awk '$1 == "NEEDED" { print $2 }'); do
    path=$(ldconfig -p | awk -v l="$lib" '$1 == l && !f { print $NF; f = 1 }') # reads all: no SIGPIPE
    owner=$([ -n "$path" ] && owner_of "$path" || true)
    if [ -z "$owner" ]; then bad=1; t_fail "$bin: no package owns $lib (${path:-not found by ldconfig})"
    elif [[ $dep_names != *" $owner "* ]]; then bad=1; t_fail "$bin links $lib ($owner), which Depends does not name"; fi
  done
done
[ "$bad" = 0 ] && t_ok "every library the four binaries link comes from a package in Depends"
CTL=$T_TMP/control
dpkg-deb -e "$DEB" "$CTL"
t_eq "conffiles: /etc/cairn/cairn.env" "/etc/cairn/cairn.env" "$(cat "$CTL/conffiles" 2>/dev/null)"
for s in postinst prerm postrm; do
  [ -x "$CTL/$s" ] && t_ok "maintainer script $s" || t_fail "no executable $s in the package"
  sh -n "$CTL/$s" || t_fail "$s: sh -n finds a syntax error"
done
grep -v '^[[:space:]]*#' "$CTL/postinst" >"$T_TMP/postinst.code"
grep -qE '(systemctl|deb-systemd-invoke|invoke-rc.d).*(start|enable)' "$T_TMP/postinst.code" &&
  t_fail "postinst starts or enables a unit" || t_ok "postinst neither starts nor enables a unit"
dpkg-deb --contents "$DEB" | awk '{ print $NF }' | sed 's|^\./|/|' | grep -v '/$' | sort >"$T_TMP/files"
for f in /usr/bin/stored /usr/bin/raftd /usr/bin/gatewayd /usr/bin/cairnctl /etc/cairn/cairn.env \
  /lib/systemd/system/cairn.target /lib/systemd/system/cairn-stored.slice /lib/systemd/system/cairn-stored.service \
  /lib/systemd/system/cairn-raftd.service /lib/systemd/system/cairn-gatewayd@.service \
  /usr/share/doc/cairn/README.md /usr/share/doc/cairn/copyright /usr/share/doc/cairn/changelog.gz \
  /usr/share/doc/cairn/examples/cairn.conf.yml /usr/share/man/man8/cairn.8.gz /usr/share/man/man8/stored.8.gz \
  /usr/share/man/man8/raftd.8.gz /usr/share/man/man8/gatewayd.8.gz /usr/share/man/man1/cairnctl.1.gz; do
  grep -qxF "$f" "$T_TMP/files" || t_fail "the package lacks $f"
done
t_eq "the package holds exactly the binaries, units, env file, docs, manual pages and lintian overrides" 20 "$(wc -l <"$T_TMP/files")"
dpkg-deb -x "$DEB" "$T_TMP/root"
EXECS=$(grep -h '^ExecStart=' "$T_TMP"/root/lib/systemd/system/* | sed 's/^ExecStart=//; s/ .*//' | sort -u | tr '\n' ' ')
t_eq "the units' ExecStart= run the packaged binaries" "/usr/bin/gatewayd /usr/bin/raftd /usr/bin/stored " "$EXECS"
grep -q '@BINDIR@' "$T_TMP"/root/lib/systemd/system/* && t_fail "a unit still says @BINDIR@" || t_ok "no @BINDIR@ left"
if command -v lintian >/dev/null; then
  lintian --allow-root --display-info "$DEB" >"$T_TMP/lintian.out" 2>&1 || true
  echo "  lintian: $(grep -c '^E:' "$T_TMP/lintian.out") errors, $(grep -c '^W:' "$T_TMP/lintian.out") warnings," \
    "$(grep -c '^I:' "$T_TMP/lintian.out") notes"
  sed 's/^/    /' "$T_TMP/lintian.out"
  grep -q '^E:' "$T_TMP/lintian.out" && t_fail "lintian reports errors" || t_ok "lintian: no error"
  # deploy/package.sh builds with Debian's hardening flags (dpkg-buildflags)
  grep -q 'hardening-no-' "$T_TMP/lintian.out" && t_fail "lintian: binaries built without hardening" ||
    t_ok "lintian: binaries hardened (relro, bindnow, fortify)"
else
  echo "  (lintian not installed: not run)"
fi

# ---- 2. the install rules ----------------------------------------------------------------------
P=$T_TMP/prefix
cmake --install "$B" --prefix "$P" >/dev/null
t_eq "cmake --install --prefix: units name P/bin" "ExecStart=$P/bin/stored" "$(grep '^ExecStart=' "$P/lib/systemd/system/cairn-stored.service")"
t_eq "... and P/etc/cairn/cairn.env" "EnvironmentFile=$P/etc/cairn/cairn.env" "$(grep '^EnvironmentFile=' "$P/lib/systemd/system/cairn-raftd.service")"
[ -x "$P/bin/cairnctl" ] && [ -f "$P/etc/cairn/cairn.env" ] && [ -f "$P/share/doc/cairn/README.md" ] &&
  t_ok "... binaries, env file and docs under P" || t_fail "cmake --install --prefix: files missing under $P"
D=$T_TMP/destdir
# what `make install DESTDIR=D` runs after building (cmake_install.cmake with DESTDIR set),
# without make's rebuild of a tree that may have changed since step 1
DESTDIR=$D cmake --install "$B" >/dev/null
[ -x "$D/usr/bin/stored" ] && [ -f "$D/etc/cairn/cairn.env" ] && [ -f "$D/lib/systemd/system/cairn.target" ] &&
  t_ok "make install DESTDIR=D: /usr/bin, /etc/cairn, /lib/systemd/system under D" || t_fail "DESTDIR install: files missing under $D"
t_eq "... units name the installed path, not D" "ExecStart=/usr/bin/raftd" "$(grep '^ExecStart=' "$D/lib/systemd/system/cairn-raftd.service")"

# ---- 3. dpkg -i ---------------------------------------------------------------------------------
running_installed() { # processes running /usr/bin/{stored,raftd,gatewayd}: none until this test starts some
  local p n=0
  for p in /proc/[0-9]*; do
    case $(readlink "$p/exe" 2>/dev/null) in /usr/bin/stored | /usr/bin/raftd | /usr/bin/gatewayd) n=$((n + 1)) ;; esac
  done
  echo "$n"
}
MINE=1
if ! dpkg -i "$DEB" >"$T_TMP/dpkg-i.out" 2>&1; then
  cat "$T_TMP/dpkg-i.out" >&2; t_fail "dpkg -i failed"; t_done; exit 1
fi
t_ok "dpkg -i $(basename "$DEB")"
t_eq "dpkg: installed" "install ok installed" "$(dpkg-query -W -f='${Status}' cairn)"
IFS=: read -r _ _ uid _ _ home shell < <(getent passwd cairn) || t_fail "no user cairn"
[ "${uid:-0}" -gt 0 ] && [ "${uid:-1000}" -lt 1000 ] && t_ok "cairn is a system user (uid $uid)" || t_fail "cairn uid ${uid:-none} is not a system uid"
t_eq "its home" /var/lib/cairn "${home:-}"
t_eq "no login shell" /usr/sbin/nologin "${shell:-}"
t_eq "its group" cairn "$(id -gn cairn 2>/dev/null)"
t_eq "/var/lib/cairn: owner cairn, mode 700" "cairn:cairn 700" "$(stat -c '%U:%G %a' /var/lib/cairn 2>&1)"
t_eq "nothing started on install" 0 "$(running_installed)"
t_contains "cairnctl version" "cairnctl $VERSION" "$(/usr/bin/cairnctl version 2>&1)"
UNITS="cairn.target cairn-stored.slice cairn-stored.service cairn-raftd.service cairn-gatewayd@.service"
for u in $UNITS; do [ -f "/lib/systemd/system/$u" ] || t_fail "/lib/systemd/system/$u not installed"; done
if command -v systemd-analyze >/dev/null; then
  # by name: systemd-analyze loads them from the unit path, where the package put them
  if (cd / && systemd-analyze verify --man=no cairn.target cairn-stored.slice cairn-stored.service cairn-raftd.service \
    cairn-gatewayd@1.service) >"$T_TMP/verify.out" 2>&1 && [ ! -s "$T_TMP/verify.out" ]; then
    t_ok "systemd-analyze verify: the installed units are clean"
  else
    t_fail "systemd-analyze verify: $(cat "$T_TMP/verify.out")"
  fi
fi

# the installed units' ExecStart= lines, as systemd would run them: User=cairn, the environment
# of the installed EnvironmentFile (its data dir; its ports moved to free loopback ports)
CP=$(t_port); PP=$(t_port)
ENVF=$(sed -n 's/^EnvironmentFile=//p' /lib/systemd/system/cairn-stored.service)
t_eq "the units read /etc/cairn/cairn.env" /etc/cairn/cairn.env "$ENVF"
sed -e "s|127.0.0.1:2379|127.0.0.1:$CP|g" -e "s|127.0.0.1:2380|127.0.0.1:$PP|g" "$ENVF" >"$T_TMP/cairn.env"
grep -q "127.0.0.1:$CP" "$T_TMP/cairn.env" || t_fail "the installed cairn.env does not use the client port 2379"
t_eq "its data dir is the package's" "CAIRN_DATA_DIR=/var/lib/cairn" "$(grep '^CAIRN_DATA_DIR=' "$T_TMP/cairn.env")"
# the example YAML config describes the same member as cairn.env, and stored takes it
YML=/usr/share/doc/cairn/examples/cairn.conf.yml
DIFF=$(python3 - "$YML" "$ENVF" <<'PY'
import sys, yaml
y = {k: str(v) for k, v in yaml.safe_load(open(sys.argv[1])).items()}
e = dict(l.strip().split("=", 1) for l in open(sys.argv[2]) if l.strip() and not l.startswith("#"))
e = {k[6:].lower().replace("_", "-"): v for k, v in e.items()}
print(" ".join("%s: yml=%s env=%s" % (k, y.get(k), v) for k, v in sorted(e.items()) if y.get(k) != v))
PY
) || DIFF="(could not compare: $DIFF)"
t_eq "the example cairn.conf.yml sets what cairn.env sets" "" "$DIFF"
sed -e "s|/var/lib/cairn|$T_TMP/yml-data|" -e "s|127.0.0.1:2379|127.0.0.1:$CP|g" -e "s|127.0.0.1:2380|127.0.0.1:$PP|g" \
  "$YML" >"$T_TMP/cairn.conf.yml"
t_start_daemon "$T_TMP/yml.log" env -i PATH=/usr/bin:/bin /usr/bin/stored --config-file "$T_TMP/cairn.conf.yml"
yml_ready() { grep -qs 'msg="stored ready"' "$T_TMP/yml.log"; }
if t_wait_until 20 yml_ready && [ -d "$T_TMP/yml-data/member" ]; then t_ok "stored starts from the example cairn.conf.yml"; else
  t_fail "stored did not start from the example config: $(tail -3 "$T_TMP/yml.log")"; fi
t_stop "$T_LAST_PID"

C_LOG=$T_TMP/node.log
declare -A PID
for u in cairn-stored.service cairn-raftd.service cairn-gatewayd@.service; do
  t_eq "$u runs as cairn" "User=cairn" "$(grep '^User=' "/lib/systemd/system/$u")"
  cmd=$(sed -n 's/^ExecStart=//p' "/lib/systemd/system/$u" | sed 's/%i/1/g')
  mapfile -t ENVV < <(grep -v '^#' "$T_TMP/cairn.env" | grep '=')
  # shellcheck disable=SC2086 # the ExecStart= line's words, as systemd splits them
  t_start_daemon "$C_LOG" env -i PATH=/usr/bin:/bin "${ENVV[@]}" \
    setpriv --reuid=cairn --regid=cairn --clear-groups $cmd
  PID[$u]=$T_LAST_PID
done
if t_wait_healthy "127.0.0.1:$CP" 30; then t_ok "the installed node is healthy"; else t_fail "the installed node is not healthy"; fi
t_eq "it serves etcdctl put" OK "$(etcdctl --endpoints="127.0.0.1:$CP" put pkg-test installed 2>&1)"
t_eq "... and get" installed "$(etcdctl --endpoints="127.0.0.1:$CP" get pkg-test --print-value-only 2>&1)"
t_eq "its processes run as cairn" "cairn cairn cairn" "$(ps -o user= -p "${PID[cairn-stored.service]},${PID[cairn-raftd.service]},${PID[cairn-gatewayd@.service]}" | tr -s ' \n' ' ' | sed 's/ $//')"
[ -d /var/lib/cairn/member ] && t_ok "its data is in /var/lib/cairn" || t_fail "no /var/lib/cairn/member: $(ls /var/lib/cairn 2>&1)"
t_eq "every file of it belongs to cairn" "" "$(find /var/lib/cairn ! -user cairn 2>&1)"
for u in cairn-gatewayd@.service cairn-raftd.service cairn-stored.service; do
  kill -TERM "${PID[$u]}"
  rc=0; wait "${PID[$u]}" || rc=$?
  t_eq "$u: SIGTERM stops it with status 0" 0 "$rc"
done

# reinstall (as an upgrade does): user and data stay
dpkg -i "$DEB" >"$T_TMP/dpkg-i2.out" 2>&1 || { cat "$T_TMP/dpkg-i2.out" >&2; t_fail "dpkg -i again failed"; }
t_eq "reinstall: the data stays, 700" "cairn:cairn 700 yes" "$(stat -c '%U:%G %a' /var/lib/cairn) $([ -d /var/lib/cairn/member ] && echo yes)"

# as the operator would: `systemctl enable` (it works on the files, without a running systemd)
ENABLED=0
if command -v systemctl >/dev/null && systemctl enable cairn.target cairn-stored.service cairn-raftd.service \
  cairn-gatewayd@1.service >"$T_TMP/enable.out" 2>&1; then
  ENABLED=$(find /etc/systemd/system -name 'cairn*' -type l | wc -l)
  t_eq "systemctl enable: 4 links" 4 "$ENABLED"
fi
dpkg -r cairn >"$T_TMP/dpkg-r.out" 2>&1 || { cat "$T_TMP/dpkg-r.out" >&2; t_fail "dpkg -r failed"; }
[ ! -e /usr/bin/stored ] && [ ! -e /lib/systemd/system/cairn-stored.service ] && t_ok "dpkg -r: binaries and units gone" ||
  t_fail "dpkg -r left binaries or units"
[ -d /var/lib/cairn/member ] && getent passwd cairn >/dev/null && [ -f /etc/cairn/cairn.env ] &&
  t_ok "dpkg -r: data, user and conffile stay" || t_fail "dpkg -r removed data, user or conffile"
dpkg -P cairn >"$T_TMP/dpkg-p.out" 2>&1 || { cat "$T_TMP/dpkg-p.out" >&2; t_fail "dpkg -P failed"; }
dpkg-query -W -f='${Status}' cairn 2>/dev/null | grep -q "installed\|config-files" &&
  t_fail "dpkg -P: dpkg still knows cairn: $(dpkg-query -W -f='${Status}' cairn)" || { MINE=0; t_ok "dpkg -P: the package is gone"; }
[ ! -e /var/lib/cairn ] && t_ok "dpkg -P: /var/lib/cairn removed" || t_fail "dpkg -P left /var/lib/cairn"
getent passwd cairn >/dev/null && t_fail "dpkg -P left the user cairn" || t_ok "dpkg -P: user cairn removed"
getent group cairn >/dev/null && t_fail "dpkg -P left the group cairn" || t_ok "dpkg -P: group cairn removed"
[ ! -e /etc/cairn ] && t_ok "dpkg -P: /etc/cairn removed" || t_fail "dpkg -P left /etc/cairn: $(ls -A /etc/cairn)"
[ "$ENABLED" = 0 ] || t_eq "dpkg -P: systemctl enable's links removed" "" "$(find /etc/systemd/system -name 'cairn*')"
t_done
