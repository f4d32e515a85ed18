"""Tests of the Keras backend: its layers and model, variable names, converter and Keras workflows."""
