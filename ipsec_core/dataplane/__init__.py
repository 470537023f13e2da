"""The sans-I/O IPsec data plane: SAs (`sa`), anti-replay (`replay`), the SAD and SPD, SA
bundles, IP fragment reassembly, the tunnel header rules, AH (`ah`) and ESP (`esp`).

Takes bytes and `now`, gives bytes or a `PacketDropped` with its reason.  Never opens a socket,
never reads the clock, never asks for the process-wide crypto registry except through
`SecurityAssociation(config)` when the caller passes none.
"""
