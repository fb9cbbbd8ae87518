"""The shared core: what every migration family uses. Imports no family."""
