"""rules.secrets: every token kind is found and masked to its prefix; ordinary values are not."""

from __future__ import annotations

import pytest

from rules.secrets import KINDS, Found, find_secrets, has_secret, mask

# Fake tokens built at run time (token-shaped, never real).
GH_BODY = "Zq7" * 12  # 36 alphanumerics
GHP = "ghp_" + GH_BODY
GHO = "gho_" + GH_BODY
GHU = "ghu_" + GH_BODY
GHS = "ghs_" + GH_BODY
GHR = "ghr_" + GH_BODY
GITHUB_PAT = "github_pat_" + "11AB" * 6 + "_" + "x9Y" * 19
HF = "hf_" + "KpW4" * 8 + "zz"  # 34 alphanumerics
AKIA = "AKIA" + "Q7W3E9R2T5Y8U1I4"
ASIA = "ASIA" + "Q7W3E9R2T5Y8U1I4"
SLACK_BOT = "xoxb-" + "2468013579-" + "1357924680-" + "aBcDeFgHiJkLmNoP"
SLACK_USER = "xoxp-" + "2468013579-" + "aBcDeFgHiJkLmNoPq"
WEBHOOK_TAIL = "T0AAAAAAA/B0BBBBBBB/" + "cCdDeEfFgGhHiIjJkKlLmMnN"
WEBHOOK = "https://hooks.slack.com/services/" + WEBHOOK_TAIL
RUNPOD = "rpa_" + "R8T3Y6U9" * 5
PASSWORD = "s3cr3t-Pa55word"

# (token as it appears, expected kind, expected masked form, the part that must not leak)
CASES = [
    (GHP, "GitHub token", "ghp_****", GH_BODY),
    (GHO, "GitHub token", "gho_****", GH_BODY),
    (GHU, "GitHub token", "ghu_****", GH_BODY),
    (GHS, "GitHub token", "ghs_****", GH_BODY),
    (GHR, "GitHub token", "ghr_****", GH_BODY),
    (GITHUB_PAT, "GitHub token", "github_pat_****", GITHUB_PAT[len("github_pat_"):]),
    (HF, "Hugging Face token", "hf_****", HF[3:]),
    (AKIA, "AWS access key", "AKIA****", AKIA[4:]),
    (ASIA, "AWS access key", "ASIA****", ASIA[4:]),
    (SLACK_BOT, "Slack token", "xoxb-****", SLACK_BOT[5:]),
    (SLACK_USER, "Slack token", "xoxp-****", SLACK_USER[5:]),
    (WEBHOOK, "Slack webhook URL", "https://hooks.slack.com/services/****", WEBHOOK_TAIL),
    (f"https://deploy:{PASSWORD}@git.example.com/repo.git", "URL with a password",
     "https://deploy:****@git.example.com", PASSWORD),
    (RUNPOD, "RunPod API key", "rpa_****", RUNPOD[4:]),
]


@pytest.mark.parametrize(("token", "kind", "masked", "tail"), CASES)
def test_every_kind_is_found_and_masked(token: str, kind: str, masked: str, tail: str) -> None:
    """Each kind is found alone and inside text, named by kind and masked prefix only."""
    text = f"export X={token} && run"
    assert find_secrets(token) == [Found(kind, masked)]
    assert find_secrets(text) == [Found(kind, masked)]
    out = mask(text)
    assert tail not in out
    assert tail[:6] not in out
    assert out.startswith("export X=")
    assert out.endswith(" && run")
    assert kind in KINDS
    assert has_secret(text)


def test_url_password_keeps_user_and_host() -> None:
    """user:secret@host keeps the user and the host, masks the password."""
    text = f"postgres://app:{PASSWORD}@db.internal:5432/main"
    assert mask(text) == "postgres://app:****@db.internal:5432/main"


def test_token_as_url_password_is_named_by_its_kind() -> None:
    """A GitHub token used as a URL password is reported as a GitHub token."""
    text = f"git clone https://x-access-token:{GHP}@github.com/org/repo.git"
    assert find_secrets(text) == [Found("GitHub token", "https://x-access-token:ghp_****@github.com")]
    assert mask(text) == "git clone https://x-access-token:ghp_****@github.com/org/repo.git"


def test_token_as_url_user_is_masked() -> None:
    """A token used as the URL's user (https://ghp_...@github.com) is masked too."""
    text = f"git clone https://{GHP}@github.com/org/repo.git"
    assert find_secrets(text) == [Found("GitHub token", "ghp_****")]
    assert GH_BODY not in mask(text)


def test_several_secrets_in_order() -> None:
    """Several secrets in one text are all found, left to right, and all masked."""
    text = f"A={HF} B={AKIA} C={WEBHOOK}"
    assert [f.kind for f in find_secrets(text)] == [
        "Hugging Face token", "AWS access key", "Slack webhook URL",
    ]
    assert mask(text) == "A=hf_**** B=AKIA**** C=https://hooks.slack.com/services/****"


def test_mask_is_idempotent() -> None:
    """Masking masked text changes nothing."""
    text = f"{GHP} https://u:{PASSWORD}@h/x {SLACK_BOT}"
    once = mask(text)
    assert mask(once) == once


@pytest.mark.parametrize(
    "text",
    [
        "1",
        "hf_transfer",
        "HF_HUB_ENABLE_HF_TRANSFER",
        "/runpod-volume/hf_cache",
        "/runpod-volume/hf_cache_for_the_big_model_weights_2024",
        "hf_" + "a" * 29,  # one short of a token body
        "ghp_short",
        "AKIA123",  # too short
        "AKIAIOSFODNN7EXAMPLEX",  # too long: not an access key id
        "https://github.com/org/repo.git",
        "http://localhost:8000/health",
        "https://huggingface.co/org/model",
        "xoxb-short",
        "rpa_short",
        "{{ RUNPOD_SECRET_hf_token }}",
        "bash -c 'cd /app && python -u handler.py'",
        "meta-llama/Llama-3.1-8B-Instruct",
        "sha256:" + "ab12" * 16,
    ],
)
def test_no_false_positives(text: str) -> None:
    """Ordinary env values, paths, URLs and short prefixes are not secrets."""
    assert find_secrets(text) == []
    assert mask(text) == text


def test_hf_body_boundary() -> None:
    """hf_ followed by 30 alphanumerics is a token; 29 is not."""
    assert find_secrets("hf_" + "b" * 30) == [Found("Hugging Face token", "hf_****")]
    assert find_secrets("hf_" + "b" * 29) == []


def test_token_glued_to_a_word_is_not_a_token() -> None:
    """A prefix that continues a word (xghp_...) is not taken for a token."""
    assert find_secrets("x" + GHP) == []


# --- the values of secret-looking env keys ----------------------------------------------

def test_secret_keys_and_their_values_are_hidden_whatever_their_shape() -> None:
    from rules.secrets import mask_values, secret_key, secret_values

    for key in ("HF_TOKEN", "DB_PASSWORD", "aws_secret_access_key", "OPENAI_API_KEY",
                "WANDB_KEY", "BASIC_AUTH", "GIT_CREDENTIALS"):
        assert secret_key(key), key
    for key in ("HF_HOME", "MODEL_DIR", "KEYBOARD_LAYOUT", "BATCH_SIZE"):
        assert not secret_key(key), key
    env = [("DB_PASSWORD", "plain-pass-77"), ("HF_HOME", "/runpod-volume/hf"),
           ("API_KEY", "short"), ("HF_TOKEN", "{{ RUNPOD_SECRET_hf }}"),
           ("GH_TOKEN", "ghp_****")]
    assert secret_values(env) == {"plain-pass-77"}  # long enough, not a reference or masked
    text = "connect db with plain-pass-77 to /runpod-volume/hf"
    assert mask_values(text, secret_values(env)) == "connect db with **** to /runpod-volume/hf"
