"""Check functions: facts in, ``Finding``s out (passed, warning, failed, error), each with the fix
in the env's own language.
"""
