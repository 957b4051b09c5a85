"""Terminology services over the CodeSystems and ValueSets stored on this server (the project's own)."""
