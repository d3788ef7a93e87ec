#!/usr/bin/env bash
# deploy/rolling-restart.sh - restarts every member of a cluster, one at a time, followers
# first and the leader last after handing leadership over, waiting for each member to be
# healthy before the next (README, "Rolling restart"). Clients see no error: a restarted member
# holds requests until it hears from the leader, and a stopping gateway answers what it has in
# flight (tests/integration/test_rolling_restart_script.sh runs this script under a write load).
#
#   deploy/rolling-restart.sh --endpoints H:P,H:P,... --restart-cmd CMD [--timeout 60] [--dry-run]
#                             [etcdctl TLS flags: --cacert F --cert F --key F]
#
# CMD restarts one member and is run with bash -c after these replacements:
#   {endpoint}  the member's client endpoint as given (host:port)
#   {host}      its host part
#   {name}      its member name (etcdctl member list)
#   {index}     its position in --endpoints, from 1
# for example, on systemd hosts:
#   --restart-cmd 'ssh {host} sudo systemctl restart cairn.target'
# or for nodes run by `cairnctl run` (SIGHUP restarts its processes in order):
#   --restart-cmd 'ssh {host} pkill -HUP -f "cairnctl run --name {name}"'
# Exit status: 0 when every member was restarted and came back healthy; 1 (and nothing more is
# restarted) when a step failed - a member that does not come back stops the procedure, so a
# second member is never taken down while the first is still missing.
set -uo pipefail

ENDPOINTS="" CMD="" TIMEOUT=60 DRY=0
TLS=()
while [ $# -gt 0 ]; do
    case $1 in
        --endpoints) ENDPOINTS=$2; shift 2 ;;
        --restart-cmd) CMD=$2; shift 2 ;;
        --timeout) TIMEOUT=$2; shift 2 ;;
        --dry-run) DRY=1; shift ;;
        --cacert | --cert | --key) TLS+=("$1=$2"); shift 2 ;;
        -h | --help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "rolling-restart: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
[ -n "$ENDPOINTS" ] && [ -n "$CMD" ] || { echo "rolling-restart: --endpoints and --restart-cmd are required" >&2; exit 2; }
[[ $TIMEOUT =~ ^[0-9]+$ ]] || { echo "rolling-restart: --timeout takes seconds" >&2; exit 2; }
command -v etcdctl >/dev/null || { echo "rolling-restart: etcdctl not found" >&2; exit 2; }
PY=$(command -v python3) || { echo "rolling-restart: python3 not found" >&2; exit 2; }

IFS=, read -r -a EPS <<<"$ENDPOINTS"
ctl() { etcdctl "${TLS[@]}" --command-timeout=5s "$@"; }
log() { echo "rolling-restart: $*" >&2; }

# member id (hex) and whether it leads, per endpoint: "<id> <is_leader>"
status_of() {
    ctl --endpoints="$1" endpoint status -w json 2>/dev/null | "$PY" -c '
import json, sys
s = json.load(sys.stdin)[0]["Status"]
print("%x %d" % (s["header"]["member_id"], 1 if s["leader"] == s["header"]["member_id"] else 0))'
}
name_of() { # hex member id -> name
    ctl --endpoints="$ENDPOINTS" member list -w json 2>/dev/null | "$PY" -c '
import json, sys
for m in json.load(sys.stdin)["members"]:
    if "%x" % m["ID"] == sys.argv[1]:
        print(m.get("name", ""))' "$1"
}
leader_index() { # -> index in EPS of the member that leads, or -1
    local i
    for i in "${!EPS[@]}"; do
        [ "$(status_of "${EPS[i]}" | cut -d' ' -f2)" = 1 ] && { echo "$i"; return; }
    done
    echo -1
}
healthy() { ctl --endpoints="$1" endpoint health >/dev/null 2>&1; }
wait_for() { # seconds, command...
    local end=$((SECONDS + $1)); shift
    while [ "$SECONDS" -lt "$end" ]; do "$@" && return 0; sleep 0.5; done
    return 1
}

for ep in "${EPS[@]}"; do
    healthy "$ep" || { log "$ep is not healthy; nothing restarted (fix it first)"; exit 1; }
done
L=$(leader_index)
[ "$L" -ge 0 ] || { log "no member reports itself leader; nothing restarted"; exit 1; }
ORDER=()
for i in "${!EPS[@]}"; do [ "$i" != "$L" ] && ORDER+=("$i"); done
ORDER+=("$L")
log "order: $(for i in "${ORDER[@]}"; do printf '%s ' "${EPS[i]}"; done)(the leader, ${EPS[L]}, last)"

for i in "${ORDER[@]}"; do
    ep=${EPS[i]}
    read -r id lead <<<"$(status_of "$ep")"
    [ -n "${id:-}" ] || { log "$ep does not answer Status; stopping here"; exit 1; }
    name=$(name_of "$id")
    if [ "${lead:-0}" = 1 ] && [ "${#EPS[@]}" -gt 1 ]; then
        to=${EPS[ORDER[0]]}
        [ "$to" = "$ep" ] && to=${EPS[ORDER[1]]}
        to_id=$(status_of "$to" | cut -d' ' -f1)
        log "$ep ($name) leads: handing leadership to $to ($to_id)"
        if [ "$DRY" = 0 ]; then
            ctl --endpoints="$ep" move-leader "$to_id" >/dev/null || { log "move-leader failed; stopping here"; exit 1; }
            moved() { [ "$(status_of "$ep" | cut -d' ' -f2)" = 0 ] && [ "$(leader_index)" -ge 0 ]; }
            wait_for "$TIMEOUT" moved || { log "leadership did not move off $ep; stopping here"; exit 1; }
        fi
    fi
    host=${ep%:*}
    cmd=${CMD//\{endpoint\}/$ep}
    cmd=${cmd//\{host\}/$host}
    cmd=${cmd//\{name\}/$name}
    cmd=${cmd//\{index\}/$((i + 1))}
    log "restarting $ep ($name): $cmd"
    [ "$DRY" = 1 ] && continue
    bash -c "$cmd" || { log "the restart command failed for $ep; stopping here"; exit 1; }
    sleep 1 # the command may return before the processes stop
    wait_for "$TIMEOUT" healthy "$ep" || { log "$ep not healthy ${TIMEOUT}s after its restart; stopping here"; exit 1; }
    log "$ep ($name) is back and healthy"
done
log "done: ${#EPS[@]} member(s) restarted"
