"""Sources: the only modules that do network I/O."""
