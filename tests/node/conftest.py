"""The node tests' fixtures (defined in tests/node/kit.py with the helpers)."""

from tests.node.kit import model, node_port, orthanc  # noqa: F401 - pytest fixtures
