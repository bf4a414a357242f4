/* admin.h - `vectron admin` (admin.c): argv after the command word. */
#ifndef VX_PD_ADMIN_H
#define VX_PD_ADMIN_H

int vx_admin_main(int argc, char **argv);

#endif
