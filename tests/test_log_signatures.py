"""The worker log signature table: each signature from lines its component really prints,
the most specific one first, counts, and no cause from a line that merely says 'error'."""

from __future__ import annotations

import pytest

from model.observation import LogLine
from rules.log_signatures import BY_NAME, SIGNATURES, classify, describe


def lines(*texts: str, source: str = "container") -> list[LogLine]:
    return [LogLine(1_780_000_000.0 + i, source, t) for i, t in enumerate(texts)]


REAL: dict[str, list[str]] = {
    "oom_killed": [
        "worker exited with exit code 137",
        "Container exited with code 137",  # not an "exit code" phrase: see below
        "/start.sh: line 12:    42 Killed                  python -u handler.py",
        "Killed",
        "Reason: OOMKilled",
        "Out of memory: Killed process 4242 (python) total-vm:62371420kB",
    ],
    "cuda_oom": [
        "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; "
        "23.65 GiB total capacity; 21.90 GiB already allocated)",
        "RuntimeError: CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`",
    ],
    "disk_full": [
        "OSError: [Errno 28] No space left on device: '/workspace/models/model-00003.safetensors'",
        "failed to register layer: write /usr/lib/x86_64-linux-gnu/libcudnn.so.9: no space left "
        "on device",
        "worker exited with exit code 139",
    ],
    "handler_missing": [
        "python: can't open file '/runpod-volume/handler-repo/handler.py': [Errno 2] No such "
        "file or directory",
        "bash: /runpod-volume/handler-repo/start.sh: No such file or directory",
        "worker exited with exit code 2",
    ],
    "module_missing": [
        "ModuleNotFoundError: No module named 'torchvision'",
        "ImportError: cannot import name 'cached_download' from 'huggingface_hub'",
    ],
    "hf_download": [
        "huggingface_hub.errors.GatedRepoError: 403 Client Error. Cannot access gated repo for "
        "url https://huggingface.co/meta-llama/Llama-3.1-8B/resolve/main/config.json.",
        "huggingface_hub.utils._errors.RepositoryNotFoundError: 401 Client Error. (Request ID: "
        "Root=1-6650)",
        "huggingface_hub.errors.RevisionNotFoundError: 404 Client Error. Revision Not Found for "
        "url: https://huggingface.co/api/models/org/model/revision/v9.",
        "requests.exceptions.HTTPError: 401 Client Error: Unauthorized for url: "
        "https://huggingface.co/org/private/resolve/main/model.safetensors",
    ],
    "git_auth": [
        "fatal: Authentication failed for 'https://github.com/acme/worker.git/'",
        "fatal: could not read Username for 'https://github.com': No such device or address",
        "remote: Repository not found.",
        "git@github.com: Permission denied (publickey).",
    ],
    "image_pull": [
        "error pulling image: manifest unknown: manifest unknown",
        "Error response from daemon: manifest for acme/worker:v9 not found: manifest unknown",
        "failed to pull image: unauthorized: authentication required",
        "pull access denied for acme/private, repository does not exist or may require "
        "'docker login'",
    ],
    "cuda_driver": [
        "RuntimeError: The NVIDIA driver on your system is too old (found version 11080).",
        "CUDA error: CUDA driver version is insufficient for CUDA runtime version",
        "torch.AcceleratorError: CUDA error: no kernel image is available for execution on the "
        "device",
        "nvidia-container-cli: requirement error: unsatisfied condition: cuda>=12.8, please "
        "update your driver to a newer version",
    ],
    "init_timeout": [
        "worker exceeded RUNPOD_INIT_TIMEOUT (600s) before runpod.serverless.start()",
        "init timeout exceeded, stopping worker",
        "Worker exceeded initialization timeout of 420 seconds",
    ],
}


@pytest.mark.parametrize(("name", "text"), [(n, t) for n, ts in REAL.items() for t in ts
                                            if t != "Container exited with code 137"])
def test_each_real_line_is_its_signature(name: str, text: str) -> None:
    found = classify(lines(text))
    assert [m.signature.name for m in found] == [name], text
    assert found[0].count == 1
    assert found[0].lines == (0,)


def test_every_signature_has_real_lines_and_a_remedy() -> None:
    assert {s.name for s in SIGNATURES} == set(REAL)
    for s in SIGNATURES:
        assert s.keywords
        assert all(k == k.lower() for k in s.keywords)
        assert s.remedy
        assert "{times}" in s.cause


def test_the_runtime_wording_of_exit_137_counts_too() -> None:
    assert [m.signature.name for m in classify(lines("Container exited with code 137"))] == [
        "oom_killed"]


@pytest.mark.parametrize("text", [
    "error",
    "ERROR",
    "ERROR: something went wrong",
    "2026-06-01 12:05:04 | ERROR | handler.py:42 | request failed, retrying",
    "Traceback (most recent call last):",
    "RuntimeError: boom",
    "ValueError: invalid literal for int() with base 10: 'abc'",
    "error_count=0 warnings=3",
    "Worker ready.",
    "start container",
    "RUNPOD_INIT_TIMEOUT=600",  # configuration printed at start, not a failure
    "exit code 0",
    "Killed 3 stale sessions",
    "downloaded 137 files",
    "HTTP 404 for /favicon.ico",
])
def test_a_line_that_merely_says_error_is_no_cause(text: str) -> None:
    assert classify(lines(text)) == []


def test_mixed_logs_pick_the_specific_cause_and_count_kills_once() -> None:
    """A CUDA OOM traceback then the kill it led to, four times, among ordinary errors: the
    cause is CUDA out of memory; the kills are counted once each, not per line."""
    text = []
    for _ in range(4):
        text += [
            "ERROR | loading model",
            "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 MiB",
            "Killed",
            "worker exited with exit code 137",
        ]
    found = classify(lines(*text))
    assert [m.signature.name for m in found] == ["cuda_oom", "oom_killed"]
    assert found[0].count == 4
    assert found[1].count == 4
    assert found[1].cause == "the worker was OOM-killed (exit 137) 4 times"
    assert describe(found).startswith("the model ran out of GPU memory (CUDA out of memory) "
                                      "4 times (also seen: 1 other signature: oom_killed)")


def test_a_failed_clone_explains_the_missing_handler_after_it() -> None:
    found = classify(lines(
        "Cloning into '/runpod-volume/handler-repo'...",
        "fatal: could not read Username for 'https://github.com': No such device or address",
        "python: can't open file '/runpod-volume/handler-repo/handler.py': [Errno 2] No such "
        "file or directory",
        "worker exited with exit code 2",
    ))
    assert [m.signature.name for m in found] == ["git_auth", "handler_missing"]
    assert found[1].count == 1  # the file message and the exit 2 are one failure
    assert found[1].detail == "/runpod-volume/handler-repo/handler.py"


def test_the_cause_names_the_module_and_says_once() -> None:
    (m,) = classify(lines("ModuleNotFoundError: No module named 'diffusers'"))
    assert m.cause == "a Python module is missing (diffusers) once"


def test_by_name_is_the_table() -> None:
    assert list(BY_NAME.values()) == list(SIGNATURES)
