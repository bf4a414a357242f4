/* gateway.h - `vectron gateway` (gateway_main.c): argv after the command word. */
#ifndef VX_GATEWAY_GATEWAY_H
#define VX_GATEWAY_GATEWAY_H

int vx_gateway_main(int argc, char **argv);

#endif
