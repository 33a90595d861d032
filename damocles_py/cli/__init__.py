"""Command-line entry points: damocles-worker and damocles-manager."""
