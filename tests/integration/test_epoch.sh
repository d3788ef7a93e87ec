#!/usr/bin/env bash
# The raftd<->stored epoch fence (cairn_ipc.h "Epochs"), driven byte by byte: a script plays
# raftd against a real stored. An APPEND or COMMIT tagged with another stored instance's boot id
# must be ignored (answered with HELLO, never acknowledged or applied) — otherwise a restarted
# stored would vouch for writes its previous instance never synced.
. "$(dirname "$0")/lib.sh"
CP=$(t_port); PP=$(t_port)
D=$T_TMP/node
flags=$(t_node_flags node "$D" "$CP" "$PP")
t_start_daemon "$T_TMP/stored.log" "$CAIRN_BIN/stored" $flags; S=$T_LAST_PID
cat >"$T_TMP/fake_raftd.py" <<'PY'
import os, sys, time
run, phase = sys.argv[1], sys.argv[2]
sys.path.insert(0, os.environ["CAIRN_SRC"] + "/tests/integration")
from ipcpack import FakeRaftd
LOAD, LOAD_RESP, APPEND, APPENDED, COMMIT, HELLO, STATUS, STATUS_RESP = 5, 6, 7, 8, 9, 10, 13, 14
raftd = FakeRaftd(run)
send, recv_until = raftd.send, raftd.recv_until
def fail(msg): print("FAIL", msg); sys.exit(1)
send(LOAD, 0, 1)  # from the start (index 0), request seq 1 (one page: this log is small)
m = recv_until({LOAD_RESP}, 5) or fail("no LOAD_RESP")
boot, last = m[2], (m[10][-1][0] if m[10] else m[6])  # LOAD_RESP: [ver, type, boot, term, vote, commit, snap_index, snap_term, cluster_id, members, entries]
print("boot", boot, "last", last)
if phase == "fresh":
    # the right epoch: acknowledged
    send(APPEND, boot, 1, 1, 1, 7, 0, 0, [[last + 1, 1, 1, b""]])
    a = recv_until({APPENDED}, 3) or fail("APPEND of the right epoch not acknowledged")
    a[2] == boot and a[3] == 1 and a[4] == last + 1 or fail("bad APPENDED %r" % a)
    # another epoch: answered with HELLO, never acknowledged
    send(APPEND, boot ^ 1, 2, 1, 1, 7, 0, 0, [[last + 2, 1, 1, b""]])
    h = recv_until({HELLO, APPENDED}, 2)
    (h and h[1] == HELLO and h[2] == boot) or fail("stale APPEND not answered with HELLO: %r" % h)
    recv_until({APPENDED}, 0.5) and fail("stale APPEND acknowledged")
    # a stale COMMIT must not drive apply; the right one does
    send(COMMIT, boot ^ 1, last + 1, 1, 7)
    time.sleep(0.3); send(STATUS, 99)
    st = recv_until({STATUS_RESP}, 3) or fail("no STATUS_RESP")
    st[6] == last or fail("stale COMMIT applied: applied=%d" % st[6])
    send(COMMIT, boot, last + 1, 1, 7)
    time.sleep(0.3); send(STATUS, 100)
    st = recv_until({STATUS_RESP}, 3) or fail("no STATUS_RESP")
    st[6] == last + 1 or fail("COMMIT of the right epoch not applied: applied=%d" % st[6])
    open(sys.argv[3], "w").write(str(boot))
else:
    # after a restart: the old instance's boot id is refused
    old = int(open(sys.argv[3]).read())
    old != boot or fail("stored kept its boot id across a restart")
    send(APPEND, old, 3, 1, 1, 7, 0, 0, [[last + 1, 1, 1, b""]])
    h = recv_until({HELLO, APPENDED}, 2)
    (h and h[1] == HELLO and h[2] == boot) or fail("APPEND for the previous instance not refused: %r" % h)
print("ok")
PY
out=$(/usr/bin/python3 "$T_TMP/fake_raftd.py" "$D/run" fresh "$T_TMP/boot" 2>&1 || true)
t_eq "right epoch acknowledged and applied; stale APPEND and COMMIT ignored" ok "${out##*$'\n'}"
t_kill9 "$S"
t_start_daemon "$T_TMP/stored.log" "$CAIRN_BIN/stored" $flags; S=$T_LAST_PID
out=$(/usr/bin/python3 "$T_TMP/fake_raftd.py" "$D/run" restarted "$T_TMP/boot" 2>&1 || true)
t_eq "after kill -9 the previous instance's epoch is refused" ok "${out##*$'\n'}"
t_stop "$S"
t_done
