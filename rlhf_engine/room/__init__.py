"""The workshop room: one server, many participants. The room's folder and tokens, each participant's own
workspace, the links (and their QR code), the slots the room's jobs share, and the room's frontier.
"""
