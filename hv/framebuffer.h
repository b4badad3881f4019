/* The boot banner on the loader's screen: where the console is, for a person looking at the monitor. */
#pragma once
#include <stdbool.h>

/* Draws the banner if the loader handed over a framebuffer Taipan can reach; says why not on COM1. */
void framebuffer_banner(void);
/* Whether the banner was drawn (hv.boot() reports it). */
bool framebuffer_drawn(void);
