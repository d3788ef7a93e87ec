/* gateway.h - gatewayd's etcd service layer: turns gRPC calls (from h2srv) into IPC
 * requests to the node's raftd and stored, and their answers back into gRPC responses. */
#ifndef CAIRN_GATEWAY_H
#define CAIRN_GATEWAY_H

#include "cairn_config.h"

typedef struct cairn_gateway cairn_gateway_t;

/* Binds the client URLs and connects to raftd and stored. NULL on failure (logged). */
cairn_gateway_t *cairn_gateway_new(cairn_config_t *cfg);
void cairn_gateway_destroy(cairn_gateway_t **self_p);
/* Runs the loop until *stop becomes non-zero; then drains clients and returns 0. */
int cairn_gateway_run(cairn_gateway_t *self, volatile int *stop);

#endif
