"""Shared by every MLNode package: settings, lifecycle, errors, identity, signed transport."""
