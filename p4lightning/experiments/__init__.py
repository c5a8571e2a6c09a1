"""Runnable experiments of the paper (each a module with a ``main()``)."""
