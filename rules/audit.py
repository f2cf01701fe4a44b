"""Configuration audit: what is wrong in an endpoint's template and GPU list, before it bites.

Reads the latest GraphQL configuration of each watched endpoint that the latest (successful)
GraphQL answer lists. Nothing a template holds is quoted unmasked: every excerpt passes
through `rules.secrets.mask`, and secrets are named only by kind, place and masked prefix.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

from model.history import History
from model.observation import EndpointConfig, EnvVar, Observation, Template
from rules.diagnosis import Diagnosis, evidence
from rules.gpus import compatible_tiers
from rules.remedies import REST, api, release, update_endpoint
from rules.rule import Finding, Rule
from rules.secrets import find_secrets, has_secret, mask
from rules.thresholds import Thresholds

VOLUME_MOUNT = "/runpod-volume"
POD_MOUNT = "/workspace"
SECRETS_DOC = "https://docs.runpod.io/pods/templates/secrets"
STORAGE_KEYS = frozenset(
    {"HF_HOME", "MODEL_DIR", "TRANSFORMERS_CACHE", "HF_HUB_CACHE", "HF_DATASETS_CACHE",
     "TORCH_HOME", "XDG_CACHE_HOME"}
)
ROTATE_AT: dict[str, str] = {
    "GitHub token": "https://github.com/settings/tokens",
    "Hugging Face token": "https://huggingface.co/settings/tokens",
    "AWS access key": "the AWS IAM console (deactivate the access key, create a new one)",
    "Slack token": "https://api.slack.com/apps (reinstall the app or revoke the token)",
    "Slack webhook URL": "https://api.slack.com/apps (Incoming Webhooks: remove and re-add)",
    "URL with a password": "the service the URL points to (change the password)",
    "RunPod API key": "https://www.runpod.io/console/user/settings (API keys)",
}


def _env_with(template: Template, values: dict[str, str]) -> tuple[EnvVar, ...]:
    """The template's env with some values replaced."""
    return tuple(EnvVar(v.key, values.get(v.key, v.value)) for v in template.env)


def _where(template: Template) -> Iterator[tuple[str, str]]:
    """(place, text) of everything a template runs with: dockerArgs and each env value."""
    yield "dockerArgs", template.docker_args
    for var in template.env:
        yield f"env {var.key}", var.value


# --- secret_in_template -----------------------------------------------------------------


def _secret_in_template(
    obs: Observation, config: EndpointConfig, template: Template | None, label: str,
    th: Thresholds,
) -> Finding | None:
    if template is None:
        return None
    hits: list[tuple[str, str, str]] = []  # (place, kind, masked)
    for place, text in _where(template):
        hits.extend((place, f.kind, f.masked) for f in find_secrets(text))
    if not hits:
        return None
    kinds = list(dict.fromkeys(kind for _, kind, _ in hits))
    places = list(dict.fromkeys(place for place, _, _ in hits))
    first_place, first_kind, first_masked = hits[0]
    more = f" and {len(hits) - 1} more" if len(hits) > 1 else ""
    summary = (
        f"Template '{template.name or template.id}' of endpoint {label} holds a {first_kind} "
        f"({first_masked}) in {first_place}{more} in plain text, readable by anyone with "
        "API access to the account."
    )
    rotate = "; ".join(f"{kind}: {ROTATE_AT.get(kind, 'its issuer')}" for kind in kinds)
    if api(obs) == REST:
        refs = {
            v.key: "{{ RUNPOD_SECRET_" + v.key + " }}" for v in template.env if has_secret(v.value)
        }
        changes: dict[str, object] = {}
        if refs:
            changes["env"] = _env_with(template, refs)
        if "dockerArgs" in places:
            changes["docker_args"] = "<the start command without the token>"
        fix = (
            f"1. Rotate (revoke and reissue) every exposed credential now: {rotate}.\n"
            "2. Store the new one as a RunPod secret (console > Secrets, or POST "
            "/v2/account/secrets) and reference it from the endpoint's env as "
            "{{ RUNPOD_SECRET_<name> }} (" + SECRETS_DOC + "); never put tokens in the start "
            "command (for a private repo, bake the handler into the image instead of cloning "
            f"it at start).\n3. Replace them ({', '.join(places)}) and "
            + release(obs, config, **changes)
        )
    else:
        fix = (
            f"1. Rotate (revoke and reissue) every exposed credential now: {rotate}.\n"
            "2. Store the new one as a RunPod secret and reference it from the template's env "
            "as {{ RUNPOD_SECRET_<name> }} (" + SECRETS_DOC + "); never put tokens in "
            "dockerArgs (for a private repo, bake the handler into the image instead of "
            f"cloning it at start).\n3. Edit the template ({', '.join(places)}) in the console "
            "or with saveTemplate, then " + release(obs, config)
        )
    remedy = fix
    numbers: dict[str, object] = {
        "template_id": template.id,
        "secrets_found": len(hits),
        "kinds": ", ".join(kinds),
        "places": ", ".join(places),
        "masked": ", ".join(f"{place}: {masked}" for place, _, masked in hits),
    }
    return Finding("critical", summary, remedy, evidence(**numbers))


# --- volume_path_mismatch --------------------------------------------------------------


def storage_key(key: str) -> bool:
    """An env key that names a storage location (HF_HOME, *_DIR, *_PATH, *_HOME, *CACHE*)."""
    k = key.upper()
    return k in STORAGE_KEYS or k.endswith(("_DIR", "_PATH", "_HOME")) or "CACHE" in k


def _under_workspace(value: str) -> bool:
    v = value.strip().strip("'\"")
    return v == POD_MOUNT or v.startswith(POD_MOUNT + "/")


def _volume_path_mismatch(
    obs: Observation, config: EndpointConfig, template: Template | None, label: str,
    th: Thresholds,
) -> Finding | None:
    if template is None:
        return None
    if not config.network_volume_id:
        return None
    wrong = [
        (var.key, mask(var.value.strip().strip("'\"")))
        for var in template.env
        if storage_key(var.key) and _under_workspace(var.value)
    ]
    if not wrong:
        return None
    first_key, first_value = wrong[0]
    more = f" and {len(wrong) - 1} more" if len(wrong) > 1 else ""
    summary = (
        f"Endpoint {label} has network volume {config.network_volume_id} attached but "
        f"{first_key}={first_value}{more} points under {POD_MOUNT}, which on Serverless is "
        f"the container disk (the volume mounts at {VOLUME_MOUNT})."
    )
    fixes = ", ".join(
        f"{key}={VOLUME_MOUNT}{value[len(POD_MOUNT):]}" for key, value in wrong
    )
    lead = (
        f"Models stored under {POD_MOUNT} land on the container disk: it fills up (exit "
        "code 139) and every cold start downloads them again. Set "
    )
    if api(obs) == REST:
        moved = {
            v.key: VOLUME_MOUNT + v.value.strip().strip("'\"")[len(POD_MOUNT):]
            for v in template.env
            if storage_key(v.key) and _under_workspace(v.value)
        }
        remedy = (
            f"{lead}{fixes} in the env and "
            + release(obs, config, env=_env_with(template, moved))
        )
    else:
        remedy = (
            f"{lead}{fixes} in the template's env (console or saveTemplate), then "
            + release(obs, config)
        )
    numbers: dict[str, object] = {
        "network_volume_id": config.network_volume_id,
        "template_id": template.id,
        "keys": ", ".join(key for key, _ in wrong),
        "paths": ", ".join(f"{key}={value}" for key, value in wrong),
    }
    return Finding("warning", summary, remedy, evidence(**numbers))


# --- clone_failure_masked ---------------------------------------------------------------

_CLONE = re.compile(r"\bgit\s+clone\b")
# The end of the clone's own command: a list operator, a separator or a closing group.
_COMMAND_END = re.compile(r"\|\||&&|;|\n|\|(?!\|)|\)|\}|'|\"|$")
# What ends the branch after `||`: the next separator or list operator.
_BRANCH_END = re.compile(r"&&|\|\||;|\n|\)|\}|'|\"|$")
_HIDES_STDERR = re.compile(r"(?:2|&)>\s*/dev/null|>\s*/dev/null\s+2>&1")
_CHECK = re.compile(r"\b(?:exit|return|false)\b")
_SET_E = re.compile(r"\bset\s+-[a-zA-Z]*e")
_TESTED = re.compile(r"(?:\bif|\bwhile|\buntil|!)\s*$")
_NOOP = re.compile(r"\s*(?:true|:)(?![\w./-])")
_CLOSER = re.compile(r"\s*(?:fi|done)\b\s*(\|\||&&)?")
_USERINFO = re.compile(r"(://)[^/\s@'\"]+@")


def _or_branch(rest: str) -> str:
    """The command after `||`: a `{ ...; }` or `( ... )` group whole, else up to a separator."""
    text = rest.lstrip()
    if text[:1] in ("{", "("):
        close = text.find("}" if text[0] == "{" else ")")
        return text if close < 0 else text[: close + 1]
    end = _BRANCH_END.search(text)
    return text[: end.start()] if end is not None else text


def clone_masking(docker_args: str) -> list[tuple[str, str]]:
    """(how the failure is masked, masked excerpt of the command) for each masked clone.

    Masked: `git clone ... || true` (or any `||` branch without exit/return/false),
    `git clone ...; true`, and `git clone ... 2>/dev/null` with no check after it (no
    `&&`, no `|| exit`, no `set -e`, not tested by `if`/`!`).
    """
    found: list[tuple[str, str]] = []
    for m in _CLONE.finditer(docker_args):
        if _TESTED.search(docker_args[: m.start()]):
            continue
        end = _COMMAND_END.search(docker_args, m.end())
        if end is None:  # pragma: no cover - `$` always matches
            continue
        command = docker_args[m.start() : end.start()]
        op, rest = end.group(0), docker_args[end.end() :]
        closer = _CLOSER.match(rest) if op in (";", "\n") else None
        if closer is not None:  # `if ...; then git clone ...; fi || true`
            op = closer.group(1) or ";"
            rest = rest[closer.end() :]
        set_e = _SET_E.search(docker_args[: m.start()]) is not None
        how: str | None = None
        if op == "||":
            branch = _or_branch(rest)
            if _CHECK.search(branch) is None:
                words = branch.split()
                how = "|| " + (words[0] if words else "true")
        elif op in (";", "\n") and _NOOP.match(rest) and not set_e:
            how = "; true"
        elif _HIDES_STDERR.search(command) and op != "&&" and not set_e:
            how = "2>/dev/null without a check"
        if how is not None:
            excerpt = _USERINFO.sub(r"\1****@", mask(command.strip()))
            found.append((how, excerpt[:160]))
    return found


def _clone_failure_masked(
    obs: Observation, config: EndpointConfig, template: Template | None, label: str,
    th: Thresholds,
) -> Finding | None:
    if template is None:
        return None
    masked = clone_masking(template.docker_args)
    if not masked:
        return None
    how, excerpt = masked[0]
    summary = (
        f"Endpoint {label}'s dockerArgs runs git clone and masks its failure ({how}): a "
        "failed clone (private repo, bad URL) starts a worker without its handler."
    )
    if api(obs) == REST:
        remedy = (
            "A worker whose clone failed exits with code 2 (handler not found) and the real "
            "error is hidden. Bake the handler into the image (COPY it in the Dockerfile, "
            "empty start command args); or at least let the clone fail loudly: remove the "
            "masking, add '|| exit 1' and 'set -e'. Then, for the baked image, "
            + release(obs, config, image_name="<image with the handler baked in>",
                      docker_args="")
        )
    else:
        remedy = (
            "A worker whose clone failed exits with code 2 (handler not found) and the real "
            "error is hidden. Bake the handler into the image (COPY it in the Dockerfile, "
            "empty dockerArgs); or at least let the clone fail loudly: remove the masking, add "
            "'|| exit 1' and 'set -e'. Then " + release(obs, config)
        )
    numbers: dict[str, object] = {
        "template_id": template.id,
        "masked_clones": len(masked),
        "masking": how,
        "command": excerpt,
    }
    return Finding("warning", summary, remedy, evidence(**numbers))


# --- single_gpu_tier --------------------------------------------------------------------


def _single_gpu_tier(
    obs: Observation, config: EndpointConfig, template: Template | None, label: str,
    th: Thresholds,
) -> Finding | None:
    tiers = config.gpu_tiers
    if not config.network_volume_id or len(tiers) != 1:
        return None
    wider = compatible_tiers(tiers)
    summary = (
        f"Endpoint {label} pins network volume {config.network_volume_id} to one datacenter "
        f"and allows a single GPU tier ({tiers[0]}), which there often has no capacity."
    )
    rest = api(obs) == REST
    if len(wider) > 1:
        excluded = [p.strip() for p in config.gpu_ids.split(",") if p.strip().startswith("-")]
        field = "GPU pools" if rest else "gpuIds"
        remedy = (
            f"Allow every compatible tier: {field} {','.join(wider)} (same VRAM or more):\n"
            + update_endpoint(obs, config, gpu_ids=",".join([*wider, *excluded]))
        )
    elif rest:
        remedy = (
            "Add the other pools with at least the VRAM this model needs to the endpoint's "
            'GPU pools ({"gpu": {"pools": [...]}}), or drop the network volume pin '
            '({"networkVolumes": []}).'
        )
    else:
        remedy = (
            "Add the other tiers with at least the VRAM this model needs to gpuIds with "
            "saveEndpoint, or drop the network volume pin (networkVolumeId: \"\")."
        )
    numbers: dict[str, object] = {
        "network_volume_id": config.network_volume_id,
        "gpu_ids": config.gpu_ids,
        "gpu_tiers": len(tiers),
        "compatible_tiers": ",".join(wider),
    }
    return Finding("info", summary, remedy, evidence(**numbers))


# --- container_disk_small ---------------------------------------------------------------


def _container_disk_small(
    obs: Observation, config: EndpointConfig, template: Template | None, label: str,
    th: Thresholds,
) -> Finding | None:
    if template is None:
        return None
    disk = template.container_disk_gb
    if disk is None:
        return None
    volume = bool(config.network_volume_id)
    minimum = th.container_disk_min_gb if volume else th.container_disk_no_volume_min_gb
    minimum = max(minimum, th.container_disk_min_gb)
    if disk >= minimum:
        return None
    where = "with a network volume" if volume else "with no network volume attached"
    summary = (
        f"Endpoint {label}'s template gives the container {disk} GB of disk, under the "
        f"{minimum} GB minimum {where}."
    )
    rest = api(obs) == REST
    remedy = (
        "Unpacked image layers need about 2.5x the compressed image size, plus a 20 GB "
        "buffer" + ("" if volume else ", plus the models (no network volume holds them)")
        + ": an image that does not fit fails before any code runs (no space left on "
        f"device, exit 139). Raise {'the container disk' if rest else 'containerDiskInGb'} "
        f"to at least {minimum} (compressed image x 2.5 + 20"
        + ("" if volume else " + model size")
        + (
            ") GB and " + release(obs, config, container_disk_gb=minimum) if rest
            else ") in the template, then " + release(obs, config)
        )
    )
    numbers: dict[str, object] = {
        "template_id": template.id,
        "container_disk_gb": disk,
        "minimum_gb": minimum,
        "network_volume": volume,
    }
    return Finding("warning", summary, remedy, evidence(**numbers))


# endpoint id -> (config, name, remedy API, thresholds, diagnoses) of the last audit. The
# checks read nothing else, and an unchanged config is the same object cycle after cycle
# (the prober shares it): the audit of 1000 endpoints, ~9 ms a cycle, is then a lookup.
# Still a function of its inputs: any other object, name, API or thresholds is audited.
_Audit = tuple[EndpointConfig, str, str, Thresholds, tuple[Diagnosis, ...]]
_last_audit: dict[str, _Audit] = {}


def diagnose(history: History, th: Thresholds) -> list[Diagnosis]:
    """The template and GPU audit of every watched endpoint the latest GraphQL lists."""
    global _last_audit
    latest = history.latest
    if latest is None or not latest.control_ok:
        return []
    found: list[Diagnosis] = []
    remedy_api = api(latest)
    last, seen = _last_audit, {}
    for endpoint_id in latest.endpoints:
        if latest.listed_ids is None or endpoint_id not in latest.listed_ids:
            continue
        config = history.latest_config(endpoint_id)
        if config is None:
            continue
        name = history.endpoint_name(endpoint_id)
        known = last.get(endpoint_id)
        if (known is None or known[0] is not config or known[1] != name
                or known[2] != remedy_api or known[3] is not th):
            label = f"'{name}' ({endpoint_id})" if name != endpoint_id else endpoint_id
            out = []
            for rule in RULES:
                finding = rule.check(latest, config, config.template, label, th)
                if finding is not None:
                    out.append(rule.diagnosis(finding, endpoint_id, name))
            known = (config, name, remedy_api, th, tuple(out))
        seen[endpoint_id] = known
        found.extend(known[4])
    _last_audit = seen
    return found


# --- the records ---------------------------------------------------------------------

# (the latest observation, config, its template or None, the endpoint's label,
# thresholds) -> finding; the template checks find nothing without a template.
AuditCheck = Callable[
    [Observation, EndpointConfig, Template | None, str, Thresholds], Finding | None
]

RULES: tuple[Rule[AuditCheck], ...] = (
    Rule(
        code="secret_in_template", scope="endpoint", severity="critical", source="graphql",
        family="audit", check=_secret_in_template,
        raised_when="`dockerArgs` or an env value holds a GitHub, Hugging Face, AWS, Slack or "
        "RunPod token, or a URL with a password; only the kind and a masked prefix "
        "(`ghp_****`) are ever shown",
    ),
    Rule(
        code="volume_path_mismatch", scope="endpoint", severity="warning", source="graphql",
        family="audit", check=_volume_path_mismatch,
        raised_when="a network volume is attached and a path env var points under "
        "`/workspace` (the volume mounts at `/runpod-volume`)",
    ),
    Rule(
        code="clone_failure_masked", scope="endpoint", severity="warning", source="graphql",
        family="audit", check=_clone_failure_masked,
        raised_when="`dockerArgs` runs `git clone` and masks its failure (`|| true`, "
        "`; true`, `2>/dev/null` without a check)",
    ),
    Rule(
        code="single_gpu_tier", scope="endpoint", severity="info", source="graphql",
        family="audit", check=_single_gpu_tier,
        raised_when="a network volume is attached and `gpuIds` names one tier",
    ),
    Rule(
        code="container_disk_small", scope="endpoint", severity="warning", source="graphql",
        family="audit", check=_container_disk_small,
        thresholds=("container_disk_min_gb", "container_disk_no_volume_min_gb"),
        raised_when="`containerDiskInGb` under 20, or under 50 with no network volume",
    ),
)
