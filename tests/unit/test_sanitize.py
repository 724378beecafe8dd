"""Secrets never reach storage, and ordinary tool output passes through untouched."""

from __future__ import annotations

from collections import Counter

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.support.secrets_corpus import FALSE_POSITIVES, KINDS_COVERED, SECRETS

from episodic_memory import Episode, ExecutionStep, Reflection, TaskContext, TaskOutcome
from episodic_memory.config import DEFAULT_LIMITS
from episodic_memory.core.sanitize import (
    KINDS,
    redact,
    redact_json,
    sanitize_context,
    sanitize_episode,
    sanitize_outcome,
    sanitize_step,
    secret_kinds,
)

SECRET_IDS = [f"{kind}-{i}" for i, (kind, _, _) in enumerate(SECRETS)]


def test_the_corpus_has_two_samples_of_every_kind_and_only_known_kinds() -> None:
    counts = Counter(kind for kind, _, _ in SECRETS)
    assert KINDS_COVERED <= KINDS
    assert {"huggingface_token"} >= KINDS - KINDS_COVERED
    assert all(n >= 2 for n in counts.values()), counts
    assert len({secret for _, _, secret in SECRETS}) == len(SECRETS)


@pytest.mark.parametrize(("kind", "text", "secret"), SECRETS, ids=SECRET_IDS)
def test_every_secret_is_replaced_by_a_marker_naming_its_kind(
    kind: str, text: str, secret: str
) -> None:
    out = redact(text)
    assert secret not in out
    assert f"[REDACTED:{kind}]" in out
    assert secret_kinds(text)[kind] >= 1


@pytest.mark.parametrize(("kind", "text", "secret"), SECRETS, ids=SECRET_IDS)
def test_redaction_is_idempotent_on_every_sample(kind: str, text: str, secret: str) -> None:
    once = redact(text)
    assert redact(once) == once
    assert secret_kinds(once) == Counter()


@pytest.mark.parametrize("text", FALSE_POSITIVES)
def test_ordinary_tool_output_is_left_unchanged(text: str) -> None:
    assert redact(text) == text


def test_a_url_password_keeps_its_user_and_host() -> None:
    out = redact("psql postgresql://ledger_app:Ep7EN6v2TSaFfmNvF7@db.internal:5432/ledger")
    assert out == "psql postgresql://ledger_app:[REDACTED:url_password]@db.internal:5432/ledger"


def test_a_header_keeps_its_name_and_scheme() -> None:
    out = redact("Authorization: Bearer WPQXhZW.KaZXuJR88KVzIwFNc.bfj5PxsRu06aDa")
    assert out == "Authorization: Bearer [REDACTED:bearer_token]"


def test_a_key_before_a_private_key_block_cannot_split_it() -> None:
    _, block, secret = next(s for s in SECRETS if s[0] == "private_key")
    out = redact(f"password=x{block}")
    assert secret not in out
    assert "MIIE" not in out


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        (
            "export AWS_ACCESS_KEY_ID=AKIA5HGAZYXDOWG7M6RX-----BEGIN EC PRIVATE KEY-----\n"
            "MHcCAQEEIGq7Wd2pQvX9fLmT3sKzR8yNcB4hJ6uE1oA5iZ0tVxYw\n-----END EC PRIVATE KEY-----",
            "AKIA5HGAZYXDOWG7M6RX",
        ),
        (
            "Authorization:  Authorization: Basic ZGVwbG95LWJvdDo2NDNBZTk0RGxaT29ZU3Zs",
            "ZGVwbG95LWJvdDo2NDNBZTk0RGxaT29ZU3Zs",
        ),
        (
            "password= encryption_key: efX7Eh3QfGiqA+GxdiDgzkjiya9L0t/rXMucQU5DL6le",
            "efX7Eh3QfGiqA+GxdiDgzkjiya9L0t/rXMucQU5DL6le",
        ),
        (
            '{"k": "-----BEGIN PRIVATE KEY-----\\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSj \\',
            "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSj",
        ),
    ],
)
def test_secrets_glued_to_or_hidden_behind_other_matches_are_still_found(
    text: str, secret: str
) -> None:
    once = redact(text)
    assert secret not in once
    assert redact(once) == once


def test_offsets_stay_right_after_characters_that_grow_when_lowercased() -> None:
    out = redact("İstanbul İİİ DB_PASSWORD=hunter2-Qv7RmX9pLw done")
    assert out == "İstanbul İİİ DB_PASSWORD=[REDACTED:password] done"


def test_secret_named_json_keys_lose_their_values_whatever_they_look_like() -> None:
    params = {
        "password": "hunter2",
        "pin": 1234,
        "api_key": "abc123def456",
        "Authorization": "Bearer WPQXhZW.KaZXuJR88KVzIwFNc.bfj5PxsRu06aDa",
        "client_secret": "Xe4rT7yU1iO9pA3sD6fG",
        "db": {"passwd": 987654},
        "max_tokens": 512,
        "token_count": 3,
        "next_page_token": "CiAKGjBpNDd2Nmp2Zml2cXRwYjBp",
        "password_hint": "the usual",
    }
    out = redact_json(params)  # type: ignore[arg-type]
    assert out == {
        "password": "[REDACTED:password]",
        "pin": 1234,
        "api_key": "[REDACTED:api_key]",
        "Authorization": "Bearer [REDACTED:bearer_token]",
        "client_secret": "[REDACTED:secret]",
        "db": {"passwd": "[REDACTED:password]"},
        "max_tokens": 512,
        "token_count": 3,
        "next_page_token": "CiAKGjBpNDd2Nmp2Zml2cXRwYjBp",
        "password_hint": "the usual",
    }


def test_clean_json_comes_back_as_the_very_same_object() -> None:
    value = {"order_id": "#W2378156", "items": ["1151293680", {"qty": 2}], "ok": True}
    assert redact_json(value) is value  # type: ignore[arg-type]


@pytest.mark.parametrize(("kind", "text", "secret"), SECRETS, ids=SECRET_IDS)
def test_secrets_are_removed_from_every_field_of_a_step(kind: str, text: str, secret: str) -> None:
    step = ExecutionStep(
        tool="shell",
        action=text,
        parameters={"cmd": text, "env": {"nested": [text, {"deeper": text}]}},
        observation=f"$ run\n{text}\nexit 0",
        error=text,
        success=False,
        metadata={"raw": text, text[:60]: 1},
    )
    clean = sanitize_step(step)
    assert secret not in clean.model_dump_json()
    assert f"[REDACTED:{kind}]" in clean.observation
    assert ExecutionStep.model_validate_json(clean.model_dump_json()) == clean


def test_a_clean_step_is_returned_as_is() -> None:
    step = ExecutionStep(tool="get_order_details", parameters={"order_id": "#W2378156"})
    assert sanitize_step(step) is step


def test_redaction_never_pushes_a_field_past_its_bound() -> None:
    limit = DEFAULT_LIMITS.max_observation_chars
    text = ("pwd=Ab3$ " * (limit // 9 + 1))[:limit]
    clean = sanitize_step(ExecutionStep(tool="t", observation=text))
    assert len(clean.observation) == limit
    assert "Ab3$" not in clean.observation
    assert ExecutionStep.model_validate_json(clean.model_dump_json()) == clean


def _secret_of(kind: str) -> tuple[str, str]:
    _, text, secret = next(s for s in SECRETS if s[0] == kind)
    return text, secret


def test_every_text_field_of_an_episode_is_sanitized_and_nothing_else_changes() -> None:
    samples = {kind: _secret_of(kind) for kind in sorted(KINDS_COVERED)}
    texts = [text for text, _ in samples.values()]
    episode = Episode(
        task_description="deploy with " + texts[0],
        context=TaskContext(domain="ops", tags=["ghp_HCk7FeRvH4SUeledHRZHeDFHzMGL3ZDF2gyj"]),
        agent_id="agent-7",
        steps=[
            ExecutionStep(step_number=i + 1, tool="sh", observation=t) for i, t in enumerate(texts)
        ],
        status="completed",
        outcome=TaskOutcome(
            verdict="partial",
            summary=texts[1],
            reason=texts[2],
            completed=[texts[3]],
            failed=[texts[4]],
            artifacts=[texts[5]],
        ),
        reflection=Reflection(successes=[texts[6]], improvements=[texts[7]], insights=[texts[8]]),
        metadata={"ci": {"token": "Lk9Jh7Gf5Ds3Aq1Zx0Cv", "note": texts[9]}},
    )
    clean = sanitize_episode(episode)
    dumped = clean.model_dump_json()
    for _, secret in samples.values():
        assert secret not in dumped
    assert clean.episode_id == episode.episode_id
    assert clean.started_at == episode.started_at
    assert clean.agent_id == "agent-7"
    assert clean.context.tags == ["[REDACTED:github_token]"]
    assert len(clean.steps) == len(episode.steps)
    assert Episode.model_validate_json(dumped) == clean


def test_a_clean_episode_outcome_and_context_are_returned_as_is() -> None:
    outcome = TaskOutcome.success("refund issued for #W2378156")
    context = TaskContext(domain="retail", tags=["customer_service"])
    episode = Episode(
        task_description="refund an order",
        context=context,
        steps=[ExecutionStep(tool="refund", parameters={"order_id": "#W2378156"})],
        status="completed",
        outcome=outcome,
    )
    assert sanitize_outcome(outcome) is outcome
    assert sanitize_context(context) is context
    assert sanitize_episode(episode) is episode


_pieces = st.one_of(
    st.sampled_from([text for _, text, _ in SECRETS]),
    st.sampled_from(FALSE_POSITIVES),
    st.sampled_from(["password=", "token: ", '"api_key": "', "Bearer ", "://u:", "@h", "=", ":"]),
    st.text(max_size=40),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_pieces, max_size=8).map(" ".join))
def test_redaction_is_idempotent_and_leaves_no_sample_secret_on_any_mixture(text: str) -> None:
    once = redact(text)
    assert redact(once) == once
    for _, sample, secret in SECRETS:
        if sample in text:
            assert secret not in once


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), _pieces),
        lambda inner: st.one_of(
            st.lists(inner, max_size=4),
            st.dictionaries(
                st.one_of(st.sampled_from(["password", "token", "key", "x", "url"]), st.text()),
                inner,
                max_size=4,
            ),
        ),
        max_leaves=12,
    )
)
def test_json_redaction_is_idempotent_and_keeps_the_shape(value: object) -> None:
    once = redact_json(value)  # type: ignore[arg-type]
    assert redact_json(once) == once
    assert type(once) is type(value)
    assert orjson.loads(orjson.dumps(once)) == once
