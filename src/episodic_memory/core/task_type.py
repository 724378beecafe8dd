"""A coarse task type for every episode, so retrieval can index and filter by it.

It feeds an index, not a model: a small, deterministic keyword vote that a reader can predict.
An explicit ``TaskContext.task_type`` always wins. Otherwise each type scores one point per
distinct keyword found in the description (whole words with plain inflections: ``test`` matches
"tests" and "tested" but not "testament"; a trailing ``*`` marks a stem: ``debug*`` matches
"debugging"; multi-word keywords match as a phrase), plus points from the context:
a tag or domain naming the type (``customer_service``) counts 3, a domain typical of the type
(``retail``) counts 2. The highest score wins; ties go to the more specific type, in the order
of ``TASK_TYPES``; no evidence at all gives ``general``.
"""

from __future__ import annotations

import re

from episodic_memory.core.models import TaskContext

__all__ = ["TASK_TYPES", "classify_task"]

# fmt: off
_KEYWORDS: dict[str, tuple[str, ...]] = {
    "debugging": ("debug*", "bug", "fix", "error", "exception", "traceback", "stack trace",
                  "crash", "fail", "broken", "regression", "segfault", "not working"),
    "testing": ("test", "unit test", "test case", "pytest", "unittest", "coverage", "flaky",
                "assertion", "e2e", "fixture"),
    "refactoring": ("refactor", "clean up", "cleanup", "restructure", "rename", "simplify",
                    "deduplicate", "modernize", "decouple", "extract method"),
    "documentation": ("document", "docs", "docstring", "readme", "changelog", "tutorial",
                      "api reference", "write up"),
    "devops": ("deploy", "docker", "kubernetes", "k8s", "helm", "terraform", "ci pipeline",
               "github actions", "infrastructure", "nginx", "provision", "rollback", "cluster"),
    "data_processing": ("csv", "etl", "parse", "transform", "dataset", "dataframe", "pandas",
                        "ingest", "convert", "normalize", "dedupe", "aggregate", "spreadsheet"),
    "analysis": ("analy*", "investigat*", "compare", "evaluat*", "metric", "statistic*",
                 "report", "benchmark", "profil*", "trend", "root cause"),
    "research": ("research", "literature", "paper", "survey", "look up", "search for",
                 "summari*", "sources", "state of the art"),
    "code_generation": ("implement", "write a function", "write a script", "create a", "build",
                        "add a feature", "add support", "endpoint", "generate code", "scaffold",
                        "new feature", "function that", "script that"),
    "customer_service": ("order", "refund", "exchange", "cancel", "reservation", "booking",
                         "flight", "fly", "customer", "delivery", "shipping", "baggage",
                         "membership", "payment", "gift card", "purchase", "zip code", "user id"),
}
_DOMAINS: dict[str, frozenset[str]] = {
    "customer_service": frozenset({"retail", "airline", "telecom", "ecommerce", "support",
                                   "helpdesk", "banking", "travel"}),
    "devops": frozenset({"infrastructure", "ops", "sre", "cloud", "platform"}),
    "data_processing": frozenset({"data", "etl", "analytics"}),
}
# fmt: on

TASK_TYPES: tuple[str, ...] = (*_KEYWORDS, "general")
"""The types ``classify_task`` returns when the context does not name one, most specific first."""

_WORD = re.compile(r"[a-z0-9]+")
_PATTERNS = {
    task_type: tuple(
        re.compile(rf" {k[:-1]}\w*" if k.endswith("*") else rf" {k}(?:s|es|ed|d|ing)? ", re.ASCII)
        for k in keywords
    )
    for task_type, keywords in _KEYWORDS.items()
}
_KEYWORD_WEIGHT, _TAG_WEIGHT, _DOMAIN_WEIGHT = 1, 3, 2


def classify_task(description: str, context: TaskContext) -> str:
    """``context.task_type`` if given, else the best-scoring of ``TASK_TYPES``."""
    if context.task_type:
        return context.task_type
    words = _WORD.findall(description.lower())
    text = f" {' '.join(words)} "
    labels = {_label(tag) for tag in context.tags} | {_label(context.domain)}
    best, best_score = "general", 0
    for task_type, patterns in _PATTERNS.items():
        score = sum(_KEYWORD_WEIGHT for p in patterns if p.search(text))
        if task_type in labels:
            score += _TAG_WEIGHT
        if _label(context.domain) in _DOMAINS.get(task_type, ()):
            score += _DOMAIN_WEIGHT
        if score > best_score:  # strictly greater: ties keep the earlier, more specific type
            best, best_score = task_type, score
    return best


def _label(value: str) -> str:
    return "_".join(_WORD.findall(value.lower()))
