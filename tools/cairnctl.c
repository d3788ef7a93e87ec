/* cairnctl - entry point (being written). */
#include <stdio.h>
int main(void) { fprintf(stderr, "cairnctl: not built yet\n"); return 1; }
