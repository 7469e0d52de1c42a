"""The bedside DICOM node (``edgemed-run serve node.toml``): a Storage SCP that spools what it
receives (encrypted, journalled), groups it per series, runs the installed bundle and sends the
result (DICOM SR / SEG) to the PACS by C-STORE, exactly once per series and bundle.

Needs the runtime's ``node`` extra (pynetdicom, highdicom): ``pip install
'edgemed-runtime[node]'``. See docs/node.md.
"""

from .config import NodeConfig, load_config, parse_config
from .infer import InstanceResult, SeriesResult, infer_series
from .service import Node, serve

__all__ = ["InstanceResult", "Node", "NodeConfig", "SeriesResult", "infer_series", "load_config",
           "parse_config", "serve"]
