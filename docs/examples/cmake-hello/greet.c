#include <stdio.h>
void greet(const char *who) { printf("hello, %s (from %s)\n", who, __FILE__); }
