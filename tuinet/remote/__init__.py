"""Detached trainers behind a Unix socket: the server in the trainer, the client for viewers, the CLI commands."""
