"""The journal: its backends, faults, and several daemons sharing one."""
