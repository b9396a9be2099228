# Stub for the optional C extension (sixmm/protocol/_depthfast.c); see sixmm/protocol/depth.py.
from typing import Any, Container, List, Optional, Tuple

def levels(raw: Any, known: Container[str], /) -> Optional[List[Tuple[str, str]]]: ...
