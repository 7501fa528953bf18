"""The buildlog tier: a failed vLLM build's log, judged to its cause and fix."""

import pytest

from pytest_vllm_env.checks import buildlog
from pytest_vllm_env.findings import skipped
from pytest_vllm_env.readers.buildlog import read_log

pytestmark = pytest.mark.toolchain


@pytest.mark.vllm_check("buildlog.clean")
def test_build_logs(vllm_build_logs, request, verdict):
    if not vllm_build_logs:
        verdict(skipped("buildlog.clean", "no --vllm-build-log given"))
        return
    # the fixes are written for the judged env and its one torch/CUDA target, read only when
    # there is a log to judge (a log is judged in lock mode too: the env's installed files,
    # which the target reads, are not asked for then)
    env = request.getfixturevalue("vllm_env")
    targets = request.getfixturevalue("fix_targets") if env.locked is None else None
    verdict(*(buildlog.judge(read_log(p), env, targets) for p in vllm_build_logs))
