/* events.h - what every applied revision changed, for the gateways' watchers.
 *
 * Live: stored publishes the events of each applied batch on a PUB socket (<run>/events.ipc,
 * CAIRN_IPC_EVENTS, format in cairn_ipc.h), after the batch is written - never an event of a
 * batch that was abandoned. Every gateway of the node subscribes. A frame holds at most
 * CAIRN_EVENTS_FRAME_BYTES of events (a larger revision continues in the next frame, more = 1),
 * and one batch buffers at most CAIRN_EVENTS_BATCH_BYTES: past that the revisions are not
 * published at all but announced by an empty frame (start_rev..revision, no body), and the
 * gateways read them back from history. So memory here never grows with a write.
 *
 * History: a gateway whose watcher starts in the past, or that saw a gap, asks HISTORY for a
 * key range from a revision on; the answer (HISTORY_RESP) holds the events of whole revisions
 * up to a byte budget and a scan budget, and the revision it covers up to, so the gateway asks
 * again from there. Nothing grows with the history.
 *
 * Event encoding (both): a packed etcdserverpb.WatchResponse holding only field 11 (events),
 * each an mvccpb.Event {type, kv, prev_kv}; a DELETE's kv is {key, mod_revision} (etcd's), and
 * prev_kv is the key's version before the change when it existed. The gateway strips prev_kv
 * for watchers that did not ask for it.
 */
#ifndef CAIRN_STORED_EVENTS_H
#define CAIRN_STORED_EVENTS_H

#include <stddef.h>
#include <stdint.h>

#include "cairn_ipc.h"
#include "mvcc.h"

#define CAIRN_EVENTS_FRAME_BYTES ((size_t)1 << 20)
#define CAIRN_EVENTS_BATCH_BYTES ((size_t)64 << 20)
/* HISTORY: changes looked at per answer, matching or not (bounds the time one answer takes) */
#define CAIRN_EVENTS_SCAN_BUDGET 200000
#define CAIRN_EVENTS_HISTORY_MAX_BYTES ((size_t)4 << 20)

typedef struct cairn_events_t cairn_events_t;

/* A publisher bound at endpoint ("ipc://<run>/events.ipc"). NULL on failure, *err set. */
cairn_events_t *cairn_events_new(const char *endpoint, int *err);
void cairn_events_destroy(cairn_events_t **self_p);

/* The MVCC observer (cairn_mvcc_set_event_fn(m, cairn_events_observe, ev)): buffers one change
 * of the open batch. */
void cairn_events_observe(void *arg, int type, const cairn_kv_t *kv, const cairn_kv_t *prev_kv, int64_t sub);
/* After the batch was written: publishes what it changed. Returns 0 or a CAIRN_E* (a frame
 * that could not be sent is a gap the gateways detect and repair; nothing else to do). */
int cairn_events_publish(cairn_events_t *ev);
/* After the batch was abandoned: forgets what it buffered. */
void cairn_events_discard(cairn_events_t *ev);
/* Publishes a frame without a body: revisions from..to happened and are not carried (a store
 * replaced by a snapshot jumps); gateways read them from history at once instead of noticing
 * the gap at the next frame or the next status. */
int cairn_events_announce(cairn_events_t *ev, int64_t from, int64_t to);
/* Frames published and dropped (a full queue) so far. */
uint64_t cairn_events_published(const cairn_events_t *ev);
uint64_t cairn_events_dropped(const cairn_events_t *ev);

/* Serves a HISTORY request on the committed state: fills *resp (a HISTORY_RESP for req) and
 * *owned (free it after sending; body points into it). */
void cairn_events_history(cairn_mvcc_t *m, const cairn_ipc_msg_t *req, cairn_ipc_msg_t *resp, uint8_t **owned);

#endif
