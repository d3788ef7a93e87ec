/* cairn_procmetrics.h - the process_* metrics of client_golang's process collector (what
 * etcd's /metrics has: resident and virtual memory, CPU seconds, open and max file
 * descriptors, start time), for each of the node's processes.
 *
 * A node is three processes and its /metrics page one scrape (gatewayd's gw_metrics.c puts
 * the processes' texts together): every series carries the label process="raftd" |
 * "stored" | "gatewayd", so a dashboard that sums process_resident_memory_bytes per
 * instance gets the member's total, and one that does not sees the three lines. The
 * families have etcd's names, help texts and types.
 */
#ifndef CAIRN_PROCMETRICS_H
#define CAIRN_PROCMETRICS_H

#include <stddef.h>

typedef struct cairn_procmetrics_t cairn_procmetrics_t;

/* name: the process label value. NULL when out of memory. */
cairn_procmetrics_t *cairn_procmetrics_new(const char *name);
void cairn_procmetrics_destroy(cairn_procmetrics_t **self_p);
/* Reads /proc/self now and writes the families into buf (as cairn_metrics_render: the length,
 * or CAIRN_ETOOBIG). A value /proc cannot give (it always can on Linux) would read 0. */
int cairn_procmetrics_render(cairn_procmetrics_t *self, char *buf, size_t cap);

#endif
