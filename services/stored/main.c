/* stored - entry point (being written). */
#include <stdio.h>
int main(void) { fprintf(stderr, "stored: not built yet\n"); return 1; }
