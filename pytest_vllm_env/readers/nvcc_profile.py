"""``nvcc.profile``: the variables nvcc sets from the file beside its binary, read without
running nvcc (``--vllm-static``).

``nvcc -v`` prints what it took from this file (``#$ TOP=``, ``#$ INCLUDES=``,
``#$ LIBRARIES=``), and CMake's FindCUDAToolkit reads those lines to find the toolkit root and,
from CMake 3.28, the include and library dirs. The file's language (CUDA Compiler Driver NVCC,
"NVCC profile"; conda-forge's ``cuda-nvcc-tools`` and NVIDIA's toolkits ship one): one
assignment a line, ``NAME = value``, ``NAME ?= value`` (only when not yet set), ``NAME +=
value`` (appended), ``NAME =+ value`` (prepended); ``$(NAME)`` is replaced by a variable's
value, ``_HERE_`` is the directory of the nvcc binary and ``_SPACE_`` a space; ``#`` starts a
comment.
"""

from __future__ import annotations

import re

_LINE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(\?=|\+=|=\+|=)\s*(.*?)\s*$")
_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def parse(text: str, here: str) -> dict[str, str]:
    """The profile's variables after every line is applied, ``_HERE_`` being ``here``."""
    values: dict[str, str] = {"_HERE_": here, "_SPACE_": " "}
    for raw in text.splitlines():
        line = raw.split("#", 1)[0]
        match = _LINE.match(line)
        if not match:
            continue
        name, op, value = match.groups()
        value = _REF.sub(lambda m: values.get(m.group(1), ""), value)
        if op == "=":
            values[name] = value
        elif op == "?=":
            values.setdefault(name, value)
        elif op == "+=":
            values[name] = values.get(name, "") + value
        else:  # "=+"
            values[name] = value + values.get(name, "")
    return values
