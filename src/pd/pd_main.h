/* pd_main.h - `vectron pd` (pd_main.c): argv after the command word. */
#ifndef VX_PD_PD_MAIN_H
#define VX_PD_PD_MAIN_H

int vx_pd_main(int argc, char **argv);

#endif
