"""Sans-I/O IKEv2 (RFC 7296): wire codecs now; session, state table and key material to follow.

Modules here never open a socket or read the clock.
"""
