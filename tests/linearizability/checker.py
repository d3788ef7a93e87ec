#!/usr/bin/env python3
"""Linearizability checker for a key -> register history (read / write / compare-and-swap).

Usage:
  checker.py HISTORY.jsonl [--budget N] [--window N] [-q]
  checker.py --selftest

History: one JSON object per line (the format tests/linearizability/client.py writes):
  {"client": 3, "key": "k1", "f": "read",  "invoke": 1.20, "complete": 1.25, "type": "ok", "value": "v" | null}
  {"client": 3, "key": "k1", "f": "write", "invoke": ..., "complete": ..., "type": "ok" | "unknown", "value": "v"}
  {"client": 3, "key": "k1", "f": "cas",   "invoke": ..., "complete": ..., "type": "ok" | "fail" | "unknown",
   "expected": "v" | null, "new": "w"}
"value": null on a read means the key was absent; "expected": null on a CAS means "the key is absent"
(etcd: version("k") = "0"). "type": "unknown" is an operation whose outcome the client does not
know (timeout, connection error): it may have taken effect at any instant after its invocation,
or never; its "complete" is ignored (treated as +infinity). An unknown read has no effect and is
dropped. Lines with "f" not in (read, write, cas) are ignored (e.g. client summaries).

Model: every key is an independent register whose initial state is "absent" (None).
  read -> v        legal iff state == v
  write(v)         always legal; state := v
  cas(e, n) ok     legal iff state == e; state := n
  cas(e, n) fail   legal iff state != e
Linearizability is compositional (Herlihy & Wing, "locality"), so each key is checked on its own.

Algorithm: Wing & Gong's search with Lowe's memoization ("Testing for linearizability", 2017),
as in Porcupine/Knossos: a depth-first search over linearization orders, where an operation may
be linearized next iff it was invoked no later than the earliest response among the operations
not yet linearized; each visited configuration (bitmask of linearized operations, register
state) is remembered and never expanded twice. Operations with an unknown outcome have an
infinite response time: they never constrain what can go next, so they may be linearized at any
point after their invocation ("just in time": the search only places one when the model needs
it, e.g. to explain a read of its value or a failed CAS). The search succeeds as soon as every
operation with a known outcome is linearized: the unknown ones left over are the ones that did
not happen (equivalently, that happened after everything else, which nothing observed).
An unknown CAS is only tried when its comparison would succeed: a CAS that fails changes
nothing, which is the same as never having happened.

The search is bounded by a budget of visited configurations per key; exceeding it is reported
as "UNKNOWN" with exit status 2 (never as a pass).

Exit status: 0 linearizable, 1 violation (key, stuck operation and a window of operations are
printed), 2 budget exceeded or bad input.
"""
import argparse
import itertools
import json
import math
import random
import sys
import time

INF = math.inf


class Op:
    __slots__ = ("id", "client", "key", "f", "invoke", "complete", "known", "value", "expected",
                 "new", "result", "line", "bit", "eff", "group")

    def __init__(self, id, client, key, f, invoke, complete, known, value=None, expected=None,
                 new=None, result=None, line=None):
        self.id, self.client, self.key, self.f = id, client, key, f
        self.invoke, self.complete, self.known = invoke, complete, known
        self.value, self.expected, self.new, self.result = value, expected, new, result
        self.line = line
        self.bit = -1
        self.eff = value if f == "write" else new  # value written, canonicalized by check_key
        self.group = None

    def describe(self):
        if self.f == "read":
            body = "read -> %s" % _v(self.value)
        elif self.f == "write":
            body = "write(%s)" % _v(self.value)
        else:
            body = "cas(%s -> %s)" % (_v(self.expected), _v(self.new))
        if self.f == "read":
            outcome = ""
        else:
            outcome = " " + (("ok" if self.f == "write" else self.result) if self.known else "UNKNOWN")
        end = "inf" if self.complete == INF else "%.6f" % self.complete
        where = ("line %-5d" % self.line) if self.line else ("#%-5d" % self.id)
        return "%s client %-4s [%.6f, %s] %s%s" % (where, self.client, self.invoke, end, body, outcome)


def _v(x):
    if x is OPAQUE:
        return "<a value nobody observed>"
    return "<absent>" if x is None else json.dumps(x)


class _Opaque:
    """Stands for every written value that no read returns and no CAS expects: such values are
    indistinguishable to the rest of the history."""
    def __repr__(self):
        return "OPAQUE"


OPAQUE = _Opaque()


class BudgetExceeded(Exception):
    pass


def parse_history(lines):
    """Parse JSON lines into Op objects (all keys). Unknown reads are dropped."""
    ops = []
    for n, line in enumerate(lines, 1):
        line = line.strip()
        if not line:
            continue
        d = json.loads(line)
        f = d.get("f")
        if f not in ("read", "write", "cas"):
            continue
        t = d.get("type")
        if t not in ("ok", "fail", "unknown"):
            raise ValueError("line %d: bad type %r" % (n, t))
        known = t != "unknown"
        if f == "read" and not known:
            continue  # a read that failed has no effect
        if f != "cas" and t == "fail":
            raise ValueError("line %d: only cas can fail" % n)
        inv = float(d["invoke"])
        comp = float(d["complete"]) if known else INF
        if known and comp < inv:
            raise ValueError("line %d: completes before it is invoked" % n)
        op = Op(len(ops), d.get("client"), d["key"], f, inv, comp, known, line=n)
        if f in ("read", "write"):
            op.value = d.get("value")
            if f == "write" and not isinstance(op.value, str):
                raise ValueError("line %d: a write needs a string value" % n)
        else:
            op.expected, op.new = d.get("expected"), d["new"]
            if not isinstance(op.new, str):
                raise ValueError("line %d: a CAS needs a string new value" % n)
            op.result = t if known else None
        ops.append(op)
    return ops


def _step(state, op):
    """Model transition: (legal, new state)."""
    f = op.f
    if f == "read":
        return (state == op.value, state)
    if f == "write":
        return (True, op.eff)
    # cas
    if not op.known:
        # Only worth placing when it succeeds; a failing CAS is a no-op (= never happened).
        return (True, op.eff) if state == op.expected else (False, state)
    if op.result == "ok":
        return (True, op.eff) if state == op.expected else (False, state)
    return (state != op.expected, state)


class Result:
    def __init__(self, ok, key, nops, nunknown, visited, stuck=None, frontier_states=None,
                 linearized=None, depth=0, ops=None):
        self.ok, self.key, self.nops, self.nunknown, self.visited = ok, key, nops, nunknown, visited
        self.stuck, self.frontier_states, self.linearized = stuck, frontier_states, linearized
        self.depth, self.ops = depth, ops


def check_key(key, ops, budget=2_000_000, deadline=None):
    """WGL search with memoization for one key. Returns Result; raises BudgetExceeded when more
    than `budget` configurations are visited or time.monotonic() passes `deadline`."""
    known = sorted((o for o in ops if o.known), key=lambda o: (o.invoke, o.id))
    unknown = sorted((o for o in ops if not o.known), key=lambda o: (o.invoke, o.id))
    K = len(known)
    for i, o in enumerate(known):
        o.bit = i
    for j, o in enumerate(unknown):
        o.bit = K + j
    full = (1 << K) - 1
    by_ret = sorted(range(K), key=lambda i: (known[i].complete, i))
    if K == 0:
        return Result(True, key, len(ops), len(unknown), 0)
    # Values that something observes: returned by a read or expected by a CAS. Every other
    # written value is replaced by OPAQUE in the register state (sound: no step of the model can
    # tell two of them apart), which lets the memo merge configurations that differ only there.
    referenced = {o.value for o in ops if o.f == "read"} | {o.expected for o in ops if o.f == "cas"}
    for o in ops:
        raw = o.value if o.f == "write" else o.new
        o.eff = raw if raw in referenced else OPAQUE
        # Symmetry: unknown ops that would write an unobserved value and that have the same
        # precondition are interchangeable once invoked (each remains available forever after),
        # so of those that are candidates at one point only the first is tried.
        o.group = None
        if not o.known and o.eff is OPAQUE:
            o.group = ("w",) if o.f == "write" else ("c", o.expected)
    # Dead preconditions: an unknown CAS expecting value e can never fire again once every op
    # that writes e is linearized and the register has moved on (and "absent" is dead as soon
    # as anything is written: there are no deletes). Configurations that differ only in which
    # such CASes were left out have the same futures, so the memo key counts them as used.
    writers = {}
    for o in ops:
        if o.f != "read":
            raw = o.value if o.f == "write" else o.new
            writers[raw] = writers.get(raw, 0) | (1 << o.bit)
    ucas = [(1 << o.bit, o.expected, writers.get(o.expected, 0)) for o in unknown if o.f == "cas"]

    def memo_mask(mask, state):
        for b, e, wm in ucas:
            if not mask & b and state != e and (mask & wm) == wm:
                mask |= b
        return mask

    def frame(mask, state, ip, rp):
        # ip: lowest invoke-order index of a known op not yet linearized
        # rp: lowest return-order index of a known op not yet linearized
        while ip < K and (mask >> ip) & 1:
            ip += 1
        while rp < K and (mask >> by_ret[rp]) & 1:
            rp += 1
        minret = known[by_ret[rp]].complete
        cands = []
        i = ip
        while i < K and known[i].invoke <= minret:
            if not (mask >> i) & 1:
                cands.append(known[i])
            i += 1
        groups = set()
        for u in unknown:
            if u.invoke > minret:
                break
            if not (mask >> u.bit) & 1:
                if u.group is not None:
                    if u.group in groups:
                        continue
                    groups.add(u.group)
                cands.append(u)
        return [mask, state, ip, rp, cands, 0]

    seen = set()
    stack = [frame(0, None, 0, 0)]
    visited = 0
    best_depth, best = -1, []
    while stack:
        fr = stack[-1]
        mask, state, ip, rp, cands, idx = fr
        if idx == 0:
            depth = bin(mask & full).count("1")
            if depth > best_depth:
                best_depth, best = depth, [(mask, state, rp)]
            elif depth == best_depth and len(best) < 64:
                best.append((mask, state, rp))
        if idx >= len(cands):
            stack.pop()
            continue
        op = cands[idx]
        fr[5] = idx + 1
        legal, ns = _step(state, op)
        if not legal:
            continue
        nm = mask | (1 << op.bit)
        if (nm & full) == full:
            return Result(True, key, len(ops), len(unknown), visited + 1)
        ck = (memo_mask(nm, ns) if ucas else nm, ns)
        if ck in seen:
            continue
        seen.add(ck)
        visited += 1
        if visited > budget:
            raise BudgetExceeded("key %r: more than %d configurations visited (%d ops, %d unknown)"
                                 % (key, budget, len(ops), len(unknown)))
        if deadline is not None and not visited & 4095 and time.monotonic() > deadline:
            raise BudgetExceeded("key %r: time limit reached after %d configurations (%d ops, %d unknown)"
                                 % (key, visited, len(ops), len(unknown)))
        stack.append(frame(nm, ns, ip, rp))

    # Not linearizable. Report the deepest frontier: the earliest-returning known op that could
    # not be linearized there, the register states possible at that point, and what led to it.
    mask, _, rp = best[0]
    stuck = known[by_ret[rp]]
    states = sorted({s for (_, s, _) in best}, key=lambda s: (s is not None, s is OPAQUE, str(s)))
    lin = [o for o in known + unknown if (mask >> o.bit) & 1]
    return Result(False, key, len(ops), len(unknown), visited, stuck=stuck, frontier_states=states,
                  linearized=lin, depth=best_depth, ops=known + unknown)


def report_violation(res, window=12, out=sys.stdout):
    st = res.stuck
    p = lambda *a: print(*a, file=out)
    p("VIOLATION on key %s: %d ops (%d unknown); linearized %d known ops at most; no legal place for:"
      % (_v(res.key), res.nops, res.nunknown, res.depth))
    p("    " + st.describe())
    p("  register state(s) possible just before it: %s"
      % ", ".join(_v(s) for s in res.frontier_states))
    # Window: ops overlapping the stuck op's interval, plus the last `window` ops that completed
    # before it on this key (what established the states above).
    before = sorted((o for o in res.ops if o.known and o.complete < st.invoke),
                    key=lambda o: o.complete)[-window:]
    overlap = [o for o in res.ops if o is not st and o.invoke <= st.complete and o.complete >= st.invoke]
    # ... and whoever wrote the value the stuck op wanted to see, and the possible current values.
    wanted = {st.value if st.f == "read" else st.expected} | set(res.frontier_states)
    writers = [o for o in res.ops if o.f != "read" and (o.value if o.f == "write" else o.new) in wanted]
    shown = sorted(set(before) | set(overlap) | {st}, key=lambda o: (o.invoke, o.id))
    if len(shown) > 3 * window:
        shown = [o for o in shown if o.complete >= st.invoke or o in before[-window // 2:]]
    shown = sorted(set(shown) | set(writers), key=lambda o: (o.invoke, o.id))
    p("  window (by invocation; '*' = the stuck op, '+' = in the deepest partial linearization):")
    linset = set(res.linearized)
    for o in shown:
        mark = "*" if o is st else ("+" if o in linset else " ")
        p("   %s %s" % (mark, o.describe()))


def check_history(ops, budget=2_000_000, window=12, quiet=False, out=sys.stdout, deadline=None):
    """Check every key; returns exit status (0 ok, 1 violation, 2 budget)."""
    keys = {}
    for o in ops:
        keys.setdefault(o.key, []).append(o)
    status = 0
    for key in sorted(keys):
        try:
            res = check_key(key, keys[key], budget, deadline)
        except BudgetExceeded as e:
            print("UNKNOWN (search budget exceeded, NOT a pass): %s" % e, file=out)
            status = 1 if status == 1 else 2
            continue
        if res.ok:
            if not quiet:
                print("key %s: linearizable (%d ops, %d unknown, %d configurations)"
                      % (_v(key), res.nops, res.nunknown, res.visited), file=out)
        else:
            report_violation(res, window, out)
            status = 1
    return status


# ---------------------------------------------------------------------------------------------
# Self-tests
# ---------------------------------------------------------------------------------------------

def _h(*specs, key="k"):
    """Build ops from compact specs: (f, invoke, complete|None, ...)
    ("r", t0, t1, value) ("w", t0, t1|None, value) ("c", t0, t1|None, expected, new, "ok"|"fail")
    complete None = unknown outcome."""
    ops = []
    for i, s in enumerate(specs):
        f, t0, t1 = s[0], s[1], s[2]
        known = t1 is not None
        comp = t1 if known else INF
        if f == "r":
            ops.append(Op(i, i, key, "read", t0, comp, True, value=s[3]))
        elif f == "w":
            ops.append(Op(i, i, key, "write", t0, comp, known, value=s[3]))
        else:
            ops.append(Op(i, i, key, "cas", t0, comp, known, expected=s[3], new=s[4],
                          result=(s[5] if known else None)))
    return ops


def brute_force(ops):
    """Reference: try every subset of unknown ops and every real-time-respecting order."""
    known = [o for o in ops if o.known]
    unknown = [o for o in ops if not o.known]
    for r in range(len(unknown) + 1):
        for sub in itertools.combinations(unknown, r):
            chosen = known + list(sub)
            for perm in itertools.permutations(chosen):
                okp = True
                for a_i in range(len(perm)):
                    for b_i in range(a_i + 1, len(perm)):
                        # b placed after a: illegal if b returned before a was invoked
                        if perm[b_i].complete < perm[a_i].invoke:
                            okp = False
                            break
                    if not okp:
                        break
                if not okp:
                    continue
                state, good = None, True
                for o in perm:  # the model spelled out again, on raw values
                    if o.f == "read":
                        good = state == o.value
                    elif o.f == "write":
                        state = o.value
                    elif not o.known or o.result == "ok":
                        if state == o.expected:
                            state = o.new
                        elif o.known:
                            good = False
                    else:
                        good = state != o.expected
                    if not good:
                        break
                if good:
                    return True
    return False


def _random_history(rng, n, unknown_p=0.2, vals=("a", "b", "c")):
    vals = list(vals)
    ops = []
    for i in range(n):
        t0 = rng.uniform(0, 10)
        t1 = t0 + rng.uniform(0, 4)
        f = rng.choice("rwc")
        unk = f != "r" and rng.random() < unknown_p
        comp = None if unk else t1
        if f == "r":
            ops.append(("r", t0, t1, rng.choice(vals + [None])))
        elif f == "w":
            ops.append(("w", t0, comp, rng.choice(vals)))
        else:
            ops.append(("c", t0, comp, rng.choice(vals + [None]), rng.choice(vals),
                        rng.choice(["ok", "fail"])))
    return _h(*ops)


def _simulated_linearizable(rng, nclients=5, nops=400, unknown_p=0.05):
    """Concurrent clients against an atomic register with a random linearization point inside
    each op's interval; some writes/CASes lose their reply (unknown), some never happen."""
    events = []
    seq = itertools.count()
    for c in range(nclients):
        t = rng.uniform(0, 1)
        for _ in range(nops // nclients):
            d = rng.uniform(0.1, 3.0)
            events.append((t, t + d, rng.uniform(t, t + d), c))
            t += d + rng.uniform(0, 0.5)
    events.sort(key=lambda e: e[2])  # apply in linearization-point order
    state, ops, last = None, [], {}
    for (t0, t1, lp, c) in events:
        r = rng.random()
        i = len(ops)
        if r < 0.5:
            ops.append(Op(i, c, "k", "read", t0, t1, True, value=state))
            last[c] = state
            continue
        unk = rng.random() < unknown_p
        if r < 0.75:
            v = "v%d" % next(seq)
            happened = not (unk and rng.random() < 0.5)
            if happened:
                state = v
            ops.append(Op(i, c, "k", "write", t0, INF if unk else t1, not unk, value=v))
        else:
            e = last.get(c)
            n = "v%d" % next(seq)
            happened = not (unk and rng.random() < 0.5)
            res = "ok" if state == e else "fail"
            if happened and res == "ok":
                state = n
            ops.append(Op(i, c, "k", "cas", t0, INF if unk else t1, not unk, expected=e, new=n,
                          result=None if unk else res))
        if not unk:
            last[c] = state if (ops[-1].f == "write" or ops[-1].result == "ok") else last.get(c)
    return ops


def selftest():
    failures = []

    def expect(name, ops, want):
        res = check_key("k", ops)
        got = res.ok
        if got != want:
            failures.append(name)
            print("FAIL %s: expected %s, got %s" % (name, want, got))
            if not got:
                report_violation(res)
        else:
            print("ok   %s -> %s" % (name, "linearizable" if got else "violation"))
        if not want and not got and res.stuck is None:
            failures.append(name + " (no report)")
        if len(ops) <= 8 and brute_force(ops) != want:
            failures.append(name + " (brute force disagrees with the expectation)")
            print("FAIL %s: brute force disagrees" % name)

    A = None
    expect("sequential write/read/cas/read",
           _h(("w", 0, 1, "a"), ("r", 2, 3, "a"), ("c", 4, 5, "a", "b", "ok"), ("r", 6, 7, "b")), True)
    expect("initial read is absent", _h(("r", 0, 1, A), ("w", 2, 3, "a"), ("r", 4, 5, "a")), True)
    expect("read absent after acknowledged write",
           _h(("w", 0, 1, "a"), ("r", 2, 3, A)), False)
    expect("concurrent read may see old value",
           _h(("w", 0, 1, "a"), ("w", 2, 5, "b"), ("r", 3, 4, "a")), True)
    expect("concurrent read may see new value",
           _h(("w", 0, 1, "a"), ("w", 2, 5, "b"), ("r", 3, 4, "b")), True)
    expect("stale read after acknowledged write",
           _h(("w", 0, 1, "a"), ("w", 2, 3, "b"), ("r", 4, 5, "a")), False)
    expect("reads go backwards (new then old, both concurrent with the write)",
           _h(("w", 0, 1, "a"), ("w", 2, 10, "b"), ("r", 3, 4, "b"), ("r", 5, 6, "a")), False)
    expect("lost CAS (acknowledged CAS, later read of the old value)",
           _h(("w", 0, 1, "a"), ("c", 2, 3, "a", "b", "ok"), ("r", 4, 5, "a")), False)
    expect("two CAS both succeed from the same expected value",
           _h(("w", 0, 1, "a"), ("c", 2, 5, "a", "b", "ok"), ("c", 3, 6, "a", "c", "ok")), False)
    expect("two concurrent CAS, one succeeds",
           _h(("w", 0, 1, "a"), ("c", 2, 5, "a", "b", "ok"), ("c", 3, 6, "a", "c", "fail"),
              ("r", 7, 8, "b")), True)
    expect("chained CAS a->b->c concurrently",
           _h(("w", 0, 1, "a"), ("c", 2, 5, "b", "c", "ok"), ("c", 3, 6, "a", "b", "ok"),
              ("r", 7, 8, "c")), True)
    expect("CAS fails though nothing changed the value",
           _h(("w", 0, 1, "a"), ("c", 2, 3, "a", "b", "fail")), False)
    expect("CAS failure explained by a concurrent write",
           _h(("w", 0, 1, "a"), ("w", 2, 5, "c"), ("c", 3, 4, "a", "b", "fail")), True)
    expect("CAS failure explained by an indeterminate write",
           _h(("w", 0, 1, "a"), ("w", 1.5, None, "c"), ("c", 2, 3, "a", "b", "fail")), True)
    expect("CAS succeeds on a value never written",
           _h(("w", 0, 1, "a"), ("c", 2, 3, "z", "b", "ok")), False)
    expect("CAS on absent key succeeds first",
           _h(("c", 0, 1, A, "a", "ok"), ("r", 2, 3, "a")), True)
    expect("CAS on absent key succeeds after a write",
           _h(("w", 0, 1, "a"), ("c", 2, 3, A, "b", "ok")), False)
    expect("indeterminate write later observed",
           _h(("w", 0, 1, "a"), ("w", 2, None, "b"), ("r", 5, 6, "b")), True)
    expect("indeterminate write never observed (may not have happened)",
           _h(("w", 0, 1, "a"), ("w", 2, None, "b"), ("r", 5, 6, "a"), ("r", 7, 8, "a")), True)
    expect("indeterminate write observed, then the old value comes back",
           _h(("w", 0, 1, "a"), ("w", 2, None, "b"), ("r", 5, 6, "b"), ("r", 7, 8, "a")), False)
    expect("indeterminate write observed before it was invoked",
           _h(("w", 0, 1, "a"), ("r", 2, 3, "b"), ("w", 4, None, "b")), False)
    expect("indeterminate write takes effect long after it was invoked",
           _h(("w", 0, 1, "a"), ("w", 2, None, "b"), ("r", 3, 4, "a"), ("w", 5, 6, "c"),
              ("r", 7, 8, "c"), ("r", 9, 10, "b")), True)
    expect("indeterminate CAS observed",
           _h(("w", 0, 1, "a"), ("c", 2, None, "a", "b", None), ("r", 3, 4, "b")), True)
    expect("indeterminate CAS with wrong expected value observed",
           _h(("w", 0, 1, "a"), ("c", 2, None, "x", "b", None), ("r", 3, 4, "b")), False)
    expect("indeterminate CAS cannot apply after the value changed",
           _h(("w", 0, 1, "a"), ("c", 2, None, "a", "b", None), ("w", 3, 4, "c"),
              ("r", 5, 6, "c"), ("r", 7, 8, "b")), False)
    expect("indeterminate CAS applies after an indeterminate write",
           _h(("w", 0, 1, "a"), ("w", 2, None, "x"), ("c", 3, None, "x", "b", None),
              ("r", 5, 6, "b")), True)
    expect("CAS failure explained by the later of two indeterminate ops",
           _h(("w", 0, 1, "a"), ("c", 2, None, "z", "x", None), ("w", 3, None, "y"),
              ("c", 4, 5, "a", "b", "fail"), ("c", 6, 7, "z", "q", "fail")), True)
    expect("two failed CAS need two indeterminate writes, there is one",
           _h(("w", 0, 1, "a"), ("w", 2, None, "y"), ("c", 3, 4, "a", "b", "fail"),
              ("w", 5, 6, "c"), ("c", 7, 8, "c", "d", "fail")), False)
    expect("two failed CAS explained by two indeterminate writes",
           _h(("w", 0, 1, "a"), ("w", 2, None, "y"), ("w", 2.5, None, "u"),
              ("c", 3, 4, "a", "b", "fail"), ("w", 5, 6, "c"), ("c", 7, 8, "c", "d", "fail")), True)
    expect("overlap: read invoked exactly at a write's completion may precede it",
           _h(("w", 0, 1, "a"), ("w", 2, 3, "b"), ("r", 3, 4, "a")), True)

    # Per-key composition: one key fine, one key broken -> the history as a whole is rejected.
    ops = _h(("w", 0, 1, "a"), ("r", 2, 3, "a"), key="k1") + \
        _h(("w", 0, 1, "a"), ("w", 2, 3, "b"), ("r", 4, 5, "a"), key="k2")
    for i, o in enumerate(ops):
        o.id = i
    import io
    buf = io.StringIO()
    st = check_history(ops, out=buf)
    if st != 1 or 'VIOLATION on key "k2"' not in buf.getvalue() or '"k1": linearizable' not in buf.getvalue():
        failures.append("per-key composition")
        print("FAIL per-key composition:\n" + buf.getvalue())
    else:
        print("ok   per-key: violation reported on k2 only")

    # JSON round trip through the parser.
    lines = [json.dumps(x) for x in [
        {"client": 0, "key": "x", "f": "write", "invoke": 0, "complete": 1, "type": "ok", "value": "a"},
        {"client": 1, "key": "x", "f": "write", "invoke": 2, "complete": None, "type": "unknown", "value": "b"},
        {"client": 2, "key": "x", "f": "read", "invoke": 3, "complete": None, "type": "unknown"},
        {"client": 2, "key": "x", "f": "cas", "invoke": 4, "complete": 5, "type": "ok", "expected": "b", "new": "c"},
        {"client": 2, "key": "x", "f": "cas", "invoke": 6, "complete": 7, "type": "fail", "expected": None, "new": "d"},
        {"client": 2, "key": "x", "f": "read", "invoke": 8, "complete": 9, "type": "ok", "value": "c"},
        {"summary": True}]]
    parsed = parse_history(lines)
    buf = io.StringIO()
    if len(parsed) != 5 or check_history(parsed, out=buf) != 0:
        failures.append("parse + check")
        print("FAIL parse + check\n" + buf.getvalue())
    else:
        print("ok   JSON lines parsed (unknown read dropped) and checked")

    # The budget is a failure, never a pass.
    rng = random.Random(7)
    big = _simulated_linearizable(rng, nclients=8, nops=400, unknown_p=0.2)
    try:
        check_key("k", big, budget=10)
        failures.append("budget")
        print("FAIL budget: a 10-configuration budget did not trip")
    except BudgetExceeded:
        print("ok   budget exceeded raises (reported as UNKNOWN, exit 2)")
    buf = io.StringIO()
    if check_history(big, budget=10, out=buf) != 2 or "UNKNOWN" not in buf.getvalue():
        failures.append("budget exit status")

    # Differential test against brute force on small random histories.
    rng = random.Random(12345)
    agree = {True: 0, False: 0}
    for trial in range(1500):
        ops = _random_history(rng, rng.randint(1, 6))
        want = brute_force(ops)
        got = check_key("k", ops).ok
        if got != want:
            failures.append("differential trial %d" % trial)
            print("FAIL differential trial %d: brute=%s wgl=%s" % (trial, want, got))
            for o in ops:
                print("   ", o.describe())
            break
        agree[got] += 1
    # Second family: small simulated executions (unique values, many unknown outcomes, so that
    # unobserved values and the symmetry between unknown ops come into play), half of them with
    # one random mutation.
    for trial in range(1500):
        ops = _simulated_linearizable(rng, nclients=3, nops=rng.randint(3, 7), unknown_p=0.4)
        if rng.random() < 0.5:
            o = rng.choice(ops)
            written = [x.value for x in ops if x.f == "write"] + [x.new for x in ops if x.f == "cas"]
            if o.f == "read":
                o.value = rng.choice(written + [None])
            elif o.f == "cas" and o.known:
                o.result = "fail" if o.result == "ok" else "ok"
            elif o.f == "cas":
                o.expected = rng.choice(written + [None])
            else:
                o.known, o.complete = False, INF
        want = brute_force(ops)
        got = check_key("k", ops).ok
        if got != want:
            failures.append("differential sim trial %d" % trial)
            print("FAIL differential sim trial %d: brute=%s wgl=%s" % (trial, want, got))
            for o in ops:
                print("   ", o.describe())
            break
        agree[got] += 1
    print("ok   WGL agrees with brute force on 3000 random small histories (%d linearizable, %d not)"
          % (agree[True], agree[False]))
    if agree[False] < 300 or agree[True] < 300:
        failures.append("differential coverage")

    # Simulated concurrent executions of an atomic register are linearizable; corrupting one read
    # to a value that was never current during its interval is caught.
    caught = 0
    for seed in range(20):
        rng = random.Random(seed)
        ops = _simulated_linearizable(rng, nclients=6, nops=300, unknown_p=0.05)
        res = check_key("k", ops)
        if not res.ok:
            failures.append("simulated seed %d" % seed)
            print("FAIL simulated linearizable history seed %d rejected" % seed)
            report_violation(res)
            break
        reads = [o for o in ops if o.f == "read" and o.value is not None]
        victim = rng.choice(reads)
        victim.value = "never-written"
        if not check_key("k", ops).ok:
            caught += 1
    print("ok   20 simulated 300-op histories (6 clients, 5%% unknown) linearizable; %d/20 corruptions caught"
          % caught)
    if caught != 20:
        failures.append("corruption not caught")

    # Stale read: a read returning the value of a write that was already overwritten before the
    # read started (the classic follower-read bug) inside a large history.
    rng = random.Random(99)
    ops = _simulated_linearizable(rng, nclients=6, nops=300, unknown_p=0.0)
    writes = sorted((o for o in ops if o.f == "write"), key=lambda o: o.complete)
    stale_ok = False
    for w1, w2 in zip(writes, writes[1:]):
        if not w1.complete < w2.invoke:
            continue  # w2 must really follow w1, so w1's value can never be current again
        later = [o for o in ops if o.f == "read" and o.invoke > w2.complete and o.value != w1.value]
        if later:
            later[0].value = w1.value
            stale_ok = not check_key("k", ops).ok
            break
    print(("ok  " if stale_ok else "FAIL") + " injected stale read in a 300-op history is a violation")
    if not stale_ok:
        failures.append("injected stale read")

    print("selftest: %s" % ("PASS" if not failures else "FAIL: " + ", ".join(failures)))
    return 0 if not failures else 1


def inject_stale_read(lines, seed=0):
    """Negative control: return a copy of a JSON-lines history in which one successful read that
    started after two real-time-ordered acknowledged writes on its key (w1 completed before w2
    was invoked, w2 completed before the read was invoked) returns w1's value instead. With
    unique written values this is never linearizable. Returns (lines, description) or
    (None, reason)."""
    recs = [json.loads(l) for l in lines if l.strip()]
    rng = random.Random(seed)
    byk = {}
    for i, d in enumerate(recs):
        if d.get("f") in ("read", "write", "cas"):
            byk.setdefault(d["key"], []).append(i)
    cands = []
    for key, idx in byk.items():
        ws = sorted((recs[i] for i in idx if recs[i]["f"] == "write" and recs[i]["type"] == "ok"),
                    key=lambda d: d["complete"])
        rs = [recs[i] for i in idx if recs[i]["f"] == "read" and recs[i]["type"] == "ok"]
        for w1, w2 in zip(ws, ws[1:]):
            if w1["complete"] < w2["invoke"]:
                for r in rs:
                    if r["invoke"] > w2["complete"] and r.get("value") != w1["value"]:
                        cands.append((w1, r))
                        break
    if not cands:
        return None, "no read follows two ordered acknowledged writes"
    w1, r = rng.choice(cands)
    desc = "read by client %s on %s at %.6f now returns %r (overwritten before it started)" % (
        r["client"], r["key"], r["invoke"], w1["value"])
    r["value"] = w1["value"]
    return [json.dumps(d) + "\n" for d in recs], desc


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("history", nargs="?")
    ap.add_argument("--selftest", action="store_true")
    ap.add_argument("--budget", type=int, default=2_000_000,
                    help="max configurations visited per key before giving up (exit 2)")
    ap.add_argument("--time-limit", type=float, default=None,
                    help="seconds for the whole check before giving up (exit 2)")
    ap.add_argument("--window", type=int, default=12)
    ap.add_argument("-q", "--quiet", action="store_true")
    ap.add_argument("--inject-stale-read", metavar="OUT",
                    help="write a copy of HISTORY with one read made stale (a negative control "
                         "that the checker must reject) to OUT, and exit")
    a = ap.parse_args()
    if a.selftest:
        sys.exit(selftest())
    if a.inject_stale_read:
        with open(a.history) as fh:
            out, desc = inject_stale_read(fh.readlines())
        if out is None:
            print("cannot inject: %s" % desc)
            sys.exit(2)
        with open(a.inject_stale_read, "w") as fh:
            fh.writelines(out)
        print("injected: %s" % desc)
        sys.exit(0)
    if not a.history:
        ap.error("a history file (or --selftest) is required")
    try:
        with open(a.history) as fh:
            ops = parse_history(fh)
    except (ValueError, KeyError, json.JSONDecodeError) as e:
        print("bad history: %s" % e)
        sys.exit(2)
    if not ops:
        print("empty history")
        sys.exit(2)
    deadline = time.monotonic() + a.time_limit if a.time_limit else None
    st = check_history(ops, a.budget, a.window, a.quiet, deadline=deadline)
    n_unknown = sum(1 for o in ops if not o.known)
    verdict = {0: "LINEARIZABLE", 1: "NOT LINEARIZABLE", 2: "UNKNOWN (budget exceeded)"}[st]
    print("%s: %d ops on %d keys (%d with unknown outcome)"
          % (verdict, len(ops), len({o.key for o in ops}), n_unknown))
    sys.exit(st)


if __name__ == "__main__":
    main()
