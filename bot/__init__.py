"""The kernel-agent webhook bot: Forgejo/Gitea deliveries in, commit statuses and comments out."""
