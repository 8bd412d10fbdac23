"""Distributed DiLoCo training across MLNodes over the signed tensor transport."""
