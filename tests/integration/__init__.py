"""Real programs on loopback: sshd hosts, makepkg, pacman, gpg, git, the bot as a process, the fake Forgejo."""
