#!/usr/bin/env bash
# A failed append on the persistence path is never acknowledged (issue 7, defect 3): a script
# plays raftd against a real stored whose WAL buffer cannot grow (CAIRN_TEST_FAULTS=1 and
# <run>/fault-wal-alloc). An APPEND carrying a new term and vote must get no APPENDED (raftd
# would otherwise send a vote that is not on disk); stored stops with an error, and after a
# restart the term and vote it never made durable are not there.
. "$(dirname "$0")/lib.sh"
CP=$(t_port); PP=$(t_port)
D=$T_TMP/node
flags=$(t_node_flags node "$D" "$CP" "$PP")
mkdir -p "$D/run"
CAIRN_TEST_FAULTS=1 t_start_daemon "$T_TMP/stored.log" "$CAIRN_BIN/stored" $flags; S=$T_LAST_PID
cat >"$T_TMP/fake_raftd.py" <<'PY'
import os, sys, time
run, phase = sys.argv[1], sys.argv[2]
sys.path.insert(0, os.environ["CAIRN_SRC"] + "/tests/integration")
from ipcpack import FakeRaftd
LOAD, LOAD_RESP, APPEND, APPENDED = 5, 6, 7, 8
raftd = FakeRaftd(run)
send, recv_until = raftd.send, raftd.recv_until
def fail(msg): print("FAIL", msg); sys.exit(1)
m = None
for _ in range(40):
    send(LOAD, 0, 1)  # from the start, request seq 1
    m = recv_until({LOAD_RESP}, 0.25)
    if m: break
m or fail("no LOAD_RESP")
boot, term, vote = m[2], m[3], m[4]
if phase == "fault":
    open(os.path.join(run, "fault-wal-alloc"), "w").close()
    # APPEND: boot, seq, has_hs, term, vote, commit, index, entries
    send(APPEND, boot, 1, 1, term + 5, 0xabc, 0, 0, [])
    a = recv_until({APPENDED}, 2)
    a and fail("a hard state that could not be buffered was acknowledged: %r" % a)
    print("ok")
else:
    (term, vote) != (5, 0xabc) or fail("the unacknowledged term/vote is on disk")
    # the WAL works again without the fault
    send(APPEND, boot, 2, 1, term + 1, 0xdef, 0, 0, [])
    a = recv_until({APPENDED}, 3) or fail("APPEND not acknowledged after the restart")
    print("ok")
PY
out=$(/usr/bin/python3 "$T_TMP/fake_raftd.py" "$D/run" fault 2>&1 || true)
t_eq "a hard state append that failed is not acknowledged" ok "${out##*$'\n'}"
# stored stops by itself (its supervisor restarts it)
for _ in $(seq 1 50); do kill -0 "$S" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$S" 2>/dev/null; then t_fail "stored kept running after a persistence failure"; t_kill9 "$S"; else
  wait "$S" 2>/dev/null && rc=0 || rc=$?
  t_eq "stored exits non-zero" 1 "$([ "$rc" -ne 0 ] && echo 1 || echo 0)"
fi
t_contains "the reason is logged" "cannot persist raft state" "$(cat "$T_TMP/stored.log")"
rm -f "$D/run/fault-wal-alloc"
t_start_daemon "$T_TMP/stored.log" "$CAIRN_BIN/stored" $flags; S=$T_LAST_PID
out=$(/usr/bin/python3 "$T_TMP/fake_raftd.py" "$D/run" after 2>&1 || true)
t_eq "after a restart the unacknowledged term and vote are absent and the WAL works" ok "${out##*$'\n'}"
t_stop "$S"
t_done
