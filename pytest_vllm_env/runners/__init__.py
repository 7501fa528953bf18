"""Real tools run as subprocesses with a timeout (the target env's Python, CMake, the GPU probes),
and the judgement of what they printed.
"""
