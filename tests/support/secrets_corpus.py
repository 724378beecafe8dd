"""Made-up secrets of real shapes, and ordinary tool output that must survive redaction.

Every value here is invented (random characters in the right shape); none is a real
credential. ``SECRETS`` rows are ``(kind, text containing the secret, the secret itself)``;
each secret substring is distinctive, so fault and security tests can grep files on disk for
it and be sure any hit is a leak. ``FALSE_POSITIVES`` must come out of ``redact`` unchanged.
"""

from __future__ import annotations

__all__ = ["FALSE_POSITIVES", "KINDS_COVERED", "SECRETS", "Secret"]

Secret = tuple[str, str, str]

_PEM_RSA = (
    "-----BEGIN RSA PRIVATE KEY-----\n"
    "MIIEowIBAAKCAQEAjSzL+o0VKMRkjTFG8ddD/bsr6xwqZ1YAgh25d3ewZIpQjhqn\n"
    "KZng9u0kG5dO1kU/lssbwNnULQCcvpLwq5HwFIMBj3dxlxEP3RSm77J+AoKHaCYV\n"
    "-----END RSA PRIVATE KEY-----"
)
_PEM_OPENSSH = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\n"
    "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtz\n"
    "eiXubeRUjkIIkNcp4XwdrUnDAK9u1l0iRnWD+knTu+zabQPa+ICKkISrGrp3hZK3\n"
    "-----END OPENSSH PRIVATE KEY-----"
)
_PEM_EC = (
    "-----BEGIN EC PRIVATE KEY-----\n"
    "MHcCAQEEIGq7Wd2pQvX9fLmT3sKzR8yNcB4hJ6uE1oA5iZ0tVxYwoAoGCCqGSM49\n"
    "-----END EC PRIVATE KEY-----"
)
_PEM_PKCS8_TRUNCATED = (
    "-----BEGIN PRIVATE KEY-----\\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQDf3Qk7LzPn2VbR"
)
_JWT_1 = (
    "eyJhbGciOiAiSFMyNTYiLCAidHlwIjogIkpXVCJ9.eyJzdWIiOiAiYWdlbnQtN2YzYSIsICJpYXQiOiAxNzY0MzAw"
    "MDAwLCAic2NvcGUiOiAibWVtb3J5OndyaXRlIn0.Gnx5NVzaLZV85bgZbkT8FS5oIb54QaHM5buSb3B-CZ2"
)
_JWT_2 = (
    "eyJhbGciOiAiSFMyNTYiLCAidHlwIjogIkpXVCJ9.eyJzdWIiOiAic3ZjLWxlZGdlci00MiIsICJpYXQiOiAxNzY0"
    "MzAwMDAwLCAic2NvcGUiOiAibWVtb3J5OndyaXRlIn0.vSnktGNdESQ8sRD0S6TY4JWIvKocfGhtK3JvxUW8JgY"
)
_ANTHROPIC_1 = (
    "sk-ant-api03-HgxNZRUWZF0X9zx20zshFF7__ZQ5q_GuZY23fEwAZdR5i097JBsfEP7a5AsB9eYHcHaq9-ZkMs"
    "TNF1t3AA"
)
_GITHUB_PAT = (
    "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"
)

SECRETS: list[Secret] = [
    # AWS
    ("aws_access_key_id", "export AWS_ACCESS_KEY_ID=AKIA5HGAZYXDOWG7M6RX", "AKIA5HGAZYXDOWG7M6RX"),
    (
        "aws_access_key_id",
        "sts assume-role returned AccessKeyId ASIACHO222VKFVOM3BJL (expires in 1h)",
        "ASIACHO222VKFVOM3BJL",
    ),
    (
        "aws_secret_access_key",
        "[default]\naws_secret_access_key = WWHNCCI8VAhyDkjlmUoaYaLZVPvfCnABW1Z9gVPg\n",
        "WWHNCCI8VAhyDkjlmUoaYaLZVPvfCnABW1Z9gVPg",
    ),
    (
        "aws_secret_access_key",
        '{"Credentials": {"SecretAccessKey": "Z36he38xhZ+hMH0qP/fels3ndiALS/StkTZE5Zbj"}}',
        "Z36he38xhZ+hMH0qP/fels3ndiALS/StkTZE5Zbj",
    ),
    # GitHub
    (
        "github_token",
        "git remote set-url origin https://ghp_HCk7FeRvH4SUeledHRZHeDFHzMGL3ZDF2gyj@github.com/acme/x",
        "ghp_HCk7FeRvH4SUeledHRZHeDFHzMGL3ZDF2gyj",
    ),
    (
        "github_token",
        "oauth: gho_niYpMBoCO0WX8SivsTMS2nZnLrOeSbWKBCo8 granted repo scope",
        "gho_niYpMBoCO0WX8SivsTMS2nZnLrOeSbWKBCo8",
    ),
    (
        "github_token",
        "GH_TOKEN=ghu_IrKLsA6ukNIMqWwRgmAoIitlZGHVtIgI2rnI gh pr list",
        "ghu_IrKLsA6ukNIMqWwRgmAoIitlZGHVtIgI2rnI",
    ),
    (
        "github_token",
        "installation token ghs_CQYfkwaEWnr1rhluirLT28usPN5OMmTIFJYE expires at 12:00Z",
        "ghs_CQYfkwaEWnr1rhluirLT28usPN5OMmTIFJYE",
    ),
    (
        "github_token",
        '{"refresh_token": "ghr_AKr1jwF3kVhpdaCbEjquazkrtQiXCMCgLv8W"}',
        "ghr_AKr1jwF3kVhpdaCbEjquazkrtQiXCMCgLv8W",
    ),
    ("github_token", f"Authorization: token {_GITHUB_PAT}", _GITHUB_PAT),
    # GitLab
    (
        "gitlab_token",
        "curl --header 'PRIVATE-TOKEN: glpat-9ZA2PT38zEtOG6OZr9cA' https://gitlab.example.com/api",
        "glpat-9ZA2PT38zEtOG6OZr9cA",
    ),
    ("gitlab_token", "CI_JOB_TOKEN glpat-JiJRJ2o5PQ5GatXKHOPB", "glpat-JiJRJ2o5PQ5GatXKHOPB"),
    # OpenAI-style
    (
        "openai_api_key",
        "OPENAI_API_KEY=sk-5eoFT3TwbwREgOhShpcSMfDBG3pyh6MAXcM9QeFhX8Bj0MkX",
        "sk-5eoFT3TwbwREgOhShpcSMfDBG3pyh6MAXcM9QeFhX8Bj0MkX",
    ),
    (
        "openai_api_key",
        'client = OpenAI(api_key="sk-proj-cRRhPvL-IIgME_MoKML-oZXunRubynmvFjNhUgWxQMZgkLYkPf")',
        "sk-proj-cRRhPvL-IIgME_MoKML-oZXunRubynmvFjNhUgWxQMZgkLYkPf",
    ),
    (
        "openai_api_key",
        "-H 'Authorization: Bearer sk-svcacct-GH6unBAkVUcuEeZQlQykEdBQQQx3h9IS87it8xL2'",
        "sk-svcacct-GH6unBAkVUcuEeZQlQykEdBQQQx3h9IS87it8xL2",
    ),
    # Anthropic-style
    ("anthropic_api_key", f"x-api-key: {_ANTHROPIC_1}", _ANTHROPIC_1),
    (
        "anthropic_api_key",
        'ANTHROPIC_API_KEY="sk-ant-admin01-aQ8dPgmAjGy1TBfzjzdt2jx9QcZAwyViwLV2gRAbrcJQEjG9029D"',
        "sk-ant-admin01-aQ8dPgmAjGy1TBfzjzdt2jx9QcZAwyViwLV2gRAbrcJQEjG9029D",
    ),
    # Slack
    (
        "slack_token",
        "SLACK_BOT_TOKEN: xoxb-078766810333-2207624762744-QrQiFkfBTbF9VKYX6Q81fHpv",
        "xoxb-078766810333-2207624762744-QrQiFkfBTbF9VKYX6Q81fHpv",
    ),
    (
        "slack_token",
        "as xoxp-953841086770-706259887409-5891809568138-25bb37efa64f96677444ac5a63f8e931 (user)",
        "xoxp-953841086770-706259887409-5891809568138-25bb37efa64f96677444ac5a63f8e931",
    ),
    (
        "slack_token",
        "legacy workspace token xoxa-2-doy4zQw8PIeudPqvpVjcNgZBVQ9VnW rotated",
        "xoxa-2-doy4zQw8PIeudPqvpVjcNgZBVQ9VnW",
    ),
    (
        "slack_token",
        "SLACK_APP_TOKEN=xapp-1-APSCFH1XFL8-9468741343026-aee3b983f4bde709f8058127bea8787086",
        "xapp-1-APSCFH1XFL8-9468741343026-aee3b983f4bde709f8058127bea8787086",
    ),
    (
        "slack_webhook",
        "POST https://hooks.slack.com/services/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 200",
        "TEKAFAYE8/B67BR2XWIQW/e2fazF5TMa6u4Rv5ZBQZ5xpn",
    ),
    (
        "slack_webhook",
        '{"webhook_url": "https://hooks.slack.com/services/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"}',
        "TWKED9B6W/B7KLVGBI24K/chNSo995WdgsiKOuQ5K3DepR",
    ),
    # Stripe
    (
        "stripe_key",
        "stripe.api_key = 'sk_live_m7NBtAodpjdxIOftMEzlxZ1x'",
        "sk_live_m7NBtAodpjdxIOftMEzlxZ1x",
    ),
    (
        "stripe_key",
        "restricted key rk_live_Vtyi0VnSKpiXlXAIl3umT9RW created",
        "rk_live_Vtyi0VnSKpiXlXAIl3umT9RW",
    ),
    (
        "stripe_key",
        "STRIPE_SECRET=sk_test_qeAAPzPXiObwjwbgouDlaBix",
        "sk_test_qeAAPzPXiObwjwbgouDlaBix",
    ),
    # Google
    (
        "google_api_key",
        "GET https://maps.googleapis.com/maps/api/geocode/json?address=Berlin&key=AIzayKLVBf0tWHVt48fKJYCOF7RFFbFgJ6GmPsg",
        "AIzayKLVBf0tWHVt48fKJYCOF7RFFbFgJ6GmPsg",
    ),
    (
        "google_api_key",
        "GOOGLE_API_KEY: AIzaZQuFh6LedegcyTp301ITL28_UOh6hG41_z_",
        "AIzaZQuFh6LedegcyTp301ITL28_UOh6hG41_z_",
    ),
    # JWT
    ("jwt", f"Set-Cookie: session={_JWT_1}; HttpOnly; Secure", _JWT_1),
    ("jwt", f'{{"id_token": "{_JWT_2}", "expires_in": 3600}}', _JWT_2),
    # PEM private keys (whole block)
    (
        "private_key",
        f"wrote deploy key:\n{_PEM_RSA}\nchmod 600 id_rsa",
        "KZng9u0kG5dO1kU/lssbwNnULQ",
    ),
    (
        "private_key",
        f"cat ~/.ssh/id_ed25519\n{_PEM_OPENSSH}\n",
        "eiXubeRUjkIIkNcp4XwdrUnDAK9u1l0iRnWD",
    ),
    ("private_key", _PEM_EC, "MHcCAQEEIGq7Wd2pQvX9fLmT3sKzR8yNcB4hJ6uE1oA5iZ0tVxYw"),
    (
        "private_key",
        f'{{"private_key": "{_PEM_PKCS8_TRUNCATED}',
        "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQDf3Qk7LzPn2VbR",
    ),
    # Passwords in URLs and connection strings
    (
        "url_password",
        "connecting to postgresql://ledger_app:Ep7EN6v2TSaFfmNvF7@db.internal:5432/ledger",
        "Ep7EN6v2TSaFfmNvF7",
    ),
    ("url_password", "REDIS_URL=redis://:QZIn5QiVST2QWo@cache-01:6379/0", "QZIn5QiVST2QWo"),
    (
        "url_password",
        "mongodb+srv://report-bot:Wq%21x7Lr9Kd2Vn@cluster0.example.mongodb.net/prod?retryWrites=true",
        "Wq%21x7Lr9Kd2Vn",
    ),
    (
        "password",
        "Server=sql01;Database=orders;User Id=svc_orders;Password=Tz8#qLm2Wv9Rk4;Encrypt=True",
        "Tz8#qLm2Wv9Rk4",
    ),
    # Authorization headers
    (
        "bearer_token",
        'curl -H "Authorization: Bearer WPQXhZW.KaZXuJR88KVzIwFNc.bfj5PxsRu06aDa" https://api.example.com',
        "WPQXhZW.KaZXuJR88KVzIwFNc.bfj5PxsRu06aDa",
    ),
    (
        "bearer_token",
        "retrying with bearer 4cD2QiuYQg1RSmK9klpN after 401",
        "4cD2QiuYQg1RSmK9klpN",
    ),
    (
        "basic_auth",
        "Authorization: Basic ZGVwbG95LWJvdDo2NDNBZTk0RGxaT29ZU3Zs",
        "ZGVwbG95LWJvdDo2NDNBZTk0RGxaT29ZU3Zs",
    ),
    (
        "basic_auth",
        "{'Authorization': 'Basic YWRtaW46SzlxVzJ4TG03UHpSNHZU', 'Accept': 'application/json'}",
        "YWRtaW46SzlxVzJ4TG03UHpSNHZU",
    ),
    ("authorization", "Proxy-Authorization: 0oS73y53JYGDC6yQTetT", "0oS73y53JYGDC6yQTetT"),
    (
        "authorization",
        "Authorization: SSO-Key cDxiK7rANYMZF2uBqA4s:tka4iZNa61uHckWU82Pp",
        "cDxiK7rANYMZF2uBqA4s:tka4iZNa61uHckWU82Pp",
    ),
    # key=value, key: value and JSON pairs
    ("password", "DB_PASSWORD=hunter2-Qv7RmX9pLw", "hunter2-Qv7RmX9pLw"),
    (
        "password",
        '{"username": "ops", "password": "c0rrect-H0rse-B4ttery"}',
        "c0rrect-H0rse-B4ttery",
    ),
    ("password", "passwd: Gf4wKp8sLx2N", "Gf4wKp8sLx2N"),
    ("password", "ftp login pwd=Yb3nR8vQ5zJm ok", "Yb3nR8vQ5zJm"),
    ("password", "mysql -u root --password 9fKs7Tq2LpXw -h db", "9fKs7Tq2LpXw"),
    ("secret", "client_secret=wUUuFPRbawSturlEpGZn", "wUUuFPRbawSturlEpGZn"),
    ("secret", '{"secret": "U2vDDIcB43o2MlUH9NlS"}', "U2vDDIcB43o2MlUH9NlS"),
    ("secret", "JWT_SECRET: 'Xe4rT7yU1iO9pA3sD6fG'", "Xe4rT7yU1iO9pA3sD6fG"),
    ("api_key", "api_key=Qm8vZx2Lr5Tn7Wp3Kd9Y", "Qm8vZx2Lr5Tn7Wp3Kd9Y"),
    (
        "api_key",
        "https://api.weather.example/v1?apikey=Hj6Kl2Mn8Pq4Rs0Tu3Vw&q=Oslo",
        "Hj6Kl2Mn8Pq4Rs0Tu3Vw",
    ),
    ("api_key", '{"X-Api-Key": "Aa1Bb2Cc3Dd4Ee5Ff6Gg7Hh"}', "Aa1Bb2Cc3Dd4Ee5Ff6Gg7Hh"),
    ("token", "GET /callback?access_token=Nq5Wr8Et2Yu6Io1Pa4Sd&state=xyz", "Nq5Wr8Et2Yu6Io1Pa4Sd"),
    ("token", '{"token": "Lk9Jh7Gf5Ds3Aq1Zx0Cv"}', "Lk9Jh7Gf5Ds3Aq1Zx0Cv"),
    ("token", "refresh_token: Mb2Vc4Xz6Lk8Jh0Gf1Ds", "Mb2Vc4Xz6Lk8Jh0Gf1Ds"),
    ("token", '"{\\"auth_token\\": \\"Rt5Yu7Io9Pl2Kj4Hg6Fd\\"}"', "Rt5Yu7Io9Pl2Kj4Hg6Fd"),
    # High-entropy values under secret-ish key names
    (
        "high_entropy",
        "SIGNING_KEY=Q5xRVI4P0uZqCHb4r0FaYW3UCVGzhXxm",
        "Q5xRVI4P0uZqCHb4r0FaYW3UCVGzhXxm",
    ),
    (
        "high_entropy",
        "encryption_key: efX7Eh3QfGiqA+GxdiDgzkjiya9L0t/rXMucQU5DL6le",
        "efX7Eh3QfGiqA+GxdiDgzkjiya9L0t/rXMucQU5DL6le",
    ),
    (
        "high_entropy",
        "webhook_signing_key=2ZTCWRUKxTabspvNLUBQ8kq3",
        "2ZTCWRUKxTabspvNLUBQ8kq3",
    ),
]

KINDS_COVERED: frozenset[str] = frozenset(kind for kind, _, _ in SECRETS)

FALSE_POSITIVES: list[str] = [
    # ids, hashes, numbers
    "commit 3f9a2c1e8b7d4f60a1c2e3d4b5a69788c0d1e2f3 (HEAD -> main, origin/main)",
    "Merge: 4b825dc 9e1c3a7\nAuthor: Dana Rivera <dana@example.com>",
    "request_id=6f1c2b7e-9a4d-4e0b-8c3f-2d5a7e9b1c04 status=200 latency_ms=38",
    "episode 0b9f6d0e-3c1a-4f7e-9b2d-5e8a1c7f3d20 completed",
    "object id 5f8d0a3c9e2b1f4a7d6c0e9b (hex) and sha256:9b74c9897bac770ffc029102a200c5de",
    "You received your order #W2378156 and wish to exchange the mechanical keyboard",
    'get_product_details(product_id="1656367028")',
    'exchange_delivered_order_items(order_id="#W2378156", payment_method_id="credit_card_9513926")',
    '{"payment_method_id": "gift_card_7245904", "amount": 129.99, "currency": "USD"}',
    "2026-11-28T06:22:49.123456+00:00 INFO worker-3 flushed 256 steps in 4.2 ms",
    "order ORD-2026-000123 shipped; tracking 1Z999AA10123456784",
    "image digest sha256:4bcd1e7c1b2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f",
    # paths, URLs, code
    "/home/agent/work/src/episodic_memory/core/sanitize.py:120: in redact",
    "C:\\Users\\agent\\AppData\\Local\\Temp\\build-4711\\out.log",
    "PWD=/home/agent/work OLDPWD=/home/agent",
    "see https://docs.example.com/guide/auth?section=tokens#refresh for details",
    "cloned https://github.com/acme/widgets.git into /tmp/widgets",
    "ssh://git@github.com/acme/widgets.git and git@gitlab.com:acme/widgets.git",
    "http://localhost:8080/api/v1/items@v2 returned 404",
    "mailto:support@example.com or call +1-555-0100",
    'Traceback (most recent call last):\n  File "/app/main.py", line 42, in <module>\n'
    "    main()\nKeyError: 'token'",
    "def login(user: str, password: str) -> Token:\n    return auth.check(user, password)",
    "if password == expected_password:\n    grant()",
    "password=password, token=token, api_key=settings.API_KEY",
    "connect(host=host, password=os.environ['DB_PASSWORD'])",
    "password=getpass.getpass()",
    'headers = {"Authorization": f"Bearer {token}"}',
    "Authorization: Bearer <token>",
    "export DB_PASSWORD=${DB_PASSWORD}",
    "SELECT id, email, password_hash FROM users WHERE id = 42 ORDER BY created_at DESC LIMIT 10;",
    "UPDATE sessions SET expires_at = now() WHERE user_id = 7;",
    '{"model": "gpt-4o", "max_tokens": 4096, "usage": {"prompt_tokens": 512, "total_tokens": 900}}',
    "token count: 512",
    "max_tokens=2048 temperature=0.2",
    "token_type: Bearer",
    '{"next_page_token": "CiAKGjBpNDd2Nmp2Zml2cXRwYjBpOXA3", "items": []}',
    "cache_key=user:42:profile primary_key=id sort_key=created_at",
    "idempotency_key=order-2378156-retry-1",
    # prose that mentions secrets
    "password reset email sent to the customer",
    "Password: required",
    "The user forgot their password and asked for a reset link.",
    "Authorization failed: user lacks the orders:write scope",
    "Bearer tokens are accepted on /v2 only; basic authentication is deprecated",
    "Enter your passphrase to unlock the keychain",
    "secret: none",
    "use the API key from the dashboard (Settings → API keys)",
    "tokens start with ghp_ and keys with sk- or AKIA",
    "Asia/Tokyo timezone; ASIA PACIFIC region",
    "scikit-learn==1.5.2 and task-runner-2026-11-28-build",
    # public key material and data
    "-----BEGIN CERTIFICATE-----\n"
    "MIIDdzCCAl+gAwIBAgIEbnZ2sDANBgkqhkiG9w0BAQsFADBsMRAwDgYDVQQGEwdV\n"
    "-----END CERTIFICATE-----",
    "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----",
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl agent@host",
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==",
    "日本語のテキスト — résumé ✓ emoji 🎉 and tabs\tand\nnewlines",
]
