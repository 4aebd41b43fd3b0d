"""Pure core: no sockets, files, clocks or kubernetes imports."""
