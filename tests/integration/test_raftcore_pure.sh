#!/usr/bin/env bash
# The raft core (services/raftd/core/, built as libcairn_raftcore.a) is pure and deterministic
# (DESIGN.md: no sockets, no files, no clock, no random source of its own): every symbol it
# leaves undefined must be a memory/string function from a short allow-list, or a runtime
# symbol the compiler itself inserts (stack protector, libgcc arithmetic helpers, and the
# sanitizers' hooks when this build has CAIRN_SANITIZE). A call to time(), rand(), read(),
# clock_gettime(), printf() or into another Cairn module fails the test and names the symbol.
. "$(dirname "$0")/lib.sh"
LIB=$CAIRN_BIN/libcairn_raftcore.a
if [ ! -f "$LIB" ]; then t_fail "no $LIB (the raft core library is not built)"; t_done; exit 1; fi

ALLOW='^(memcpy|memmove|memset|memcmp|memchr|malloc|calloc|realloc|free|strlen|qsort|bsearch)$'
# inserted by the compiler, not called by the code
ALLOW_RT='^(__stack_chk_fail|__stack_chk_guard|__(u?div|u?mod|mul|pop|clz|ctz|ffs|parity)[a-z]*[dt]i[0-9])$'
san=$(sed -n 's/^CAIRN_SANITIZE:STRING=//p' "$CAIRN_BIN/CMakeCache.txt" 2>/dev/null || true)
[ -n "$san" ] && ALLOW_RT="$ALLOW_RT|^__(asan|ubsan|lsan|sanitizer)_"
echo "# $LIB (sanitizers: ${san:-none})"

defined=$(nm --defined-only -g "$LIB" | awk 'NF == 3 { print $3 }' | sort -u)
# the check is only as good as nm's answer: the archive must hold the core's entry points
grep -qx 'cairn_raft_new' <<<"$defined" && grep -qx 'cairn_raft_step' <<<"$defined" &&
  t_ok "nm reads the core: it defines cairn_raft_new and cairn_raft_step" ||
  t_fail "nm finds no cairn_raft_new/cairn_raft_step in $LIB"

undef=$(nm -u "$LIB" | awk 'NF == 2 { print $2 }' | sort -u)
# a symbol defined in another member of the archive itself is not an outside reference
outside=$(comm -23 <(echo "$undef") <(echo "$defined") | grep . || true)
echo "# undefined: $(tr '\n' ' ' <<<"$outside")"
bad=$(grep -Ev "$ALLOW" <<<"$outside" | grep -Ev "$ALLOW_RT" || true)
[ -n "$outside" ] && t_ok "the core references some outside symbols (nm -u works)" || t_fail "nm -u found nothing at all"
if [ -z "$bad" ]; then
  t_ok "the raft core references no I/O, clock or randomness: only memory functions"
else
  t_fail "the raft core references symbols outside its allow-list: $(tr '\n' ' ' <<<"$bad")"
  for s in $bad; do
    # which object asks for it
    nm -A -u "$LIB" 2>/dev/null | grep -w -- "$s" | sed 's/^/#   /' >&2
  done
fi
t_done
