"""Helpers shared by several test folders: tiny models (also ``module:factory`` specs, e.g.
``tests.helpers.tiny_models:make_net``), the selection rule, compression data and metrics."""
