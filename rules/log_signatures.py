"""Known failure signatures of RunPod Serverless worker logs: what a line says, the cause
it names and the fix.

Each record's patterns are anchored on messages the failing component really prints (the
kernel's OOM killer, PyTorch, git, the container runtime, huggingface_hub), never on a bare
"error": a worker that logs "ERROR" while it works is not evidence of a cause. The table is
ordered from the most specific signature to the least: a CUDA out-of-memory traceback wins
over the exit 137 that may follow it, a missing handler file over a generic exit 2.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass

from model.observation import LogLine
from rules.signals import plural


@dataclass(frozen=True, slots=True)
class Signature:
    """One known failure: the regexes of its lines, the cause it names (`{times}`: how many
    times, `{detail}`: what the first match captured), and its remedy."""

    name: str
    patterns: tuple[re.Pattern[str], ...]
    cause: str
    remedy: str
    keywords: tuple[str, ...] = ()  # lowercase; a line that has none cannot match


@dataclass(frozen=True, slots=True)
class SignatureMatch:
    """A signature seen in a snapshot: how often, its lines (indices into the input), and
    the first captured `detail` (a module or repo name) if its pattern has one."""

    signature: Signature
    count: int
    lines: tuple[int, ...]
    detail: str = ""

    @property
    def cause(self) -> str:
        """The cause sentence, e.g. 'the worker was OOM-killed (exit 137) 4 times'."""
        times = "once" if self.count == 1 else f"{self.count} times"
        detail = f" ({self.detail})" if self.detail else ""
        return self.signature.cause.format(times=times, detail=detail)


def _re(*patterns: str) -> tuple[re.Pattern[str], ...]:
    return tuple(re.compile(p) for p in patterns)


# "exit code 137", "exited with code 137", "exit status 137", "ExitCode: 137"
def _exit(code: int) -> str:
    return rf"(?i)\bexit(?:ed)?(?:\s+with)?(?:\s+exit)?[\s_-]*(?:code|status)\b[\s:=]*{code}\b"


_RELEASE = (
    "Then roll a new release with saveEndpoint (a template change alone does not reach the "
    "endpoint) and purge the jobs queued under the broken worker."
)

SIGNATURES: tuple[Signature, ...] = (
    Signature(
        "cuda_oom",
        _re(r"CUDA out of memory", r"torch\.(?:cuda\.)?OutOfMemoryError",
            r"CUBLAS_STATUS_ALLOC_FAILED", r"cudaErrorMemoryAllocation"),
        "the model ran out of GPU memory (CUDA out of memory) {times}",
        "The model does not fit the GPU's VRAM: pick a larger GPU tier in gpuIds (saveEndpoint), "
        "or load it in half precision / quantized, or lower the batch size. " + _RELEASE,
        keywords=("out of memory", "outofmemoryerror", "alloc_failed", "memoryallocation"),
    ),
    Signature(
        "image_pull",
        _re(r"manifest unknown", r"manifest for \S+ not found",
            r"unauthorized: authentication required", r"pull access denied",
            r"\bErrImagePull\b", r"\bImagePullBackOff\b"),
        "the container image could not be pulled {times}",
        "Check the template's imageName: the tag must exist (docker manifest inspect IMAGE) and, "
        "for a private registry, the template needs registry credentials (containerRegistryAuth"
        "Id in saveTemplate). " + _RELEASE,
        keywords=("manifest", "unauthorized", "pull access denied", "imagepull"),
    ),
    Signature(
        "cuda_driver",
        _re(r"CUDA driver version is insufficient for CUDA runtime version",
            r"The NVIDIA driver on your system is too old",
            r"no kernel image is available for execution on the device",
            r"forward compatibility was attempted on non supported HW",
            r"nvidia-container-cli: requirement error: unsatisfied condition: cuda"),
        "the image's CUDA does not match the host's GPU driver {times}",
        "The image's CUDA needs a newer driver than the worker's host has (or was built without "
        "kernels for this GPU): use an image built for an older CUDA (e.g. a cu121 tag) or "
        "restrict the endpoint to hosts with a recent driver (allowedCudaVersions in "
        "saveEndpoint); build for the GPU's compute capability. " + _RELEASE,
        keywords=("driver", "no kernel image", "forward compatibility", "requirement error"),
    ),
    Signature(
        "hf_download",
        _re(r"(?i)huggingface_hub\S*\s*[^\n]{0,80}?\b(?:401|403|404)\b",
            r"\b(?:401|403|404) Client Error[^\n]{0,80}huggingface\.co",
            r"\bGatedRepoError\b", r"\bRepositoryNotFoundError\b", r"\bRevisionNotFoundError\b",
            r"Revision Not Found for url", r"Repository Not Found for url: https://huggingface",
            r"Cannot access gated repo", r"Invalid (?:user token|credentials in Authorization)"),
        "Hugging Face refused the model download (401/403/404 or a missing revision) {times}",
        "The model download from Hugging Face was refused: check the repo id and revision exist, "
        "accept a gated model's licence on huggingface.co with the token's account, and give "
        "the worker a valid HF_TOKEN as a RunPod secret ({{ RUNPOD_SECRET_hf_token }}), never "
        "in plain text. " + _RELEASE,
        keywords=("huggingface", "notfounderror", "gatedrepo", "not found for url", "gated repo",
                  "invalid user token", "invalid credentials"),
    ),
    Signature(
        "git_auth",
        _re(r"fatal: Authentication failed for", r"fatal: could not read Username for",
            r"fatal: could not read Password for", r"remote: Repository not found\.",
            r"Permission denied \(publickey\)", r"remote: Invalid username or (?:password|token)"),
        "a git clone failed for authentication {times}",
        "A private repo cannot be cloned without credentials, and `|| true` hides the failure "
        "until the handler is missing. Bake the handler into the image (Dockerfile COPY) "
        "instead of cloning at start; if you must clone, use a deploy token stored as a RunPod "
        "secret, never in dockerArgs. " + _RELEASE,
        keywords=("fatal:", "repository not found", "permission denied (publickey)",
                  "invalid username"),
    ),
    Signature(
        "module_missing",
        _re(r"ModuleNotFoundError: No module named '(?P<detail>[^']+)'",
            r"ImportError: cannot import name '(?P<detail>[^']+)'"),
        "a Python module is missing{detail} {times}",
        "The image lacks a Python package the handler imports: add it to requirements.txt (or "
        "pip install it in the Dockerfile), rebuild and push the image, and point the template "
        "at the new tag. " + _RELEASE,
        keywords=("no module named", "cannot import name"),
    ),
    Signature(
        "handler_missing",
        _re(r"can't open file '(?P<detail>[^']+)': \[Errno 2\] No such file or directory",
            r"(?i)(?:python3?|bash|sh|exec)\S*: (?P<detail>\S+\.(?:py|sh)): "
            r"No such file or directory",
            _exit(2)),
        "the handler file was not found (exit 2){detail} {times}",
        "The path the image's CMD or the template's dockerArgs starts does not exist, often a "
        "clone of a private repo that failed behind `|| true`. Compare it with where the "
        "handler really is; bake the handler into the image. " + _RELEASE,
        keywords=("no such file", "exit"),
    ),
    Signature(
        "disk_full",
        _re(r"(?i)no space left on device", r"\bENOSPC\b", r"(?i)disk quota exceeded", _exit(139)),
        "the container disk filled up (No space left on device / exit 139) {times}",
        "The disk filled during a write (image layers, a model download): raise "
        "containerDiskInGb in the template (unpacked layers need about 2.5x the compressed "
        "image plus a buffer) and put models on the network volume under /runpod-volume "
        "(not /workspace); HF_HOME on the same volume as local_dir. " + _RELEASE,
        keywords=("no space left", "enospc", "disk quota", "exit"),
    ),
    Signature(
        "oom_killed",
        _re(_exit(137), r"\bOOMKilled\b", r"Out of memory: Killed process",
            r"\boom-kill(?:er)?\b", r"^\s*Killed\s*$", r"line \d+:\s+\d+ Killed\s"),
        "the worker was OOM-killed (exit 137) {times}",
        "The process was killed for memory (SIGKILL, exit 137: system RAM or GPU VRAM): use a "
        "larger GPU tier in gpuIds (saveEndpoint), load the model lazily or in half precision, "
        "or lower the batch size. " + _RELEASE,
        keywords=("exit", "oomkilled", "out of memory", "oom-kill", "killed"),
    ),
    Signature(
        "init_timeout",
        # the variable's name alone is configuration, not a failure: it needs a verb
        _re(r"\bRUNPOD_INIT_TIMEOUT\b[^\n]{0,60}\b(?:exceeded|reached|expired)",
            r"(?i)\b(?:exceeded|reached)\b[^\n]{0,60}\bRUNPOD_INIT_TIMEOUT\b",
            r"(?i)\binit(?:iali[sz]ation)?[ _-]timeout\b[^\n]{0,40}\b(?:exceeded|reached|expired)",
            r"(?i)\bexceeded\b[^\n]{0,40}\binit(?:iali[sz]ation)?[ _-]?timeout\b"),
        "the worker did not finish starting within its init timeout {times}",
        "Startup (model download, dependency install) takes longer than the init timeout "
        "allows: move the download to build time or a network volume, or raise the template's "
        "RUNPOD_INIT_TIMEOUT env (seconds). " + _RELEASE,
        keywords=("timeout",),
    ),
)

BY_NAME = {s.name: s for s in SIGNATURES}



def classify(lines: Sequence[LogLine]) -> list[SignatureMatch]:
    """The signatures seen in `lines`, most specific first. A line belongs to the first
    signature whose pattern it matches; a signature's count is the most lines any one of its
    patterns matched (the 'Killed' and the 'exit code 137' of one kill count once)."""
    return list(_classify(tuple(lines)))


# An incident's snapshots come back every cycle unchanged: classify each set once.
@functools.lru_cache(maxsize=512)
def _classify(lines: tuple[LogLine, ...]) -> tuple[SignatureMatch, ...]:
    hits: dict[str, list[int]] = {}
    per_pattern: dict[tuple[str, int], int] = {}
    details: dict[str, str] = {}
    for i, ll in enumerate(lines):
        text = ll.line
        low = text.lower()
        for sig in SIGNATURES:
            if not any(k in low for k in sig.keywords):
                continue  # a substring test rules most lines out faster than the regexes
            found = False
            for k, pattern in enumerate(sig.patterns):
                m = pattern.search(text)
                if m is None:
                    continue
                found = True
                per_pattern[(sig.name, k)] = per_pattern.get((sig.name, k), 0) + 1
                if sig.name not in details and "detail" in pattern.groupindex:
                    details[sig.name] = m.group("detail")
            if found:
                hits.setdefault(sig.name, []).append(i)
                break
    out = []
    for sig in SIGNATURES:
        if sig.name not in hits:
            continue
        count = max(n for (name, _), n in per_pattern.items() if name == sig.name)
        out.append(SignatureMatch(sig, count, tuple(hits[sig.name]), details.get(sig.name, "")))
    return tuple(out)


def describe(matches: Sequence[SignatureMatch]) -> str:
    """'the worker was OOM-killed (exit 137) 4 times' and, after it, the others seen."""
    if not matches:
        return ""
    first = matches[0].cause
    if len(matches) == 1:
        return first
    others = ", ".join(m.signature.name for m in matches[1:])
    return f"{first} (also seen: {plural(len(matches) - 1, 'other signature')}: {others})"
