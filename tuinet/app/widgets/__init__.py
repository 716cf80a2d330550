"""The app's widgets, one module per part of the screen they draw."""
