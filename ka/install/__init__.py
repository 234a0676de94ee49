"""ka-install: the install flows (pacman, apt), rollback and restore, and the parts they share: the
device, extlinux, backups, the heartbeat, the boot-once trial and the way back.
"""
