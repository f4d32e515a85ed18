"""Tests of the haiku backend: its parameter names, converter, initialisation and forward pass."""
