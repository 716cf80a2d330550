"""Full-screen and modal screens of the app: help, dialogs."""
