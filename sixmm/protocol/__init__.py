"""The wire layer: pure (no sockets, threads or clocks), text in, typed events out.

Every rule that PROTOCOL.md marks [assumed] lives in this package and nowhere else.
"""
