/* gatewayd - entry point (being written). */
#include <stdio.h>
int main(void) { fprintf(stderr, "gatewayd: not built yet\n"); return 1; }
