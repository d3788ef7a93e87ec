/* raftd - entry point (being written). */
#include <stdio.h>
int main(void) { fprintf(stderr, "raftd: not built yet\n"); return 1; }
