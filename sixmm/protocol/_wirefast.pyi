# Stub for the optional C extension (sixmm/protocol/_wirefast.c); see frames.py and models.py.
from typing import Any, List, Optional, Type, TypeVar

_T = TypeVar("_T")

def opens(data: Any, /) -> int: ...
def trades(cls: Type[_T], data: Any, /) -> Optional[List[_T]]: ...
