"""The lifecycle core: pure rules, events in, actions out; no sockets, no processes, no clock."""
