"""The buildlog tier: a failed vLLM build's log, judged to its cause and fix."""

import pytest

from pytest_vllm_env.checks import buildlog
from pytest_vllm_env.findings import skipped
from pytest_vllm_env.readers.buildlog import read_log

pytestmark = pytest.mark.toolchain


@pytest.mark.vllm_check("buildlog.clean")
def test_build_logs(vllm_build_logs, vllm_env, request, verdict):
    if not vllm_build_logs:
        verdict(skipped("buildlog.clean", "no --vllm-build-log given"))
        return
    # the fixes are written for the judged env and its one torch/CUDA target (read only when
    # there is a log to judge)
    targets = request.getfixturevalue("fix_targets")
    verdict(*(buildlog.judge(read_log(p), vllm_env, targets) for p in vllm_build_logs))
