"""What every command shares: options, the configuration they build, where the memory is.

Which memory a command talks to (``--backend``):

- ``ray`` — the memory served on a Ray cluster (``episodic-memory serve``), found by
  ``--namespace``/``--memory-name``; never created by a data command. The default when an
  address is given (``--address`` or ``EPISODIC_MEMORY_RAY_ADDRESS``).
- ``in_process`` — the data folder (or database URL) opened right here, no Ray: the default
  otherwise. A folder a running service owns is refused (``DataFolderLocked``): use the
  service (``--address``) instead.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, Protocol

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from episodic_memory.config import CacheConfig, MemoryConfig, RayConfig
from episodic_memory.core.models import Episode
from episodic_memory.core.patterns import Heuristic, Pattern
from episodic_memory.errors import ServiceError
from episodic_memory.memory import SelfLearningMemory
from episodic_memory.storage.base import EpisodeQuery

__all__ = [
    "Reader",
    "Registry",
    "attach",
    "config_from",
    "emit",
    "open_memory",
    "open_reader",
    "progress_bar",
    "table",
    "with_options",
]

# Piped output is read by people later (less, a log): wide rows beat folded cells.
CONNECT_TIMEOUT_S = 5.0
"""How long the head's GCS port may take to accept a connection."""

stdout = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
stderr = Console(stderr=True, highlight=False)


class Registry(Protocol):
    """Adds a command (``group``: a nested command's parent) and returns its parser."""

    def __call__(
        self, name: str, summary: str, example: str, group: Any = None
    ) -> argparse.ArgumentParser: ...


def with_options(parser: argparse.ArgumentParser, *, backend: bool = True) -> None:
    """The options every command takes (``backend``: whether it can run without Ray)."""
    where = parser.add_argument_group("which memory")
    where.add_argument("--data-dir", type=Path, help="memory folder (EPISODIC_MEMORY_DATA_DIR)")
    where.add_argument(
        "--address", help="Ray cluster: 'auto' or host:port (EPISODIC_MEMORY_RAY_ADDRESS)"
    )
    where.add_argument("--namespace", help="Ray namespace (EPISODIC_MEMORY_NAMESPACE)")
    where.add_argument("--memory-name", help="which memory in the namespace (default: default)")
    if backend:
        where.add_argument(
            "--backend",
            choices=["ray", "in_process"],
            help="ray: the served memory; in_process: the data folder here, no Ray "
            "(default: ray when an address is given)",
        )
    parser.add_argument("--json", action="store_true", help="machine-readable output on stdout")


def config_from(args: argparse.Namespace, *, address: str | None = None) -> MemoryConfig:
    """``MemoryConfig.from_env()`` with the command's options on top."""
    config = MemoryConfig.from_env()
    ray = config.ray.model_dump()
    for option, key in (("address", "address"), ("namespace", "namespace")):
        if getattr(args, option, None):
            ray[key] = getattr(args, option)
    if getattr(args, "memory_name", None):
        ray["memory_name"] = args.memory_name
    if address is not None and not ray["address"]:
        ray["address"] = address
    update: dict[str, Any] = {"ray": RayConfig(**ray)}
    if getattr(args, "data_dir", None) is not None:
        update["data_dir"] = args.data_dir
    return MemoryConfig(**{**dict(config), **update})


def backend_of(args: argparse.Namespace, config: MemoryConfig) -> str:
    chosen: str | None = getattr(args, "backend", None)
    return chosen or ("ray" if config.ray.address else "in_process")


def _answering(address: str) -> str:
    """``address`` (``auto``: the cluster Ray would pick) once its GCS accepts a connection.

    Ray itself retries an unreachable GCS for minutes, and ``auto`` may name a dead head (a
    stale ``ray_current_cluster`` file left by a killed one): fail in seconds instead.
    """
    from ray._private.services import get_ray_address_from_environment

    target = str(get_ray_address_from_environment(address, None) or "")
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise ConnectionError("no running Ray cluster found on this node")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise ConnectionError(f"nothing answers at {target}: {exc}") from None
    return target


def connect_ray(config: MemoryConfig) -> None:
    """Join the Ray cluster the config names ("auto" when none); one line when it fails."""
    import ray

    from episodic_memory.actors.client import ensure_ray

    if ray.is_initialized():
        return
    address = config.ray.address or "auto"
    try:
        if not address.startswith("ray://"):
            address = _answering(address)
        ray_config = config.ray.model_copy(update={"address": address})
        ensure_ray(config.model_copy(update={"ray": ray_config}))
    except Exception as exc:  # Ray raises ConnectionError, RuntimeError, auth errors ...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ServiceError(
            f"cannot join the Ray cluster at {address!r} ({first}); start one with "
            "'ray start --head' or pass --address host:port (see docs/deploy.md)"
        ) from None


def served(config: MemoryConfig) -> bool:
    """Whether this memory's actors exist on the connected cluster."""
    import ray

    from episodic_memory.actors.service import ServiceNames

    names = ServiceNames.of(config)
    try:
        ray.get_actor(names.storage, namespace=names.namespace)
    except ValueError:
        return False
    return True


def not_served(config: MemoryConfig) -> ServiceError:
    return ServiceError(
        f"memory {config.ray.memory_name!r} is not served in namespace "
        f"{config.ray.namespace!r}: run 'episodic-memory serve' first, or check "
        "--namespace/--memory-name (or use --backend in_process on its data folder)"
    )


@asynccontextmanager
async def attach(config: MemoryConfig) -> AsyncIterator[SelfLearningMemory]:
    """The served memory (never created here); its service keeps running afterwards."""
    from episodic_memory.backends import open_backend

    connect_ray(config)
    if not served(config):
        raise not_served(config)
    backend = await open_backend(config, "ray", create=False, owns_ray=False)
    memory = SelfLearningMemory(backend.config, "ray", backend)
    try:
        yield memory
    finally:
        await memory.close()


@asynccontextmanager
async def open_memory(args: argparse.Namespace) -> AsyncIterator[SelfLearningMemory]:
    """The memory the options name: the served one, or the data folder in-process."""
    config = config_from(args)
    if backend_of(args, config) == "ray":
        async with attach(config) as memory:
            yield memory
        return
    memory = await SelfLearningMemory.open(config, backend="in_process")
    try:
        yield memory
    finally:
        await memory.close()


class Reader(Protocol):
    """Read-only record access, satisfied by ``StorageService`` and the storage actor's proxy."""

    async def list_episodes(self, query: EpisodeQuery) -> list[Episode]: ...

    async def get_episodes(self, episode_ids: Sequence[str]) -> list[Episode]: ...

    async def patterns(self, domain: str | None = None, limit: int = 50) -> list[Pattern]: ...

    async def heuristics(self, domain: str | None = None, limit: int = 50) -> list[Heuristic]: ...


@asynccontextmanager
async def open_reader(args: argparse.Namespace) -> AsyncIterator[Reader]:
    """Durable records only: the storage actor, or the store opened read-only (no cache)."""
    config = config_from(args)
    if backend_of(args, config) == "ray":
        import ray

        from episodic_memory.actors.proxies import StorageProxy
        from episodic_memory.actors.service import ServiceNames

        connect_ray(config)
        names = ServiceNames.of(config)
        try:
            handle = ray.get_actor(names.storage, namespace=names.namespace)
        except ValueError:
            raise not_served(config) from None
        yield StorageProxy(handle)
        return
    from episodic_memory.storage.service import StorageService

    plain = config.model_copy(update={"cache": CacheConfig(enabled=False)})
    service = await StorageService.open(plain)
    try:
        yield service
    finally:
        await service.close()


# --- output -----------------------------------------------------------------------------------
def emit(args: argparse.Namespace, data: Any, human: Callable[[], None]) -> None:
    """``--json``: ``data`` as JSON on stdout; otherwise the human rendering."""
    if getattr(args, "json", False):
        sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    else:
        human()


def table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print a table (numbers right-aligned) to stdout."""
    out = Table(title=title, title_justify="left", header_style="bold")
    for i, name in enumerate(columns):
        numeric = bool(rows) and all(isinstance(r[i], int | float) for r in rows)
        last = i == len(columns) - 1  # the free-text column takes what room is left
        out.add_column(
            name, justify="right" if numeric else "left", no_wrap=not last, overflow="ellipsis"
        )
    for row in rows:
        out.add_row(
            *("" if v is None else f"{v:.2f}" if isinstance(v, float) else str(v) for v in row)
        )
    stdout.print(out)


@contextmanager
def progress_bar(
    label: str, total: int | None = None
) -> Iterator[Callable[[int, int | None], None]]:
    """A progress bar on stderr; yields ``update(done, total)``."""
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=stderr,
        transient=True,
        disable=not stderr.is_terminal,  # a log file gets the result line, not bar frames
    ) as bar:
        task = bar.add_task(label, total=total)

        def update(done: int, whole: int | None) -> None:
            bar.update(task, completed=done, total=whole)

        yield update
