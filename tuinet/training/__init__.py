"""The training loop, its protocol, schedules, run folders, headless console and in-process session."""
